package replay

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

// k8sGen generates the journal of a Kubernetes-like workload on top of a
// database state: objects under /registry/ (about k8sObjects of them, values
// of 300 to 2000 bytes that change a little on each update, as a status
// does), mostly single-put revisions, some multi-put transactions, creates
// and deletes, and events created with a shared lease that is replaced
// every few hundred revisions and revoked (its keys deleted in one
// revision) some time later, as kube-apiserver does. Lease keepalives are
// not revisions and do not appear.
type k8sGen struct {
	rng  *rand.Rand
	s    *sim
	objs []string          // live object keys (not events)
	idx  map[string]int    // index of a key in objs
	tmpl map[string][]byte // an object's value; updates change a few bytes
	seq  int               // names of new objects and events

	lease     int64              // the lease events are created with now
	leaseRecs int                // records since it was granted
	leaseKeys map[int64][]string // live event keys of each lease
	leaseAge  []int64            // leases in grant order, oldest first
	seen      map[int64]bool     // leases already described by a record
}

const k8sObjects = 5000

func newK8sGen(st dbState, seed uint64) *k8sGen {
	g := &k8sGen{
		rng:       rand.New(rand.NewPCG(seed, 7)),
		s:         newSim(st),
		idx:       map[string]int{},
		tmpl:      map[string][]byte{},
		leaseKeys: map[int64][]string{},
		seen:      map[int64]bool{},
	}
	for k, kv := range st.kvs {
		if kv.Lease == 0 {
			g.addObj(k, kv.Value)
		}
	}
	return g
}

func (g *k8sGen) addObj(k string, v []byte) {
	g.idx[k] = len(g.objs)
	g.objs = append(g.objs, k)
	g.tmpl[k] = v
}

func (g *k8sGen) delObj(k string) {
	i := g.idx[k]
	last := g.objs[len(g.objs)-1]
	g.objs[i] = last
	g.idx[last] = i
	g.objs = g.objs[:len(g.objs)-1]
	delete(g.idx, k)
	delete(g.tmpl, k)
}

// newValue is an object of 300 to 2000 bytes of base64 text.
func (g *k8sGen) newValue() []byte { return g.value(300 + g.rng.IntN(1700)) }

// value is n bytes (rounded to 4) of base64 text.
func (g *k8sGen) value(n int) []byte {
	raw := make([]byte, n*3/4)
	for i := range raw {
		raw[i] = byte(g.rng.Uint32())
	}
	return []byte(base64.StdEncoding.EncodeToString(raw))
}

// update returns k's next value: a copy with a few bytes changed.
func (g *k8sGen) update(k string) string {
	v := bytes.Clone(g.tmpl[k])
	for range 8 {
		v[g.rng.IntN(len(v))] = 'A' + byte(g.rng.IntN(26))
	}
	g.tmpl[k] = v
	return string(v)
}

func (g *k8sGen) newObjKey() string {
	g.seq++
	kinds := [...]string{"pods", "configmaps", "secrets", "endpointslices", "leases", "deployments"}
	return fmt.Sprintf("/registry/%s/ns-%02d/obj-%07d", kinds[g.seq%len(kinds)], g.seq%37, g.seq)
}

func (g *k8sGen) randObj(used map[string]bool) string {
	for {
		k := g.objs[g.rng.IntN(len(g.objs))]
		if !used[k] {
			return k
		}
	}
}

