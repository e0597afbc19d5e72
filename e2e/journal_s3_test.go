package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestJournalS3Encrypted: a continuous agent journaling into a real S3
// server with age encryption. Segments are encrypted objects; restore needs
// the key (exit 5 without), replays the journal and gives back every key;
// a segment altered in the bucket makes verify and restore fail with exit 4
// and leaves the data dir untouched.
func TestJournalS3Encrypted(t *testing.T) {
	srv := testenv.StartS3(t)
	env := srv.Env()
	repoURL := srv.URL("etcd/prod")
	idFile, recipient := s3AgeKey(t, t.TempDir(), "key.txt")

	c := startCluster(t, "3.6.16", newSpecs(t, "s", 1))
	cl := c.client()
	a := startAgent(t, "s1", env, "--continuous", "--journal-flush", "200ms", "--interval", "1h",
		"--repo", repoURL, "--endpoints", c.endpoints()[0], "--encrypt-to", recipient)
	waitFirstSnapshot(t, []*agentProc{a})
	want := map[string]string{}
	for b := 0; b < 3; b++ {
		for k, v := range putKeys(t, cl, fmt.Sprintf("/s3/%d/", b), 30, 200) {
			want[k] = v
		}
		time.Sleep(300 * time.Millisecond) // several segments
	}
	// A lease-bound key and a deleted one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	lease, err := cl.Grant(ctx, 600)
	if err == nil {
		_, err = cl.Put(ctx, "/s3/leased", "x", clientv3.WithLease(lease.ID))
	}
	if err == nil {
		_, err = cl.Delete(ctx, "/s3/0/000000")
	}
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	delete(want, "/s3/0/000000")
	want["/s3/leased"] = "x"
	rev := currentRevision(t, cl)
	waitSealed(t, []*agentProc{a}, rev, 30*time.Second)
	idle := time.Now()
	poll(t, 10*time.Second, "etcd to confirm the idle journal is caught up", func() bool {
		return metric(a.metrics(t), "etcd_backup_journal_caught_up_timestamp_seconds") > float64(idle.UnixNano())/1e9
	})
	a.stop(t, 20*time.Second)

	var segments []string
	for obj := range srv.Client(t).ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Prefix: "etcd/prod/clusters/default/journal/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if o, ok := chain.ParseName(path.Base(obj.Key)); ok && o.Encrypted {
			segments = append(segments, obj.Key)
		} else {
			t.Errorf("unexpected object %s (want only encrypted journal objects)", obj.Key)
		}
	}
	if len(segments) < 2 {
		t.Fatalf("%d encrypted segments in the bucket, want several", len(segments))
	}

	c.killAll()
	specs := newSpecs(t, "r", 1)
	restoreArgs := []string{"restore", "latest", "--repo", repoURL, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL)}
	expectCleanFailure(t, cli(t, env, restoreArgs...), 5)
	out := mustCLI(t, env, append(restoreArgs, "--identity", idFile)...).stdout
	if !strings.Contains(out, fmt.Sprintf("(revision %d)", rev)) {
		t.Errorf("restore output does not name revision %d:\n%s", rev, out)
	}
	r := startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/s3/", want)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	ttl, err := r.client().TimeToLive(ctx, lease.ID)
	cancel()
	if err != nil || ttl.GrantedTTL != 600 || ttl.TTL <= 0 {
		t.Errorf("lease %x after restore: %+v, %v", lease.ID, ttl, err)
	}
	r.killAll()

	// Alter one byte of a segment in the bucket.
	mc := srv.Client(t)
	obj, err := mc.GetObject(t.Context(), srv.Bucket, segments[len(segments)/2], minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)/2] ^= 0x40
	if _, err := mc.PutObject(t.Context(), srv.Bucket, segments[len(segments)/2], bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	expectCleanFailure(t, cli(t, env, "verify", "latest", "--repo", repoURL, "--identity", idFile), 4)
	dataDir, parent := preciousDataDir(t)
	before := digestPaths(t, parent)
	expectCleanFailure(t, cli(t, env, "restore", "latest", "--repo", repoURL, "--identity", idFile, "--data-dir", dataDir,
		"--name", "r1", "--initial-cluster", "r1=http://127.0.0.1:2380"), 4)
	if after := digestPaths(t, parent); after[0] != before[0] {
		t.Errorf("a failed restore changed %s", parent)
	}
}
