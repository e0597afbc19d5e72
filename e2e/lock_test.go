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

// TestLockedBackups: --lock-for on MinIO with a versioned, object-lock
// bucket. Every object of a backup and its journal is written with the
// retention; with the same credentials, deleting a locked version fails and
// a plain delete only hides it (a delete marker); the backup is restored
// after those attempts; prune keeps a locked backup ("locked until") and
// removes it on a run after its lock ends; a bucket without object lock is
// refused with a clear error.
func TestLockedBackups(t *testing.T) {
	srv := testenv.StartMinIO(t)
	bucket := srv.MakeLockedBucket(t)
	repoURL := fmt.Sprintf("s3://%s/prod?endpoint=http://%s&region=%s", bucket, srv.Endpoint, srv.Region)
	env := srv.Env()
	mc := srv.Client(t)
	ctx := t.Context()

	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	cl := c.client()
	putKeys(t, cl, "/locked/", 30, 100)
	ep := c.endpoints()[0]

	// A bucket without object lock: refused, nothing written.
	r := cli(t, env, "snapshot", "--repo", srv.URL("plain"), "--endpoints", ep, "--lock-for", "1h")
	if r.code == 0 || !strings.Contains(r.stderr, "Object Lock") {
		t.Fatalf("snapshot --lock-for into a bucket without object lock: exit %d\n%s", r.code, r.stderr)
	}
	for o := range mc.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "plain/", Recursive: true}) {
		t.Fatalf("the refused snapshot left %s", o.Key)
	}

	// Two backups locked for a short while, then a journal.
	mustCLI(t, env, "snapshot", "--repo", repoURL, "--endpoints", ep, "--lock-for", "20s")
	putKeys(t, cl, "/locked/b/", 5, 10)
	mustCLI(t, env, "snapshot", "--repo", repoURL, "--endpoints", ep, "--lock-for", "20s", "--lock-mode", "compliance")

	type obj struct {
		key, version string
		mode         string
		until        time.Time
	}
	objects := func() []obj {
		var out []obj
		for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "prod/clusters/", Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			mode, until, err := mc.GetObjectRetention(ctx, bucket, o.Key, "")
			if err != nil {
				t.Fatalf("retention of %s: %v", o.Key, err)
			}
			st, err := mc.StatObject(ctx, bucket, o.Key, minio.StatObjectOptions{})
			if err != nil || st.VersionID == "" {
				t.Fatalf("stat %s: version %q, %v", o.Key, st.VersionID, err)
			}
			x := obj{key: o.Key, version: st.VersionID}
			if mode != nil {
				x.mode = string(*mode)
			}
			if until != nil {
				x.until = *until
			}
			out = append(out, x)
		}
		return out
	}
	objs := objects()
	if len(objs) != 4 {
		t.Fatalf("%d objects, want 2 backups of 2 objects: %+v", len(objs), objs)
	}
	for _, o := range objs {
		if o.mode == "" || time.Until(o.until) < 5*time.Second || time.Until(o.until) > 25*time.Second {
			t.Fatalf("%s is not locked for about 20s: mode %q until %s", o.key, o.mode, o.until)
		}
	}
	type entry struct {
		ID string `json:"id"`
	}
	list := func() []entry {
		var es []entry
		if err := json.Unmarshal([]byte(mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout), &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	if n := len(list()); n != 2 {
		t.Fatalf("list: %d backups", n)
	}

	// The same credentials cannot delete a locked version...
	for _, o := range objs {
		err := mc.RemoveObject(ctx, bucket, o.key, minio.RemoveObjectOptions{VersionID: o.version})
		if err == nil {
			t.Fatalf("deleted the locked version of %s", o.key)
		}
	}
	// ...a plain delete only hides the newest backup's manifest behind a
	// delete marker; removing the marker brings it back.
	var manifest obj
	for _, o := range objs {
		if strings.HasSuffix(o.key, ".manifest.json") && o.key > manifest.key {
			manifest = o
		}
	}
	if err := mc.RemoveObject(ctx, bucket, manifest.key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("plain delete: %v", err)
	}
	if n := len(list()); n != 1 {
		t.Fatalf("after a plain delete list shows %d backups, want 1 (the other hidden)", n)
	}
	var marker string
	for v := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: manifest.key, WithVersions: true}) {
		if v.IsDeleteMarker {
			marker = v.VersionID
		}
	}
	if marker == "" {
		t.Fatal("no delete marker")
	}
	if err := mc.RemoveObject(ctx, bucket, manifest.key, minio.RemoveObjectOptions{VersionID: marker}); err != nil {
		t.Fatalf("remove the delete marker: %v", err)
	}
	if n := len(list()); n != 2 {
		t.Fatalf("after removing the delete marker list shows %d backups, want 2", n)
	}

	// Restore after the attempts: exactly the cluster's state.
	want, err := cl.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	specs := newSpecs(t, "r", 1)
	mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", embedded.InitialCluster(specs), "--initial-cluster-token", "e2e")
	rc := startCluster(t, "3.6.16", specs)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	got, err := rc.client().Get(cctx, "", clientv3.WithPrefix())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	diffKVs(t, "restored after the attempts", kvStates(got.Kvs), kvStates(want.Kvs))
	rc.killAll()

	// prune --keep-last 1: the older backup is locked, so kept, and said so.
	out := mustCLI(t, env, "prune", "--repo", repoURL, "--keep-last", "1")
	if !strings.Contains(out.stdout+out.stderr, "locked until") || len(list()) != 2 {
		t.Fatalf("prune during the lock: %d backups left\n%s%s", len(list()), out.stdout, out.stderr)
	}
	// A run after the lock ends removes it.
	var until time.Time
	for _, o := range objs {
		until = maxTime(until, o.until)
	}
	poll(t, 60*time.Second, "the locks to end", func() bool { return time.Now().After(until.Add(2 * time.Second)) })
	out = mustCLI(t, env, "prune", "--repo", repoURL, "--keep-last", "1")
	if n := len(list()); n != 1 {
		t.Fatalf("prune after the lock: %d backups left\n%s%s", n, out.stdout, out.stderr)
	}
}

