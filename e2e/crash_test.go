package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// fillRandom writes n keys under prefix with valueSize random (so
// incompressible) bytes each, in transactions of perTxn puts, from a few
// writers at once, and returns them.
func fillRandom(t *testing.T, cl *clientv3.Client, prefix string, n, valueSize, perTxn int, rng *rand.Rand) map[string]string {
	t.Helper()
	want := make(map[string]string, n)
	var batches [][]clientv3.Op
	var ops []clientv3.Op
	buf := make([]byte, valueSize)
	for i := 0; i < n; i++ {
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for b := 0; b < 8 && j+b < len(buf); b++ {
				buf[j+b] = byte(v >> (8 * b))
			}
		}
		k, v := fmt.Sprintf("%s%06d", prefix, i), string(buf)
		want[k] = v
		ops = append(ops, clientv3.OpPut(k, v))
		if len(ops) == perTxn || i == n-1 {
			batches = append(batches, ops)
			ops = nil
		}
	}
	work := make(chan []clientv3.Op)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := cl.Txn(ctx).Then(b...).Commit()
				cancel()
				if err != nil {
					errs <- err
					for range work {
					}
					return
				}
			}
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("fill: %v", err)
	default:
	}
	return want
}

// repoObjects is what a repository holds in one cluster's snapshot directory.
type repoObjects struct {
	manifests map[string]bool // backup IDs with a manifest
	payloads  map[string]bool // backup IDs with a payload
	partial   map[string]bool // temp files (local) or incomplete multipart uploads (S3)
}

func newRepoObjects() repoObjects {
	return repoObjects{map[string]bool{}, map[string]bool{}, map[string]bool{}}
}

func (o repoObjects) add(name string) {
	switch {
	case strings.HasSuffix(name, ".manifest.json"):
		o.manifests[strings.TrimSuffix(name, ".manifest.json")] = true
	case strings.HasSuffix(name, ".db.zst") || strings.HasSuffix(name, ".db.zst.age"):
		o.payloads[strings.SplitN(name, ".db.zst", 2)[0]] = true
	default:
		o.partial[name] = true
	}
}

// orphans are payloads without a manifest.
func (o repoObjects) orphans() []string {
	var out []string
	for id := range o.payloads {
		if !o.manifests[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func newKeys(before, after map[string]bool) int {
	n := 0
	for k := range after {
		if !before[k] {
			n++
		}
	}
	return n
}

// crashOutcome says where in a backup one kill landed.
func crashOutcome(before, after repoObjects, exited bool) string {
	switch {
	case exited:
		return "finished before the kill"
	case newKeys(before.manifests, after.manifests) > 0:
		return "after publishing the manifest"
	case newKeys(before.payloads, after.payloads) > 0:
		return "mid-upload: payload stored, no manifest (orphan)"
	case newKeys(before.partial, after.partial) > 0:
		return "mid-upload: partial payload (temp file / incomplete upload)"
	}
	return "before the upload started"
}

// killLoop starts `etcd-backup snapshot` rounds times and SIGKILLs it after
// a random delay in [0, maxDelay] (stratified: round i draws from the i-th
// of rounds equal slices, so the whole range is covered), and reports where
// each kill landed.
func killLoop(t *testing.T, rng *rand.Rand, rounds int, maxDelay time.Duration, env, args []string, scan func() repoObjects) map[string]int {
	t.Helper()
	outcomes := map[string]int{}
	for i := range rounds {
		slice := int64(maxDelay) / int64(rounds)
		delay := time.Duration(int64(i)*slice + rng.Int64N(slice+1))
		o := killOnce(t, env, args, scan, delay, nil)
		t.Logf("round %2d: kill after %v: %s", i, delay.Round(time.Millisecond), o)
		outcomes[o]++
	}
	return outcomes
}

// killOnce runs one snapshot and SIGKILLs it after delay or, with when set,
// as soon as when(objects before, objects now) holds (polled every
// millisecond), and returns where the kill landed.
func killOnce(t *testing.T, env, args []string, scan func() repoObjects, delay time.Duration, when func(before, now repoObjects) bool) string {
	t.Helper()
	before := scan()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	timer := time.NewTimer(delay)
	defer timer.Stop()
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case err := <-done:
			exited = true
			if err != nil {
				t.Errorf("snapshot exited by itself with %v", err)
			}
			break wait
		case <-timer.C:
			if when == nil {
				break wait
			}
		case <-poll.C:
			if when != nil && when(before, scan()) {
				break wait
			}
		}
	}
	if !exited {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	return crashOutcome(before, scan(), exited)
}

// killOnEvents SIGKILLs a snapshot the moment its payload object appears,
// and another the moment its manifest appears: the two instants where a
// wrong write order would publish a backup that is not complete.
func killOnEvents(t *testing.T, env, args []string, scan func() repoObjects) map[string]int {
	t.Helper()
	outcomes := map[string]int{}
	for _, ev := range []struct {
		name string
		when func(before, now repoObjects) bool
	}{
		{"payload appears", func(b, n repoObjects) bool { return newKeys(b.payloads, n.payloads) > 0 }},
		{"manifest appears", func(b, n repoObjects) bool { return newKeys(b.manifests, n.manifests) > 0 }},
	} {
		o := killOnce(t, env, args, scan, time.Minute, ev.when)
		t.Logf("kill when the %s: %s", ev.name, o)
		outcomes[o]++
	}
	return outcomes
}

// verifyListed checks that list --json shows exactly the backups that have a
// manifest, that none is damaged, and that every one passes verify. It
// returns the listed IDs, newest first.
func verifyListed(t *testing.T, env []string, repo string, objs repoObjects) []string {
	t.Helper()
	ids, byID := listBackupsJSON(t, env, repo)
	if len(ids) != len(objs.manifests) {
		t.Errorf("list shows %d backups %v, the repository holds %d manifests", len(ids), ids, len(objs.manifests))
	}
	for _, id := range ids {
		if !objs.manifests[id] {
			t.Errorf("list shows %s, which has no manifest", id)
		}
		if e := byID[id].Error; e != "" {
			t.Errorf("list shows %s as damaged: %s", id, e)
		}
	}
	// Verify two at a time: each reads the whole payload back.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	results := make([]result, len(ids))
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = verifyQuiet(env, repo, id)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("listed backup %s fails verify: exit %d\n%s", ids[i], r.code, r.stderr)
		}
	}
	return ids
}

