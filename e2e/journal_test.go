package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The continuous journal end to end: agents journal a real etcd 3.6
// cluster; point-in-time restores rebuild exactly the key space (every key
// field, the revision, the leases) etcd had at a revision or a time.

// journalSeeds are the fidelity test's seeds: fixed ones and one from the
// clock (logged). ETCD_BACKUP_TEST_JOURNAL_SEED=N runs only seed N.
func journalSeeds(t *testing.T) []int64 {
	if s := os.Getenv("ETCD_BACKUP_TEST_JOURNAL_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("ETCD_BACKUP_TEST_JOURNAL_SEED: %v", err)
		}
		return []int64{n}
	}
	return []int64{20261122, 7, time.Now().UnixNano() % 1e9}
}

// startJournalAgents starts a --leader-only continuous agent per member.
func startJournalAgents(t *testing.T, c *realCluster, repo, flush string) []*agentProc {
	t.Helper()
	eps := c.endpoints()
	agents := make([]*agentProc, len(eps))
	for i := range eps {
		agents[i] = startAgent(t, c.procs[i].spec.Name, nil, journalAgentArgs(repo, eps, i, flush, "--leader-only")...)
	}
	return agents
}

func stopAgents(t *testing.T, agents []*agentProc) {
	t.Helper()
	for _, a := range agents {
		a.stop(t, 20*time.Second)
	}
}

// TestJournalFidelity: a random workload (puts, overwrites, deletes, prefix
// deletes, multi-op transactions, leases granted, revoked, expiring, keys
// moved between leases, compactions) on a 3-member cluster journaled by
// --leader-only agents; then restores at several captured revisions
// (--to-revision, on one member and once on three, once with
// --bump-revision --mark-compacted) and at a time (--to-time) must give back
// exactly the captured key space, revision and leases.
func TestJournalFidelity(t *testing.T) {
	for _, seed := range journalSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			start := time.Now()
			t.Logf("seed %d (rerun with ETCD_BACKUP_TEST_JOURNAL_SEED=%d)", seed, seed)
			repo := t.TempDir()
			c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
			cl := c.client()
			w := newWorkload(t, cl, seed)

			// Before the first snapshot: keys, a group, a long lease with
			// keys (in the snapshot, revoked or moved later by the journal).
			for i := 0; i < 20; i++ {
				w.step()
			}
			w.grant(120)
			w.grant(200)

			agents := startJournalAgents(t, c, repo, "500ms")
			snapRev := waitFirstSnapshot(t, agents)
			t.Logf("first snapshot at revision %d (%s)", snapRev, time.Since(start).Round(time.Millisecond))

			w.run(12 * time.Second)
			final := w.find("final")
			waitSealed(t, agents, final.rev, 30*time.Second)
			segments := 0.0
			for _, a := range agents {
				if v := metric(a.metrics(t), "etcd_backup_journal_segments_total"); v > 0 {
					segments += v
				}
			}
			if segments <= 0 {
				t.Errorf("etcd_backup_journal_segments_total is 0 on every agent")
			}
			stopAgents(t, agents)
			c.killAll()
			// The restores below cross objects rolled up under load.
			rolled := false
			for _, a := range agents {
				rolled = rolled || strings.Contains(a.log.String(), "journal objects rolled up")
			}
			if !rolled {
				t.Errorf("no agent rolled up journal objects during the workload")
			}

			entries := listJournal(t, repo)
			if len(entries) == 0 || entries[0].Journal == nil {
				t.Fatalf("list --json: no journal on the newest snapshot: %+v", entries)
			}
			j := entries[0].Journal
			t.Logf("journal of %s: %d..%d, %d segments, %s .. %s", entries[0].ID, j.Start, j.End, j.Segments, j.FirstTime.Format(time.RFC3339Nano), j.LastTime.Format(time.RFC3339Nano))
			if j.Error != "" || j.Start != entries[0].Revision+1 || j.End < final.rev || j.Segments <= 0 {
				t.Errorf("list --json journal %+v, want from %d to >= %d without error", *j, entries[0].Revision+1, final.rev)
			}
			for chain, segs := range journalSegments(t, repo) {
				if chain == entries[0].ID {
					checkContiguous(t, segs, entries[0].Revision+1)
				}
			}

			// Every capture at or after the snapshot, one member each (the
			// one after the txn on three members).
			for _, cp := range w.captures {
				if cp.rev < snapRev || cp.label == "to-time" {
					continue
				}
				n := 1
				if cp.label == "after-txn" {
					n = 3
				}
				t0 := time.Now()
				rc, outs := restoreMembers(t, repo, n, "--to-revision", strconv.FormatInt(cp.rev, 10))
				if !saysRevision(outs[0].stdout, cp.rev) {
					t.Errorf("%s: restore output does not name revision %d:\n%s", cp.label, cp.rev, outs[0].stdout)
				}
				rcl := rc.client()
				verifyRestored(t, rcl, cp, 0, false)
				if n == 3 {
					// Each member's own copy.
					for _, ep := range rc.endpoints() {
						mcl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
						if err != nil {
							t.Fatal(err)
						}
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						r, err := mcl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(cp.rev), clientv3.WithSerializable())
						cancel()
						mcl.Close()
						if err != nil {
							t.Fatalf("%s: read %s: %v", cp.label, ep, err)
						}
						diffKVs(t, cp.label+" on "+ep, kvStates(r.Kvs), cp.kvs)
					}
				}
				rc.killAll()
				t.Logf("restored %s on %d member(s) in %s", cp, n, time.Since(t0).Round(time.Millisecond))
			}

			// --to-time: the capture of the quiet second.
			tc := w.find("to-time")
			rc, outs := restoreMembers(t, repo, 1, "--to-time", tc.at.Format(time.RFC3339))
			if !saysRevision(outs[0].stdout, tc.rev) {
				t.Errorf("--to-time %s: restore output does not name revision %d:\n%s", tc.at.Format(time.RFC3339), tc.rev, outs[0].stdout)
			}
			verifyRestored(t, rc.client(), tc, 0, false)
			rc.killAll()

			// --bump-revision --mark-compacted on top of --to-revision.
			bc := w.find("after-revoke")
			rc, _ = restoreMembers(t, repo, 1, "--to-revision", strconv.FormatInt(bc.rev, 10), "--bump-revision", "1000", "--mark-compacted")
			verifyRestored(t, rc.client(), bc, 1000, true)
			rc.killAll()
			t.Logf("seed %d took %s", seed, time.Since(start).Round(time.Millisecond))
		})
	}
}

