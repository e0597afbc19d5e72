package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// The journal tests' shared pieces: a random etcd workload that captures
// the whole key space at chosen revisions, the checks of a restored cluster
// against a capture, and readers of the journal in a local repository.

// kvState is every field of one key that a restore must reproduce.
type kvState struct {
	Key, Value                  string
	Create, Mod, Version, Lease int64
}

func (k kvState) String() string {
	v := k.Value
	if len(v) > 24 {
		v = v[:24] + "..."
	}
	return fmt.Sprintf("%q=%q create=%d mod=%d version=%d lease=%x", k.Key, v, k.Create, k.Mod, k.Version, k.Lease)
}

func kvStates(kvs []*mvccpb.KeyValue) []kvState {
	out := make([]kvState, len(kvs))
	for i, kv := range kvs {
		out[i] = kvState{string(kv.Key), string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// capture is the whole key space at one revision, and the granted TTL of
// every lease a key of it is attached to.
type capture struct {
	label  string
	rev    int64
	at     time.Time // set on the --to-time capture: a time at which rev was the newest revision
	kvs    []kvState
	leases map[int64]int64
}

func (c *capture) String() string {
	return fmt.Sprintf("%s@%d (%d keys, %d leases)", c.label, c.rev, len(c.kvs), len(c.leases))
}

// shortTTL is the longest TTL (seconds) of the leases the workload lets
// expire; longer ones are revoked or outlive the test.
const shortTTL = 3

// workload drives random writes through one client and takes captures.
type workload struct {
	t   *testing.T
	cl  *clientv3.Client
	rng *rand.Rand

	ttl       map[int64]int64    // granted TTL of every lease granted
	long      []int64            // long leases not revoked yet
	leaseKeys map[int64][]string // keys put with a lease (maybe since moved or deleted)
	groups    int                // prefix groups /j/p/NN/ written so far
	noShort   bool               // grant no expiring lease (before a --to-time mark)

	lastRev   int64
	history   []revAt // for compaction targets
	compacted int64
	captures  []*capture
	ops       map[string]int
}

type revAt struct {
	at  time.Time
	rev int64
}

func newWorkload(t *testing.T, cl *clientv3.Client, seed int64) *workload {
	return &workload{t: t, cl: cl, rng: rand.New(rand.NewSource(seed)),
		ttl: map[int64]int64{}, leaseKeys: map[int64][]string{}, ops: map[string]int{}}
}

func (w *workload) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (w *workload) saw(h interface{ GetRevision() int64 }) int64 {
	if r := h.GetRevision(); r > w.lastRev {
		w.lastRev = r
	}
	return w.lastRev
}

func (w *workload) value() string {
	n := w.rng.Intn(6)
	switch n {
	case 0:
		return ""
	case 1: // binary
		b := make([]byte, 1+w.rng.Intn(64))
		w.rng.Read(b)
		return string(b)
	default:
		return fmt.Sprintf("v%d-%s", w.rng.Int63(), strings.Repeat("x", w.rng.Intn(200)))
	}
}

func (w *workload) plainKey() string { return fmt.Sprintf("/j/k/%02d", w.rng.Intn(40)) }

// distinctPlainKeys returns n different plain keys.
func (w *workload) distinctPlainKeys(n int) []string {
	perm := w.rng.Perm(40)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/j/k/%02d", perm[i])
	}
	return keys
}

func (w *workload) fatal(what string, err error) {
	w.t.Helper()
	w.t.Fatalf("workload %s: %v", what, err)
}

func leaseGone(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || (err != nil && strings.Contains(err.Error(), "requested lease not found"))
}

// grant grants a lease of ttl seconds and attaches 1-3 keys to it (one of
// them sometimes a plain key, which a later plain put detaches again).
func (w *workload) grant(ttl int64) (int64, int64) {
	ctx, cancel := w.ctx()
	defer cancel()
	g, err := w.cl.Grant(ctx, ttl)
	if err != nil {
		w.fatal("grant", err)
	}
	id := int64(g.ID)
	w.ttl[id] = g.TTL
	var rev int64
	for i := 0; i < 1+w.rng.Intn(3); i++ {
		k := fmt.Sprintf("/j/l/%x/%d", id, i)
		if i == 0 && w.rng.Intn(3) == 0 {
			k = w.plainKey()
		}
		r, err := w.cl.Put(ctx, k, w.value(), clientv3.WithLease(g.ID))
		if leaseGone(err) {
			break
		}
		if err != nil {
			w.fatal("put with lease", err)
		}
		rev = w.saw(r.Header)
		w.leaseKeys[id] = append(w.leaseKeys[id], k)
	}
	if g.TTL > shortTTL {
		w.long = append(w.long, id)
	}
	return id, rev
}

// step runs one random operation. It returns its kind and revision.
func (w *workload) step() (string, int64) {
	ctx, cancel := w.ctx()
	defer cancel()
	var kind string
	var rev int64
	switch p := w.rng.Intn(100); {
	case p < 30:
		kind = "put"
		r, err := w.cl.Put(ctx, w.plainKey(), w.value())
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 40:
		kind = "delete"
		r, err := w.cl.Delete(ctx, w.plainKey())
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 48:
		kind = "group"
		g := w.rng.Intn(w.groups + 1)
		if g == w.groups {
			w.groups++
		}
		var ops []clientv3.Op
		for i := 0; i < 2+w.rng.Intn(5); i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/j/p/%02d/%d", g, i), w.value()))
		}
		r, err := w.cl.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 53:
		kind = "delete-prefix"
		r, err := w.cl.Delete(ctx, fmt.Sprintf("/j/p/%02d/", w.rng.Intn(w.groups+1)), clientv3.WithPrefix())
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 68:
		kind = "txn"
		keys := w.distinctPlainKeys(3 + w.rng.Intn(4))
		var then, els []clientv3.Op
		for i, k := range keys[1:] {
			switch {
			case i%3 == 2:
				then = append(then, clientv3.OpDelete(k))
			case i == 0 && len(w.long) > 0 && w.rng.Intn(3) == 0:
				then = append(then, clientv3.OpPut(k, w.value(), clientv3.WithLease(clientv3.LeaseID(w.long[w.rng.Intn(len(w.long))]))))
			default:
				then = append(then, clientv3.OpPut(k, w.value()))
			}
		}
		if w.rng.Intn(4) == 0 { // a range delete in the same revision
			then = append(then, clientv3.OpDelete(fmt.Sprintf("/j/p/%02d/", w.rng.Intn(w.groups+1)), clientv3.WithPrefix()))
		}
		els = append(els, clientv3.OpPut(keys[0], w.value()), clientv3.OpDelete(keys[1]))
		r, err := w.cl.Txn(ctx).If(clientv3.Compare(clientv3.Version(keys[0]), ">", 0)).Then(then...).Else(els...).Commit()
		if leaseGone(err) {
			kind = "txn-lease-gone"
			break
		}
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 76:
		if w.noShort || w.rng.Intn(2) == 0 {
			kind = "grant-long"
			_, rev = w.grant(int64(30 + w.rng.Intn(270)))
		} else {
			kind = "grant-short"
			_, rev = w.grant(int64(2 + w.rng.Intn(shortTTL-1)))
		}
	case p < 82:
		if len(w.long) == 0 {
			return w.step()
		}
		kind = "revoke"
		i := w.rng.Intn(len(w.long))
		id := w.long[i]
		w.long = append(w.long[:i], w.long[i+1:]...)
		r, err := w.cl.Revoke(ctx, clientv3.LeaseID(id))
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	case p < 88:
		// Move a leased key to another long lease, or off its lease.
		if len(w.long) == 0 {
			return w.step()
		}
		from := w.long[w.rng.Intn(len(w.long))]
		if len(w.leaseKeys[from]) == 0 {
			return w.step()
		}
		k := w.leaseKeys[from][w.rng.Intn(len(w.leaseKeys[from]))]
		var opts []clientv3.OpOption
		kind = "detach"
		if w.rng.Intn(2) == 0 {
			to := w.long[w.rng.Intn(len(w.long))]
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(to)))
			w.leaseKeys[to] = append(w.leaseKeys[to], k)
			kind = "move-lease"
		}
		r, err := w.cl.Put(ctx, k, w.value(), opts...)
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	default:
		kind = "overwrite-ignore-lease"
		// Overwrite a leased key keeping its lease.
		if len(w.long) == 0 {
			return w.step()
		}
		id := w.long[w.rng.Intn(len(w.long))]
		if len(w.leaseKeys[id]) == 0 {
			return w.step()
		}
		k := w.leaseKeys[id][0]
		// Only if the key exists: etcd refuses to ignore the lease of none.
		r, err := w.cl.Txn(ctx).If(clientv3.Compare(clientv3.Version(k), ">", 0)).
			Then(clientv3.OpPut(k, w.value(), clientv3.WithIgnoreLease())).Commit()
		if err != nil {
			w.fatal(kind, err)
		}
		rev = w.saw(r.Header)
	}
	w.ops[kind]++
	if rev == 0 {
		rev = w.lastRev
	}
	return kind, rev
}

