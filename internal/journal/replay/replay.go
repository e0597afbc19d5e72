package replay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
)

// ErrNotCovered: the requested revision is outside what the snapshot and
// the journal can restore (before the snapshot, or after the journal's end).
var ErrNotCovered = errors.New("revision not covered by the journal")

// Source yields journal records in revision order; Next returns io.EOF
// after the last one.
type Source interface {
	Next() (*codec.Record, error)
}

// Options tune Apply.
type Options struct {
	// ToRevision stops replay after this revision; 0 applies every record.
	ToRevision int64
	// Logger receives progress and etcd's own warnings; nil discards them.
	Logger *slog.Logger
}

// Result tells what Apply did.
type Result struct {
	SnapshotRevision int64 // the database's revision before replay
	Revision         int64 // the database's revision after replay
	// Records and Events count what was applied; records at or below
	// SnapshotRevision are skipped and not counted.
	Records, Events int
	LeasesGranted   int // leases created with their original ID
	LeasesRemoved   int // leases removed by the rule in the package doc
}

// Backend batching. etcd commits its bbolt transaction every 100ms or 10k
// writes so that readers see data soon and a crash loses little. Replay has
// no readers and a crash discards the file: it skips fsync (the file is
// synced once at the end) and commits every batchLimit writes (the timer
// rarely fires first), which bounds the memory the uncommitted batch holds (values are buffered twice:
// bbolt's dirty pages and the backend's read buffer). Other limits (2k,
// 50k, 100k, 1M writes) were not measurably faster: replay time goes to
// etcd's mvcc put path (its key index, the backend's buffers), to writing
// the pages out (bbolt writes each page with its own pwrite), and the
// garbage collector; the pages are written once whatever the batch.
const (
	batchInterval = 10 * time.Second
	batchLimit    = 10000
)

// leaseCommitEvery is how many lease grants Apply lets the backend buffer
// (see grant).
const leaseCommitEvery = 64

// traceRecords is how many records share one trace (see apply).
const traceRecords = 1024

// progressEvery is how often Apply logs its progress.
const progressEvery = 5 * time.Second

// Apply replays src onto the bbolt database at dbPath (a plain etcd db
// file, no sha256 trailer) in place. See the package doc for the rules.
func Apply(dbPath string, src Source, opt Options) (res Result, err error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkDB(dbPath); err != nil {
		return res, err
	}

	r := &replayer{
		log:     log,
		ttls:    make(map[int64]int64),
		touched: make(map[lease.LeaseID]struct{}),
	}
	// etcd's storage code reports broken invariants by panicking or by
	// zap's Fatal (made to panic here, see newZapLogger) instead of
	// exiting the process. A panic leaves locks held: the backend is not
	// closed and the file must be discarded.
	defer func() {
		if p := recover(); p != nil {
			res = r.res
			err = fmt.Errorf("replay onto %s: etcd storage failed: %v (the database must be discarded)", dbPath, p)
		}
	}()

	t0 := time.Now()
	r.open(dbPath)
	t1 := time.Now()
	err = r.run(src, opt.ToRevision)
	t2 := time.Now()
	if cerr := r.close(dbPath); cerr != nil && err == nil {
		err = cerr
	}
	if err == nil {
		t3 := time.Now()
		log.Info("journal replayed",
			"snapshot_revision", r.res.SnapshotRevision, "revision", r.res.Revision,
			"records", r.res.Records, "events", r.res.Events,
			"leases_granted", r.res.LeasesGranted, "leases_removed", r.res.LeasesRemoved,
			"open", t1.Sub(t0).Round(time.Millisecond), "replay", t2.Sub(t1).Round(time.Millisecond),
			"commit", t3.Sub(t2).Round(time.Millisecond), "events_per_s", rate(r.res.Events, t3.Sub(t0)),
			"revisions_per_s", rate(r.res.Records, t3.Sub(t0)))
	}
	return r.res, err
}

