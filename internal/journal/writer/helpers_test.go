package writer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/journal/writer"

	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

// newClient opens a plain etcd client on endpoints, with extra gRPC dial
// options.
func newClient(t *testing.T, endpoints []string, opts ...grpc.DialOption) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openRepo opens the local repository in root (created if needed), its
// backend wrapped by wrap when set.
func openRepo(t *testing.T, root string, wrap func(storage.Backend) storage.Backend) *repo.Repo {
	t.Helper()
	d, err := local.New(root, true)
	if err != nil {
		t.Fatal(err)
	}
	var b storage.Backend = d
	if wrap != nil {
		b = wrap(d)
	}
	// As every command opens its repository: the storage wrapper retries
	// what the hooks make fail (quick backoff keeps the tests short).
	b = storage.Wrap(b, storage.Policy{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	r, err := repo.Open(context.Background(), b, "default")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// takeBase takes a real full backup into r: the chain's base.
func takeBase(t *testing.T, cli *etcd.Client, r *repo.Repo) *format.Manifest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := backup.Run(ctx, cli, r, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("writer", name)
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runner is one writer.Run in a goroutine, with what it reported.
type runner struct {
	name     string
	cancel   context.CancelFunc
	done     chan struct{} // closed when Run has returned err
	err      error
	sealed   atomic.Int64 // highest end revision this writer sealed
	segments atomic.Int64 // objects this writer sealed
	events   atomic.Int64 // events it received (OnEvents)
	sealedEv atomic.Int64 // events in the objects it sealed
	mu       sync.Mutex
	seals    []writer.Sealed
}

// names returns the names of the objects the writer reported sealed.
func (w *runner) names() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]bool{}
	for _, s := range w.seals {
		out[s.Name] = true
	}
	return out
}

// sealedObjects returns what OnSealed reported, in order.
func (w *runner) sealedObjects() []writer.Sealed {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seals)
}

// startWriter runs writer.Run(cfg, base) until stop; cfg's callbacks
// are set here.
func startWriter(t *testing.T, name string, cfg writer.Config, base *format.Manifest) *runner {
	t.Helper()
	w := &runner{name: name, done: make(chan struct{})}
	cfg.Writer = name
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, name)
	}
	cfg.OnSealed = func(s writer.Sealed) {
		w.mu.Lock()
		w.seals = append(w.seals, s)
		w.mu.Unlock()
		w.segments.Add(1)
		w.sealedEv.Add(int64(s.Events))
		for {
			old := w.sealed.Load()
			if s.End <= old || w.sealed.CompareAndSwap(old, s.End) {
				break
			}
		}
	}
	cfg.OnEvents = func(n int) { w.events.Add(int64(n)) }
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		w.err = writer.Run(ctx, cfg, base)
		close(w.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(15 * time.Second):
		}
	})
	return w
}

// stop cancels the writer and returns Run's result; Run must return within
// within.
func (w *runner) stop(t *testing.T, within time.Duration) error {
	t.Helper()
	w.cancel()
	select {
	case <-w.done:
		return w.err
	case <-time.After(within):
		t.Fatalf("writer %s: Run did not return within %s of its context being canceled", w.name, within)
		return nil
	}
}