// next generates the next revision's record.
func (g *k8sGen) next() *codec.Record {
	var ops []op
	g.leaseRecs++
	if g.lease == 0 || g.leaseRecs >= 300 {
		g.lease = 0x7a000000 + g.rng.Int64N(1<<40)
		g.leaseRecs = 0
		g.leaseAge = append(g.leaseAge, g.lease)
	}
	switch p := g.rng.IntN(1000); {
	case p < 10 && len(g.leaseAge) > 8:
		// A lease expires: its events go in one revision.
		id := g.leaseAge[0]
		g.leaseAge = g.leaseAge[1:]
		for _, k := range g.leaseKeys[id] {
			ops = append(ops, del(k))
		}
		delete(g.leaseKeys, id)
		if len(ops) == 0 {
			return g.next()
		}
	case p < 90:
		// An event, on the current lease.
		g.seq++
		k := fmt.Sprintf("/registry/events/ns-%02d/ev-%08d", g.seq%37, g.seq)
		g.leaseKeys[g.lease] = append(g.leaseKeys[g.lease], k)
		ops = append(ops, putL(k, string(g.value(300+g.rng.IntN(200))), g.lease))
	case p < 120 || len(g.objs) < k8sObjects*9/10:
		k := g.newObjKey()
		v := g.newValue()
		g.addObj(k, v)
		ops = append(ops, put(k, string(v)))
	case p < 150 && len(g.objs) > k8sObjects*9/10:
		k := g.randObj(nil)
		g.delObj(k)
		ops = append(ops, del(k))
	case p < 200:
		// A transaction of 2 to 4 updates.
		used := map[string]bool{}
		for range 2 + g.rng.IntN(3) {
			k := g.randObj(used)
			used[k] = true
			ops = append(ops, put(k, g.update(k)))
		}
	default:
		k := g.randObj(nil)
		ops = append(ops, put(k, g.update(k)))
	}
	rec := g.s.next(ops...)
	for _, o := range ops {
		if o.lease != 0 && !g.seen[o.lease] {
			g.seen[o.lease] = true
			rec.Leases = append(rec.Leases, codec.Lease{ID: o.lease, TTL: 3600})
		}
	}
	rec.Time = time.Unix(0, 1_700_000_000_000_000_000+g.s.rev*1_000_000).UTC()
	return rec
}

// benchFixture is a database of k8sObjects objects and a chain of journal
// objects in a local repository that continues it.
type benchFixture struct {
	db        []byte // the database file
	manifest  *format.Manifest
	st        *store.Store
	revisions int64
	events    int
}

// benchRevisions is the length of BenchmarkReplay's journal.
var benchRevisions = flag.Int64("replay-revisions", 200_000, "BenchmarkReplay: revisions in the journal")

// benchWorkload picks the journal's revisions: "k8s" (k8sGen.next) or
// "creates", one put of a new 256-byte key per revision (the load of
// bench/journal, whose restore reports its replay rate in BENCHMARKS.md).
var benchWorkload = flag.String("replay-workload", "k8s", "BenchmarkReplay: k8s or creates")

const benchPerObject = 2000 // revisions per journal object (a rolled-up chain)

// TestMain removes the benchmark's fixture, shared by its runs.
func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

var (
	fixtureDir  string
	fixtureOnce sync.Once
	fixture     *benchFixture
	fixtureErr  error
)

func getFixture(b *testing.B) *benchFixture {
	fixtureOnce.Do(func() { fixture, fixtureErr = makeFixture() })
	if fixtureErr != nil {
		b.Fatal(fixtureErr)
	}
	return fixture
}

