package drill

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

// TempPrefix starts the name of every drill's temporary directory.
const TempPrefix = "etcd-backup-drill-"

// Report is what a drill found. When Run returns an integrity error,
// Problems says what differed and the other fields hold what was measured.
type Report struct {
	ID       string
	Keys     int64 // keys read back from the restored member
	Bytes    int64 // bytes of those keys and values
	Revision int64 // revision of the restored key space (the reads were at it)
	// SnapshotKeys is the key count of etcd's snapshot status reader
	// (etcdutl snapshot status) on the fetched snapshot.
	SnapshotKeys int64
	// HashRecorded: the manifest has hash_kv. HashMatched: the restored
	// member's HashKV at RecordedHash's revision equals it.
	HashRecorded bool
	HashMatched  bool
	RecordedHash format.HashKV // from the manifest (zero when not recorded)
	Hash         uint32        // the restored member's HashKV at RecordedHash.Revision
	// CompactRevision is the restored member's compaction revision when it
	// hashed; Compacted: the drill compacted it to the recorded one first
	// (a compaction landed between the snapshot and the hash).
	CompactRevision int64
	Compacted       bool
	// Note tells what the drill adapted, e.g. a backup of a newer etcd of
	// the same storage schema drilled on the in-process etcd.
	Note     string
	Problems []string
	Fetched  time.Duration // time to fetch and check the payload
	Duration time.Duration // whole drill
}

// OK reports whether nothing differed.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// HashStatus tells the hash outcome in a few words.
func (r Report) HashStatus() string {
	switch {
	case !r.HashRecorded:
		return "etcd hash not recorded in this backup"
	case r.HashMatched && r.Compacted:
		return fmt.Sprintf("etcd hash at revision %d matches (%08x, after compacting at %d as the source was)", r.RecordedHash.Revision, r.Hash, r.RecordedHash.CompactRevision)
	case r.HashMatched:
		return fmt.Sprintf("etcd hash at revision %d matches (%08x)", r.RecordedHash.Revision, r.Hash)
	default:
		return fmt.Sprintf("etcd hash at revision %d does NOT match", r.RecordedHash.Revision)
	}
}

// Options for RunWith.
type Options struct {
	Identities []age.Identity
	Logger     *slog.Logger
	// Progress, when set, is called with the raw bytes fetched so far.
	Progress func(raw int64)
	// TempDir holds the drill's temporary directory; "" means os.TempDir()
	// ($TMPDIR). It needs about twice the backup's raw_size free.
	TempDir string
}

// Run drills backup m of r. On a mismatch it returns the report and an error
// wrapping format.ErrIntegrity that names every difference; other errors
// (disk, ports, a member that does not start) are returned as they are.
func Run(ctx context.Context, r *repo.Repo, m *format.Manifest, identities []age.Identity, logger *slog.Logger) (Report, error) {
	return RunWith(ctx, r, m, Options{Identities: identities, Logger: logger})
}

