package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestAgentRetentionReadsLittle: with retention, the agent prunes after
// every backup and keeps the newest verified backup, but "verified" must
// not cost a download of that backup (docs/retention.md). The agent backs
// up a database of several MiB into S3 through a counting proxy
// (testenv.FaultProxy, no faults), and the bytes it reads from storage per
// cycle must stay within 1 MiB plus the manifests — a read-back of one
// payload would be several MiB — while retention really removes backups.
func TestAgentRetentionReadsLittle(t *testing.T) {
	srv := testenv.StartS3(t)
	proxy := testenv.StartFaultProxy(t, srv.Endpoint)
	const prefix = "etcd/bytes"
	repoURL := fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", srv.Bucket, prefix, proxy.Addr, srv.Region)

	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	cl := c.client()
	// About 5 MiB of random values: zstd cannot shrink them, so each
	// payload is several MiB and a full read-back stands out.
	val := make([]byte, 100<<10)
	for i := range 50 {
		rand.Read(val)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cl.Put(ctx, fmt.Sprintf("/big/%04d", i), string(val))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	// The test looks at the bucket directly, never through the proxy, so
	// the proxy counts the agent's reads only.
	direct := srv.Client(t)
	snapPrefix := prefix + "/clusters/default/snapshots/"
	type object struct {
		manifest bool
		size     int64
	}
	listBucket := func() map[string]object {
		out := map[string]object{}
		for o := range direct.ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Prefix: snapPrefix, Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			name := strings.TrimPrefix(o.Key, snapPrefix)
			out[name] = object{manifest: strings.HasSuffix(name, ".manifest.json"), size: o.Size}
		}
		return out
	}

	a := startAgent(t, "bytes", srv.Env(), "--endpoints", c.endpoints()[0], "--repo", repoURL,
		"--interval", "2s", "--keep-last", "2")
	successes := func() float64 { return metric(a.metrics(t), "etcd_backup_runs_total", "result", "success") }

	// Start counting once the agent's first cycle is behind it.
	poll(t, 60*time.Second, "the agent's first backup", func() bool { return successes() >= 1 })
	n0, bytes0 := successes(), proxy.Stats().GetBodyBytes

	const cycles = 6
	seen := map[string]bool{}          // backup IDs ever listed
	manifestSize := map[string]int64{} // their manifests' sizes
	var maxPayload int64
	removed := false
	poll(t, 120*time.Second, fmt.Sprintf("%d more backups", cycles), func() bool {
		objs := listBucket()
		for id := range seen {
			if _, ok := objs[id+".manifest.json"]; !ok {
				removed = true
			}
		}
		for name, o := range objs {
			if o.manifest {
				id := strings.TrimSuffix(name, ".manifest.json")
				seen[id] = true
				manifestSize[id] = o.size
			} else {
				maxPayload = max(maxPayload, o.size)
			}
		}
		return successes() >= n0+cycles
	})
	n1, bytes1 := successes(), proxy.Stats().GetBodyBytes
	mf := a.metrics(t)
	a.stop(t, 30*time.Second)

	var manifests int64
	for _, s := range manifestSize {
		manifests += s
	}
	perCycle := float64(bytes1-bytes0) / (n1 - n0)
	limit := float64(1<<20 + manifests)
	t.Logf("%v cycles: %d bytes read from storage, %.0f per cycle (limit %.0f: 1 MiB + %d bytes of the %d manifests seen); payloads up to %d bytes",
		n1-n0, bytes1-bytes0, perCycle, limit, manifests, len(manifestSize), maxPayload)
	if maxPayload < 3<<20 {
		t.Fatalf("payloads are only %d bytes: a full read-back would not stand out", maxPayload)
	}
	if perCycle > limit {
		t.Errorf("the agent read %.0f bytes from storage per cycle, want at most %.0f (a payload is %d bytes: retention reads backups back)",
			perCycle, limit, maxPayload)
	}

	// Retention did its work: it removed backups, and never failed.
	if n := metric(mf, "etcd_backup_hook_failures_total", "hook", "after_backup"); n != 0 {
		t.Errorf("%v failures of retention after a backup", n)
	}
	if !removed || proxy.Stats().ByMethod["DELETE"] == 0 {
		t.Errorf("retention removed nothing (backups seen: %d)", len(seen))
	}
	left := 0
	for _, o := range listBucket() {
		if o.manifest {
			left++
		}
	}
	if left != 2 || len(seen) < cycles {
		t.Errorf("%d backups left of %d seen, want 2 (--keep-last 2)", left, len(seen))
	}
}

