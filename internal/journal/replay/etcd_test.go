package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
)

// TestReplayMatchesEtcd runs a random workload against a real etcd,
// journals it from a snapshot on through a watch, replays the journal onto
// the snapshot up to several revisions, starts etcd on each result and
// compares every key and lease with what the source etcd had.
func TestReplayMatchesEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd servers")
	}
	for _, seed := range []uint64{1, 2, uint64(time.Now().UnixNano())} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			t.Logf("seed %d (rerun alone with -run 'TestReplayMatchesEtcd/seed=%d$')", seed, seed)
			runScenario(t, seed)
		})
	}
}

const workloadSteps = 120

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// converter turns a watch into journal records, as the agent does: events
// grouped by revision, and the granted TTL of each lease looked up once,
// when a PUT first refers to it.
type converter struct {
	cli  *clientv3.Client
	done chan struct{}

	mu       sync.Mutex
	recs     []*codec.Record
	cur      *codec.Record
	seen     map[int64]bool
	received int64 // highest revision received
	err      error
}

func startConverter(ctx context.Context, cli *clientv3.Client, from int64) *converter {
	c := &converter{cli: cli, done: make(chan struct{}), seen: map[int64]bool{}}
	wch := cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))
	go c.run(ctx, wch)
	return c
}

func (c *converter) run(ctx context.Context, wch clientv3.WatchChan) {
	defer close(c.done)
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if ctx.Err() == nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		for _, ev := range wr.Events {
			c.add(ctx, ev)
		}
	}
}