// RunWith is Run with every option.
func RunWith(ctx context.Context, r *repo.Repo, m *format.Manifest, opt Options) (rep Report, err error) {
	start := time.Now()
	rep.ID = m.ID
	defer func() { rep.Duration = time.Since(start) }()
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m.Encrypted() && len(opt.Identities) == 0 {
		return rep, fmt.Errorf("%w: backup %s is encrypted: pass --identity FILE", format.ErrKey, m.ID)
	}
	base := opt.TempDir
	if base == "" {
		base = os.TempDir()
	}
	removeStale(base, log)
	dir, release, err := makeTempDir(base)
	if err != nil {
		return rep, err
	}
	defer func() {
		release()
		if rerr := os.RemoveAll(dir); rerr != nil {
			log.Warn("could not remove the drill's temporary directory", "dir", dir, "error", rerr)
		}
	}()

	// 1. Fetch: every check of docs/format.md, while streaming to disk.
	snap := filepath.Join(dir, "snapshot.db")
	log.Info("drill: fetching backup", "id", m.ID, "bytes", m.RawSize, "dir", dir)
	if err := fetch(ctx, r, m, opt, snap); err != nil {
		return rep, err
	}
	rep.Fetched = time.Since(start)
	info, err := datadir.Inspect(snap)
	if err != nil {
		return rep, fmt.Errorf("%w: backup %s: %v", format.ErrIntegrity, m.ID, err)
	}
	rep.SnapshotKeys = int64(info.TotalKeys)

	// 2. Restore with etcd's own tool and start a one-member cluster on it.
	cl, err := startRestored(ctx, dir, snap, log, &rep)
	if err != nil {
		return rep, fmt.Errorf("drill of backup %s: %w", m.ID, err)
	}
	defer cl.Close()
	os.Remove(snap) // the member has its own copy; halve the disk used
	ep := cl.Endpoints()[0]
	cli, err := etcd.Connect(etcd.Config{Endpoints: []string{ep}, CommandTimeout: time.Minute})
	if err != nil {
		return rep, fmt.Errorf("drill of backup %s: %w", m.ID, err)
	}
	defer cli.Close()

	// 3. Read every key at the restored revision.
	log.Info("drill: reading every key", "id", m.ID, "endpoint", ep, "revision", info.Revision)
	if err := readAll(ctx, cli, info.Revision, &rep); err != nil {
		return rep, fmt.Errorf("drill of backup %s: read keys: %w", m.ID, err)
	}
	if rep.Keys != rep.SnapshotKeys {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the restored member serves %d keys, etcd's snapshot reader counts %d", rep.Keys, rep.SnapshotKeys))
	}
	if rep.Revision < m.Revision {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the restored key space ends at revision %d, but the manifest says every write up to revision %d is in it", rep.Revision, m.Revision))
	}

	// 4. etcd's hash.
	if m.HashKV != nil {
		if err := compareHash(ctx, cli, ep, *m.HashKV, &rep); err != nil {
			return rep, fmt.Errorf("drill of backup %s: %w", m.ID, err)
		}
	}
	if !rep.OK() {
		return rep, fmt.Errorf("%w: restore drill of backup %s: %s", format.ErrIntegrity, m.ID, strings.Join(rep.Problems, "; "))
	}
	log.Info("drill passed", "id", m.ID, "keys", rep.Keys, "bytes", rep.Bytes, "revision", rep.Revision,
		"hash", rep.HashStatus(), "seconds", time.Since(start).Seconds())
	return rep, nil
}

func fetch(ctx context.Context, r *repo.Repo, m *format.Manifest, opt Options, path string) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", path, cerr)
		}
	}()
	return restore.Fetch(ctx, r, m, opt.Identities, f, opt.Progress)
}

// startRestored builds a data dir from snap for a one-member cluster on
// fresh loopback ports and starts it. A port taken between choosing and
// binding it gets new ports (and a new data dir: the peer URL is in it).
func startRestored(ctx context.Context, dir, snap string, log *slog.Logger, rep *Report) (*embedded.Cluster, error) {
	for attempt := 1; ; attempt++ {
		sub := filepath.Join(dir, fmt.Sprintf("try%d", attempt))
		if err := os.Mkdir(sub, 0o700); err != nil {
			return nil, err
		}
		specs, err := embedded.NewSpecs(sub, "drill", 1)
		if err != nil {
			return nil, err
		}
		s := specs[0]
		err = datadir.Build(snap, s.DataDir, datadir.Member{
			Name: s.Name, InitialCluster: embedded.InitialCluster(specs), PeerURLs: []string{s.PeerURL}, Token: "etcd-backup-drill",
		})
		if err != nil {
			return nil, err
		}
		if rep.Note, err = fitVersions(s.DataDir); err != nil {
			return nil, err
		}
		if rep.Note != "" {
			log.Info("drill: backup of a newer etcd", "note", rep.Note)
		}
		log.Info("drill: starting a one-member etcd on the restored data", "client_url", s.ClientURL)
		cl, err := embedded.Start(ctx, specs, "")
		if err == nil {
			return cl, nil
		}
		if attempt >= 3 || !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		log.Debug("drill: port taken, retrying with new ports", "error", err)
		os.RemoveAll(sub)
	}
}