// verifyQuiet runs verify without a *testing.T (it runs on other goroutines).
func verifyQuiet(env []string, repo, id string) result {
	cmd := exec.Command(binary, "verify", id, "--repo", repo)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		errb.WriteString(err.Error())
	}
	return result{out.String(), errb.String(), code}
}

// TestCrashSafety SIGKILLs snapshots of a 64 MiB etcd at random points and
// checks that every backup list shows is complete and intact, and that the
// newest one restores to every key.
func TestCrashSafety(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CRASH_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (rerun with CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	specs := newSpecs(t, "m", 1)
	c := startCluster(t, "3.6.16", specs)
	ep := c.endpoints()[0]
	start := time.Now()
	want := fillRandom(t, c.client(), "/crash/", 16384, 4096, 64, rng)
	t.Logf("wrote %d keys of 4 KiB in %v", len(want), time.Since(start).Round(time.Millisecond))

	t.Run("local", func(t *testing.T) {
		repoDir := t.TempDir()
		snapDir := filepath.Join(repoDir, "clusters", "default", "snapshots")
		scan := func() repoObjects {
			o := newRepoObjects()
			entries, err := os.ReadDir(snapDir)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			for _, e := range entries {
				o.add(e.Name())
			}
			return o
		}
		args := []string{"snapshot", "--endpoints", ep, "--repo", repoDir}

		start := time.Now()
		first := mustCLI(t, nil, args...).lastLine()
		full := time.Since(start)
		t.Logf("one full snapshot: %v", full.Round(time.Millisecond))

		outcomes := killLoop(t, rng, 12, full, nil, args, scan)
		t.Logf("random kills: %v", outcomes)
		t.Logf("event kills: %v", killOnEvents(t, nil, args, scan))

		final := mustCLI(t, nil, args...).lastLine()
		objs := scan()
		t.Logf("left in the repository: %d manifests, orphan payloads %v, %d temp files",
			len(objs.manifests), objs.orphans(), len(objs.partial))
		ids := verifyListed(t, nil, repoDir, objs)
		if len(ids) < 2 || ids[0] != final || !objs.manifests[first] {
			t.Fatalf("list shows %v: want the final backup %s first, and the first %s", ids, final, first)
		}

		// The newest backup brings back every key.
		rs := newSpecs(t, "r", 1)
		ic := embedded.InitialCluster(rs)
		r := mustCLI(t, nil, "restore", "latest", "--repo", repoDir, "--data-dir", rs[0].DataDir,
			"--name", rs[0].Name, "--initial-cluster", ic, "--initial-cluster-token", "e2e")
		if !strings.Contains(r.stdout, "restored backup "+final) {
			t.Fatalf("restore latest restored another backup than %s:\n%s", final, r.stdout)
		}
		restored := &realCluster{t: t, version: "3.6.16", bin: etcdBinary(t, "3.6.16")}
		restored.procs = append(restored.procs, startEtcd(t, restored.bin, rs[0], ic, "new"))
		restored.waitHealthy()
		checkKeys(t, rs[0].ClientURL, "/crash/", want)
	})

	t.Run("s3", func(t *testing.T) {
		srv := testenv.StartS3(t)
		env := srv.Env()
		repoURL := srv.URL("crash")
		mc := srv.Client(t)
		prefix := "crash/clusters/default/snapshots/"
		scan := func() repoObjects {
			o := newRepoObjects()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for oi := range mc.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
				if oi.Err != nil {
					t.Fatalf("list objects: %v", oi.Err)
				}
				o.add(path.Base(oi.Key))
			}
			for u := range mc.ListIncompleteUploads(ctx, srv.Bucket, prefix, true) {
				if u.Err != nil {
					t.Fatalf("list incomplete uploads: %v", u.Err)
				}
				o.add(path.Base(u.Key) + " upload " + u.UploadID)
			}
			return o
		}
		args := []string{"snapshot", "--endpoints", ep, "--repo", repoURL}

		start := time.Now()
		mustCLI(t, env, args...)
		full := time.Since(start)
		t.Logf("one full snapshot to S3: %v", full.Round(time.Millisecond))

		outcomes := killLoop(t, rng, 6, full, env, args, scan)
		t.Logf("random kills: %v", outcomes)
		t.Logf("event kills: %v", killOnEvents(t, env, args, scan))

		final := mustCLI(t, env, args...).lastLine()
		objs := scan()
		t.Logf("left in the bucket: %d manifests, orphan payloads %v, %d incomplete uploads",
			len(objs.manifests), objs.orphans(), len(objs.partial))
		ids := verifyListed(t, env, repoURL, objs)
		if len(ids) < 2 || ids[0] != final {
			t.Fatalf("list shows %v: want the final backup %s first", ids, final)
		}
	})
}
