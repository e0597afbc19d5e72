package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"

	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// Target says how far a restore goes.
type Target struct {
	Revision  int64     // --to-revision: exactly this revision
	Time      time.Time // --to-time: the last revision the agent received at or before it
	NoJournal bool      // --no-journal: the snapshot only
}

func (t Target) set() bool { return t.Revision > 0 || !t.Time.IsZero() }

// JournalPlan is the replay part of a restore: the objects of one chain,
// replayed on top of its snapshot up to a revision or a time.
type JournalPlan = store.Plan

// Resolve picks the snapshot, and the journal to replay on it, for ref
// ("latest", "" or an ID) and t:
//   - an explicit ID without a target restores that snapshot alone;
//   - "latest" without a target restores the newest snapshot and replays its
//     whole journal; a chain with a gap is refused rather than cut short;
//   - --to-revision N: the newest snapshot that surely holds no revision past
//     N (its manifest's stream_revision <= N) whose journal reaches N;
//   - --to-time T: the newest snapshot finished at or before T, and its
//     journal up to the last revision received at or before T.
//
// What a chain reaches is learnt from its listing (chain.Cover), one LIST
// per chain looked at. Errors wrap repo.ErrNoBackup (nothing covers the
// target) or format.ErrIntegrity (a gap or a damaged segment in the way).
func Resolve(ctx context.Context, r *repo.Repo, ref string, sel repo.Selector, t Target) (*format.Manifest, *JournalPlan, error) {
	if t.NoJournal && t.set() {
		return nil, nil, specErr("--no-journal cannot be combined with --to-revision or --to-time")
	}
	if t.Revision > 0 && !t.Time.IsZero() {
		return nil, nil, specErr("give --to-revision or --to-time, not both")
	}
	st := store.New(r)
	if ref != "" && ref != "latest" {
		return resolveID(ctx, st, ref, sel, t)
	}
	if t.NoJournal {
		m, err := r.Find(ctx, ref, sel)
		return m, nil, err
	}
	cands, err := candidates(ctx, r, sel)
	if err != nil || len(cands) == 0 {
		m, ferr := r.Find(ctx, ref, sel) // for its error message
		if err == nil && ferr == nil {
			return m, nil, nil
		}
		return nil, nil, cmp.Or(err, ferr)
	}
	switch {
	case t.Revision > 0:
		return resolveRevision(ctx, st, cands, t)
	case !t.Time.IsZero():
		return resolveTime(ctx, st, cands, t)
	}
	return resolveLatest(ctx, st, cands)
}

// candidates are the intact snapshots of sel, newest first.
func candidates(ctx context.Context, r *repo.Repo, sel repo.Selector) ([]*format.Manifest, error) {
	entries, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	var cands []*format.Manifest
	for _, e := range entries {
		if e.Err != nil {
			if sel.OnSkip != nil {
				sel.OnSkip(e.ID, e.Err)
			}
			continue
		}
		if sel.Member == "" || e.M.MemberName == sel.Member {
			cands = append(cands, e.M)
		}
	}
	return cands, nil
}

// resolveID: the snapshot ref names, alone or with its journal to t.
func resolveID(ctx context.Context, st *store.Store, ref string, sel repo.Selector, t Target) (*format.Manifest, *JournalPlan, error) {
	r := st.Repo()
	m, err := r.Find(ctx, ref, sel)
	if err != nil || !t.set() {
		return m, nil, err
	}
	// The next newer snapshot tells --to-time whether the end of m's
	// journal is the state at T.
	var newer *format.Manifest
	if ids, err := r.IDs(ctx); err == nil {
		for i := len(ids) - 1; i >= 0; i-- {
			if ids[i] > m.ID {
				if nm, err := r.ReadManifest(ctx, ids[i]); err == nil {
					newer = nm
					break
				}
			}
		}
	}
	return planFor(ctx, st, m, newer, t)
}

// resolveRevision: the newest snapshot at or before t.Revision whose
// journal reaches it.
func resolveRevision(ctx context.Context, st *store.Store, cands []*format.Manifest, t Target) (*format.Manifest, *JournalPlan, error) {
	var firstErr error
	for i, m := range cands {
		if upper(m) > t.Revision {
			continue
		}
		var newer *format.Manifest
		if i > 0 {
			newer = cands[i-1]
		}
		m, p, err := planFor(ctx, st, m, newer, t)
		if err == nil {
			return m, p, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, repo.ErrNoBackup) {
			return nil, nil, err
		}
	}
	if firstErr != nil {
		return nil, nil, firstErr
	}
	oldest := cands[len(cands)-1]
	return nil, nil, fmt.Errorf("%w: revision %d is older than every backup (the oldest, %s, holds revision %d or later)", repo.ErrNoBackup, t.Revision, oldest.ID, oldest.Revision)
}

// resolveTime: the newest snapshot finished at or before t.Time, or the one
// before it when its chain saw that time as it happened.
func resolveTime(ctx context.Context, st *store.Store, cands []*format.Manifest, t Target) (*format.Manifest, *JournalPlan, error) {
	for i, m := range cands {
		if m.Finished.After(t.Time) {
			continue
		}
		var newer *format.Manifest
		if i > 0 {
			newer = cands[i-1]
		}
		// A chain starts by catching up from its snapshot's revision, and
		// those records carry the time they were caught up, not when they
		// happened. When this chain's first record is after T, the previous
		// chain, which saw those revisions as they happened, is the one to
		// use if it reaches T.
		if i+1 < len(cands) {
			if cov, err := st.Coverage(ctx, m); err == nil && cov.FirstTime.After(t.Time) {
				prev := cands[i+1]
				if pcov, err := st.Coverage(ctx, prev); err == nil && !pcov.LastTime.Before(t.Time) {
					return prev, store.NewPlan(prev, pcov, 0, t.Time), nil
				}
			}
		}
		return planFor(ctx, st, m, newer, t)
	}
	oldest := cands[len(cands)-1]
	return nil, nil, fmt.Errorf("%w: %s is before every backup (the oldest, %s, finished at %s)", repo.ErrNoBackup,
		t.Time.UTC().Format(time.RFC3339), oldest.ID, oldest.Finished.UTC().Format(time.RFC3339))
}