// readAll reads every key at revision rev in pages and fills Keys, Bytes and
// Revision. A revision compacted in the snapshot itself (the newest writes
// were deletions a compaction removed) is read at the member's current one.
func readAll(ctx context.Context, cli *etcd.Client, rev int64, rep *Report) error {
	const (
		minPage, maxPage = 16, 8192
		small, large     = 2 << 20, 8 << 20 // page bytes to grow or shrink the page at
	)
	limit := int64(1000)
	key := "\x00"
	rep.Keys, rep.Bytes = 0, 0
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		resp, err := cli.Get(rctx, key, clientv3.WithFromKey(), clientv3.WithLimit(limit), clientv3.WithRev(rev), clientv3.WithSerializable())
		cancel()
		if errors.Is(err, rpctypes.ErrCompacted) && rep.Keys == 0 && rev != 0 {
			rev = 0
			continue
		}
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		var page int64
		for _, kv := range resp.Kvs {
			page += int64(len(kv.Key) + len(kv.Value))
		}
		rep.Keys += int64(len(resp.Kvs))
		rep.Bytes += page
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		switch {
		case page > large && limit > minPage:
			limit /= 2
		case page < small && limit < maxPage:
			limit *= 2
		}
	}
	rep.Revision = rev
	return nil
}

// compareHash asks the restored member for HashKV at the recorded revision,
// compacting it first to the recorded compaction revision when the snapshot
// was compacted less far, and records the outcome in rep.
func compareHash(ctx context.Context, cli *etcd.Client, ep string, want format.HashKV, rep *Report) error {
	rep.HashRecorded, rep.RecordedHash = true, want
	h, err := cli.HashKV(ctx, ep, want.Revision)
	if err == nil && h.CompactRevision < want.CompactRevision {
		// A compaction landed between the snapshot and the source's hash.
		// The hash depends on the compaction revision, not on whether the
		// compaction was carried out: compact the throwaway member likewise.
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, cerr := cli.Compact(cctx, want.CompactRevision)
		cancel()
		if cerr != nil {
			return fmt.Errorf("compact the restored member at %d as the source was: %w", want.CompactRevision, cerr)
		}
		rep.Compacted = true
		h, err = cli.HashKV(ctx, ep, want.Revision)
	}
	switch {
	case errors.Is(err, etcd.ErrHashFutureRevision):
		rep.Problems = append(rep.Problems, fmt.Sprintf("the recorded etcd hash is at revision %d, beyond the restored key space (revision %d)", want.Revision, rep.Revision))
		return nil
	case errors.Is(err, etcd.ErrHashCompacted):
		rep.Problems = append(rep.Problems, fmt.Sprintf("the restored key space is compacted past the recorded etcd hash's revision %d", want.Revision))
		return nil
	case err != nil:
		return err
	}
	rep.Hash, rep.CompactRevision = h.Hash, h.CompactRevision
	switch {
	case h.CompactRevision > want.CompactRevision:
		rep.Problems = append(rep.Problems, fmt.Sprintf("the restored key space is compacted at revision %d, beyond the compaction the recorded etcd hash saw (%d)", h.CompactRevision, want.CompactRevision))
	case h.Hash != want.Hash:
		compacted := fmt.Sprintf("compaction revision %d", want.CompactRevision)
		if want.CompactRevision <= 0 {
			compacted = "never compacted"
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("etcd's hash of the restored key space at revision %d is %08x, the backup recorded %08x (%s)", want.Revision, h.Hash, want.Hash, compacted))
	default:
		rep.HashMatched = true
	}
	return nil
}

// makeTempDir creates the drill's directory and holds an flock on its lock
// file until release, so a concurrent drill's removeStale leaves it alone.
func makeTempDir(base string) (dir string, release func(), err error) {
	dir, err = os.MkdirTemp(base, TempPrefix)
	if err != nil {
		return "", nil, fmt.Errorf("drill: create a temporary directory in %s (set TMPDIR to a directory with room for twice the snapshot): %w", base, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("drill: lock %s: %w", dir, err)
	}
	return dir, func() { lf.Close() }, nil
}

// removeStale removes the directories of drills that died without cleaning
// up (SIGKILL, OOM): those whose lock nobody holds, and lock-less ones older
// than an hour (a drill between creating its directory and its lock file is
// young).
func removeStale(base string, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(base, TempPrefix+"*"))
	for _, d := range dirs {
		st, err := os.Lstat(d)
		if err != nil || !st.IsDir() {
			continue
		}
		lf, err := os.OpenFile(filepath.Join(d, ".lock"), os.O_RDWR, 0)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if time.Since(st.ModTime()) < time.Hour {
				continue
			}
		case err != nil:
			continue
		default:
			lerr := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			lf.Close()
			if lerr != nil {
				continue // a running drill
			}
		}
		if err := os.RemoveAll(d); err == nil {
			log.Info("drill: removed the directory of an interrupted drill", "dir", d)
		}
	}
}