// maybeCompact compacts, every few seconds, to the newest revision that is
// at least two seconds old (never above a revision still to be captured:
// captures are taken right after their revision).
func (w *workload) maybeCompact(last *time.Time) {
	now := time.Now()
	w.history = append(w.history, revAt{now, w.lastRev})
	if now.Sub(*last) < 3*time.Second {
		return
	}
	*last = now
	var target int64
	for _, h := range w.history {
		if now.Sub(h.at) >= 2*time.Second {
			target = h.rev
		}
	}
	if target <= w.compacted {
		return
	}
	ctx, cancel := w.ctx()
	defer cancel()
	if _, err := w.cl.Compact(ctx, target); err != nil {
		w.fatal("compact", err)
	}
	w.compacted = target
	w.ops["compact"]++
}

// capture reads the whole key space at rev.
func (w *workload) capture(label string, rev int64) *capture {
	w.t.Helper()
	ctx, cancel := w.ctx()
	defer cancel()
	r, err := w.cl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		w.fatal("capture "+label, err)
	}
	c := &capture{label: label, rev: rev, kvs: kvStates(r.Kvs), leases: map[int64]int64{}}
	for _, kv := range c.kvs {
		if kv.Lease != 0 {
			ttl, ok := w.ttl[kv.Lease]
			if !ok {
				w.t.Fatalf("capture %s: key %s has lease %x the workload did not grant", label, kv.Key, kv.Lease)
			}
			c.leases[kv.Lease] = ttl
		}
	}
	w.captures = append(w.captures, c)
	w.t.Logf("captured %s", c)
	return c
}