// resolveLatest: the newest snapshot and its whole journal. Right after a
// new snapshot its chain may still be empty while the previous chain
// already reaches further: then the previous one is taken.
func resolveLatest(ctx context.Context, st *store.Store, cands []*format.Manifest) (*format.Manifest, *JournalPlan, error) {
	newest := cands[0]
	cov, err := st.Coverage(ctx, newest)
	if err != nil {
		return nil, nil, err
	}
	if len(cands) > 1 && len(cov.Objects) == 0 {
		prev := cands[1]
		pcov, err := st.Coverage(ctx, prev)
		if err == nil && pcov.Break == nil && pcov.End > upper(newest) {
			return prev, store.NewPlan(prev, pcov, 0, time.Time{}), nil
		}
	}
	if cov.Break != nil {
		return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to revision %d: restore --to-revision %d, or the snapshot alone with --no-journal",
			cov.Break, newest.ID, cov.End, cov.End)
	}
	if len(cov.Objects) == 0 {
		return newest, nil, nil
	}
	return newest, store.NewPlan(newest, cov, 0, time.Time{}), nil
}

// upper is a revision the snapshot of m surely does not exceed.
func upper(m *format.Manifest) int64 {
	if m.StreamRevision > 0 {
		return m.StreamRevision
	}
	return m.Revision
}

// planFor plans replaying m's chain to t. newer is the next newer snapshot,
// if any (for --to-time: whether the chain's end means "nothing changed").
func planFor(ctx context.Context, st *store.Store, m, newer *format.Manifest, t Target) (*format.Manifest, *JournalPlan, error) {
	cov, err := st.Coverage(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	if t.Revision > 0 {
		if upper(m) > t.Revision {
			return nil, nil, fmt.Errorf("%w: backup %s may hold revisions up to %d, after %d: choose an older backup or 'latest'", repo.ErrNoBackup, m.ID, upper(m), t.Revision)
		}
		if cov.End >= t.Revision {
			return m, store.NewPlan(m, cov, t.Revision, time.Time{}), nil
		}
		if cov.Break != nil {
			return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to revision %d, so revision %d cannot be restored exactly",
				cov.Break, m.ID, cov.End, t.Revision)
		}
		return nil, nil, fmt.Errorf("%w: the journal of backup %s ends at revision %d, before %d (see 'etcd-backup list' for what each chain covers)",
			repo.ErrNoBackup, m.ID, cov.End, t.Revision)
	}
	// --to-time.
	if !cov.LastTime.IsZero() && !cov.LastTime.Before(t.Time) {
		return m, store.NewPlan(m, cov, 0, t.Time), nil
	}
	// The journal ends before T. That is the state at T when nothing changed
	// after its end: no newer snapshot exists (the agent saw no change since),
	// or the newer snapshot starts at or before the journal's end.
	if cov.Break != nil {
		return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to %s (revision %d): restore --to-time %s or earlier",
			cov.Break, m.ID, fmtTime(cov.LastTime), cov.End, fmtTime(cov.LastTime))
	}
	if newer != nil && !newer.Finished.After(t.Time) {
		return nil, nil, fmt.Errorf("%w: %s is after the next backup %s (finished at %s): restore it, or give no backup ID, to reach that time",
			repo.ErrNoBackup, fmtTime(t.Time), newer.ID, fmtTime(newer.Finished))
	}
	if newer == nil {
		p := store.NewPlan(m, cov, 0, t.Time)
		p.Note = fmt.Sprintf("the journal's last record was received at %s (revision %d); this is the state then. If the agent was not journaling after that, later changes are not in the repository",
			fmtTime(cov.LastTime), cov.End)
		return m, p, nil
	}
	if newer.Revision <= cov.End {
		return m, store.NewPlan(m, cov, 0, t.Time), nil
	}
	return nil, nil, fmt.Errorf("%w: no journal covers %s: the journal of backup %s ends at %s (revision %d) and the next backup %s finished at %s; restore --to-time %s, or that backup",
		repo.ErrNoBackup, fmtTime(t.Time), m.ID, fmtTime(cov.LastTime), cov.End, newer.ID, fmtTime(newer.Finished), fmtTime(cov.LastTime))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "its start"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Chain returns the plan that replays all of m's unbroken journal (nil when
// m has none) and the break after it, if any.
func Chain(ctx context.Context, r *repo.Repo, m *format.Manifest) (*JournalPlan, error) {
	cov, err := store.New(r).Coverage(ctx, m)
	if err != nil {
		return nil, err
	}
	var p *JournalPlan
	if len(cov.Objects) > 0 {
		p = store.NewPlan(m, cov, 0, time.Time{})
	}
	return p, cov.Break
}

// ReadJournal reads every record of p's objects in order, with every check
// of docs/format.md, and calls fn with each. An error from fn stops it.
func ReadJournal(ctx context.Context, r *repo.Repo, p *JournalPlan, ids []age.Identity, fn func(*codec.Record) error) error {
	return store.New(r).Read(ctx, p, ids, store.Prefetch{}, fn)
}
