package prune

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/retention"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// DefaultOrphanAge is how old a payload without manifest, or a backend's
// leftover of an interrupted write, must be before prune removes it: an
// upload may still be running (docs/format.md).
const DefaultOrphanAge = time.Hour

// ErrNoVerifiedBackup: no backup of the cluster passes verification (the
// presence check, or the read-back with Options.ReadBack), so prune removed
// nothing. Errors with it also wrap format.ErrIntegrity.
var ErrNoVerifiedBackup = errors.New("no backup passes verification")

// ReasonNewestVerified is the reason given to the backup prune keeps
// whatever the policy says.
const ReasonNewestVerified = "newest verified"

// Options for Run.
type Options struct {
	// DryRun computes and verifies everything but removes nothing.
	DryRun bool
	// ReadBack verifies backups by reading them back in full with every
	// check of 'etcd-backup verify' (restore.Fetch), which downloads at
	// least the newest backup. Without it, a backup is verified when its
	// manifest passes its checks and its payload exists with the stored
	// size the manifest records (one Stat): the writer checked every byte
	// before it published the manifest.
	ReadBack bool
	// Now is the clock for the policy (see retention.Apply) and for the
	// age of orphans. Default time.Now.
	Now func() time.Time
	// Identities decrypt encrypted backups for full verification with
	// ReadBack. Without a matching one, an encrypted backup is read back
	// to check the size and sha256 of its stored bytes only. Unused
	// without ReadBack.
	Identities []age.Identity
	Logger     *slog.Logger
	// OrphanAge: payloads without a manifest, and the backend's stale
	// leftovers (storage.Janitor), are removed once older than this.
	// 0 means DefaultOrphanAge.
	OrphanAge time.Duration
}

// Backup is the fate of one backup with an intact manifest.
type Backup struct {
	ID        string
	Time      time.Time // from the ID: when the backup started, UTC
	Member    string
	Size      int64 // bytes of its manifest and payload objects
	Encrypted bool
	Keep      bool
	Reasons   []string // why it is kept
	Removed   bool     // its objects were removed (never in a dry run)
}

// Problem is a backup prune could not use, with the reason.
type Problem struct {
	ID  string
	Err error
}

// Orphan is a payload object without a manifest.
type Orphan struct {
	Name    string // object name relative to the repository root
	Size    int64
	ModTime time.Time
	Young   bool // younger than OrphanAge: left alone
	Removed bool // removed (never in a dry run)
}

// Report tells what Run decided and did.
type Report struct {
	Cluster  string
	Location string
	Policy   retention.Policy
	DryRun   bool
	// ReadBack: backups were verified by reading them back in full
	// (Options.ReadBack); otherwise by the presence check.
	ReadBack bool
	// Backups holds every backup with an intact manifest, newest first.
	Backups []Backup
	// Damaged manifests fail their checks. They are never removed by
	// prune and do not count for the policy: look at them by hand.
	Damaged []Problem
	// VerifyFailed lists the backups, newer than Verified, that failed
	// verification. The policy still decides their fate.
	VerifyFailed []Problem
	// Verified is the newest backup that passed verification, kept
	// whatever the policy says ("" when there is no backup at all).
	Verified string
	// VerifiedStoredOnly: with ReadBack, Verified is encrypted and no
	// identity opened it, so only its stored size and sha256 were checked.
	VerifiedStoredOnly bool
	Orphans            []Orphan
	// Journals lists the journal chains (by snapshot ID) removed because
	// their snapshot is gone, with the bytes they held.
	Journals []Orphan
	// Stale lists what the backend's janitor removed (storage.Janitor).
	Stale []string
	// StaleErr is the janitor's failure, if any; it does not fail Run.
	StaleErr error
	// StaleSkipped: the janitor did not run (a dry run, or a backend
	// without one).
	StaleSkipped bool
	// BytesFreed counts manifests, payloads and orphans removed (in a dry
	// run: that would be removed). Janitor leftovers are not counted.
	BytesFreed int64
}

// Kept returns the backups kept, newest first.
func (rep *Report) Kept() []Backup { return rep.filter(true) }

// Doomed returns the backups the policy removes (removed, or to be removed
// in a dry run), newest first.
func (rep *Report) Doomed() []Backup { return rep.filter(false) }