// waitFor polls cond until it is true, failing after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listChain lists the chain of base in r.
func listChain(t *testing.T, r *repo.Repo, base *format.Manifest) *store.Listing {
	t.Helper()
	l, err := store.New(r).List(context.Background(), base.ID)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// chainEnd is the revision the chain of base reaches in r without a break.
func chainEnd(t *testing.T, r *repo.Repo, base *format.Manifest) int64 {
	t.Helper()
	cov := chain.Cover(base.Revision, listChain(t, r, base).Objects)
	if cov.Break != nil {
		t.Fatalf("chain %s: %v", base.ID, cov.Break)
	}
	return cov.End
}

// history is an independent watch on the whole key space: what etcd says
// happened, to compare the journal with.
type history struct {
	mu   sync.Mutex
	evs  []*mvccpb.Event
	last int64
	err  error
}

func watchHistory(t *testing.T, endpoints []string, from int64) *history {
	t.Helper()
	cli := newClient(t, endpoints)
	ctx, cancel := context.WithCancel(context.Background())
	h := &history{}
	wch := cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range wch {
			if err := resp.Err(); err != nil {
				h.mu.Lock()
				h.err = err
				h.mu.Unlock()
				return
			}
			h.mu.Lock()
			for _, ev := range resp.Events {
				h.evs = append(h.evs, (*mvccpb.Event)(ev))
				h.last = ev.Kv.ModRevision
			}
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// upTo waits until the history reaches rev and returns its events up to
// rev.
func (h *history) upTo(t *testing.T, rev int64) []*mvccpb.Event {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("the history watch to reach revision %d", rev), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.err != nil {
			t.Fatalf("history watch: %v", h.err)
		}
		return h.last >= rev
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*mvccpb.Event
	for _, ev := range h.evs {
		if ev.Kv.ModRevision <= rev {
			out = append(out, ev)
		}
	}
	return out
}

// readBack is a chain read back from the repository and decoded.
type readBack struct {
	objs  []chain.Object             // every object of the chain's listing
	other []storage.Info             // names in the chain's directory that are no object
	cov   chain.Coverage             // what a reader follows
	recs  []*codec.Record            // the records along cov, each revision once
	byObj map[string][]*codec.Record // the records of every object, by name
	raw   map[string]int64           // raw stream bytes of every object (header and frames, without the seal)
}

// readChain lists base's chain, checks that it has no break, and decodes
// every object (those the coverage uses and any other), checking each
// against its name and seal, with the store's own checks too (Verify).
// Objects may overlap (two writers): every record of every object must
// then be the same as the one the coverage delivers for that revision.
// The objects chain.Redundant names must be truly covered: without them
// the chain reaches as far.
func readChain(t *testing.T, r *repo.Repo, base *format.Manifest) readBack {
	t.Helper()
	ctx := context.Background()
	st := store.New(r)
	l := listChain(t, r, base)
	c := readBack{objs: l.Objects, other: l.Other, cov: chain.Cover(base.Revision, l.Objects),
		byObj: map[string][]*codec.Record{}, raw: map[string]int64{}}
	if c.cov.Break != nil {
		t.Fatalf("chain %s has a break after revision %d: %v", base.ID, c.cov.End, c.cov.Break)
	}
	for _, o := range l.Objects {
		if o.Legacy != nil || o.Err != nil {
			t.Fatalf("object %s: the writer wrote a framing-1 segment", o.Label(base.ID))
		}
		if o.Encrypted {
			t.Fatalf("object %s is encrypted; the writer had no recipients", o.Label(base.ID))
		}
		data, err := st.ReadAll(ctx, base.ID, o)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != o.Size {
			t.Errorf("object %s: read %d bytes, listed %d", o.Label(base.ID), len(data), o.Size)
		}
		if err := st.Verify(base.ID, base.ClusterID, o, data, nil); err != nil {
			t.Fatalf("object %s fails the store's checks: %v", o.Label(base.ID), err)
		}
		recs, seal, raw := decodeObject(t, base.ID, o, data)
		events := int64(0)
		for j, rec := range recs {
			if want := o.Start + int64(j); rec.Revision != want {
				t.Fatalf("object %s: record %d has revision %d, want %d (every revision has events)", o.Label(base.ID), j, rec.Revision, want)
			}
			events += int64(len(rec.Events))
		}
		switch {
		case seal == nil:
			t.Fatalf("object %s has no seal", o.Label(base.ID))
		case len(recs) == 0 || lastRev(recs) != o.End:
			t.Fatalf("object %s: records up to %d, its name says %d..%d", o.Label(base.ID), lastRev(recs), o.Start, o.End)
		case seal.Start != o.Start || seal.End != o.End || seal.Records != int64(len(recs)) || seal.Events != events:
			t.Fatalf("object %s: %d records / %d events, seal says %+v", o.Label(base.ID), len(recs), events, *seal)
		case seal.Chain != base.ID || seal.ClusterID != base.ClusterID:
			t.Errorf("object %s: seal of chain %s cluster %s, want %s %s", o.Label(base.ID), seal.Chain, seal.ClusterID, base.ID, base.ClusterID)
		}
		if !o.FirstTime.Equal(recs[0].Time) || !o.LastTime.Equal(recs[len(recs)-1].Time) {
			t.Errorf("object %s: times %s..%s, records say %s..%s", o.Label(base.ID), o.FirstTime, o.LastTime, recs[0].Time, recs[len(recs)-1].Time)
		}
		c.byObj[o.Name] = recs
		c.raw[o.Name] = raw
	}
	cur := base.Revision
	for _, o := range c.cov.Objects {
		for _, rec := range c.byObj[o.Name] {
			if rec.Revision > cur {
				c.recs = append(c.recs, rec)
				cur = rec.Revision
			}
		}
	}
	if cur != c.cov.End {
		t.Fatalf("the coverage's objects reach %d, the coverage says %d", cur, c.cov.End)
	}
	// Overlapping objects hold the same events for the same revision.
	byRev := map[int64]*codec.Record{}
	for _, rec := range c.recs {
		byRev[rec.Revision] = rec
	}
	for _, o := range l.Objects {
		for _, rec := range c.byObj[o.Name] {
			want := byRev[rec.Revision]
			if want == nil {
				continue // past the coverage's end: cannot happen without a break
			}
			if len(rec.Events) != len(want.Events) {
				t.Fatalf("object %s: revision %d has %d events, the chain's copy %d", o.Label(base.ID), rec.Revision, len(rec.Events), len(want.Events))
			}
			for k := range rec.Events {
				if !sameEvent(rec.Events[k], want.Events[k]) {
					t.Fatalf("object %s: revision %d event %d is %s, the chain's copy %s", o.Label(base.ID), rec.Revision, k, evString(rec.Events[k]), evString(want.Events[k]))
				}
			}
		}
	}
	// Redundant objects are covered by the others.
	red := chain.Redundant(l.Objects)
	redundant := map[string]bool{}
	for _, o := range red {
		redundant[o.Name] = true
	}
	var rest []chain.Object
	for _, o := range l.Objects {
		if !redundant[o.Name] {
			rest = append(rest, o)
		}
	}
	if cov := chain.Cover(base.Revision, rest); cov.End != c.cov.End || cov.Break != nil {
		t.Fatalf("without the %d objects chain.Redundant names, the chain reaches %d (%v), with them %d", len(red), cov.End, cov.Break, c.cov.End)
	}
	for _, o := range red {
		covered := false
		for _, p := range rest {
			if p.Start <= o.Start && p.End >= o.End {
				covered = true
			}
		}
		if !covered {
			t.Fatalf("redundant object %s: no other object holds its range", o.Label(base.ID))
		}
	}
	return c
}

// overlapping counts the objects of the listing that the coverage does not
// use, or that start before the previous one used ends: with one writer
// that never restarted there is none.
func (c readBack) overlapping() int {
	n := len(c.objs) - len(c.cov.Objects)
	for i := 1; i < len(c.cov.Objects); i++ {
		if c.cov.Objects[i].Start != c.cov.Objects[i-1].End+1 {
			n++
		}
	}
	return n
}

func lastRev(recs []*codec.Record) int64 {
	if len(recs) == 0 {
		return 0
	}
	return recs[len(recs)-1].Revision
}

// decodeObject decodes one object's stored bytes and returns its records,
// its seal and the size of its raw stream before the seal.
func decodeObject(t *testing.T, chainID string, o chain.Object, data []byte) ([]*codec.Record, *codec.Seal, int64) {
	t.Helper()
	dec, err := format.NewSealedDecoder(bytes.NewReader(data), o.Label(chainID), o.Encrypted, nil)
	if err != nil {
		t.Fatalf("object %s: %v", o.Label(chainID), err)
	}
	defer dec.Close()
	jr := codec.NewReader(dec)
	var recs []*codec.Record
	raw := int64(len(codec.Magic))
	for {
		rec, err := jr.Next()
		if err == io.EOF {
			if jr.Version() != 2 {
				t.Fatalf("object %s: framing %d", o.Label(chainID), jr.Version())
			}
			return recs, jr.Sealed(), raw
		}
		if err != nil {
			t.Fatalf("object %s: %v", o.Label(chainID), err)
		}
		b, err := codec.AppendFrame(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		raw += int64(len(b))
		recs = append(recs, rec)
	}
}

// compareEvents checks that recs hold exactly the events of want, in order,
// grouped one record per revision.
func compareEvents(t *testing.T, recs []*codec.Record, want []*mvccpb.Event) {
	t.Helper()
	i := 0
	for _, rec := range recs {
		for k, ev := range rec.Events {
			if i >= len(want) {
				t.Fatalf("journal revision %d event %d: %s, beyond the %d events etcd reported", rec.Revision, k, evString(ev), len(want))
			}
			if !sameEvent(ev, want[i]) {
				t.Fatalf("journal revision %d event %d: %s, etcd reported %s", rec.Revision, k, evString(ev), evString(want[i]))
			}
			i++
		}
	}
	if i != len(want) {
		t.Fatalf("journal holds %d events, etcd reported %d (first missing: %s)", i, len(want), evString(want[i]))
	}
}

func sameEvent(a, b *mvccpb.Event) bool {
	return a.Type == b.Type && bytes.Equal(a.Kv.Key, b.Kv.Key) && bytes.Equal(a.Kv.Value, b.Kv.Value) &&
		a.Kv.CreateRevision == b.Kv.CreateRevision && a.Kv.ModRevision == b.Kv.ModRevision &&
		a.Kv.Version == b.Kv.Version && a.Kv.Lease == b.Kv.Lease
}

func evString(ev *mvccpb.Event) string {
	v := ev.Kv.Value
	if len(v) > 24 {
		v = append(v[:24:24], "..."...)
	}
	return fmt.Sprintf("%s %q=%q create=%d mod=%d version=%d lease=%x", ev.Type, ev.Kv.Key, v,
		ev.Kv.CreateRevision, ev.Kv.ModRevision, ev.Kv.Version, ev.Kv.Lease)
}

// checkLeases checks the lease TTLs of a chain: a lease appears in a record
// only if a put of that record attaches it; the first put that attaches a
// lease carries its TTL (granted[id], or 0 for a lease revoked since, whose
// TTL may be looked up too late). With once, each lease appears once only
// (a single writer that never restarted).
func checkLeases(t *testing.T, recs []*codec.Record, granted map[int64]int64, revoked map[int64]bool, once bool) {
	t.Helper()
	seen := map[int64]bool{}
	for _, rec := range recs {
		attached := map[int64]bool{}
		for _, ev := range rec.Events {
			if ev.Type == mvccpb.PUT && ev.Kv.Lease != 0 {
				attached[ev.Kv.Lease] = true
			}
		}
		has := map[int64]int64{}
		for _, l := range rec.Leases {
			if !attached[l.ID] {
				t.Errorf("revision %d records lease %x, which no put of it attaches", rec.Revision, l.ID)
			}
			if _, dup := has[l.ID]; dup {
				t.Errorf("revision %d records lease %x twice", rec.Revision, l.ID)
			}
			has[l.ID] = l.TTL
			if once && seen[l.ID] {
				t.Errorf("revision %d records lease %x again", rec.Revision, l.ID)
			}
		}
		for id := range attached {
			if seen[id] {
				continue
			}
			seen[id] = true
			ttl, ok := has[id]
			want, known := granted[id]
			switch {
			case !ok:
				t.Errorf("revision %d is the first to attach lease %x but does not record its TTL", rec.Revision, id)
			case !known:
				t.Errorf("revision %d attaches lease %x, which the test never granted", rec.Revision, id)
			case ttl == want, ttl == 0 && revoked[id]:
			default:
				t.Errorf("revision %d records lease %x with TTL %d, granted %d (revoked since: %v)", rec.Revision, id, ttl, want, revoked[id])
			}
		}
	}
}

// workload drives etcd with every kind of write the journal must record:
// puts and overwrites, deletes of one key and of a range, multi-op
// transactions, leases granted and attached, keys moved between leases,
// leases revoked.
type workload struct {
	t       *testing.T
	cli     *clientv3.Client
	rng     *rand.Rand
	prefix  string
	granted map[int64]int64 // lease -> granted TTL
	revoked map[int64]bool
	live    []int64 // leases not revoked
	last    int64   // highest revision seen in a response
}

func newWorkload(t *testing.T, cli *clientv3.Client, seed int64, prefix string) *workload {
	return &workload{t: t, cli: cli, rng: rand.New(rand.NewSource(seed)), prefix: prefix,
		granted: map[int64]int64{}, revoked: map[int64]bool{}}
}

func (w *workload) saw(rev int64) {
	if rev > w.last {
		w.last = rev
	}
}

func (w *workload) key() string { return fmt.Sprintf("%s%02d", w.prefix, w.rng.Intn(30)) }

func (w *workload) value() string {
	n := w.rng.Intn(200)
	if w.rng.Intn(20) == 0 {
		n = 2000 + w.rng.Intn(3000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + w.rng.Intn(26))
	}
	return string(b)
}

func (w *workload) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (w *workload) grant() int64 {
	ctx, cancel := w.ctx()
	defer cancel()
	ttl := int64(300 + w.rng.Intn(300))
	resp, err := w.cli.Grant(ctx, ttl)
	if err != nil {
		w.t.Fatalf("grant: %v", err)
	}
	w.granted[int64(resp.ID)] = ttl
	w.live = append(w.live, int64(resp.ID))
	return int64(resp.ID)
}

// step does one random write.
func (w *workload) step() {
	ctx, cancel := w.ctx()
	defer cancel()
	var rev int64
	var err error
	switch op := w.rng.Intn(100); {
	case op < 40: // put or overwrite
		var resp *clientv3.PutResponse
		resp, err = w.cli.Put(ctx, w.key(), w.value())
		if err == nil {
			rev = resp.Header.Revision
		}
	case op < 50: // delete one key (a no-op when it does not exist)
		var resp *clientv3.DeleteResponse
		resp, err = w.cli.Delete(ctx, w.key())
		if err == nil {
			rev = resp.Header.Revision
		}
	case op < 55: // delete a range: several events in one revision
		var resp *clientv3.DeleteResponse
		from := w.key()
		resp, err = w.cli.Delete(ctx, from, clientv3.WithRange(from+"\xff"+"5"))
		if err == nil {
			rev = resp.Header.Revision
		}
	case op < 70: // multi-op transaction
		a, b, c := w.key(), w.key()+"/t", w.key()
		for c == a {
			c = w.key()
		}
		var resp *clientv3.TxnResponse
		resp, err = w.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Version(a), ">", 0)).
			Then(clientv3.OpPut(a, w.value()), clientv3.OpPut(b, w.value()), clientv3.OpDelete(c)).
			Else(clientv3.OpPut(a, w.value()), clientv3.OpPut(b+"/else", w.value())).
			Commit()
		if err == nil {
			rev = resp.Header.Revision
		}
	case op < 85: // put with a lease, new or existing (moves a key between leases)
		var id int64
		if len(w.live) == 0 || w.rng.Intn(3) == 0 {
			id = w.grant()
		} else {
			id = w.live[w.rng.Intn(len(w.live))]
		}
		var resp *clientv3.TxnResponse
		// Two keys on the lease in one revision: one lease record.
		resp, err = w.cli.Txn(ctx).Then(
			clientv3.OpPut(w.key(), w.value(), clientv3.WithLease(clientv3.LeaseID(id))),
			clientv3.OpPut(w.key()+"/l", w.value(), clientv3.WithLease(clientv3.LeaseID(id))),
		).Commit()
		if err == nil {
			rev = resp.Header.Revision
		}
	case op < 90: // overwrite keeping the key's lease
		var resp *clientv3.PutResponse
		resp, err = w.cli.Put(ctx, w.key(), w.value(), clientv3.WithIgnoreLease())
		if err != nil && strings.Contains(err.Error(), "key not found") {
			err = nil
		}
		if err == nil && resp != nil {
			rev = resp.Header.Revision
		}
	case op < 95: // revoke a lease: deletes its keys in one revision
		if len(w.live) == 0 {
			return
		}
		i := w.rng.Intn(len(w.live))
		id := w.live[i]
		w.live = append(w.live[:i], w.live[i+1:]...)
		w.revoked[id] = true
		var resp *clientv3.LeaseRevokeResponse
		resp, err = w.cli.Revoke(ctx, clientv3.LeaseID(id))
		if err == nil {
			rev = resp.Header.Revision
		}
	default: // a big transaction
		var ops []clientv3.Op
		for i := 0; i < 20; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sbig/%02d", w.prefix, i), w.value()))
		}
		var resp *clientv3.TxnResponse
		resp, err = w.cli.Txn(ctx).Then(ops...).Commit()
		if err == nil {
			rev = resp.Header.Revision
		}
	}
	if err != nil {
		w.t.Fatalf("workload: %v", err)
	}
	w.saw(rev)
}

// current returns etcd's current revision.
func (w *workload) current() int64 {
	ctx, cancel := w.ctx()
	defer cancel()
	resp, err := w.cli.Get(ctx, "current-revision")
	if err != nil {
		w.t.Fatal(err)
	}
	w.saw(resp.Header.Revision)
	return resp.Header.Revision
}

// isObject tells journal objects from other names.
func isObject(name string) bool {
	_, ok := chain.ParseName(path.Base(name))
	return ok
}

// hooked wraps a real backend with hooks on Put, to simulate slow,
// failing or crashing storage.
type hooked struct {
	storage.Backend
	// put, when set, is called instead of the inner Put; it calls inner
	// to store the object.
	put func(ctx context.Context, name string, r io.Reader, inner func(io.Reader) error) error
}

func (h *hooked) Put(ctx context.Context, name string, r io.Reader) error {
	if h.put == nil {
		return h.Backend.Put(ctx, name, r)
	}
	return h.put(ctx, name, r, func(r io.Reader) error { return h.Backend.Put(ctx, name, r) })
}

var errCrash = errors.New("simulated crash: the agent died while publishing an object")