// clusterLeader returns the index of the member every member names leader
// (-1 while they disagree) and the member IDs.
func clusterLeader(eps []string) (int, []uint64) {
	ids := make([]uint64, len(eps))
	var lead uint64
	for i, ep := range eps {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
		if err != nil {
			return -1, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := cl.Status(ctx, ep)
		cancel()
		cl.Close()
		if err != nil || r.Leader == 0 || (lead != 0 && r.Leader != lead) {
			return -1, nil
		}
		lead, ids[i] = r.Leader, r.Header.MemberId
	}
	for i, id := range ids {
		if id == lead {
			return i, ids
		}
	}
	return -1, nil
}

// TestJournalLeaderChangeAndAgentKill: an agent per member, --leader-only;
// steady writes while the leader moves and the new leader's agent is
// SIGKILLed and started again. Restoring latest must give back every
// acknowledged write, and the chain of segments must have no gap or
// overlap.
func TestJournalLeaderChangeAndAgentKill(t *testing.T) {
	start := time.Now()
	repo := t.TempDir()
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	eps := c.endpoints()
	agents := startJournalAgents(t, c, repo, "500ms")
	snapRev := waitFirstSnapshot(t, agents)

	type ack struct {
		value string
		rev   int64
	}
	var mu sync.Mutex
	acked := map[string]ack{}
	var lastAck int64
	failed := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	cl := c.client()
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("/ack/%06d", i), fmt.Sprintf("value-%d-%d", i, time.Now().UnixNano())
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			r, err := cl.Put(ctx, k, v)
			cancel()
			mu.Lock()
			if err != nil {
				failed++ // outcome unknown: not checked
			} else {
				acked[k] = ack{v, r.Header.Revision}
				lastAck = max(lastAck, r.Header.Revision)
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			<-done
		}
	}()

	time.Sleep(3 * time.Second)
	from, ids := clusterLeader(eps)
	if from < 0 {
		t.Fatal("no agreed leader")
	}
	to := (from + 1) % 3
	lc, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[from]}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = lc.MoveLeader(mctx, ids[to])
	cancel()
	lc.Close()
	if err != nil {
		t.Fatalf("move leader %d -> %d: %v", from, to, err)
	}
	poll(t, 10*time.Second, "the moved leader", func() bool { l, _ := clusterLeader(eps); return l == to })
	t.Logf("leader moved %s -> %s", agents[from].name, agents[to].name)

	time.Sleep(3 * time.Second)
	killed := agents[to]
	killed.cmd.Process.Kill()
	<-killed.done
	t.Logf("SIGKILLed agent %s (of the leader)", killed.name)
	time.Sleep(2 * time.Second)
	agents[to] = startAgent(t, killed.name+"-again", nil, journalAgentArgs(repo, eps, to, "500ms", "--leader-only")...)
	time.Sleep(3 * time.Second)
	close(stop)
	<-done
	stopped = true
	mu.Lock()
	t.Logf("%d writes acknowledged (last at revision %d), %d failed", len(acked), lastAck, failed)
	mu.Unlock()

	waitSealed(t, agents, lastAck, 30*time.Second)
	// The first leader's agent journaled before the move, the new leader's
	// (restarted) agent after it; the third agent's member never led.
	third := 3 - from - to
	for i, a := range agents {
		v := metric(a.metrics(t), "etcd_backup_journal_segments_total")
		t.Logf("agent %s: %v segments", a.name, v)
		if (i == third) != (v <= 0) {
			t.Errorf("agent %s sealed %v segments; want some from the agents of leaders (%s, %s) and none from %s", a.name, v, agents[from].name, agents[to].name, agents[third].name)
		}
	}
	stopAgents(t, agents)
	c.killAll()

	entries := listJournal(t, repo)
	if len(entries) == 0 || entries[0].Journal == nil {
		t.Fatalf("list --json: no journal on the newest snapshot: %+v", entries)
	}
	if len(entries) != 1 {
		t.Logf("%d snapshots in the repository", len(entries))
	}
	newest := entries[0]
	j := newest.Journal
	t.Logf("journal of %s (revision %d; first snapshot at %d): %d..%d, %d segments", newest.ID, newest.Revision, snapRev, j.Start, j.End, j.Segments)
	if j.Error != "" || j.Start != newest.Revision+1 || j.End < lastAck {
		t.Errorf("list --json journal %+v, want contiguous from %d to >= %d", *j, newest.Revision+1, lastAck)
	}
	chains := journalSegments(t, repo)
	for _, e := range entries {
		if segs, ok := chains[e.ID]; ok {
			used := checkContiguous(t, segs, e.Revision+1)
			if e.ID == newest.ID && len(used) != j.Segments {
				t.Errorf("list says %d objects, a reader of the repository takes %d (of %d)", j.Segments, len(used), len(segs))
			}
		}
	}

	rc, outs := restoreMembers(t, repo, 1)
	if !saysRevision(outs[0].stdout, j.End) {
		t.Errorf("restore latest output does not name revision %d (the journal's end):\n%s", j.End, outs[0].stdout)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	r, err := rc.client().Get(ctx, "/ack/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Revision != j.End {
		t.Errorf("restored cluster at revision %d, want the journal's end %d", r.Header.Revision, j.End)
	}
	got := map[string]ack{}
	for _, kv := range r.Kvs {
		got[string(kv.Key)] = ack{string(kv.Value), kv.ModRevision}
	}
	bad := 0
	for k, want := range acked {
		if g, ok := got[k]; !ok || g != want {
			if bad++; bad <= 10 {
				t.Errorf("acknowledged %s=%q at %d; restored: %+v (present %v)", k, want.value, want.rev, g, ok)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d acknowledged writes wrong or missing after restore latest", bad, len(acked))
	}
	t.Logf("leader change test took %s", time.Since(start).Round(time.Millisecond))
}

// TestJournalGapRejected: a chain with a segment manifest deleted from the
// middle. restore latest must refuse it (exit 4, one error line naming the
// gap, a hint naming --to-revision) without touching the data dir; a
// restore to a revision below the gap still works.
func TestJournalGapRejected(t *testing.T) {
	start := time.Now()
	repo := t.TempDir()
	c := startCluster(t, "3.6.16", newSpecs(t, "g", 1))
	cl := c.client()
	putKeys(t, cl, "/before/", 10, 50)
	a := startAgent(t, "g1", nil, journalAgentArgs(repo, c.endpoints(), 0, "300ms")...)
	snapRev := waitFirstSnapshot(t, []*agentProc{a})
	segs := func() float64 { return metric(a.metrics(t), "etcd_backup_journal_segments_total") }
	var last int64
	for b := 0; b < 5; b++ {
		before := segs()
		for i := 0; i < 20; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := cl.Put(ctx, fmt.Sprintf("/burst/%d/%02d", b, i), fmt.Sprintf("v%d", i))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			last = r.Header.Revision
		}
		poll(t, 10*time.Second, fmt.Sprintf("a new segment after burst %d", b), func() bool { return segs() > before })
	}
	waitSealed(t, []*agentProc{a}, last, 20*time.Second)
	a.stop(t, 20*time.Second)

	entries := listJournal(t, repo)
	if len(entries) != 1 {
		t.Fatalf("want one snapshot, list shows %+v", entries)
	}
	all := journalSegments(t, repo)[entries[0].ID]
	chain := checkContiguous(t, all, snapRev+1)
	if len(chain) < 3 {
		t.Fatalf("%d segments, want at least 3", len(chain))
	}
	// Remove every object that holds the first revision of a segment in
	// the middle (that one alone, unless a roll-up holds it too).
	gone := chain[len(chain)/2]
	below := gone.start - 1
	var removed []string
	for _, s := range all {
		if s.start <= gone.start && s.end >= gone.start {
			below = min(below, s.start-1)
			if err := os.Remove(s.file); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, filepath.Base(s.file))
		}
	}
	if below <= snapRev {
		t.Fatalf("removing the objects that hold revision %d (%v) leaves nothing of the chain", gone.start, removed)
	}
	cp := (&workload{t: t, cl: cl, ttl: map[int64]int64{}}).capture("below-gap", below)
	c.killAll()
	t.Logf("deleted %v (revision %d) of %d objects; the chain now ends at %d", removed, gone.start, len(all), below)

	entries = listJournal(t, repo)
	if j := entries[0].Journal; j == nil || j.Error == "" {
		t.Errorf("list --json shows no journal error with a segment missing: %+v", j)
	} else {
		t.Logf("list --json journal error: %s", j.Error)
	}

	dataDir, parent := preciousDataDir(t)
	before := digestPaths(t, parent)
	for _, args := range [][]string{nil, {"--to-revision", strconv.FormatInt(below+1, 10)}} {
		r := cli(t, nil, append([]string{"restore", "latest", "--repo", repo, "--data-dir", dataDir, "--name", "g1",
			"--initial-cluster", "g1=http://127.0.0.1:2380"}, args...)...)
		expectCleanFailure(t, r, 4)
		var errLine, hint string
		for _, line := range strings.Split(r.stderr, "\n") {
			if strings.HasPrefix(line, "etcd-backup: error: ") {
				errLine = line
			}
			if strings.HasPrefix(line, "etcd-backup: hint: ") {
				hint = line
			}
		}
		if l := strings.ToLower(errLine); !strings.Contains(l, "gap") && !strings.Contains(l, "missing") {
			t.Errorf("restore %v: error line does not name the gap: %q", args, errLine)
		}
		// Latest: the way out (--to-revision); either way the last
		// revision that can be restored.
		if args == nil && !strings.Contains(errLine+hint, "--to-revision") {
			t.Errorf("restore %v: neither error nor hint names --to-revision:\n%s\n%s", args, errLine, hint)
		}
		if !revisionRE.MatchString(errLine+hint) || !strings.Contains(errLine+hint, strconv.FormatInt(below, 10)) {
			t.Errorf("restore %v: neither error nor hint names revision %d, the last before the gap:\n%s\n%s", args, below, errLine, hint)
		}
		t.Logf("restore %v: %s\n%s", args, errLine, hint)
	}
	assertUnchanged(t, before, parent)

	rc, outs := restoreMembers(t, repo, 1, "--to-revision", strconv.FormatInt(below, 10))
	if !saysRevision(outs[0].stdout, below) {
		t.Errorf("restore output does not name revision %d:\n%s", below, outs[0].stdout)
	}
	verifyRestored(t, rc.client(), cp, 0, false)
	t.Logf("gap test took %s", time.Since(start).Round(time.Millisecond))
}