// checkDB fails early and clearly for a missing, locked or non-etcd file
// (bbolt would create a missing file, wait forever for a lock, and etcd's
// backend panics on a file bbolt cannot open).
func checkDB(dbPath string) error {
	st, err := os.Stat(dbPath)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		return fmt.Errorf("replay: %s is not an etcd database file", dbPath)
	}
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("replay: open %s: %w", dbPath, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for _, b := range []backend.Bucket{schema.Key, schema.Meta} {
			if tx.Bucket(b.Name()) == nil {
				return fmt.Errorf("replay: %s is not an etcd database (no %q bucket)", dbPath, b.Name())
			}
		}
		return nil
	})
}

type replayer struct {
	log *slog.Logger
	be  backend.Backend
	le  lease.Lessor
	kv  mvcc.KV

	// ttls holds the TTL of every lease the source described so far.
	ttls map[int64]int64
	// touched holds the leases that lost a key to a DELETE.
	touched map[lease.LeaseID]struct{}

	// trace is given to every write transaction; a new one every
	// traceRecords records bounds its steps (one a record).
	trace  *traceutil.Trace
	traced int

	res          Result
	start        time.Time
	lastProgress time.Time
}

// open wires backend, lessor and mvcc store as etcdserver does
// (server/etcdserver/server.go), minus raft, hooks and watchers.
func (r *replayer) open(dbPath string) {
	zl := newZapLogger(r.log)
	r.be = backend.New(backend.BackendConfig{
		Path:          dbPath,
		BatchInterval: batchInterval,
		BatchLimit:    batchLimit,
		MmapSize:      backend.InitialMmapSize,
		Logger:        zl,
		UnsafeNoFsync: true,
	})
	// MinLeaseTTL 0: keep the TTLs as recorded (a restored etcd raises
	// them to its own minimum in memory). CheckpointPersist keeps the
	// lessor from asking for a cluster version, of which there is none.
	r.le = lease.NewLessor(zl, r.be, nil, lease.LessorConfig{CheckpointPersist: true})
	// NewStore sets itself as the lessor's range deleter and attaches
	// every leased key of the database to its lease.
	r.kv = mvcc.NewStore(zl, r.be, r.le, mvcc.StoreConfig{})
	r.res.SnapshotRevision = r.rev()
	r.res.Revision = r.res.SnapshotRevision
	r.start = time.Now()
	r.lastProgress = r.start
}

// close stops the store and the lessor, commits and closes the backend, and
// syncs the file (written without fsync).
func (r *replayer) close(dbPath string) error {
	r.kv.Close()
	r.le.Stop()
	r.be.ForceCommit()
	if err := r.be.Close(); err != nil {
		return fmt.Errorf("replay: close database: %w", err)
	}
	f, err := os.OpenFile(dbPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("replay: sync database: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("replay: sync database: %w", err)
	}
	return f.Close()
}

func (r *replayer) run(src Source, to int64) error {
	if to > 0 && to < r.res.SnapshotRevision {
		return fmt.Errorf("%w: revision %d is before the snapshot's revision %d", ErrNotCovered, to, r.res.SnapshotRevision)
	}
	for to <= 0 || r.res.Revision < to {
		rec, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("replay: read journal after revision %d: %w", r.res.Revision, err)
		}
		if rec == nil {
			return fmt.Errorf("replay: %w: journal returned no record after revision %d", format.ErrIntegrity, r.res.Revision)
		}
		r.learnTTLs(rec)
		if rec.Revision <= r.res.Revision {
			continue
		}
		if rec.Revision != r.res.Revision+1 {
			return fmt.Errorf("replay: %w: journal is missing revisions %d..%d", format.ErrIntegrity, r.res.Revision+1, rec.Revision-1)
		}
		if err := r.apply(rec); err != nil {
			return err
		}
		if now := time.Now(); now.Sub(r.lastProgress) >= progressEvery {
			r.lastProgress = now
			r.log.Info("replaying journal", "revision", r.res.Revision, "records", r.res.Records,
				"events", r.res.Events, "events_per_s", rate(r.res.Events, now.Sub(r.start)),
				"revisions_per_s", rate(r.res.Records, now.Sub(r.start)))
		}
	}
	if got := r.rev(); got != r.res.Revision {
		return fmt.Errorf("replay: %w: store is at revision %d after applying revision %d", format.ErrIntegrity, got, r.res.Revision)
	}
	if err := r.removeKeylessLeases(); err != nil {
		return err
	}
	if to > 0 && r.res.Revision < to {
		return fmt.Errorf("%w: journal ends at revision %d, before the requested %d", ErrNotCovered, r.res.Revision, to)
	}
	return nil
}