func makeFixture() (*benchFixture, error) {
	dir, err := os.MkdirTemp("", "replay-bench-")
	if err != nil {
		return nil, err
	}
	fixtureDir = dir
	fx := &benchFixture{}
	ctx := context.Background()

	// The database: k8sObjects objects, written by Apply itself.
	dbPath := filepath.Join(dir, "db")
	be := backend.NewDefaultBackend(zap.NewNop(), dbPath)
	le := lease.NewLessor(zap.NewNop(), be, nil, lease.LessorConfig{CheckpointPersist: true})
	kv := mvcc.NewStore(zap.NewNop(), be, le, mvcc.StoreConfig{})
	closeStore(be, le, kv)
	st0 := dbState{rev: 1, kvs: map[string]mvccpb.KeyValue{}}
	g := newK8sGen(st0, 1)
	var pre []*codec.Record
	for range k8sObjects {
		k := g.newObjKey()
		v := g.newValue()
		g.addObj(k, v)
		pre = append(pre, g.s.next(put(k, string(v))))
	}
	if _, err := Apply(dbPath, &sliceSource{recs: pre}, Options{}); err != nil {
		return nil, err
	}
	if fx.db, err = os.ReadFile(dbPath); err != nil {
		return nil, err
	}
	fx.manifest = &format.Manifest{ID: "20261203T100000.000Z-0000000b", Revision: g.s.rev, ClusterID: "00000000000000bb"}

	bk, err := backends.Open(ctx, "file://"+filepath.Join(dir, "repo"), backends.Options{Create: true})
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, bk, "default")
	if err != nil {
		return nil, err
	}
	fx.st = store.New(r)
	for done := int64(0); done < *benchRevisions; {
		var recs []*codec.Record
		for ; len(recs) < benchPerObject && done < *benchRevisions; done++ {
			var rec *codec.Record
			switch *benchWorkload {
			case "k8s":
				rec = g.next()
			case "creates":
				g.seq++
				rec = g.s.next(put(fmt.Sprintf("/bench/key-%09d", g.seq), string(g.value(256))))
			default:
				return nil, fmt.Errorf("-replay-workload %q: want k8s or creates", *benchWorkload)
			}
			fx.events += len(rec.Events)
			recs = append(recs, rec)
		}
		o, data, err := store.Build(recs, fx.manifest.ID, fx.manifest.ClusterID, nil)
		if err != nil {
			return nil, err
		}
		if err := fx.st.Put(ctx, fx.manifest.ID, o, bytes.NewReader(data)); err != nil {
			return nil, err
		}
	}
	fx.revisions = *benchRevisions
	return fx, nil
}

// peakHeap samples the heap's size until stop is called and returns the
// largest seen.
func peakHeap() (stop func() uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	done := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// BenchmarkReplay measures a restore's replay end to end: the journal
// objects of a Kubernetes-like workload (k8sGen) or of new keys only
// (-replay-workload, -replay-revisions) read from a local repository (store.Source: fetch, zstd,
// checks, decoding) and applied by Apply to a database of k8sObjects
// objects. It reports revisions/s and the peak heap.
func BenchmarkReplay(b *testing.B) {
	fx := getFixture(b)
	ctx := context.Background()
	cov, err := fx.st.Coverage(ctx, fx.manifest)
	if err != nil {
		b.Fatal(err)
	}
	if cov.Break != nil || cov.End != fx.manifest.Revision+fx.revisions {
		b.Fatalf("journal covers to %d (break %v)", cov.End, cov.Break)
	}
	var revs int64
	var peak uint64
	var cpu, applyCPU time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		db := filepath.Join(b.TempDir(), "db")
		if err := os.WriteFile(db, fx.db, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		stop := peakHeap()
		cpu0 := cpuTime()
		// Apply runs in this goroutine: locked to this thread, the
		// thread's CPU time is Apply's (with the garbage collector's
		// assists it pays), the part that cannot overlap with reading.
		runtime.LockOSThread()
		th0 := threadCPUTime()
		src := fx.st.Open(ctx, store.NewPlan(fx.manifest, cov, 0, time.Time{}), nil, store.Prefetch{})
		res, err := Apply(db, src, Options{})
		applyCPU += threadCPUTime() - th0
		runtime.UnlockOSThread()
		src.Close()
		cpu += cpuTime() - cpu0
		peak = max(peak, stop())
		if err != nil {
			b.Fatal(err)
		}
		if res.Revision != cov.End {
			b.Fatalf("replayed to %d, want %d", res.Revision, cov.End)
		}
		revs += int64(res.Records)
	}
	b.ReportMetric(float64(revs)/b.Elapsed().Seconds(), "revisions/s")
	// CPU time (user and system, every thread) is what a shared machine's
	// load does not inflate. Apply's own CPU time bounds the rate on an
	// idle machine with a core for reading (and the collector) beside it.
	if cpu > 0 && applyCPU > 0 {
		b.ReportMetric(float64(revs)/cpu.Seconds(), "revisions/cpu-s")
		b.ReportMetric(float64(revs)/applyCPU.Seconds(), "revisions/apply-cpu-s")
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
