package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestJournalRequests counts what the journal costs in requests, through a
// counting proxy in front of a real S3 server: one PUT per sealed segment;
// `list` reads no journal object (coverage comes from one LIST); restore
// GETs each object of the chain once; roll-ups shrink the chain to a few
// objects, after which restore GETs those few and gives back exactly what
// etcd held at that revision.
func TestJournalRequests(t *testing.T) {
	srv := testenv.StartS3(t)
	proxy := testenv.StartFaultProxy(t, srv.Endpoint)
	const prefix = "etcd/requests"
	repoURL := fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", srv.Bucket, prefix, proxy.Addr, srv.Region)
	env := srv.Env()

	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	cl := c.client()
	put := func(n int) int64 {
		var rev int64
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := cl.Put(ctx, fmt.Sprintf("/registry/leases/node-%d", i%5), fmt.Sprintf("renewal %d", i))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
			time.Sleep(10 * time.Millisecond)
		}
		return rev
	}
	put(10)

	// 1. One PUT per sealed segment (no roll-ups, no snapshot in between).
	a := startAgent(t, "req", env, "--endpoints", c.endpoints()[0], "--repo", repoURL, "--interval", "1h",
		"--continuous", "--journal-flush", "200ms", "--rollup-every", "-1s")
	poll(t, 60*time.Second, "the agent's first snapshot", func() bool {
		return metric(a.metrics(t), "etcd_backup_runs_total", "result", "success") >= 1
	})
	segs := func() float64 { return metric(a.metrics(t), "etcd_backup_journal_segments_total") }
	s0 := segs()
	put0 := proxy.Stats().ByMethod["PUT"]
	last := put(1000) // about 10 s: more than two fan-outs (32) of 200 ms segments
	poll(t, 30*time.Second, "the journal to seal the last write", func() bool {
		return metric(a.metrics(t), "etcd_backup_journal_sealed_revision") >= float64(last)
	})
	sealed := segs() - s0
	puts := proxy.Stats().ByMethod["PUT"] - put0
	t.Logf("%v segments sealed with %d PUTs", sealed, puts)
	if sealed < 5 || float64(puts) != sealed {
		t.Errorf("%d PUTs for %v sealed segments, want exactly one each", puts, sealed)
	}
	a.stop(t, 20*time.Second)

	// 2. list: no GET of any journal object.
	entries := func() []journalListEntry {
		out := mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout
		var es []journalListEntry
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("list --json: %v\n%s", err, out)
		}
		return es
	}
	proxy.ResetStats()
	es := entries()
	st := proxy.Stats()
	if len(es) != 1 || es[0].Journal == nil || es[0].Journal.End < last {
		t.Fatalf("list: %+v, want one snapshot whose journal reaches %d", es, last)
	}
	objects := es[0].Journal.Segments
	t.Logf("list: %d GET, %d LIST for a chain of %d objects", st.ByMethod["GET"], st.ByMethod["LIST"], objects)
	if st.ByMethod["GET"] > 2 || st.ByMethod["LIST"] > 3 {
		t.Errorf("list made %d GETs and %d LISTs for one snapshot and %d journal objects; want at most 2 and 3 (no GET per journal object)",
			st.ByMethod["GET"], st.ByMethod["LIST"], objects)
	}

	// 3. restore latest: each object once.
	want := func() []kvState {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := cl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(last))
		if err != nil {
			t.Fatal(err)
		}
		return kvStates(r.Kvs)
	}()
	restore := func(label string) int64 {
		t.Helper()
		specs := newSpecs(t, "r", 1)
		proxy.ResetStats()
		out := mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
			"--initial-cluster", embedded.InitialCluster(specs), "--initial-cluster-token", "e2e")
		gets := proxy.Stats().ByMethod["GET"]
		if !saysRevision(out.stdout, last) {
			t.Errorf("%s: restore does not name revision %d:\n%s", label, last, out.stdout)
		}
		rc := startCluster(t, "3.6.16", specs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := rc.client().Get(ctx, "", clientv3.WithPrefix())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		diffKVs(t, label, kvStates(r.Kvs), want)
		rc.killAll()
		return gets
	}
	gets := restore("before roll-up")
	t.Logf("restore: %d GETs for %d journal objects", gets, objects)
	if gets > int64(objects)+3 {
		t.Errorf("restore made %d GETs for %d journal objects, want at most one each (+3: marker, manifest, snapshot)", gets, objects)
	}

	// 4. Roll-ups: the chain shrinks to a few objects; restore reads those.
	direct := srv.Client(t)
	journalObjects := func() int {
		n := 0
		for o := range direct.ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/clusters/default/journal/", Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			if strings.HasSuffix(o.Key, ".jnl.zst") {
				n++
			}
		}
		return n
	}
	before := journalObjects()
	a = startAgent(t, "req2", env, "--endpoints", c.endpoints()[0], "--repo", repoURL, "--interval", "1h",
		"--continuous", "--journal-flush", "200ms", "--rollup-every", "500ms", "--rollup-after", "1s")
	poll(t, 90*time.Second, "roll-ups to shrink the chain", func() bool { return journalObjects() <= before/8 })
	a.stop(t, 20*time.Second)
	after := journalObjects()
	es = entries()
	t.Logf("roll-ups: %d objects -> %d (list covers with %d)", before, after, es[0].Journal.Segments)
	if es[0].Journal.End < last || es[0].Journal.Error != "" {
		t.Fatalf("after roll-ups list says %+v", *es[0].Journal)
	}
	if gets := restore("after roll-up"); gets > int64(es[0].Journal.Segments)+3 {
		t.Errorf("restore after roll-ups made %d GETs for %d objects", gets, es[0].Journal.Segments)
	}
}
