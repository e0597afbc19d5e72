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
	"github.com/etcd-backup/etcd-backup/internal/fsutil"
	"github.com/etcd-backup/etcd-backup/internal/iopipe"
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
	_, err = Decode(ctx, rc, m, ids, w, progress)
	return err
}

// Decode streams the stored payload rc, described by m, through every check
// of docs/format.md into w and returns the raw bytes written. The stored
// bytes are read (and hashed) ahead of decompression on their own
// goroutine, so a download overlaps decoding. It returns only when all
// checks passed; on error the bytes in w must not be used.
func Decode(ctx context.Context, rc io.Reader, m *format.Manifest, ids []age.Identity, w io.Writer, progress func(int64)) (int64, error) {
	d, err := format.NewDecoderWith(rc, m, ids, format.DecoderOptions{ReadAhead: readAhead})
	if err != nil {
		return 0, err
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	var done int64
	for {
		n, err := d.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return done, fmt.Errorf("write snapshot: %w", werr)
			}
			done += int64(n)
			if progress != nil {
				progress(done)
			}
		}
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return done, ctx.Err()
			}
			return done, err
		}
	}
}

// readAhead is how many MiB of a stored payload are read ahead of decoding.
const readAhead = 8

// FetchInto streams the payload of snapshot backup m from r through every
// check straight into the database file of the new data dir dataDir
// (datadir.CreateDB), and drops etcd's sha256 trailer once it matched: one
// pass, the database written once, where etcd will read it. On error the
// caller removes dataDir.
func FetchInto(ctx context.Context, r *repo.Repo, m *format.Manifest, ids []age.Identity, dataDir string, progress func(int64)) error {
	rc, err := r.OpenPayload(ctx, m)
	if err != nil {
		return err
	}
	defer rc.Close()
	return DecodeInto(ctx, rc, m, ids, dataDir, progress)
}

// DecodeInto is FetchInto of a stored payload already open.
func DecodeInto(ctx context.Context, rc io.Reader, m *format.Manifest, ids []age.Identity, dataDir string, progress func(int64)) (err error) {
	f, err := datadir.CreateDB(dataDir)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", f.Name(), cerr)
		}
	}()
	// Disk writes run behind decoding, and the kernel writes each 16 MiB
	// to disk as soon as it is written; no fsync here: etcd's backend
	// commits (fdatasync) the file when Finish opens and closes it.
	wb := iopipe.WriteBehind(fsutil.NewWriteback(f, 16<<20), 2, 1<<20)
	n, err := Decode(ctx, rc, m, ids, wb, progress)
	if cerr := wb.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write snapshot: %w", cerr)
	}
	if err != nil {
		return err
	}
	// Every byte matched, etcd's trailer included: drop the trailer.
	if n < format.EtcdTrailerSize {
		return fmt.Errorf("%w: snapshot shorter than its trailer", format.ErrIntegrity)
	}
	if err := f.Truncate(n - format.EtcdTrailerSize); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// Result tells what Execute did.
type Result struct {
	DataDir    string
	MovedAside string
	Revision   int64 // revision of the restored keyspace (after any bump)
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
// use; fetch and verify the whole backup straight into the database file of
// a new data dir in a staging dir beside the data dir (and replay the
// journal on it); finish the new data dir with etcd's restore steps; only
// then move any existing data dir aside and rename the new one into place.
// Any failure before the final step leaves the data dir exactly as it was.
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
	prep, err := Prepare(ctx, r, m, filepath.Join(staging, "data"), opt)
	if err != nil {
		return res, err
	}
	return Install(prep, p, opt)
}

// Prepared is a new data dir whose database holds a backup fetched,
// checked and (with a journal) replayed, ready for etcd's restore steps.
type Prepared struct {
	// Dir is the new data dir; datadir.DBPath(Dir) is the database, bare
	// (without etcd's sha256 trailer), and the only file in it.
	Dir string
	// SnapshotRevision is the snapshot's revision, when a journal was
	// replayed on it (Replayed says how far); 0 otherwise (Install reads
	// the revision).
	SnapshotRevision int64
	Replayed         replay.Result
}

// Prepare fetches and verifies backup m straight into the database of the
// new data dir dir (which must not exist) and replays opt.Journal on it, if
// set. Every byte is checked before it returns.
func Prepare(ctx context.Context, r *repo.Repo, m *format.Manifest, dir string, opt Options) (Prepared, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prep := Prepared{Dir: dir}
	log.Info("fetching backup", "id", m.ID, "member", m.MemberName, "revision", m.Revision, "bytes", m.RawSize)
	if err := FetchInto(ctx, r, m, opt.Identities, dir, opt.Progress); err != nil {
		return prep, err
	}
	j := opt.Journal
	if j == nil {
		return prep, nil
	}
	to := "its end"
	if j.ToRevision > 0 {
		to = fmt.Sprintf("revision %d", j.ToRevision)
	} else if !j.ToTime.IsZero() {
		to = j.ToTime.UTC().Format(time.RFC3339Nano)
	}
	log.Info("replaying journal", "chain", j.Chain, "to", to, "objects", len(j.Objects))
	src := store.New(r).Open(ctx, j, opt.Identities, store.Prefetch{})
	rr, err := replay.Apply(datadir.DBPath(dir), src, replay.Options{ToRevision: j.ToRevision, Logger: log})
	src.Close()
	if err != nil {
		return prep, fmt.Errorf("replay journal of %s: %w", j.Chain, err)
	}
	prep.Replayed, prep.SnapshotRevision = rr, rr.SnapshotRevision
	return prep, nil
}

// Install finishes the prepared data dir for plan p's member with etcd's
// restore steps (datadir.Finish), then moves any existing data dir aside
// and renames the new one into place.
func Install(prep Prepared, p *Plan, opt Options) (Result, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	res := Result{DataDir: p.DataDir, SnapshotRevision: prep.SnapshotRevision, Replayed: prep.Replayed}
	log.Info("building data dir", "name", p.Name, "initial_cluster", p.InitialCluster)
	rev, err := datadir.Finish(prep.Dir, datadir.Member{
		Name: p.Name, InitialCluster: p.InitialCluster, PeerURLs: p.PeerURLs, Token: p.Token,
		RevisionBump: p.RevisionBump, MarkCompacted: p.MarkCompacted,
	})
	if err != nil {
		return res, fmt.Errorf("etcd restore into %s: %w", prep.Dir, err)
	}
	res.Revision = rev
	if res.SnapshotRevision == 0 {
		res.SnapshotRevision = rev
		if p.MarkCompacted {
			res.SnapshotRevision -= int64(p.RevisionBump)
		}
	}
	ir, err := datadir.Install(prep.Dir, p.DataDir, now())
	res.MovedAside = ir.MovedAside
	return res, err
}