func (rep *Report) filter(keep bool) []Backup {
	var out []Backup
	for _, b := range rep.Backups {
		if b.Keep == keep {
			out = append(out, b)
		}
	}
	return out
}

// Summary is a one-line account of the report.
func (rep *Report) Summary() string {
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	var oldOrphans int
	for _, o := range rep.Orphans {
		if !o.Young {
			oldOrphans++
		}
	}
	s := fmt.Sprintf("kept %s, %s %s and %s (%d bytes)", plural(len(rep.Kept()), "backup"), verb,
		plural(len(rep.Doomed()), "backup"), plural(oldOrphans, "orphan payload"), rep.BytesFreed)
	if len(rep.Journals) > 0 {
		s += fmt.Sprintf(", %s %s of removed backups", verb, plural(len(rep.Journals), "journal"))
	}
	if len(rep.Stale) > 0 {
		s += fmt.Sprintf(", removed %s", plural(len(rep.Stale), "stale upload leftover"))
	}
	if len(rep.Damaged) > 0 {
		s += fmt.Sprintf("; %s left in place", plural(len(rep.Damaged), "damaged manifest"))
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// Run applies policy p to the backups of r's cluster:
//
//  1. read every manifest; damaged ones are reported and never removed;
//  2. decide with retention.Apply;
//  3. verify backups from the newest down until one passes and keep that
//     one whatever the policy says. By default a backup passes when its
//     payload exists with the stored size its manifest records (a Stat;
//     the manifest was checked in 1); with opt.ReadBack, when it reads
//     back intact (restore.Fetch, or restore.VerifyStored for encrypted
//     backups without a matching identity). A backup that fails for
//     integrity (missing or wrong-sized payload, damaged bytes) is
//     skipped; any other error (storage) stops Run before it removes
//     anything. When none passes, remove nothing and return an error
//     wrapping ErrNoVerifiedBackup and format.ErrIntegrity;
//  4. remove each backup the policy does not keep, oldest first: its
//     manifest first, so it leaves every listing at once, then its payload
//     (if that fails, the payload is an orphan for a later run);
//  5. remove orphan payloads older than opt.OrphanAge;
//  6. call the backend's storage.Janitor, if it has one.
//
// A dry run does 1 to 3 and reports what 4 and 5 would remove. Run returns
// the report also with an error, covering what was done until then.
func Run(ctx context.Context, r *repo.Repo, p retention.Policy, opt Options) (*Report, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	orphanAge := opt.OrphanAge
	if orphanAge <= 0 {
		orphanAge = DefaultOrphanAge
	}
	b := r.Backend()
	rep := &Report{Cluster: r.Cluster(), Location: b.Location(), Policy: p, DryRun: opt.DryRun, ReadBack: opt.ReadBack}
	if err := p.Validate(); err != nil {
		return rep, err
	}
	if p.Empty() {
		return rep, retention.ErrEmptyPolicy
	}
	dir := snapDir(r)

	// Sizes of everything in the snapshot directory, for the report.
	sizes := map[string]int64{}
	if err := b.List(ctx, dir+"/", func(i storage.Info) error { sizes[i.Name] = i.Size; return nil }); err != nil {
		return rep, fmt.Errorf("list snapshots: %w", err)
	}
	entries, err := r.List(ctx)
	if err != nil {
		return rep, err
	}
	manifests := map[string]*format.Manifest{}
	var in []retention.Backup
	for _, e := range entries {
		if e.Err != nil {
			rep.Damaged = append(rep.Damaged, Problem{ID: e.ID, Err: e.Err})
			log.Warn("damaged manifest: left in place, not counted by the policy", "id", e.ID, "err", e.Err)
			continue
		}
		t, err := format.IDTime(e.ID)
		if err != nil { // IDs() only returns valid IDs
			return rep, err
		}
		manifests[e.ID] = e.M
		in = append(in, retention.Backup{ID: e.ID, Time: t})
	}

	decisions := retention.Apply(in, p, now())
	for _, d := range decisions {
		m := manifests[d.ID]
		rep.Backups = append(rep.Backups, Backup{
			ID: d.ID, Time: d.Time, Member: m.MemberName, Encrypted: m.Encrypted(),
			Size: sizes[r.ManifestName(d.ID)] + sizes[payloadName(r, m)],
			Keep: d.Keep, Reasons: d.Reasons,
		})
	}

	// The newest backup that passes verification is never removed.
	if len(entries) > 0 {
		for i := range rep.Backups {
			bk := &rep.Backups[i]
			var storedOnly bool
			var err error
			if opt.ReadBack {
				storedOnly, err = readBack(ctx, r, manifests[bk.ID], opt.Identities)
			} else {
				err = checkPresent(ctx, r, manifests[bk.ID])
			}
			if err == nil {
				rep.Verified, rep.VerifiedStoredOnly = bk.ID, storedOnly
				if !bk.Keep {
					bk.Keep = true
					bk.Reasons = nil
				}
				bk.Reasons = append(bk.Reasons, ReasonNewestVerified)
				log.Info("newest verified backup", "id", bk.ID, "read_back", opt.ReadBack, "stored_bytes_only", storedOnly)
				break
			}
			if !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
				return rep, fmt.Errorf("verify backup %s: %w (nothing removed)", bk.ID, err)
			}
			rep.VerifyFailed = append(rep.VerifyFailed, Problem{ID: bk.ID, Err: err})
			log.Warn("backup fails verification", "id", bk.ID, "err", err)
		}
		if rep.Verified == "" {
			what := "has its payload in place with the recorded size"
			if opt.ReadBack {
				what = "can be read back intact"
			}
			return rep, fmt.Errorf("%w: %w: none of the %d backups of cluster %q in %s %s (%d damaged manifests); nothing removed",
				ErrNoVerifiedBackup, format.ErrIntegrity, len(rep.Backups), r.Cluster(), b.Location(), what, len(rep.Damaged))
		}
	}

	// A backup written locked (--lock-for) stays until its lock ends: the
	// store would refuse to remove it (or, in a versioned bucket, only hide
	// it behind a delete marker while its data stays).
	for i := range rep.Backups {
		bk := &rep.Backups[i]
		if m := manifests[bk.ID]; !bk.Keep && m.LockedUntil != nil && m.LockedUntil.After(now()) {
			bk.Keep = true
			bk.Reasons = append(bk.Reasons, "locked until "+m.LockedUntil.UTC().Format(time.RFC3339))
			log.Info("backup locked: kept until its lock ends", "id", bk.ID, "locked_until", m.LockedUntil.UTC())
		}
	}

	// Remove, oldest first, so that an interruption leaves the newer ones.
	for i := len(rep.Backups) - 1; i >= 0; i-- {
		bk := &rep.Backups[i]
		if bk.Keep {
			continue
		}
		if opt.DryRun {
			rep.BytesFreed += bk.Size
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if err := removeBackup(ctx, r, manifests[bk.ID], log); err != nil {
			return rep, err
		}
		bk.Removed = true
		rep.BytesFreed += bk.Size
		log.Info("backup removed", "id", bk.ID, "bytes", bk.Size)
	}

	if err := removeOrphans(ctx, r, rep, now(), orphanAge, opt.DryRun, log); err != nil {
		return rep, err
	}
	damaged := map[string]bool{}
	for _, d := range rep.Damaged {
		damaged[d.ID] = true
	}
	kept := map[string]bool{}
	for _, bk := range rep.Backups {
		kept[bk.ID] = bk.Keep
	}
	if err := pruneJournals(ctx, r, rep, kept, damaged, now(), orphanAge, opt.DryRun, log); err != nil {
		return rep, err
	}

	j, ok := storage.As[storage.Janitor](b)
	if !ok || opt.DryRun {
		rep.StaleSkipped = true
		return rep, nil
	}
	rep.Stale, rep.StaleErr = j.RemoveStale(ctx, orphanAge)
	for _, s := range rep.Stale {
		log.Info("stale leftover removed", "what", s)
	}
	if rep.StaleErr != nil {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		log.Warn("removing stale upload leftovers failed; backups are unaffected", "err", rep.StaleErr)
	}
	return rep, nil
}

// checkPresent is the default verification of a backup whose manifest
// passed its checks (repo.List): its payload exists with the stored size
// the manifest records. It reads no payload byte. A missing or wrong-sized
// payload is an error wrapping format.ErrIntegrity; a storage error (after
// the storage layer's retries) is returned as is, never as an integrity
// failure.
func checkPresent(ctx context.Context, r *repo.Repo, m *format.Manifest) error {
	if m.Payload == "" || strings.Contains(m.Payload, "/") {
		return fmt.Errorf("%w: backup %s: manifest names a bad payload %q", format.ErrIntegrity, m.ID, m.Payload)
	}
	i, err := r.Backend().Stat(ctx, path.Join(snapDir(r), m.Payload))
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: backup %s: its payload %s is missing from the repository", format.ErrIntegrity, m.ID, m.Payload)
	case err != nil:
		return fmt.Errorf("stat its payload %s: %w", m.Payload, err)
	case i.Size != m.StoredSize:
		return fmt.Errorf("%w: backup %s: stored payload is %d bytes, manifest says %d", format.ErrIntegrity, m.ID, i.Size, m.StoredSize)
	}
	return nil
}

// readBack reads m back and checks it as fully as the identities allow.
// storedOnly reports that only the stored size and sha256 could be
// checked.
func readBack(ctx context.Context, r *repo.Repo, m *format.Manifest, ids []age.Identity) (storedOnly bool, err error) {
	if m.Encrypted() && len(ids) == 0 {
		return true, restore.VerifyStored(ctx, r, m)
	}
	err = restore.Fetch(ctx, r, m, ids, io.Discard, nil)
	if m.Encrypted() && errors.Is(err, format.ErrKey) {
		return true, restore.VerifyStored(ctx, r, m)
	}
	return false, err
}

// snapDir is the directory of r's manifests and payloads.
func snapDir(r *repo.Repo) string { return path.Dir(r.ManifestName("x")) }

// payloadName is the object name of m's payload, or "" when the manifest
// names something that is not this backup's payload (then prune leaves it).
func payloadName(r *repo.Repo, m *format.Manifest) string {
	if m.Payload != repo.PayloadBase(m.ID, false) && m.Payload != repo.PayloadBase(m.ID, true) {
		return ""
	}
	return path.Join(snapDir(r), m.Payload)
}

// removeBackup removes m's manifest, then its payload. Objects already gone
// (a concurrent prune) are fine.
func removeBackup(ctx context.Context, r *repo.Repo, m *format.Manifest, log *slog.Logger) error {
	b := r.Backend()
	if err := b.Remove(ctx, r.ManifestName(m.ID)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("remove backup %s: manifest: %w", m.ID, err)
	}
	pn := payloadName(r, m)
	if pn == "" {
		log.Warn("manifest names an unexpected payload; left in place", "id", m.ID, "payload", m.Payload)
		return nil
	}
	if err := b.Remove(ctx, pn); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("remove backup %s: manifest removed, payload %s not (a later prune removes it as an orphan): %w", m.ID, m.Payload, err)
	}
	return nil
}