func (r *replayer) learnTTLs(rec *codec.Record) {
	for _, l := range rec.Leases {
		if r.ttls[l.ID] <= 0 {
			r.ttls[l.ID] = l.TTL
		}
	}
}

// check validates a record before anything of it is written.
func check(rec *codec.Record) error {
	if len(rec.Events) == 0 {
		return fmt.Errorf("replay: %w: journal record of revision %d has no events", format.ErrIntegrity, rec.Revision)
	}
	for i, ev := range rec.Events {
		switch {
		case ev == nil || ev.Kv == nil:
			return fmt.Errorf("replay: %w: revision %d: event %d is empty", format.ErrIntegrity, rec.Revision, i)
		case ev.Type != mvccpb.PUT && ev.Type != mvccpb.DELETE:
			return fmt.Errorf("replay: %w: revision %d: event %d has unknown type %d", format.ErrIntegrity, rec.Revision, i, ev.Type)
		case len(ev.Kv.Key) == 0:
			return fmt.Errorf("replay: %w: revision %d: event %d has an empty key", format.ErrIntegrity, rec.Revision, i)
		case ev.Kv.ModRevision != rec.Revision:
			return fmt.Errorf("replay: %w: revision %d: event %d (key %q) has mod_revision %d",
				format.ErrIntegrity, rec.Revision, i, ev.Kv.Key, ev.Kv.ModRevision)
		}
	}
	return nil
}

func (r *replayer) apply(rec *codec.Record) error {
	if err := check(rec); err != nil {
		return err
	}
	for _, l := range rec.Leases {
		if err := r.grant(lease.LeaseID(l.ID)); err != nil {
			return fmt.Errorf("replay: revision %d: %w", rec.Revision, err)
		}
	}
	for _, ev := range rec.Events {
		if ev.Type == mvccpb.PUT && ev.Kv.Lease != 0 {
			if err := r.grant(lease.LeaseID(ev.Kv.Lease)); err != nil {
				return fmt.Errorf("replay: revision %d: %w", rec.Revision, err)
			}
		}
	}

	if r.trace == nil || r.traced >= traceRecords {
		r.trace, r.traced = traceutil.TODO(), 0
	}
	r.traced++
	var bad error
	// etcd's write path records a timed step in the trace of the
	// transaction for each thing it does; StepWithFunction turns that off
	// and records one step for the whole record.
	r.trace.StepWithFunction(func() { bad = r.txn(rec) }, "replay")
	if bad != nil {
		return bad
	}
	r.res.Revision = rec.Revision
	r.res.Records++
	r.res.Events += len(rec.Events)
	return nil
}