// currentRev is the cluster's revision now.
func (w *workload) currentRev() int64 {
	ctx, cancel := w.ctx()
	defer cancel()
	r, err := w.cl.Get(ctx, "/j/none")
	if err != nil {
		w.fatal("read revision", err)
	}
	return w.saw(r.Header)
}

// markTime finds a whole second T at which nothing was written for half a
// second on either side, and captures the revision of then. Expiring leases
// must be gone already (noShort for long enough before).
func (w *workload) markTime() *capture {
	w.t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		time.Sleep(500 * time.Millisecond)
		r1 := w.currentRev()
		at := time.Now().Truncate(time.Second).Add(time.Second)
		time.Sleep(time.Until(at.Add(500 * time.Millisecond)))
		if r2 := w.currentRev(); r2 != r1 {
			w.t.Logf("revision moved %d -> %d around %s; trying again", r1, r2, at.Format(time.RFC3339))
			continue
		}
		c := w.capture("to-time", r1)
		c.at = at.UTC()
		return c
	}
	w.t.Fatal("no quiet second for the --to-time mark")
	return nil
}

// runFidelityWorkload writes for d, capturing about every 3 s, right after
// the first revoke and the first multi-op txn past given times, at a quiet
// whole second (--to-time) mid-run, and at the end.
func (w *workload) run(d time.Duration) {
	start := time.Now()
	lastCompact := start
	nextPeriodic := start.Add(2 * time.Second)
	tookRevoke, tookTxn, tookTime := false, false, false
	for time.Since(start) < d {
		kind, rev := w.step()
		el := time.Since(start)
		switch {
		case kind == "revoke" && !tookRevoke && el > 1500*time.Millisecond:
			tookRevoke = true
			w.capture("after-revoke", rev)
		case kind == "txn" && !tookTxn && el > 4*time.Second:
			tookTxn = true
			w.capture("after-txn", rev)
		case time.Now().After(nextPeriodic):
			nextPeriodic = nextPeriodic.Add(3 * time.Second)
			w.capture(fmt.Sprintf("t+%ds", int(el.Seconds())), rev)
		}
		// No new expiring leases from 3 s on; the --to-time mark at 7.5 s,
		// when every expiring lease is gone.
		if el > 3*time.Second && !tookTime {
			w.noShort = true
		}
		if el > 7500*time.Millisecond && !tookTime {
			tookTime = true
			w.markTime()
			w.noShort = false
		}
		w.maybeCompact(&lastCompact)
	}
	w.capture("final", w.lastRev)
	w.t.Logf("workload: %d revisions in %s, ops %v, compacted to %d", w.lastRev, time.Since(start).Round(time.Millisecond), w.ops, w.compacted)
}

