package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
)

// sliceSource is a Source over records in memory; it counts Next calls.
type sliceSource struct {
	recs  []*codec.Record
	i     int
	calls int
}

func (s *sliceSource) Next() (*codec.Record, error) {
	s.calls++
	if s.i >= len(s.recs) {
		return nil, io.EOF
	}
	s.i++
	return s.recs[s.i-1], nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// openStore opens an etcd database with etcd's storage code, as Apply does.
func openStore(t testing.TB, path string) (backend.Backend, lease.Lessor, mvcc.KV) {
	t.Helper()
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	le := lease.NewLessor(zap.NewNop(), be, nil, lease.LessorConfig{CheckpointPersist: true})
	kv := mvcc.NewStore(zap.NewNop(), be, le, mvcc.StoreConfig{})
	return be, le, kv
}

func closeStore(be backend.Backend, le lease.Lessor, kv mvcc.KV) {
	kv.Close()
	le.Stop()
	be.ForceCommit()
	be.Close()
}

// dbState is what an etcd database holds: revision, keys, lease TTLs.
type dbState struct {
	rev    int64
	kvs    map[string]mvccpb.KeyValue
	leases map[int64]int64
}

func dump(t testing.TB, path string) dbState {
	t.Helper()
	be, le, kv := openStore(t, path)
	defer closeStore(be, le, kv)
	st := dbState{rev: kv.Rev(), kvs: map[string]mvccpb.KeyValue{}, leases: map[int64]int64{}}
	rr, err := kv.Range(context.Background(), []byte{0}, []byte{}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range rr.KVs {
		st.kvs[string(k.Key)] = k
	}
	tx := be.BatchTx()
	tx.LockOutsideApply()
	for _, l := range schema.MustUnsafeGetAllLeases(tx) {
		st.leases[l.ID] = l.TTL
	}
	tx.Unlock()
	return st
}

// op is one event of a simulated revision.
type op struct {
	key   string
	value string
	lease int64
	del   bool
}

func put(k, v string) op            { return op{key: k, value: v} }
func putL(k, v string, id int64) op { return op{key: k, value: v, lease: id} }
func del(k string) op               { return op{key: k, del: true} }

// sim computes the events etcd would report, from a database's state on.
type sim struct {
	rev int64
	kvs map[string]mvccpb.KeyValue
}

func newSim(st dbState) *sim {
	s := &sim{rev: st.rev, kvs: map[string]mvccpb.KeyValue{}}
	for k, v := range st.kvs {
		s.kvs[k] = v
	}
	return s
}

func (s *sim) next(ops ...op) *codec.Record {
	s.rev++
	rec := &codec.Record{Revision: s.rev, Time: time.Now()}
	for _, o := range ops {
		if o.del {
			delete(s.kvs, o.key)
			rec.Events = append(rec.Events, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(o.key), ModRevision: s.rev}})
			continue
		}
		kv := mvccpb.KeyValue{Key: []byte(o.key), Value: []byte(o.value), CreateRevision: s.rev, ModRevision: s.rev, Version: 1, Lease: o.lease}
		if old, ok := s.kvs[o.key]; ok {
			kv.CreateRevision, kv.Version = old.CreateRevision, old.Version+1
		}
		s.kvs[o.key] = kv
		rec.Events = append(rec.Events, &mvccpb.Event{Type: mvccpb.PUT, Kv: &kv})
	}
	return rec
}

// newDB writes an etcd database with etcd's mvcc code: n keys k000.. in
// n revisions, and the given leases (ID → TTL) each with one key l<ID>.
func newDB(t testing.TB, n int, leases map[int64]int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	be, le, kv := openStore(t, path)
	for i := 0; i < n; i++ {
		kv.Put([]byte(fmt.Sprintf("k%03d", i)), []byte(fmt.Sprintf("v%d", i)), lease.NoLease)
	}
	for id, ttl := range leases {
		if _, err := le.Grant(lease.LeaseID(id), ttl); err != nil {
			t.Fatal(err)
		}
		txn := kv.Write(traceutil.TODO())
		txn.Put([]byte(fmt.Sprintf("l%d", id)), []byte("leased"), lease.LeaseID(id))
		txn.End()
	}
	closeStore(be, le, kv)
	return path
}