// TestLockedJournal: agent --continuous --lock-for writes its journal
// objects with the retention too.
func TestLockedJournal(t *testing.T) {
	srv := testenv.StartMinIO(t)
	bucket := srv.MakeLockedBucket(t)
	repoURL := fmt.Sprintf("s3://%s/j?endpoint=http://%s&region=%s", bucket, srv.Endpoint, srv.Region)
	mc := srv.Client(t)
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	cl := c.client()
	a := startAgent(t, "locked", srv.Env(), "--endpoints", c.endpoints()[0], "--repo", repoURL, "--interval", "1h",
		"--continuous", "--journal-flush", "200ms", "--lock-for", "1h", "--rollup-every", "-1s")
	poll(t, 60*time.Second, "the first snapshot", func() bool {
		return metric(a.metrics(t), "etcd_backup_runs_total", "result", "success") >= 1
	})
	var last int64
	for i := 0; i < 50; i++ {
		r, err := cl.Put(t.Context(), fmt.Sprintf("/j/%d", i%5), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
	}
	poll(t, 30*time.Second, "the journal to seal the last write", func() bool {
		return metric(a.metrics(t), "etcd_backup_journal_sealed_revision") >= float64(last)
	})
	a.stop(t, 20*time.Second)
	n := 0
	for o := range mc.ListObjects(t.Context(), bucket, minio.ListObjectsOptions{Prefix: "j/clusters/default/journal/", Recursive: true}) {
		mode, until, err := mc.GetObjectRetention(t.Context(), bucket, o.Key, "")
		if err != nil || mode == nil || until == nil || time.Until(*until) < 50*time.Minute {
			t.Fatalf("journal object %s: retention %v until %v, %v; want about an hour", o.Key, mode, until, err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no journal object")
	}
	t.Logf("%d journal objects, each locked for an hour", n)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