func (w *workload) find(label string) *capture {
	for _, c := range w.captures {
		if c.label == label {
			return c
		}
	}
	w.t.Fatalf("no capture %s", label)
	return nil
}

// watchEvents returns the events of revisions from..to.
func watchEvents(t *testing.T, cl *clientv3.Client, from, to int64) []*clientv3.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var evs []*clientv3.Event
	for wr := range cl.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("watch %d..%d: %v", from, to, err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= to {
				evs = append(evs, ev)
			}
		}
		if n := len(wr.Events); n > 0 && wr.Events[n-1].Kv.ModRevision >= to {
			return evs
		}
	}
	t.Fatalf("watch %d..%d: ended early", from, to)
	return nil
}

// verifyRestored compares a restored cluster with cp: every field of every
// key, the revision (cp.rev+bump), and every referenced lease's granted TTL.
// Revisions above it are allowed only if they are the expiry of a short
// lease of cp (the restored cluster counts its TTL again from its start).
// With compacted (--mark-compacted), the state is read at the current
// revision instead of at cp.rev.
func verifyRestored(t *testing.T, cl *clientv3.Client, cp *capture, bump int64, compacted bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if !compacted {
		opts = append(opts, clientv3.WithRev(cp.rev))
	}
	resp, err := cl.Get(ctx, "", opts...)
	if err != nil {
		t.Fatalf("%s: read the restored cluster: %v", cp.label, err)
	}
	want := cp.rev + bump
	cur := resp.Header.Revision
	expired := map[string]bool{}
	byKey := map[string]kvState{}
	for _, kv := range cp.kvs {
		byKey[kv.Key] = kv
	}
	switch {
	case cur < want:
		t.Errorf("%s: restored cluster is at revision %d, want %d", cp.label, cur, want)
	case cur > want:
		for _, ev := range watchEvents(t, cl, want+1, cur) {
			k := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete && byKey[k].Lease != 0 && cp.leases[byKey[k].Lease] <= shortTTL {
				expired[k] = true
				continue
			}
			t.Errorf("%s: restored cluster at revision %d, want %d; revision %d is not the expiry of a short lease: %s %q",
				cp.label, cur, want, ev.Kv.ModRevision, ev.Type, ev.Kv.Key)
		}
		t.Logf("%s: %d keys of short leases expired in the restored cluster (revision %d -> %d)", cp.label, len(expired), want, cur)
	}
	wantKVs := cp.kvs
	if compacted && len(expired) > 0 {
		wantKVs = nil
		for _, kv := range cp.kvs {
			if !expired[kv.Key] {
				wantKVs = append(wantKVs, kv)
			}
		}
	}
	diffKVs(t, cp.label, kvStates(resp.Kvs), wantKVs)

	for id, ttl := range cp.leases {
		r, err := cl.TimeToLive(ctx, clientv3.LeaseID(id))
		if err != nil {
			t.Errorf("%s: lease %x: %v", cp.label, id, err)
			continue
		}
		if r.TTL == -1 {
			// Gone: only a short lease may have expired since the start,
			// and then its keys went with it.
			if ttl > shortTTL {
				t.Errorf("%s: lease %x (TTL %ds) missing from the restored cluster", cp.label, id, ttl)
				continue
			}
			for _, kv := range cp.kvs {
				if kv.Lease != id {
					continue
				}
				g, err := cl.Get(ctx, kv.Key)
				if err != nil {
					t.Fatal(err)
				}
				if len(g.Kvs) != 0 && g.Kvs[0].Lease == id {
					t.Errorf("%s: lease %x missing from the restored cluster, but its key %s is still attached to it", cp.label, id, kv.Key)
				}
			}
			continue
		}
		if r.GrantedTTL != ttl {
			t.Errorf("%s: lease %x granted TTL %d in the restored cluster, want %d", cp.label, id, r.GrantedTTL, ttl)
		}
	}
}

// diffKVs reports every difference between got and want (both sorted).
func diffKVs(t *testing.T, label string, got, want []kvState) {
	t.Helper()
	var diffs []string
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || (i < len(got) && got[i].Key < want[j].Key):
			diffs = append(diffs, "extra   "+got[i].String())
			i++
		case i == len(got) || want[j].Key < got[i].Key:
			diffs = append(diffs, "missing "+want[j].String())
			j++
		default:
			if got[i] != want[j] {
				diffs = append(diffs, "got     "+got[i].String()+"\n    want    "+want[j].String())
			}
			i++
			j++
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 12 {
			diffs = append(diffs[:12], fmt.Sprintf("... and %d more", len(diffs)-12))
		}
		t.Errorf("%s: restored key space differs (%d keys restored, %d captured):\n    %s", label, len(got), len(want), strings.Join(diffs, "\n    "))
	}
}