func TestApplySkipsRecordsAtOrBelowSnapshot(t *testing.T) {
	db := newDB(t, 10, nil) // revisions 2..11
	st := dump(t, db)
	if st.rev != 11 {
		t.Fatalf("test db at revision %d, want 11", st.rev)
	}
	s := newSim(st)
	var recs []*codec.Record
	// Records the snapshot already holds: broken on purpose, so applying
	// any of them would fail.
	for rev := int64(5); rev <= 11; rev++ {
		recs = append(recs, &codec.Record{Revision: rev})
	}
	recs = append(recs,
		s.next(put("k000", "new")),
		s.next(put("x", "1"), put("y", "2")),
		s.next(del("k001"), put("x", "3")),
	)
	res, err := Apply(db, &sliceSource{recs: recs}, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{SnapshotRevision: 11, Revision: 14, Records: 3, Events: 5}
	if res != want {
		t.Fatalf("Apply = %+v, want %+v", res, want)
	}
	got := dump(t, db)
	if got.rev != 14 {
		t.Fatalf("db at revision %d, want 14", got.rev)
	}
	for k, w := range s.kvs {
		if g := got.kvs[k]; g.String() != w.String() {
			t.Errorf("key %s: got %v, want %v", k, g.String(), w.String())
		}
	}
	if len(got.kvs) != len(s.kvs) {
		t.Errorf("db has %d keys, want %d", len(got.kvs), len(s.kvs))
	}
}

func TestApplyGapIsIntegrityError(t *testing.T) {
	db := newDB(t, 3, nil) // at 4
	s := newSim(dump(t, db))
	r5 := s.next(put("a", "1"))
	s.next(put("b", "1"))
	s.next(put("c", "1"))
	r8 := s.next(put("d", "1"))
	res, err := Apply(db, &sliceSource{recs: []*codec.Record{r5, r8}}, Options{})
	if !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "missing revisions 6..7") {
		t.Fatalf("Apply with a gap: %v, want ErrIntegrity naming 6..7", err)
	}
	if res.Revision != 5 {
		t.Errorf("Result.Revision = %d, want 5", res.Revision)
	}
	// A gap right after the snapshot.
	db2 := newDB(t, 3, nil)
	_, err = Apply(db2, &sliceSource{recs: []*codec.Record{r8}}, Options{})
	if !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "missing revisions 5..7") {
		t.Fatalf("Apply with a gap after the snapshot: %v, want ErrIntegrity naming 5..7", err)
	}
}

func TestApplyToRevision(t *testing.T) {
	newSrc := func(db string) *sliceSource {
		s := newSim(dump(t, db))
		var recs []*codec.Record
		for i := 0; i < 10; i++ { // 5..14
			recs = append(recs, s.next(put(fmt.Sprintf("n%d", i), "v")))
		}
		return &sliceSource{recs: recs}
	}

	t.Run("stops", func(t *testing.T) {
		db := newDB(t, 3, nil)
		src := newSrc(db)
		res, err := Apply(db, src, Options{ToRevision: 9})
		if err != nil || res.Revision != 9 || res.Records != 5 {
			t.Fatalf("Apply to 9 = %+v, %v", res, err)
		}
		if src.calls != 5 {
			t.Errorf("source read %d times, want 5 (no read past the target)", src.calls)
		}
		if st := dump(t, db); st.rev != 9 || len(st.kvs) != 3+5 {
			t.Errorf("db at %d with %d keys", st.rev, len(st.kvs))
		}
	})
	t.Run("beyond end", func(t *testing.T) {
		db := newDB(t, 3, nil)
		res, err := Apply(db, newSrc(db), Options{ToRevision: 20})
		if !errors.Is(err, ErrNotCovered) || errors.Is(err, format.ErrIntegrity) {
			t.Fatalf("Apply beyond the end: %v, want ErrNotCovered", err)
		}
		if !strings.Contains(err.Error(), "journal ends at revision 14, before the requested 20") {
			t.Errorf("error %q does not name both revisions", err)
		}
		if res.Revision != 14 {
			t.Errorf("Result.Revision = %d, want 14", res.Revision)
		}
	})
	t.Run("before snapshot", func(t *testing.T) {
		db := newDB(t, 3, nil)
		_, err := Apply(db, newSrc(db), Options{ToRevision: 2})
		if !errors.Is(err, ErrNotCovered) {
			t.Fatalf("Apply to before the snapshot: %v, want ErrNotCovered", err)
		}
	})
	t.Run("at snapshot", func(t *testing.T) {
		db := newDB(t, 3, nil)
		src := newSrc(db)
		res, err := Apply(db, src, Options{ToRevision: 4})
		if err != nil || res.Revision != 4 || res.Records != 0 || src.calls != 0 {
			t.Fatalf("Apply to the snapshot revision = %+v, %v (%d reads)", res, err, src.calls)
		}
	})
}

