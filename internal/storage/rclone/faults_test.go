package rclone

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// Fault tests: rclone's S3 remote reaches versitygw through
// testenv.FaultProxy, which answers 503 SlowDown, cuts response bodies,
// stalls or drops requests. The rclone binary is the real one; nothing of
// the client is faked.

// faultPolicy keeps the fault tests short: quick backoff, a stall bound
// (also rclone's --timeout) far above a healthy request on this machine.
var faultPolicy = storage.Policy{
	MinBackoff: 10 * time.Millisecond,
	MaxBackoff: 200 * time.Millisecond,
	Stall:      5 * time.Second,
}

// behindProxy starts a fault proxy in front of srv and returns an rclone
// config whose remote "s3t" reaches srv through it, and the proxy.
func behindProxy(t *testing.T, srv *testenv.S3Server) (string, *testenv.FaultProxy) {
	t.Helper()
	p := testenv.StartFaultProxy(t, srv.Endpoint)
	conf := strings.Replace(s3Conf(srv), "endpoint = http://"+srv.Endpoint, "endpoint = http://"+p.Addr, 1)
	if !strings.Contains(conf, p.Addr) {
		t.Fatal("behindProxy: endpoint not replaced in the rclone config")
	}
	return writeConf(t, conf), p
}

// openThrough opens remote with the retry policy p in the context, as
// backends.Open does (New's check of the root is then retried).
func openThrough(t *testing.T, remote, conf string, p storage.Policy) *Remote {
	t.Helper()
	r, err := New(storage.WithPolicy(t.Context(), p), Config{
		Remote: remote, ConfigFile: conf, Binary: testenv.Bin(t, "rclone"), Env: testEnv(), Stall: p.Stall,
	}, false)
	if err != nil {
		t.Fatalf("New(%q): %v", remote, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestConformanceThroughFaults runs the whole contract through a network
// that answers 10% of the requests with 503 SlowDown and cuts 5% of the
// response bodies. rclone retries a failed request once
// (--low-level-retries 2), storage.Wrap retries whole operations and
// resumes cut reads (GetRange with --offset).
func TestConformanceThroughFaults(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	conf, p := behindProxy(t, srv)
	p.Set(testenv.Faults{Error503: 0.10, CutBody: 0.05, Seed: 1})
	var n atomic.Int64
	storagetest.RunWrapped(t, func(t *testing.T) storage.Backend {
		return openThrough(t, fmt.Sprintf("s3t:%s/faults/%d", srv.Bucket, n.Add(1)), conf, faultPolicy)
	}, faultPolicy)
	st := p.Stats()
	if st.Injected503+st.Cut == 0 {
		t.Fatal("the proxy injected no fault: the test proved nothing")
	}
	t.Logf("%d requests, %d answered 503, %d bodies cut: all hidden", st.Requests, st.Injected503, st.Cut)
	leftovers(t, srv)
}

// leftovers logs what faults left in the bucket that a healthy network
// does not (TestConformanceS3 fails on it): temporary objects whose
// deletion failed, multipart uploads whose creation was answered with a
// cut body (rclone then creates another). List never shows either;
// RemoveStale and a bucket lifecycle rule clean them.
func leftovers(t *testing.T, srv *testenv.S3Server) {
	t.Helper()
	c := srv.Client(t)
	tmp, uploads := 0, 0
	for o := range c.ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if strings.Contains(o.Key, tmpPrefix) {
			tmp++
		}
	}
	for u := range c.ListIncompleteUploads(t.Context(), srv.Bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		uploads++
	}
	t.Logf("left behind by faults: %d temporary objects, %d incomplete multipart uploads", tmp, uploads)
}

// TestResumeThroughCutBodies reads a multi-MiB object through a network
// that cuts half the response bodies: every read returns the exact bytes,
// resuming where it stopped (rclone cat --offset) rather than starting
// again.
func TestResumeThroughCutBodies(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	conf, p := behindProxy(t, srv)
	r := openThrough(t, "s3t:"+srv.Bucket+"/resume", conf, faultPolicy)
	ctx := t.Context()
	const size = 8<<20 + 12345
	g := storagetest.NewGen(11, size)
	if err := r.Put(ctx, "big", g); err != nil {
		t.Fatal(err)
	}
	want := g.Sum()

	var mu sync.Mutex
	procs := map[string]int{}
	r.onExit = func(sub string, _ *os.ProcessState) { mu.Lock(); procs[sub]++; mu.Unlock() }
	var retries atomic.Int64
	pol := faultPolicy
	pol.OnRetry = func(op string, err error) { retries.Add(1) }
	w := storage.Wrap(r, pol)

	p.Set(testenv.Faults{CutBody: 0.5, Seed: 1})
	p.ResetStats()
	const reads = 5
	for i := range reads {
		rc, err := w.Get(ctx, "big")
		if err != nil {
			t.Fatalf("read %d: Get: %v", i, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), want) {
			t.Fatalf("read %d: %d bytes (err %v), sha256 match %v; want the %d bytes stored", i, n, err, bytes.Equal(h.Sum(nil), want), size)
		}
	}
	st := p.Stats()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d reads of %d bytes: %d bodies cut, %d retries, rclone runs %v, %d body bytes sent (%.2f× the bytes read)",
		reads, size, st.Cut, retries.Load(), procs, st.GetBodyBytes, float64(st.GetBodyBytes)/float64(reads*size))
	if st.Cut < 2 {
		t.Fatalf("only %d bodies cut: the test proved nothing", st.Cut)
	}
	// Reads were resumed: a cat per Get plus one per resumption, each
	// resumption after a cut (rclone retries a cut listing itself) and
	// preceded by a stat (the first cat of a Get needs none).
	resumed := procs["cat"] - reads
	if resumed < 1 || resumed > int(st.Cut) || procs["lsjson"] != resumed {
		t.Errorf("rclone runs %v for %d reads and %d cuts: want a cat per read and per resumption (at least one, at most one per cut), and an lsjson per resumption", procs, reads, st.Cut)
	}
	// Resuming transfers each byte about once; starting again would
	// transfer the part before each cut again (half the object on
	// average).
	if limit := int64(reads) * size * 11 / 10; st.GetBodyBytes > limit {
		t.Errorf("%d body bytes sent for %d reads of %d bytes: reads started again instead of resuming", st.GetBodyBytes, reads, size)
	}
}

// TestUnavailable makes storage unreachable (the proxy drops every
// connection): Get, Put and List through storage.Wrap give up with
// storage.ErrUnavailable once Policy.Timeout is spent, and a Put leaves
// nothing behind.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	conf, p := behindProxy(t, srv)
	pol := faultPolicy
	pol.Timeout = 3 * time.Second
	r := openThrough(t, "s3t:"+srv.Bucket+"/down", conf, pol)
	w := storage.Wrap(r, pol)
	ctx := t.Context()
	if err := w.Put(ctx, "x", strings.NewReader("present")); err != nil {
		t.Fatal(err)
	}

	p.Set(testenv.Faults{Down: true})
	const bound = 30 * time.Second
	check := func(op string, fn func() error) {
		t.Helper()
		start := time.Now()
		err := fn()
		d := time.Since(start)
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with storage down: %v, want an error wrapping ErrUnavailable", op, err)
		}
		if d > bound {
			t.Errorf("%s with storage down took %v, want < %v", op, d.Round(time.Millisecond), bound)
		}
		t.Logf("%s gave up after %v: %v", op, d.Round(time.Millisecond), err)
	}
	check("Get", func() error {
		rc, err := w.Get(ctx, "x")
		if err == nil {
			rc.Close()
		}
		return err
	})
	check("Stat", func() error { _, err := w.Stat(ctx, "x"); return err })
	check("List", func() error { return w.List(ctx, "", func(storage.Info) error { return nil }) })
	check("Put", func() error { return w.Put(ctx, "new", bytes.NewReader([]byte("a manifest"))) })
	check("Remove", func() error { return w.Remove(ctx, "x") })

	// A stream cannot be read twice, so Wrap tries its Put once, and rclone
	// rcat reads its first part from the stream before its first request:
	// there is no replayable step to retry. It fails at once with a
	// retryable error, for the caller to start over.
	start := time.Now()
	err := w.Put(ctx, "stream", storagetest.NewGen(1, 3<<20))
	if err == nil || !storage.IsRetryable(err) && !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("streamed Put with storage down: %v, want a retryable error", err)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("streamed Put with storage down took %v, want < %v", d.Round(time.Millisecond), bound)
	}
	if dropped := p.Stats().Dropped; dropped == 0 {
		t.Fatal("the proxy dropped no request: the test proved nothing")
	}

	// Back up: the failed Puts left nothing, the object is still there.
	p.Set(testenv.Faults{})
	var names []string
	for o := range srv.Client(t).ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "down/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		names = append(names, o.Key)
	}
	if len(names) != 1 || names[0] != "down/x" {
		t.Errorf("after failed Puts the bucket holds %q, want only down/x", names)
	}
	for u := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "down/", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("incomplete upload left behind: %s", u.Key)
	}
}