// txn applies rec's events in one mvcc write transaction. The store must
// be at the revision before rec's: a transaction that changes anything
// moves it one revision on, and verifyChanges checks that every event made
// one change.
func (r *replayer) txn(rec *codec.Record) error {
	txn := r.kv.Write(r.trace)
	defer txn.End()
	if got := txn.Rev(); got != rec.Revision-1 {
		return fmt.Errorf("replay: %w: store is at revision %d before applying revision %d", format.ErrIntegrity, got, rec.Revision)
	}
	for i, ev := range rec.Events {
		switch ev.Type {
		case mvccpb.PUT:
			txn.Put(ev.Kv.Key, ev.Kv.Value, lease.LeaseID(ev.Kv.Lease))
		case mvccpb.DELETE:
			if id := r.le.GetLease(lease.LeaseItem{Key: string(ev.Kv.Key)}); id != lease.NoLease {
				r.touched[id] = struct{}{}
			}
			if n, _ := txn.DeleteRange(ev.Kv.Key, nil); n != 1 {
				return fmt.Errorf("replay: %w: revision %d: event %d deletes key %q, which does not exist",
					format.ErrIntegrity, rec.Revision, i, ev.Kv.Key)
			}
		}
	}
	return verifyChanges(rec, txn.Changes())
}

// verifyChanges compares what etcd's mvcc code wrote with what etcd
// reported to the agent for the same revision.
func verifyChanges(rec *codec.Record, changes []mvccpb.KeyValue) error {
	if len(changes) != len(rec.Events) {
		return fmt.Errorf("replay: %w: revision %d: %d events gave %d changes", format.ErrIntegrity, rec.Revision, len(rec.Events), len(changes))
	}
	for i, ev := range rec.Events {
		if ev.Type != mvccpb.PUT {
			continue
		}
		c, want := &changes[i], ev.Kv
		if c.ModRevision != want.ModRevision || c.CreateRevision != want.CreateRevision || c.Version != want.Version {
			return fmt.Errorf("replay: %w: revision %d: key %q came out with create_revision %d, mod_revision %d, version %d; etcd had %d, %d, %d",
				format.ErrIntegrity, rec.Revision, want.Key, c.CreateRevision, c.ModRevision, c.Version,
				want.CreateRevision, want.ModRevision, want.Version)
		}
	}
	return nil
}

func (r *replayer) grant(id lease.LeaseID) error {
	if id == lease.NoLease || r.le.Lookup(id) != nil {
		return nil
	}
	ttl := r.ttls[int64(id)]
	if ttl <= 0 {
		ttl = codec.FallbackLeaseTTL
		r.log.Debug("lease TTL unknown, using the fallback", "lease", fmt.Sprintf("%016x", int64(id)), "ttl", ttl)
	}
	if _, err := r.le.Grant(id, ttl); err != nil {
		return fmt.Errorf("grant lease %016x (TTL %d): %w", int64(id), ttl, err)
	}
	r.res.LeasesGranted++
	// Each grant writes the lease bucket through the backend's buffer,
	// which re-sorts that bucket's uncommitted writes when a key (a lease
	// ID, random) lands before the last: quadratic in the leases granted
	// since the last commit. Committing bounds it.
	if r.res.LeasesGranted%leaseCommitEvery == 0 {
		r.be.ForceCommit()
	}
	return nil
}

// removeKeylessLeases applies the removal rule of the package doc.
func (r *replayer) removeKeylessLeases() error {
	ids := make([]lease.LeaseID, 0, len(r.touched))
	for id := range r.touched {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		l := r.le.Lookup(id)
		if l == nil || len(l.Keys()) > 0 {
			continue
		}
		before := r.rev()
		if err := r.le.Revoke(id); err != nil {
			return fmt.Errorf("replay: remove lease %016x: %w", int64(id), err)
		}
		if after := r.rev(); after != before {
			return fmt.Errorf("replay: %w: removing keyless lease %016x moved the revision from %d to %d", format.ErrIntegrity, int64(id), before, after)
		}
		r.res.LeasesRemoved++
	}
	return nil
}

// rev is the store's current revision. (kv.Rev opens a concurrent read
// transaction, which copies the whole uncommitted write buffer: quadratic
// with the large batches replay uses.)
func (r *replayer) rev() int64 {
	tr := r.kv.Read(mvcc.SharedBufReadTxMode, traceutil.TODO())
	defer tr.End()
	return tr.Rev()
}

func rate(n int, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}