// restoreMembers restores n fresh members from repo with args (the
// selection: --to-revision, --to-time, ...) and starts them.
func restoreMembers(t *testing.T, repo string, n int, args ...string) (*realCluster, []result) {
	t.Helper()
	specs := newSpecs(t, "r", n)
	ic := embedded.InitialCluster(specs)
	var outs []result
	for _, s := range specs {
		a := append([]string{"restore", "latest", "--repo", repo, "--data-dir", s.DataDir, "--name", s.Name,
			"--initial-cluster", ic, "--initial-cluster-token", "e2e"}, args...)
		outs = append(outs, mustCLI(t, nil, a...))
	}
	return startCluster(t, "3.6.16", specs), outs
}

var revisionRE = regexp.MustCompile(`\brevision (\d+)\b`)

// saysRevision reports whether restore's output names revision rev.
func saysRevision(out string, rev int64) bool {
	for _, m := range revisionRE.FindAllStringSubmatch(out, -1) {
		if m[1] == strconv.FormatInt(rev, 10) {
			return true
		}
	}
	return false
}

// journalAgentArgs are the flags of a continuous agent for member i of eps:
// its own member first.
func journalAgentArgs(repo string, eps []string, i int, flush string, extra ...string) []string {
	own := []string{eps[i]}
	for j, ep := range eps {
		if j != i {
			own = append(own, ep)
		}
	}
	// Roll-ups run often and merge small groups, so that every journal
	// test also restores across objects rolled up under load.
	return append([]string{"--continuous", "--journal-flush", flush, "--interval", "1h",
		"--rollup-every", "1s", "--rollup-after", "2s", "--rollup-fanout", "4",
		"--dial-timeout", "1s", "--repo", repo, "--endpoints", strings.Join(own, ",")}, extra...)
}

// sealedRevision is the highest etcd_backup_journal_sealed_revision of the
// agents (-1 when none has one yet).
func sealedRevision(t *testing.T, agents []*agentProc) int64 {
	t.Helper()
	best := int64(-1)
	for _, a := range agents {
		if v := int64(metric(a.metrics(t), "etcd_backup_journal_sealed_revision")); v > best {
			best = v
		}
	}
	return best
}

