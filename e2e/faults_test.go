package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// faultRepo is an S3 repository reached through a fault-injecting proxy.
type faultRepo struct {
	srv   *testenv.S3Server
	proxy *testenv.FaultProxy
	url   string // s3://… through the proxy
	env   []string
}

func newFaultRepo(t *testing.T, prefix string) *faultRepo {
	t.Helper()
	srv := testenv.StartS3(t)
	p := testenv.StartFaultProxy(t, srv.Endpoint)
	return &faultRepo{
		srv: srv, proxy: p, env: srv.Env(),
		url: fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", srv.Bucket, prefix, p.Addr, srv.Region),
	}
}

// objects lists every key in the bucket, bypassing the proxy.
func (f *faultRepo) objects(t *testing.T) []string {
	t.Helper()
	var keys []string
	for obj := range f.srv.Client(t).ListObjects(t.Context(), f.srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	sort.Strings(keys)
	return keys
}

// Flags that keep fault tests short: quick stall detection. Backoff and the
// retry budget are the defaults a user gets.
var faultFlags = []string{"--storage-stall-timeout", "5s"}

// TestS3ThroughFaults: every command an operator runs works through a
// store that answers 10% of requests 503 SlowDown and cuts 5% of response
// bodies, and the restored data is checked key by key: a plain restore of
// a snapshot, and a restore of the agent's snapshot with its journal
// replayed. Then verify of a good backup through 50% cut bodies passes,
// every time.
func TestS3ThroughFaults(t *testing.T) {
	f := newFaultRepo(t, "etcd/faults")
	c := startCluster(t, "3.6.16", newSpecs(t, "f", 1))
	cl := c.client()
	rng := rand.New(rand.NewPCG(1, 2))
	// Random values: about 12 MiB that does not compress, so the snapshot
	// is a multipart upload whose parts meet the faults too.
	want := fillRandom(t, cl, "/faults/a/", 3000, 4000, 50, rng)
	f.proxy.Set(testenv.Faults{Error503: 0.10, CutBody: 0.05, Seed: 11})

	run := func(args ...string) result {
		t.Helper()
		return mustCLI(t, f.env, append(append(args, "--repo", f.url), faultFlags...)...)
	}
	first := run("snapshot", "--endpoints", c.endpoints()[0]).lastLine()

	// The agent journals through the same faults, on top of that snapshot
	// (it is recent enough for the agent's 1 h interval).
	a := startAgent(t, "f1", f.env, append([]string{"--continuous", "--journal-flush", "200ms", "--interval", "1h",
		"--repo", f.url, "--endpoints", c.endpoints()[0]}, faultFlags...)...)
	waitFirstSnapshot(t, []*agentProc{a})
	// The agent counts what the storage layer retried for it: storage goes
	// down during a backup asked for over HTTP, comes back, and the backup
	// completes.
	f.proxy.Set(testenv.Faults{Down: true})
	posted := make(chan int, 1)
	go func() {
		resp, err := http.Post(a.url+"/backup", "", nil)
		if err != nil {
			posted <- -1
			return
		}
		resp.Body.Close()
		posted <- resp.StatusCode
	}()
	var retried float64
	poll(t, 30*time.Second, "the agent to count storage retries", func() bool {
		retried = 0
		if mf := a.metrics(t)["etcd_backup_storage_retries_total"]; mf != nil {
			for _, m := range mf.Metric {
				retried += m.GetCounter().GetValue()
			}
		}
		return retried > 0
	})
	f.proxy.Set(testenv.Faults{Error503: 0.10, CutBody: 0.05, Seed: 12})
	if code := <-posted; code != http.StatusOK {
		t.Fatalf("POST /backup across a storage outage: status %d", code)
	}
	t.Logf("the agent retried %v storage operations across the outage", retried)
	for b := range 4 {
		for k, v := range putKeys(t, cl, fmt.Sprintf("/faults/j%d/", b), 50, 300) {
			want[k] = v
		}
	}
	rev := currentRevision(t, cl)
	waitSealed(t, []*agentProc{a}, rev, 60*time.Second)
	a.stop(t, 30*time.Second)
	firstKeys := map[string]string{}
	for k, v := range want {
		if strings.HasPrefix(k, "/faults/a/") {
			firstKeys[k] = v
		}
	}

	list := run("list")
	if !strings.Contains(list.stdout, first) {
		t.Fatalf("list does not show %s:\n%s", first, list.stdout)
	}
	if v := run("verify", first); !strings.Contains(v.stdout, "journal ok") {
		t.Fatalf("verify %s does not check its journal:\n%s", first, v.stdout)
	}
	run("verify", "latest")
	copyDir := filepath.Join(t.TempDir(), "second-site")
	run("copy", "all", "--to-repo", copyDir)
	mustCLI(t, f.env, "verify", "latest", "--repo", copyDir)

	// Plain restore of the snapshot alone (a named backup), and restore of
	// latest with its journal replayed, each on a new one-member cluster.
	for _, tc := range []struct {
		ref    string
		prefix string
		want   map[string]string
	}{{first, "/faults/", firstKeys}, {"latest", "/faults/", want}} {
		specs := newSpecs(t, "r", 1)
		run("restore", tc.ref, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
			"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL))
		r := startCluster(t, "3.6.16", specs)
		checkKeys(t, specs[0].ClientURL, tc.prefix, tc.want)
		r.killAll()
	}

	// prune removes the older backup (and its journal) through the faults
	// and keeps the newest.
	second := run("snapshot", "--endpoints", c.endpoints()[0]).lastLine()
	run("prune", "--keep-last", "1")
	ids := listBackups(t, f.env, strings.Replace(f.url, f.proxy.Addr, f.srv.Endpoint, 1))
	if len(ids) != 1 || ids[0].ID != second {
		t.Fatalf("after prune --keep-last 1: %+v, want only %s", ids, second)
	}
	for _, key := range f.objects(t) {
		if strings.Contains(key, first) {
			t.Errorf("%s left after prune removed %s", key, first)
		}
	}

	st := f.proxy.Stats()
	t.Logf("through 10%% 503 + 5%% cut bodies: %d requests, %d answered 503, %d bodies cut", st.Requests, st.Injected503, st.Cut)
	if st.Injected503 == 0 || st.Cut == 0 {
		t.Fatalf("faults injected: %d 503s, %d cuts; the test proved nothing", st.Injected503, st.Cut)
	}

	// Half the bodies cut: a good backup still verifies, every time, and
	// never reads as damaged.
	f.proxy.Set(testenv.Faults{CutBody: 0.5, Seed: 5})
	f.proxy.ResetStats()
	for i := range 5 {
		r := cli(t, f.env, append([]string{"verify", "latest", "--repo", f.url}, faultFlags...)...)
		if r.code != 0 {
			t.Fatalf("verify %d through 50%% cut bodies: exit %d\n%s", i, r.code, r.stderr)
		}
	}
	if f.proxy.Stats().Cut == 0 {
		t.Fatal("no body was cut")
	}
}

// TestS3StorageDown: with every request failing, snapshot, verify and
// restore give up within the retry budget with exit 1 and a storage error
// (never exit 4), publish nothing and change no file.
func TestS3StorageDown(t *testing.T) {
	f := newFaultRepo(t, "etcd/down")
	c := startCluster(t, "3.6.16", newSpecs(t, "d", 1))
	putKeys(t, c.client(), "/down/", 200, 100)
	mustCLI(t, f.env, "snapshot", "--endpoints", c.endpoints()[0], "--repo", f.url)
	before := f.objects(t)

	f.proxy.Set(testenv.Faults{Down: true})
	budget := []string{"--storage-timeout", "3s"}
	dataDir, parent := preciousDataDir(t)
	digest := digestPaths(t, parent)
	for _, args := range [][]string{
		{"snapshot", "--endpoints", c.endpoints()[0]},
		{"verify", "latest"},
		{"restore", "latest", "--data-dir", dataDir, "--name", "d1", "--initial-cluster", "d1=http://127.0.0.1:2380"},
		{"list"},
	} {
		start := time.Now()
		r := cli(t, f.env, append(append(args, "--repo", f.url), budget...)...)
		took := time.Since(start)
		t.Logf("%s with storage down: exit %d after %s\n%s", args[0], r.code, took.Round(time.Millisecond), r.stderr)
		expectCleanFailure(t, r, 1, "storage error after")
		if !strings.Contains(r.stderr, "not judged") {
			t.Errorf("%s: the hint does not say the backup was not judged:\n%s", args[0], r.stderr)
		}
		if took > 45*time.Second {
			t.Errorf("%s took %s with a 3 s storage budget", args[0], took)
		}
	}
	assertUnchanged(t, digest, parent)
	if after := f.objects(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("objects changed while storage was down:\nbefore %q\nafter  %q", before, after)
	}
	if f.proxy.Stats().Dropped == 0 {
		t.Fatal("the proxy dropped nothing")
	}
}

// TestS3Stalls: a server that hangs on a share of requests costs time, not
// the operation: each stalled request is abandoned after
// --storage-stall-timeout and retried.
func TestS3Stalls(t *testing.T) {
	f := newFaultRepo(t, "etcd/stall")
	c := startCluster(t, "3.6.16", newSpecs(t, "s", 1))
	want := putKeys(t, c.client(), "/stall/", 300, 200)
	f.proxy.Set(testenv.Faults{Stall: 0.2, Seed: 2})
	flags := []string{"--repo", f.url, "--storage-stall-timeout", "1s"}
	id := mustCLI(t, f.env, append([]string{"snapshot", "--endpoints", c.endpoints()[0]}, flags...)...).lastLine()
	mustCLI(t, f.env, append([]string{"verify", id}, flags...)...)
	c.killAll()
	specs := newSpecs(t, "t", 1)
	mustCLI(t, f.env, append([]string{"restore", id, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL)}, flags...)...)
	startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/stall/", want)
	if n := f.proxy.Stats().Stalled; n == 0 {
		t.Fatal("no request stalled: the test proved nothing")
	} else {
		t.Logf("%d stalled requests abandoned and retried", n)
	}
}