func TestApplyChecksWhatEtcdComputes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(*codec.Record)
		want  string
	}{
		{"version", func(r *codec.Record) { r.Events[0].Kv.Version++ }, "version"},
		{"create revision", func(r *codec.Record) { r.Events[0].Kv.CreateRevision = 2 }, "create_revision"},
		{"mod revision", func(r *codec.Record) { r.Events[0].Kv.ModRevision-- }, "mod_revision"},
		{"missing key", func(r *codec.Record) { r.Events[0].Type, r.Events[0].Kv.Key = mvccpb.DELETE, []byte("nope") }, "does not exist"},
		{"no events", func(r *codec.Record) { r.Events = nil }, "no events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := newDB(t, 3, nil)
			s := newSim(dump(t, db))
			rec := s.next(put("k001", "x"))
			tc.spoil(rec)
			_, err := Apply(db, &sliceSource{recs: []*codec.Record{rec}}, Options{})
			if !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want ErrIntegrity mentioning %q", err, tc.want)
			}
		})
	}
}

func TestApplyLeases(t *testing.T) {
	// Snapshot leases: 100 (key l100), 101 (key l101).
	db := newDB(t, 2, map[int64]int64{100: 30, 101: 40})
	s := newSim(dump(t, db))
	recs := []*codec.Record{
		// 200 with a known TTL, 201 unknown (agent saw it already gone).
		s.next(putL("a", "1", 200), putL("b", "1", 200), putL("c", "1", 201)),
		// 202's TTL appears in no record: fallback.
		s.next(putL("d", "1", 202)),
		// 200 revoked: its keys go in one revision.
		s.next(del("a"), del("b")),
		// 100 (a snapshot lease) revoked.
		s.next(del("l100")),
		// 101 keeps its key; 201 loses its key by an overwrite only.
		s.next(put("c", "2"), putL("l101", "again", 101)),
		// 203 loses a key but keeps another.
		s.next(putL("e", "1", 203), putL("f", "1", 203)),
		s.next(del("e")),
	}
	recs[0].Leases = []codec.Lease{{ID: 200, TTL: 7}, {ID: 201, TTL: 0}}
	recs[5].Leases = []codec.Lease{{ID: 203, TTL: 9}}
	res, err := Apply(db, &sliceSource{recs: recs}, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.LeasesGranted != 4 || res.LeasesRemoved != 2 {
		t.Errorf("granted %d, removed %d leases; want 4, 2", res.LeasesGranted, res.LeasesRemoved)
	}
	got := dump(t, db)
	want := map[int64]int64{101: 40, 201: codec.FallbackLeaseTTL, 202: codec.FallbackLeaseTTL, 203: 9}
	if fmt.Sprint(got.leases) != fmt.Sprint(want) {
		t.Errorf("leases %v, want %v", got.leases, want)
	}
	if got.rev != s.rev {
		t.Errorf("db at revision %d, want %d (lease removal must not add revisions)", got.rev, s.rev)
	}
	for k, w := range s.kvs {
		if g := got.kvs[k]; g.String() != w.String() {
			t.Errorf("key %s: got %v, want %v", k, g.String(), w.String())
		}
	}
}

func TestApplyRejectsNonDatabase(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), junk, dir} {
		if _, err := Apply(p, &sliceSource{}, Options{}); err == nil {
			t.Errorf("Apply(%s) succeeded", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Apply created the missing database: %v", err)
	}
}

// throughputRecords generates about n events onto a database of keys k000..:
// records of 1 to 4 events, 85% puts (100-byte values, over 10k keys, 10%
// of them leased), 15% deletes of existing keys.
func throughputRecords(st dbState, n int) []*codec.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newSim(st)
	val := strings.Repeat("v", 100)
	var recs []*codec.Record
	leased := map[int64]bool{}
	for events := 0; events < n; {
		var ops []op
		used := map[string]bool{}
		for j := 1 + rng.IntN(4); j > 0; j-- {
			k := fmt.Sprintf("key/%05d", rng.IntN(10000))
			if used[k] {
				continue
			}
			used[k] = true
			if _, ok := s.kvs[k]; ok && rng.IntN(100) < 15 {
				ops = append(ops, del(k))
				continue
			}
			var id int64
			if rng.IntN(10) == 0 {
				id = 1 + rng.Int64N(100)
			}
			ops = append(ops, putL(k, val, id))
		}
		rec := s.next(ops...)
		for _, o := range ops {
			if o.lease != 0 && !leased[o.lease] {
				leased[o.lease] = true
				rec.Leases = append(rec.Leases, codec.Lease{ID: o.lease, TTL: 60})
			}
		}
		recs = append(recs, rec)
		events += len(ops)
	}
	return recs
}