// TestStallTimeout checks that rclone honours --timeout (Config.Stall): a
// request the server never answers is abandoned by rclone itself after
// about that long, with a retryable error, instead of hanging for rclone's
// default 5 minutes. rclone tries each S3 request several times (its pacer
// and aws-sdk-go both retry, up to --low-level-retries each), each try
// ending after the stall bound: storage.Wrap's watchdog, which abandons a
// try that moves no byte for Policy.Stall, bounds the whole.
func TestStallTimeout(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	conf, p := behindProxy(t, srv)
	const stall = time.Second
	r := openThrough(t, "s3t:"+srv.Bucket+"/stall", conf, storage.Policy{Stall: stall})
	if err := r.Put(t.Context(), "x", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	p.Set(testenv.Faults{Stall: 1})
	p.ResetStats()
	start := time.Now()
	_, err := r.Stat(t.Context(), "x")
	d := time.Since(start)
	stalled := p.Stats().Stalled
	t.Logf("Stat of a stalled server failed after %v and %d stalled requests: %v", d.Round(time.Millisecond), stalled, err)
	if !storage.IsRetryable(err) {
		t.Errorf("Stat of a stalled server: %v, want a retryable error", err)
	}
	if stalled == 0 {
		t.Fatal("the proxy stalled no request")
	}
	// Each stalled request ends after about stall (plus the SDK's and the
	// pacer's backoff between tries, and rclone's start).
	if per := d / time.Duration(stalled); per > stall+stall/2+time.Second {
		t.Errorf("%d stalled requests took %v, %v each: rclone does not apply --timeout %v", stalled, d.Round(time.Millisecond), per.Round(time.Millisecond), stall)
	}

	// Through storage.Wrap, a Get of a stalled server gives up within the
	// budget: each try is abandoned after Policy.Stall.
	pol := faultPolicy
	pol.Stall, pol.Timeout = 2*stall, 3*time.Second
	w := storage.Wrap(r, pol)
	start = time.Now()
	_, err = w.Get(t.Context(), "x")
	d = time.Since(start)
	t.Logf("wrapped Get of a stalled server gave up after %v: %v", d.Round(time.Millisecond), err)
	if !errors.Is(err, storage.ErrUnavailable) || d > pol.Timeout+2*pol.Stall+5*time.Second {
		t.Errorf("wrapped Get of a stalled server: %v after %v, want ErrUnavailable within about %v", err, d.Round(time.Millisecond), pol.Timeout+pol.Stall)
	}
}
