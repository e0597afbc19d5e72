package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestAgentCopyTo: agent --copy-to keeps a second site (S3, behind a
// proxy) a copy of the first (a directory): while the second site is down
// the agent's backups and journal go on and only copies fail; once it is
// back, every new backup and journal object reaches it, retention applies
// there too, and a restore from the second site alone gives back exactly
// what etcd held at the last journaled revision.
func TestAgentCopyTo(t *testing.T) {
	srv := testenv.StartS3(t)
	proxy := testenv.StartFaultProxy(t, srv.Endpoint)
	second := fmt.Sprintf("s3://%s/site2?endpoint=http://%s&region=%s", srv.Bucket, proxy.Addr, srv.Region)
	primary := t.TempDir()
	env := srv.Env()

	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	cl := c.client()
	put := func(n int) int64 {
		var rev int64
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := cl.Put(ctx, fmt.Sprintf("/copy/%d", i%17), fmt.Sprintf("value %d", i))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		}
		return rev
	}
	put(20)

	proxy.Set(testenv.Faults{Down: true})
	a := startAgent(t, "copy", env, "--endpoints", c.endpoints()[0], "--repo", primary,
		"--interval", "2s", "--keep-last", "3", "--continuous", "--journal-flush", "200ms",
		"--copy-to", second, "--copy-every", "500ms", "--storage-timeout", "2s")
	m := func(name string, labels ...string) float64 { return metric(a.metrics(t), name, labels...) }
	poll(t, 60*time.Second, "backups while the second site is down", func() bool {
		return m("etcd_backup_runs_total", "result", "success") >= 3 && m("etcd_backup_copy_runs_total", "result", "error") >= 1
	})
	if v := m("etcd_backup_copy_last_success_timestamp_seconds"); v > 0 {
		t.Fatalf("copy reported success (%v) while the second site was down", v)
	}
	if n := m("etcd_backup_runs_total", "result", "failure"); n > 0 {
		t.Errorf("%v backups failed while only the second site was down", n)
	}

	proxy.Set(testenv.Faults{})
	last := put(200)
	poll(t, 30*time.Second, "the journal to seal the last write", func() bool {
		return m("etcd_backup_journal_sealed_revision") >= float64(last)
	})
	type listed struct {
		ID      string `json:"id"`
		Journal *struct {
			End int64 `json:"end_revision"`
		} `json:"journal"`
	}
	var entries []listed
	poll(t, 60*time.Second, "the second site to hold the last revision", func() bool {
		r := cli(t, env, "list", "--repo", second, "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &entries) != nil || len(entries) == 0 {
			return false
		}
		j := entries[len(entries)-1].Journal
		return j != nil && j.End >= last && m("etcd_backup_copy_last_success_timestamp_seconds") > 0
	})
	t.Logf("second site: %d backups; copy passes %v ok, %v failed", len(entries),
		m("etcd_backup_copy_runs_total", "result", "success"), m("etcd_backup_copy_runs_total", "result", "error"))
	a.stop(t, 20*time.Second)
	if len(entries) > 3+1 {
		t.Errorf("the second site holds %d backups, want at most 4 (--keep-last 3, and one copied since the last prune)", len(entries))
	}

	// Restore from the second site alone.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	want, err := cl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(last))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	c.killAll()
	specs := newSpecs(t, "r", 1)
	out := mustCLI(t, env, "restore", "latest", "--repo", second, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", embedded.InitialCluster(specs), "--initial-cluster-token", "e2e", "--to-revision", fmt.Sprint(last))
	if !saysRevision(out.stdout, last) {
		t.Errorf("restore from the second site does not name revision %d:\n%s", last, out.stdout)
	}
	rc := startCluster(t, "3.6.16", specs)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	got, err := rc.client().Get(ctx, "", clientv3.WithPrefix())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	diffKVs(t, "second site", kvStates(got.Kvs), kvStates(want.Kvs))
}