// leaseRecords generates n records of one PUT each, every one on a lease
// of its own: the worst case for lease grants.
func leaseRecords(st dbState, n int) []*codec.Record {
	rng := rand.New(rand.NewPCG(3, 4))
	s := newSim(st)
	val := strings.Repeat("v", 100)
	recs := make([]*codec.Record, 0, n)
	for i := 0; i < n; i++ {
		id := 1 + rng.Int64N(1<<62)
		rec := s.next(putL(fmt.Sprintf("lease/%06d", i), val, id))
		rec.Leases = []codec.Lease{{ID: id, TTL: 3600}}
		recs = append(recs, rec)
	}
	return recs
}

// TestApplyThroughput logs replay speed: about 50k events of a mixed
// workload, and 10k records each with a new lease.
func TestApplyThroughput(t *testing.T) {
	for _, tc := range []struct {
		name string
		gen  func(dbState) []*codec.Record
	}{
		{"mixed", func(st dbState) []*codec.Record { return throughputRecords(st, 50000) }},
		{"lease per record", func(st dbState) []*codec.Record { return leaseRecords(st, 10000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := newDB(t, 1000, nil)
			recs := tc.gen(dump(t, db))
			start := time.Now()
			res, err := Apply(db, &sliceSource{recs: recs}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			t.Logf("replayed %d events in %d records (%d leases granted) in %v: %.0f events/s, %.0f records/s",
				res.Events, res.Records, res.LeasesGranted, d.Round(time.Millisecond),
				float64(res.Events)/d.Seconds(), float64(res.Records)/d.Seconds())
		})
	}
}

func BenchmarkApply(b *testing.B) {
	base := newDB(b, 1000, nil)
	recs := throughputRecords(dump(b, base), 50000)
	orig, err := os.ReadFile(base)
	if err != nil {
		b.Fatal(err)
	}
	var events int
	for b.Loop() {
		b.StopTimer()
		db := filepath.Join(b.TempDir(), "db")
		if err := os.WriteFile(db, orig, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := Apply(db, &sliceSource{recs: recs}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		events += res.Events
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