// removeOrphans removes payloads whose manifest does not exist and that are
// older than age, and records every orphan in rep.
func removeOrphans(ctx context.Context, r *repo.Repo, rep *Report, now time.Time, age time.Duration, dryRun bool, log *slog.Logger) error {
	b := r.Backend()
	dir := snapDir(r) + "/"
	haveManifest := map[string]bool{}
	var payloads []storage.Info
	err := b.List(ctx, dir, func(i storage.Info) error {
		base := strings.TrimPrefix(i.Name, dir)
		if id, ok := strings.CutSuffix(base, ".manifest.json"); ok {
			haveManifest[id] = true
		} else if payloadID(base) != "" {
			payloads = append(payloads, i)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshots for orphans: %w", err)
	}
	for _, i := range payloads {
		id := payloadID(strings.TrimPrefix(i.Name, dir))
		if haveManifest[id] {
			continue
		}
		o := Orphan{Name: i.Name, Size: i.Size, ModTime: i.ModTime, Young: now.Sub(i.ModTime) <= age}
		if o.Young {
			rep.Orphans = append(rep.Orphans, o)
			continue
		}
		if dryRun {
			rep.BytesFreed += o.Size
			rep.Orphans = append(rep.Orphans, o)
			continue
		}
		// A backup publishes its manifest right after its payload; look
		// again just before removing, to narrow that window.
		if _, err := b.Stat(ctx, r.ManifestName(id)); err == nil {
			continue
		} else if !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("orphan %s: check for its manifest: %w", i.Name, err)
		}
		if err := b.Remove(ctx, i.Name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("remove orphan %s: %w", i.Name, err)
		}
		o.Removed = true
		rep.BytesFreed += o.Size
		rep.Orphans = append(rep.Orphans, o)
		log.Info("orphan payload removed", "name", i.Name, "bytes", i.Size, "modified", i.ModTime)
	}
	return nil
}

// payloadID returns the backup ID of a payload's base name, or "".
func payloadID(base string) string {
	for _, suffix := range []string{".db.zst.age", ".db.zst"} {
		if id, ok := strings.CutSuffix(base, suffix); ok && format.ValidID(id) {
			return id
		}
	}
	return ""
}

// pruneJournals removes the journal chains whose snapshot is doomed by this
// run (kept[id] false) or was gone already (not in kept) and not damaged (a
// chain is useless without its snapshot), newest object first so that an
// interrupted removal leaves a shorter, still valid chain; and, in kept
// chains, objects older than age that another object makes redundant (the
// pieces a roll-up merged, or two writers' copies of the same revisions:
// chain.Redundant) and framing-1 payloads no manifest names (a writer that
// died between payload and manifest).
func pruneJournals(ctx context.Context, r *repo.Repo, rep *Report, kept, damaged map[string]bool, now time.Time, age time.Duration, dryRun bool, log *slog.Logger) error {
	b := r.Backend()
	st := store.New(r)
	all, err := st.ListAll(ctx, true)
	if err != nil {
		return err
	}
	var chains []string
	for id := range all {
		chains = append(chains, id)
	}
	sort.Strings(chains)
	for _, chainID := range chains {
		if damaged[chainID] {
			continue
		}
		l := all[chainID]
		keep, listed := kept[chainID]
		if !keep {
			if !listed {
				// Gone before this run? Or published after its listing.
				if _, err := b.Stat(ctx, r.ManifestName(chainID)); err == nil {
					continue
				} else if !errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("journal %s: check for its snapshot: %w", chainID, err)
				}
			}
			o := Orphan{Name: st.Dir(chainID)}
			objs := slices.Clone(l.Objects)
			slices.SortFunc(objs, func(x, y chain.Object) int { return cmp.Compare(y.End, x.End) })
			for _, x := range objs {
				o.Size += x.Size
			}
			for _, i := range l.Other {
				o.Size += i.Size
			}
			if !dryRun {
				for _, x := range objs {
					if err := st.Remove(ctx, chainID, x); err != nil {
						return fmt.Errorf("remove journal %s: %w", chainID, err)
					}
				}
				for _, i := range l.Other {
					if err := b.Remove(ctx, i.Name); err != nil && !errors.Is(err, storage.ErrNotFound) {
						return fmt.Errorf("remove journal %s: %w", chainID, err)
					}
				}
				o.Removed = true
				log.Info("journal of a removed backup removed", "chain", chainID, "bytes", o.Size)
			}
			rep.BytesFreed += o.Size
			rep.Journals = append(rep.Journals, o)
			continue
		}
		for _, x := range chain.Redundant(l.Objects) {
			mod := x.ModTime
			if x.Legacy != nil {
				mod = x.Legacy.Finished
			}
			o := Orphan{Name: path.Join(st.Dir(chainID), x.Name), Size: x.Size, ModTime: mod, Young: now.Sub(mod) <= age}
			if !o.Young && !dryRun {
				if err := st.Remove(ctx, chainID, x); err != nil {
					return err
				}
				o.Removed = true
			}
			if !o.Young {
				rep.BytesFreed += o.Size
			}
			rep.Orphans = append(rep.Orphans, o)
		}
		// A damaged framing-1 manifest names a payload prune cannot know:
		// leave every framing-1 payload of such a chain alone.
		damagedManifest := false
		for _, x := range l.Objects {
			if x.Err != nil {
				damagedManifest = true
			}
		}
		for _, i := range l.Other {
			if !strings.Contains(i.Name, ".jrnl.zst") && !strings.Contains(i.Name, chain.Suffix) {
				continue // not a journal payload: leave what this tool did not write
			}
			if damagedManifest && strings.Contains(i.Name, ".jrnl.zst") {
				continue
			}
			o := Orphan{Name: i.Name, Size: i.Size, ModTime: i.ModTime, Young: now.Sub(i.ModTime) <= age}
			if !o.Young && !dryRun {
				if err := b.Remove(ctx, i.Name); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("remove orphan %s: %w", i.Name, err)
				}
				o.Removed = true
			}
			if !o.Young {
				rep.BytesFreed += o.Size
			}
			rep.Orphans = append(rep.Orphans, o)
		}
	}
	return nil
}