func (c *converter) add(ctx context.Context, ev *clientv3.Event) {
	var l *codec.Lease
	if id := ev.Kv.Lease; ev.Type == mvccpb.PUT && id != 0 && !c.seen[id] {
		c.seen[id] = true
		l = &codec.Lease{ID: id}
		if r, err := c.cli.TimeToLive(ctx, clientv3.LeaseID(id)); err == nil && r.TTL > 0 {
			l.TTL = r.GrantedTTL
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rev := ev.Kv.ModRevision
	if c.cur != nil && c.cur.Revision != rev {
		c.recs = append(c.recs, c.cur)
		c.cur = nil
	}
	if c.cur == nil {
		c.cur = &codec.Record{Revision: rev, Time: time.Now()}
	}
	c.cur.Events = append(c.cur.Events, (*mvccpb.Event)(ev))
	if l != nil {
		c.cur.Leases = append(c.cur.Leases, *l)
	}
	c.received = max(c.received, rev)
}

func (c *converter) waitFor(t testing.TB, rev int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		got, err := c.received, c.err
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if got >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch received revision %d, waiting for %d", got, rev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish stops the watch (cancel its context first) and returns the records.
func (c *converter) finish(t testing.TB) []*codec.Record {
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("watch: %v", c.err)
	}
	if c.cur != nil {
		c.recs = append(c.recs, c.cur)
		c.cur = nil
	}
	return c.recs
}

type scenario struct {
	t   *testing.T
	ctx context.Context
	cli *clientv3.Client
	rng *rand.Rand
	dir string

	snapRev  int64
	snapDB   string          // the snapshot without its sha256 trailer
	snapTTLs map[int64]int64 // lease bucket of the snapshot: ID → TTL

	// captured[r] is the whole keyspace at revision r, from the snapshot on.
	captured  map[int64][]*mvccpb.KeyValue
	capRev    int64
	compacted int64

	granted   map[int64]int64 // every lease granted: ID → granted TTL
	live      []int64         // granted and not revoked (maybe expired)
	revokeRev int64           // first revision made by revoking a lease with keys
	expiryRev int64           // a revision made by a lease expiring
	compacts  int

	conv *converter
}

func runScenario(t *testing.T, seed uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	specs, err := embedded.NewSpecs(dir, "src", 1)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cli := newClient(t, cl.Endpoints())
	defer cli.Close()

	s := &scenario{
		t: t, ctx: ctx, cli: cli, dir: dir,
		rng:      rand.New(rand.NewPCG(seed, 0x5eed)),
		captured: map[int64][]*mvccpb.KeyValue{},
		granted:  map[int64]int64{},
	}
	start := time.Now()
	s.initialData()
	s.snapshot()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	s.conv = startConverter(wctx, cli, s.snapRev+1)
	s.capRev = s.snapRev - 1
	s.capture()
	for i := 0; i < workloadSteps; i++ {
		if i == workloadSteps/2 {
			s.awaitExpiry()
		}
		s.step()
		s.capture()
	}
	last := s.capRev
	s.conv.waitFor(t, last)
	wcancel()
	recs := s.conv.finish(t)
	t.Logf("workload: snapshot at %d, %d revisions journaled up to %d, %d compactions, %d leases granted, in %v",
		s.snapRev, len(recs), recs[len(recs)-1].Revision, s.compacts, len(s.granted), time.Since(start).Round(time.Millisecond))
	s.checkJournalTTLs(recs)

	targets := []int64{s.snapRev + 1, s.snapRev + (last-s.snapRev)/2, s.revokeRev, s.expiryRev, last}
	if s.revokeRev == 0 {
		t.Logf("no revoke of a lease with keys in this workload")
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	for _, target := range targets {
		if target <= s.snapRev || target > last {
			continue
		}
		s.verify(recs, target)
	}

	// Without a target, everything the journal holds is applied.
	db := s.copySnapshot(filepath.Join(dir, "all"))
	res, err := Apply(db, &sliceSource{recs: recs}, Options{})
	if err != nil || res.Revision != recs[len(recs)-1].Revision {
		t.Errorf("Apply of the whole journal = %+v, %v; want revision %d", res, err, recs[len(recs)-1].Revision)
	}
}

// Keys: three prefixes of twelve keys each.
func (s *scenario) randomKey() string {
	return fmt.Sprintf("%c/%02d", 'a'+s.rng.IntN(3), s.rng.IntN(12))
}

func (s *scenario) randomValue() string {
	return fmt.Sprintf("v%d-%s", s.rng.IntN(1000), strings.Repeat("x", s.rng.IntN(40)))
}

func (s *scenario) distinctKeys(n int) []string {
	seen := map[string]bool{}
	var ks []string
	for len(ks) < n {
		if k := s.randomKey(); !seen[k] {
			seen[k] = true
			ks = append(ks, k)
		}
	}
	return ks
}

func (s *scenario) grant(ttl int64) clientv3.LeaseID {
	s.t.Helper()
	r, err := s.cli.Grant(s.ctx, ttl)
	if err != nil {
		s.t.Fatal(err)
	}
	s.granted[int64(r.ID)] = r.TTL
	s.live = append(s.live, int64(r.ID))
	return r.ID
}

func (s *scenario) put(k, v string, opts ...clientv3.OpOption) {
	s.t.Helper()
	if _, err := s.cli.Put(s.ctx, k, v, opts...); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.t.Fatal(err)
	}
}

func (s *scenario) initialData() {
	for i := 0; i < 25; i++ {
		s.put(s.randomKey(), s.randomValue())
	}
	long := s.grant(300)
	s.put("a/long1", "l", clientv3.WithLease(long))
	s.put("b/long2", "l", clientv3.WithLease(long))
	short := s.grant(3) // expires during the workload: keys of a snapshot lease deleted
	s.put("a/short1", "s", clientv3.WithLease(short))
	s.put("c/short2", "s", clientv3.WithLease(short))
	s.grant(120) // no keys: invisible to the journal, kept from the snapshot
	if _, err := s.cli.Delete(s.ctx, s.randomKey()); err != nil {
		s.t.Fatal(err)
	}
}

func (s *scenario) snapshot() {
	t := s.t
	rc, err := s.cli.Snapshot(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(s.dir, "snapshot.db")
	f, err := os.Create(full)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := datadir.Inspect(full)
	if err != nil {
		t.Fatal(err)
	}
	s.snapRev = info.Revision
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%512 != 32 {
		t.Fatalf("snapshot of %d bytes has no sha256 trailer", len(data))
	}
	s.snapDB = filepath.Join(s.dir, "snapshot-plain.db")
	if err := os.WriteFile(s.snapDB, data[:len(data)-32], 0o600); err != nil {
		t.Fatal(err)
	}
	st := dump(t, s.copySnapshot(filepath.Join(s.dir, "inspect")))
	if st.rev != s.snapRev {
		t.Fatalf("etcd's storage code puts the snapshot at revision %d, etcdutl at %d", st.rev, s.snapRev)
	}
	s.snapTTLs = st.leases
}

func (s *scenario) copySnapshot(dir string) string {
	s.t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.t.Fatal(err)
	}
	data, err := os.ReadFile(s.snapDB)
	if err != nil {
		s.t.Fatal(err)
	}
	p := filepath.Join(dir, "db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// capture records the keyspace at every revision not captured yet.
func (s *scenario) capture() {
	t := s.t
	r, err := s.cli.Get(s.ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	for rev := s.capRev + 1; rev <= r.Header.Revision; rev++ {
		g, err := s.cli.Get(s.ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("keyspace at %d: %v", rev, err)
		}
		s.captured[rev] = g.Kvs
		s.capRev = rev
	}
}

func (s *scenario) liveLease() (clientv3.LeaseID, bool) {
	if len(s.live) == 0 {
		return 0, false
	}
	return clientv3.LeaseID(s.live[s.rng.IntN(len(s.live))]), true
}

func (s *scenario) step() {
	t := s.t
	switch n := s.rng.IntN(100); {
	case n < 28: // put or overwrite
		s.put(s.randomKey(), s.randomValue())
	case n < 40: // put onto a lease (another one than before, maybe)
		if id, ok := s.liveLease(); ok {
			s.put(s.randomKey(), s.randomValue(), clientv3.WithLease(id))
		}
	case n < 50: // delete a key (maybe missing: no revision)
		if _, err := s.cli.Delete(s.ctx, s.randomKey()); err != nil {
			t.Fatal(err)
		}
	case n < 54: // delete a prefix
		if _, err := s.cli.Delete(s.ctx, fmt.Sprintf("%c/", 'a'+s.rng.IntN(3)), clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	case n < 68: // several puts and deletes in one txn
		var ops []clientv3.Op
		for _, k := range s.distinctKeys(2 + s.rng.IntN(4)) {
			switch m := s.rng.IntN(10); {
			case m < 3:
				ops = append(ops, clientv3.OpDelete(k))
			case m < 5:
				if id, ok := s.liveLease(); ok {
					ops = append(ops, clientv3.OpPut(k, s.randomValue(), clientv3.WithLease(id)))
					break
				}
				fallthrough
			default:
				ops = append(ops, clientv3.OpPut(k, s.randomValue()))
			}
		}
		if _, err := s.cli.Txn(s.ctx).Then(ops...).Commit(); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Fatal(err)
		}
	case n < 78: // a new lease with keys, short or long
		ttl := 30 + s.rng.Int64N(570)
		if s.rng.IntN(10) < 3 {
			ttl = 2 + s.rng.Int64N(2)
		}
		id := s.grant(ttl)
		var ops []clientv3.Op
		for _, k := range s.distinctKeys(1 + s.rng.IntN(3)) {
			ops = append(ops, clientv3.OpPut(k, s.randomValue(), clientv3.WithLease(id)))
		}
		if _, err := s.cli.Txn(s.ctx).Then(ops...).Commit(); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Fatal(err)
		}
	case n < 86: // revoke
		id, ok := s.liveLease()
		if !ok {
			return
		}
		s.live = slices.DeleteFunc(s.live, func(l int64) bool { return l == int64(id) })
		ttl, err := s.cli.TimeToLive(s.ctx, id, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.cli.Revoke(s.ctx, id)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ttl.Keys) > 0 && s.revokeRev == 0 {
			s.revokeRev = r.Header.Revision
		}
	case n < 90: // compact an older, captured revision; the watch is ahead
		rev := s.capRev - 1 - s.rng.Int64N(8)
		if rev <= s.compacted {
			return
		}
		s.conv.waitFor(t, s.capRev)
		if _, err := s.cli.Compact(s.ctx, rev); err != nil {
			t.Fatal(err)
		}
		s.compacted = rev
		s.compacts++
	default: // take keys off their lease
		for _, kv := range s.captured[s.capRev] {
			if kv.Lease != 0 && s.rng.IntN(2) == 0 {
				s.put(string(kv.Key), s.randomValue())
				break
			}
		}
	}
}

// awaitExpiry lets a short lease with keys expire and notes the revision.
func (s *scenario) awaitExpiry() {
	t := s.t
	id := s.grant(2)
	if _, err := s.cli.Txn(s.ctx).Then(
		clientv3.OpPut("b/expiring1", "e", clientv3.WithLease(id)),
		clientv3.OpPut("c/expiring2", "e", clientv3.WithLease(id)),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := s.cli.TimeToLive(s.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.TTL == -1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %x did not expire", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.capture()
	for rev := s.capRev; rev > s.snapRev; rev-- {
		if _, ok := keyMap(s.captured[rev-1])["b/expiring1"]; ok {
			if _, ok := keyMap(s.captured[rev])["b/expiring1"]; !ok {
				s.expiryRev = rev
				return
			}
		}
	}
	t.Fatal("no revision deletes the keys of the expired lease")
}

func keyMap(kvs []*mvccpb.KeyValue) map[string]*mvccpb.KeyValue {
	m := make(map[string]*mvccpb.KeyValue, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv
	}
	return m
}

// checkJournalTTLs: the converter recorded each lease's original TTL.
func (s *scenario) checkJournalTTLs(recs []*codec.Record) {
	for _, r := range recs {
		for _, l := range r.Leases {
			if l.TTL != 0 && l.TTL != s.granted[l.ID] {
				s.t.Errorf("journal has TTL %d for lease %x, etcd granted %d", l.TTL, l.ID, s.granted[l.ID])
			}
		}
	}
}

// expectedLeases applies the package's lease rule to the captured
// keyspaces: the snapshot's leases and those PUTs referred to, minus those
// that lost a key to a deletion and have no key at target. It returns the
// TTL each should have.
func (s *scenario) expectedLeases(recs []*codec.Record, target int64) map[int64]int64 {
	journalTTL := map[int64]int64{}
	for _, r := range recs {
		for _, l := range r.Leases {
			if _, ok := journalTTL[l.ID]; !ok || journalTTL[l.ID] == 0 {
				journalTTL[l.ID] = l.TTL
			}
		}
	}
	exp := map[int64]int64{}
	for id, ttl := range s.snapTTLs {
		exp[id] = ttl
	}
	lost := map[int64]bool{}
	prev := keyMap(s.captured[s.snapRev])
	for rev := s.snapRev + 1; rev <= target; rev++ {
		cur := keyMap(s.captured[rev])
		for k, kv := range prev {
			if _, ok := cur[k]; !ok && kv.Lease != 0 {
				lost[kv.Lease] = true
			}
		}
		for _, kv := range cur {
			if kv.ModRevision == rev && kv.Lease != 0 {
				if _, ok := exp[kv.Lease]; !ok {
					exp[kv.Lease] = journalTTL[kv.Lease]
					if exp[kv.Lease] == 0 {
						exp[kv.Lease] = codec.FallbackLeaseTTL
					}
				}
			}
		}
		prev = cur
	}
	attached := map[int64]bool{}
	for _, kv := range s.captured[target] {
		attached[kv.Lease] = true
	}
	for id := range lost {
		if !attached[id] {
			delete(exp, id)
		}
	}
	return exp
}

// verify replays up to target, builds a data dir with etcd's restore,
// starts etcd on it and compares it with the source at target.
func (s *scenario) verify(recs []*codec.Record, target int64) {
	t := s.t
	start := time.Now()
	work := filepath.Join(s.dir, fmt.Sprintf("target-%d", target))
	db := s.copySnapshot(work)
	res, err := Apply(db, &sliceSource{recs: recs}, Options{ToRevision: target, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("replay to %d: %v", target, err)
	}
	if res.SnapshotRevision != s.snapRev || res.Revision != target {
		t.Fatalf("replay to %d: %+v, snapshot at %d", target, res, s.snapRev)
	}
	specs, err := embedded.NewSpecs(work, "r", 1)
	if err != nil {
		t.Fatal(err)
	}
	m := datadir.Member{
		Name: specs[0].Name, InitialCluster: embedded.InitialCluster(specs), PeerURLs: []string{specs[0].PeerURL},
		Token: "etcd-backup-embedded", SkipHashCheck: true,
	}
	if err := datadir.Build(db, specs[0].DataDir, m); err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(s.ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cli := newClient(t, cl.Endpoints())
	defer cli.Close()

	// Right away: short leases start to run when the restored member leads.
	got, err := cli.Get(s.ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	ls, err := cli.Leases(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	restored := map[int64]*clientv3.LeaseTimeToLiveResponse{}
	for _, l := range ls.Leases {
		r, err := cli.TimeToLive(s.ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		restored[int64(l.ID)] = r
	}

	if got.Header.Revision != target {
		t.Errorf("target %d: restored etcd is at revision %d", target, got.Header.Revision)
	}
	compareKVs(t, target, got.Kvs, s.captured[target])
	exp := s.expectedLeases(recs, target)
	for id, ttl := range exp {
		r, ok := restored[id]
		switch {
		case !ok:
			t.Errorf("target %d: lease %x is missing", target, id)
		case r.GrantedTTL != ttl:
			t.Errorf("target %d: lease %x has granted TTL %d, want %d", target, id, r.GrantedTTL, ttl)
		case r.TTL <= 0:
			t.Errorf("target %d: lease %x has TTL %d left", target, id, r.TTL)
		}
	}
	for id := range restored {
		if _, ok := exp[id]; !ok {
			t.Errorf("target %d: restored etcd has lease %x, which the rule removes", target, id)
		}
	}
	// The TTL of a lease the converter looked up too late (expired) is
	// unknown to the journal; all others are the original ones.
	unknown := map[int64]bool{}
	for _, r := range recs {
		for _, l := range r.Leases {
			if _, ok := s.snapTTLs[l.ID]; !ok && l.TTL == 0 {
				unknown[l.ID] = true
			}
		}
	}
	for _, kv := range s.captured[target] {
		if kv.Lease == 0 {
			continue
		}
		want := s.granted[kv.Lease]
		if unknown[kv.Lease] {
			want = codec.FallbackLeaseTTL
			t.Logf("target %d: lease %x expired before the converter looked it up", target, kv.Lease)
		}
		if r := restored[kv.Lease]; r == nil || r.GrantedTTL != want {
			t.Errorf("target %d: key %s: lease %x restored as %v, want granted TTL %d", target, kv.Key, kv.Lease, r, want)
		}
	}
	t.Logf("target %d: %d keys, %d leases (%d removed by the rule) match; %v",
		target, len(got.Kvs), len(restored), res.LeasesRemoved, time.Since(start).Round(time.Millisecond))
}

func compareKVs(t *testing.T, target int64, got, want []*mvccpb.KeyValue) {
	t.Helper()
	g, w := keyMap(got), keyMap(want)
	for k, wkv := range w {
		gkv, ok := g[k]
		switch {
		case !ok:
			t.Errorf("target %d: key %s missing", target, k)
		case !bytes.Equal(gkv.Value, wkv.Value) || gkv.CreateRevision != wkv.CreateRevision ||
			gkv.ModRevision != wkv.ModRevision || gkv.Version != wkv.Version || gkv.Lease != wkv.Lease:
			t.Errorf("target %d: key %s is %v, etcd had %v", target, k, gkv, wkv)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("target %d: key %s should not exist", target, k)
		}
	}
}