func waitSealed(t *testing.T, agents []*agentProc, rev int64, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		got := sealedRevision(t, agents)
		if got >= rev {
			t.Logf("sealed revision %d >= %d after %s", got, rev, time.Since(start).Round(time.Millisecond))
			return
		}
		for _, a := range agents {
			select {
			case <-a.done:
				t.Fatalf("agent %s exited: %v\n%s", a.name, a.err, tail(a.log.String(), 40))
			default:
			}
		}
		if time.Since(start) > within {
			for _, a := range agents {
				t.Logf("agent %s log tail:\n%s", a.name, tail(a.log.String(), 30))
			}
			t.Fatalf("sealed revision %d after %s, want >= %d", got, within, rev)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFirstSnapshot waits until one of the agents has taken a snapshot.
func waitFirstSnapshot(t *testing.T, agents []*agentProc) int64 {
	t.Helper()
	var rev int64
	poll(t, 30*time.Second, "the agents' first snapshot", func() bool {
		for _, a := range agents {
			if s := a.status(t); s.Newest != nil {
				rev = s.Newest.Revision
				return true
			}
		}
		return false
	})
	return rev
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// journalListEntry is list --json's entry with its journal.
type journalListEntry struct {
	ID       string `json:"id"`
	Revision int64  `json:"revision"`
	Error    string `json:"error"`
	Journal  *struct {
		Start     int64     `json:"start_revision"`
		End       int64     `json:"end_revision"`
		FirstTime time.Time `json:"first_time"`
		LastTime  time.Time `json:"last_time"`
		Segments  int       `json:"segments"`
		Error     string    `json:"error"`
	} `json:"journal"`
}

func listJournal(t *testing.T, repo string) []journalListEntry {
	t.Helper()
	out := mustCLI(t, nil, "list", "--repo", repo, "--json").stdout
	var entries []journalListEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return entries
}

// segment is one journal object of a local repository: a framing-2
// object (file is the object), or a framing-1 segment (file is its
// manifest).
type segment struct {
	file       string
	chain      string
	start, end int64
	legacy     bool
}

// journalSegments lists the journal objects of a local repository (cluster
// "default"), by chain, sorted by start revision: framing-2 objects by
// name, framing-1 segments by their manifests (their payloads are checked
// to be named by one). Any other name in a chain's directory is an error.
func journalSegments(t *testing.T, repo string) map[string][]segment {
	t.Helper()
	root := filepath.Join(repo, "clusters", "default", "journal")
	chains, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("journal directory: %v", err)
	}
	out := map[string][]segment{}
	for _, c := range chains {
		if !c.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, c.Name()))
		if err != nil {
			t.Fatal(err)
		}
		payloads := map[string]bool{}
		named := map[string]bool{}
		for _, e := range files {
			f := filepath.Join(root, c.Name(), e.Name())
			if o, ok := chain.ParseName(e.Name()); ok {
				out[c.Name()] = append(out[c.Name()], segment{f, c.Name(), o.Start, o.End, false})
				continue
			}
			if strings.HasSuffix(e.Name(), ".jrnl.zst") || strings.HasSuffix(e.Name(), ".jrnl.zst.age") {
				payloads[e.Name()] = true
				continue
			}
			if strings.HasPrefix(e.Name(), storage.TmpPrefix) {
				// An upload cut by a SIGKILL (the leader-change test kills
				// an agent mid-write): never listed, and removed by prune's
				// janitor once older than --orphan-age.
				continue
			}
			if !strings.HasSuffix(e.Name(), ".manifest.json") {
				t.Errorf("journal %s: unexpected object %s", c.Name(), e.Name())
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := format.ParseManifest(b)
			if err != nil || m.Journal == nil {
				t.Fatalf("segment manifest %s: %v\n%s", f, err, b)
			}
			if m.Kind != "journal" || m.Journal.Chain != c.Name() {
				t.Errorf("segment manifest %s: kind %q chain %q, want journal in chain %s", f, m.Kind, m.Journal.Chain, c.Name())
			}
			if want := fmt.Sprintf("%019d.manifest.json", m.Journal.Start); e.Name() != want {
				t.Errorf("segment manifest %s covers %d..%d: want the name %s", f, m.Journal.Start, m.Journal.End, want)
			}
			named[m.Payload] = true
			out[c.Name()] = append(out[c.Name()], segment{f, c.Name(), m.Journal.Start, m.Journal.End, true})
		}
		for p := range payloads {
			if !named[p] {
				t.Errorf("journal %s: payload %s without a manifest", c.Name(), p)
			}
		}
		sort.Slice(out[c.Name()], func(i, j int) bool { return out[c.Name()][i].start < out[c.Name()][j].start })
	}
	return out
}

// checkContiguous: the objects start at first and cover every revision
// from there on without a gap, as a reader follows them (chain.Cover).
// Objects may overlap (two agents journaling at once, a roll-up and the
// pieces it merged). It returns the objects a reader takes, in order.
func checkContiguous(t *testing.T, segs []segment, first int64) []segment {
	t.Helper()
	if len(segs) == 0 {
		t.Errorf("no journal segments")
		return nil
	}
	var b bytes.Buffer
	objs := make([]chain.Object, len(segs))
	for i, s := range segs {
		fmt.Fprintf(&b, " %d..%d", s.start, s.end)
		if s.end < s.start {
			t.Errorf("segment %s ends (%d) before it starts (%d)", s.file, s.end, s.start)
		}
		objs[i] = chain.Object{Name: s.file, Start: s.start, End: s.end}
	}
	if segs[0].start != first {
		t.Errorf("chain %s starts at revision %d, want %d (its snapshot's revision + 1)", segs[0].chain, segs[0].start, first)
	}
	cov := chain.Cover(first-1, objs)
	last := segs[0].end
	for _, s := range segs {
		last = max(last, s.end)
	}
	if cov.Break != nil || cov.End != last {
		t.Errorf("chain %s: covered without a break up to %d, its objects reach %d: %v", segs[0].chain, cov.End, last, cov.Break)
	}
	var used []segment
	for _, o := range cov.Objects {
		for _, s := range segs {
			if s.file == o.Name {
				used = append(used, s)
			}
		}
	}
	if len(used) != len(segs) {
		t.Logf("chain %s: %d objects, a reader takes %d", segs[0].chain, len(segs), len(used))
	}
	if t.Failed() {
		t.Logf("segments:%s", b.String())
	}
	return used
}