// TestAgentVerifyEvery: --verify-every reads the newest backup back in full
// on its own schedule and tells a damaged backup (result="failure", exit 4)
// from one it could not judge because storage was down (result="error").
func TestAgentVerifyEvery(t *testing.T) {
	srv := testenv.StartS3(t)
	proxy := testenv.StartFaultProxy(t, srv.Endpoint)
	const prefix = "etcd/verify"
	repoURL := fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", srv.Bucket, prefix, proxy.Addr, srv.Region)
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	putKeys(t, c.client(), "/v/", 200, 100)
	id := mustCLI(t, srv.Env(), "snapshot", "--endpoints", c.endpoints()[0], "--repo", repoURL).lastLine()

	// An hourly schedule: no backup of the agent's own gets in the way.
	a := startAgent(t, "verify", srv.Env(), "--endpoints", c.endpoints()[0], "--repo", repoURL,
		"--interval", "1h", "--verify-every", "1s", "--storage-timeout", "2s")
	runs := func(result string) float64 {
		return metric(a.metrics(t), "etcd_backup_verify_runs_total", "result", result)
	}
	poll(t, 60*time.Second, "a passed verify", func() bool {
		return runs("success") >= 1 && metric(a.metrics(t), "etcd_backup_last_verify_success_timestamp_seconds") > 0
	})
	if n := runs("failure") + runs("error"); n != 0 {
		t.Fatalf("%v failed verifies of a good backup", n)
	}
	before := proxy.Stats().GetBodyBytes
	poll(t, 30*time.Second, "a second passed verify", func() bool { return runs("success") >= 2 })
	if read := proxy.Stats().GetBodyBytes - before; read == 0 {
		t.Errorf("a verify read nothing from storage")
	}

	// Damage the payload in place, as bit rot would: same size, one byte
	// flipped. Only a read-back sees it.
	direct := srv.Client(t)
	key := prefix + "/clusters/default/snapshots/" + id + ".db.zst"
	obj, err := direct.GetObject(t.Context(), srv.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if _, err := direct.PutObject(t.Context(), srv.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, `verify_runs_total{result="failure"}`, func() bool { return runs("failure") >= 1 })
	if n := runs("error"); n != 0 {
		t.Errorf("a damaged backup counted %v times as an error", n)
	}

	// Storage down: the backup cannot be judged. That is an error, not a
	// failure.
	failures := runs("failure")
	proxy.Set(testenv.Faults{Down: true})
	poll(t, 60*time.Second, `verify_runs_total{result="error"}`, func() bool { return runs("error") >= 1 })
	// A verify already past its reads when storage went down may still
	// have judged the damage; after that, only errors.
	errors0, failures0 := runs("error"), runs("failure")
	poll(t, 60*time.Second, "another verify with storage down", func() bool { return runs("error") > errors0 })
	if f := runs("failure"); f != failures0 || f > failures+1 {
		t.Errorf("storage down counted as damage: failures %v -> %v -> %v", failures, failures0, f)
	}
	if !strings.Contains(a.log.String(), "not judged") {
		t.Errorf("the agent's log does not say the backup was not judged")
	}
	proxy.Set(testenv.Faults{})
	a.stop(t, 30*time.Second)
}
