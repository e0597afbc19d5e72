package gcs_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/gcs"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// fastPolicy keeps the fault tests short: quick backoff, a short stall
// bound, and a budget far above what the injected faults need.
var fastPolicy = storage.Policy{
	Timeout:    time.Minute,
	Stall:      3 * time.Second,
	MinBackoff: 10 * time.Millisecond,
	MaxBackoff: 200 * time.Millisecond,
}

// behindProxy returns a bucket config that reaches srv through a fault
// proxy, and the proxy.
func behindProxy(t *testing.T, srv *testenv.GCSServer, prefix string) (gcs.Config, *testenv.FaultProxy) {
	t.Helper()
	p := testenv.StartFaultProxy(t, srv.Endpoint)
	cfg := config(srv, prefix)
	cfg.Endpoint = "http://" + p.Addr
	cfg.Stall = fastPolicy.Stall
	return cfg, p
}

// TestConformanceThroughFaults runs the whole contract through a network
// that answers 10% of requests with 503 and cuts 5% of download bodies: the
// wrapper (and the upload's chunk retries under its policy) must hide every
// fault.
func TestConformanceThroughFaults(t *testing.T) {
	srv := testenv.StartGCS(t)
	var n atomic.Int64
	var proxies []*testenv.FaultProxy
	storagetest.RunWrapped(t, func(t *testing.T) storage.Backend {
		cfg, p := behindProxy(t, srv, fmt.Sprintf("faults/%d", n.Add(1)))
		p.Set(testenv.Faults{Error503: 0.10, CutBody: 0.05, CutGETOnly: true, Seed: n.Load()})
		proxies = append(proxies, p)
		// Opening checks the bucket: also under the retry policy, as
		// backends.Open does.
		b, err := gcs.New(storage.WithPolicy(t.Context(), fastPolicy), cfg)
		if err != nil {
			t.Fatalf("gcs.New through faults: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}, fastPolicy)
	var injected int64
	for _, p := range proxies {
		st := p.Stats()
		injected += st.Injected503 + st.Cut
	}
	if injected == 0 {
		t.Fatal("the proxy injected no fault: the test proved nothing")
	}
	t.Logf("faults injected and hidden: %d", injected)
}

// TestUploadChunkRetries streams an object of several chunks through a
// network that answers a third of the requests with 503: the chunks are
// resent under the wrapper's policy (reported through OnRetry), and the
// object arrives whole.
func TestUploadChunkRetries(t *testing.T) {
	srv := testenv.StartGCS(t)
	cfg, p := behindProxy(t, srv, "chunks")
	var retries atomic.Int64
	pol := fastPolicy
	pol.OnRetry = func(op string, err error) {
		if op == "upload chunk" {
			retries.Add(1)
		}
	}
	b := storage.Wrap(open(t, cfg), pol)
	ctx := t.Context()
	p.Set(testenv.Faults{Error503: 0.33, Seed: 11})
	gen := storagetest.NewGen(5, 40<<20+7)
	if err := b.Put(ctx, "big", gen); err != nil {
		t.Fatalf("Put through 503s: %v", err)
	}
	p.Set(testenv.Faults{})
	rc, err := b.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, err = io.Copy(h, rc)
	rc.Close()
	if err != nil || !bytes.Equal(h.Sum(nil), gen.Sum()) {
		t.Fatalf("read back: %v, or other bytes", err)
	}
	if p.Stats().Injected503 == 0 || retries.Load() == 0 {
		t.Fatalf("503s injected: %d, chunk retries reported: %d; want both", p.Stats().Injected503, retries.Load())
	}
	t.Logf("503s: %d, chunk retries: %d", p.Stats().Injected503, retries.Load())
}

// TestResumeThroughCutBodies reads a large object through a network that
// cuts half the response bodies: every read returns the exact bytes, and
// resumes from where it stopped instead of starting again.
func TestResumeThroughCutBodies(t *testing.T) {
	srv := testenv.StartGCS(t)
	cfg, p := behindProxy(t, srv, "resume")
	b := storage.Wrap(open(t, cfg), fastPolicy)
	ctx := t.Context()
	const size = 24<<20 + 5
	gen := storagetest.NewGen(7, size)
	if err := b.Put(ctx, "big", gen); err != nil {
		t.Fatalf("Put: %v", err)
	}
	want := gen.Sum()
	p.Set(testenv.Faults{CutBody: 0.5, Seed: 3})
	var cuts int64
	for i := range 5 {
		p.ResetStats()
		rc, err := b.Get(ctx, "big")
		if err != nil {
			t.Fatalf("read %d: Get: %v", i, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %d: after %d bytes: %v", i, n, err)
		}
		if n != size || !bytes.Equal(h.Sum(nil), want) {
			t.Fatalf("read %d: got %d bytes with another sha256, want the %d bytes stored", i, n, size)
		}
		st := p.Stats()
		cuts += st.Cut
		t.Logf("read %d: %d cut bodies, %d GET requests, %d body bytes sent for %d", i, st.Cut, st.ByMethod["GET"], st.GetBodyBytes, size)
		if st.GetBodyBytes > 2*size {
			t.Errorf("read %d: %d bytes downloaded for a %d-byte object: reads restart instead of resuming", i, st.GetBodyBytes, size)
		}
	}
	if cuts == 0 {
		t.Fatal("no body was cut: the test proved nothing")
	}
}

// TestResumePinnedToObject: a read resumed after a cut must not continue
// into another object put under the same name meanwhile.
func TestResumePinnedToObject(t *testing.T) {
	srv := testenv.StartGCS(t)
	cfg, _ := behindProxy(t, srv, "pin")
	raw := open(t, cfg)
	ctx := t.Context()
	first := bytes.Repeat([]byte("first "), 1<<20)
	if err := raw.Put(ctx, "obj", bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	rc, pin, err := raw.GetRange(ctx, "obj", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if pin == "" {
		t.Fatal("GetRange returned no pin (generation)")
	}
	if err := raw.Remove(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Put(ctx, "obj", strings.NewReader(strings.Repeat("second", 1<<20))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.GetRange(ctx, "obj", 100, pin); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("resumed read of a replaced object: %v, want ErrChanged", err)
	}
	if err := raw.Remove(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.GetRange(ctx, "obj", 100, pin); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("resumed read of a removed object: %v, want ErrNotFound", err)
	}
}

// TestStorageDown: with every request failing, each operation gives up
// within its budget with ErrUnavailable, and a Put publishes nothing.
func TestStorageDown(t *testing.T) {
	srv := testenv.StartGCS(t)
	cfg, p := behindProxy(t, srv, "down")
	raw := open(t, cfg)
	pol := fastPolicy
	pol.Timeout = 2 * time.Second
	b := storage.Wrap(raw, pol)
	ctx := t.Context()
	if err := b.Put(ctx, "there", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	p.Set(testenv.Faults{Down: true})
	ops := map[string]func() error{
		"get": func() error {
			rc, err := b.Get(ctx, "there")
			if err == nil {
				rc.Close()
			}
			return err
		},
		"stat":   func() error { _, err := b.Stat(ctx, "there"); return err },
		"list":   func() error { return b.List(ctx, "", func(storage.Info) error { return nil }) },
		"remove": func() error { return b.Remove(ctx, "there") },
		"put":    func() error { return b.Put(ctx, "new", strings.NewReader("data")) },
		"put stream": func() error {
			return b.Put(ctx, "new-stream", storagetest.NewGen(1, 20<<20))
		},
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		took := time.Since(start)
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with storage down: %v, want ErrUnavailable", name, err)
		}
		if took > 30*time.Second {
			t.Errorf("%s with storage down took %s, want about the 2 s budget", name, took)
		}
		t.Logf("%s: %s: %v", name, took.Round(time.Millisecond), err)
	}
	if p.Stats().Dropped == 0 {
		t.Fatal("the proxy dropped no request")
	}
	// Nothing was published, nothing was lost.
	for _, key := range []string{"down/new", "down/new-stream"} {
		if srv.ObjectExists(t, key) {
			t.Errorf("%s exists after a failed Put", key)
		}
	}
	if !srv.ObjectExists(t, "down/there") {
		t.Error("the existing object is gone")
	}
}

// TestStalls: requests that hang (no byte moves) are abandoned after the
// stall bound and retried; no operation hangs.
func TestStalls(t *testing.T) {
	srv := testenv.StartGCS(t)
	cfg, p := behindProxy(t, srv, "stall")
	pol := fastPolicy
	pol.Stall = time.Second
	cfg.Stall = pol.Stall
	b := storage.Wrap(open(t, cfg), pol)
	ctx := t.Context()
	p.Set(testenv.Faults{Stall: 0.3, Seed: 5})
	gen := storagetest.NewGen(9, 40<<20)
	if err := b.Put(ctx, "big", gen); err != nil {
		t.Fatalf("Put through stalls: %v", err)
	}
	rc, err := b.Get(ctx, "big")
	if err != nil {
		t.Fatalf("Get through stalls: %v", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read through stalls: %v", err)
	}
	if !bytes.Equal(h.Sum(nil), gen.Sum()) {
		t.Fatal("read back other bytes")
	}
	if _, err := b.Stat(ctx, "big"); err != nil {
		t.Fatalf("Stat through stalls: %v", err)
	}
	if p.Stats().Stalled == 0 {
		t.Fatal("no request stalled: the test proved nothing")
	}
	t.Logf("stalled requests survived: %d", p.Stats().Stalled)
}
