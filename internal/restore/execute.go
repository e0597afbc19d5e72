package restore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/replay"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// Fetch streams the payload of m from r through every check of
// docs/format.md into w. It returns only when all checks passed; on error
// the bytes in w must not be used.
func Fetch(ctx context.Context, r *repo.Repo, m *format.Manifest, ids []age.Identity, w io.Writer, progress func(int64)) error {
	rc, err := r.OpenPayload(ctx, m)
	if err != nil {
		return err
	}
	defer rc.Close()
	d, err := format.NewDecoder(rc, m, ids)
	if err != nil {
		return err
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	var done int64
	for {
		n, err := d.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write snapshot: %w", werr)
			}
			done += int64(n)
			if progress != nil {
				progress(done)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// Result tells what Execute did.
type Result struct {
	DataDir    string
	MovedAside string
	Revision   int64 // revision of the restored keyspace (after any bump)
	Keys       int
	// SnapshotRevision is the snapshot's own revision; with a journal,
	// Replayed counts the revisions and events replayed on top of it.
	SnapshotRevision int64
	Replayed         replay.Result
}

// Options for Execute.
type Options struct {
	Identities []age.Identity
	Logger     *slog.Logger
	Progress   func(raw int64)
	Now        func() time.Time
	// Journal, when set, is replayed on the snapshot before the data dir is
	// built (see Resolve).
	Journal *JournalPlan
}

// Execute restores backup m as plan p. Order: check the data dir is not in
// use; fetch and verify the whole backup into a staging dir beside the data
// dir; build the new data dir there with etcd's restore; only then move any
// existing data dir aside and rename the new one into place. Any failure
// before the final step leaves the data dir exactly as it was.
func Execute(ctx context.Context, r *repo.Repo, m *format.Manifest, p *Plan, opt Options) (Result, error) {
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	res := Result{DataDir: p.DataDir}
	if err := datadir.CheckNotInUse(p.DataDir); err != nil {
		return res, err
	}
	if m.Encrypted() && len(opt.Identities) == 0 {
		return res, fmt.Errorf("%w: backup %s is encrypted: pass --identity FILE", format.ErrKey, m.ID)
	}
	staging, err := datadir.StagingDir(p.DataDir, now())
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(staging)
	prep, err := Prepare(ctx, r, m, staging, opt)
	if err != nil {
		return res, err
	}
	return Install(prep, p, staging, opt)
}

// Prepared is a backup fetched, checked and (with a journal) replayed into
// one database file, ready for etcd's restore.
type Prepared struct {
	Path string
	Info datadir.SnapshotInfo
	// Bare: the file is a database without etcd's sha256 trailer (a
	// replayed one); otherwise it is the snapshot stream etcd sent.
	Bare             bool
	SnapshotRevision int64
	Replayed         replay.Result
}

// Prepare fetches and verifies backup m into dir/snapshot.db and replays
// opt.Journal on it, if set. Every byte is checked before it returns.
func Prepare(ctx context.Context, r *repo.Repo, m *format.Manifest, dir string, opt Options) (Prepared, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	snapFile := filepath.Join(dir, "snapshot.db")
	prep := Prepared{Path: snapFile}
	log.Info("fetching backup", "id", m.ID, "member", m.MemberName, "revision", m.Revision, "bytes", m.RawSize)
	if err := fetchToFile(ctx, r, m, opt.Identities, snapFile, opt.Progress); err != nil {
		return prep, err
	}
	info, err := datadir.Inspect(snapFile)
	if err != nil {
		return prep, fmt.Errorf("%w: %v", format.ErrIntegrity, err)
	}
	prep.Info, prep.SnapshotRevision = info, info.Revision
	j := opt.Journal
	if j == nil {
		return prep, nil
	}
	if err := truncateTrailer(snapFile); err != nil {
		return prep, err
	}
	to := "its end"
	if j.ToRevision > 0 {
		to = fmt.Sprintf("revision %d", j.ToRevision)
	} else if !j.ToTime.IsZero() {
		to = j.ToTime.UTC().Format(time.RFC3339Nano)
	}
	log.Info("replaying journal", "chain", j.Chain, "from_revision", info.Revision+1, "to", to, "objects", len(j.Objects))
	src := store.New(r).Open(ctx, j, opt.Identities, store.Prefetch{})
	rr, err := replay.Apply(snapFile, src, replay.Options{ToRevision: j.ToRevision, Logger: log})
	src.Close()
	if err != nil {
		return prep, fmt.Errorf("replay journal of %s: %w", j.Chain, err)
	}
	prep.Replayed, prep.SnapshotRevision, prep.Bare = rr, rr.SnapshotRevision, true
	if prep.Info, err = datadir.Inspect(snapFile); err != nil {
		return prep, fmt.Errorf("%w: replayed database: %v", format.ErrIntegrity, err)
	}
	return prep, nil
}

// Install builds plan p's data dir from a prepared database with etcd's
// restore, in staging, then moves any existing data dir aside and renames
// the new one into place.
func Install(prep Prepared, p *Plan, staging string, opt Options) (Result, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	res := Result{DataDir: p.DataDir, SnapshotRevision: prep.SnapshotRevision, Replayed: prep.Replayed}
	built := filepath.Join(staging, "data")
	log.Info("building data dir", "name", p.Name, "initial_cluster", p.InitialCluster)
	err := datadir.Build(prep.Path, built, datadir.Member{
		Name: p.Name, InitialCluster: p.InitialCluster, PeerURLs: p.PeerURLs, Token: p.Token,
		RevisionBump: p.RevisionBump, MarkCompacted: p.MarkCompacted, SkipHashCheck: prep.Bare,
	})
	if err != nil {
		return res, err
	}
	os.Remove(prep.Path)
	ir, err := datadir.Install(built, p.DataDir, now())
	res.MovedAside = ir.MovedAside
	if err != nil {
		return res, err
	}
	res.Revision = prep.Info.Revision + int64(p.RevisionBump)
	res.Keys = prep.Info.TotalKeys
	return res, nil
}

// truncateTrailer drops etcd's sha256 trailer from a checked snapshot file,
// leaving the bare database for replay.
func truncateTrailer(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() < format.EtcdTrailerSize {
		return fmt.Errorf("%w: snapshot shorter than its trailer", format.ErrIntegrity)
	}
	return os.Truncate(path, st.Size()-format.EtcdTrailerSize)
}

func fetchToFile(ctx context.Context, r *repo.Repo, m *format.Manifest, ids []age.Identity, path string, progress func(int64)) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", path, cerr)
		}
	}()
	// No fsync: this file is a scratch copy that etcd's restore reads once
	// and that is removed afterwards; the data dir etcd's restore writes is
	// fsynced.
	return Fetch(ctx, r, m, ids, f, progress)
}
