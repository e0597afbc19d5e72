package azblob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/azblob"
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

// behindProxy returns a container config that reaches az through a fault
// proxy, and the proxy. Shared Key signatures do not cover the host, so
// requests signed for the proxy are valid for Azurite.
func behindProxy(t *testing.T, az *testenv.Azurite, prefix string) (azblob.Config, *testenv.FaultProxy) {
	t.Helper()
	p := testenv.StartFaultProxy(t, az.Endpoint)
	cfg := config(az, prefix)
	cfg.Endpoint = "http://" + p.Addr + "/" + az.Account
	cfg.Stall = fastPolicy.Stall
	return cfg, p
}

// TestConformanceThroughFaults runs the whole contract through a network
// that answers 10% of requests with 503 and cuts 5% of response bodies: the
// wrapper must hide every fault.
func TestConformanceThroughFaults(t *testing.T) {
	az := testenv.SharedAzurite(t)
	var n atomic.Int64
	var proxies []*testenv.FaultProxy
	storagetest.RunWrapped(t, func(t *testing.T) storage.Backend {
		cfg, p := behindProxy(t, az, fmt.Sprintf("faults/%d", n.Add(1)))
		p.Set(testenv.Faults{Error503: 0.10, CutBody: 0.05, Seed: n.Load()})
		proxies = append(proxies, p)
		// Opening checks the container: also under the retry policy,
		// as backends.Open does.
		c, err := azblob.New(storage.WithPolicy(t.Context(), fastPolicy), cfg)
		if err != nil {
			t.Fatalf("azblob.New through faults: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
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

// TestResumeThroughCutBodies reads a large blob through a network that cuts
// half the response bodies: every read returns the exact bytes, and resumes
// from where it stopped instead of starting again.
func TestResumeThroughCutBodies(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg, p := behindProxy(t, az, "resume")
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
// into another blob put under the same name meanwhile.
func TestResumePinnedToObject(t *testing.T) {
	az := testenv.SharedAzurite(t)
	raw := open(t, config(az, "pin"))
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
		t.Fatal("GetRange returned no pin (ETag)")
	}
	if err := raw.Remove(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Put(ctx, "obj", strings.NewReader(strings.Repeat("second", 1<<20))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.GetRange(ctx, "obj", 100, pin); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("resumed read of a replaced blob: %v, want ErrChanged", err)
	}
}

// TestStorageDown: with every request failing, each operation gives up
// within its budget with ErrUnavailable, and a Put publishes nothing.
func TestStorageDown(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg, p := behindProxy(t, az, "down")
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
	c := az.Client(t)
	for _, name := range []string{"down/new", "down/new-stream"} {
		if _, err := c.NewBlobClient(name).GetProperties(ctx, nil); err == nil {
			t.Errorf("%s exists after a failed Put", name)
		}
	}
	if _, err := c.NewBlobClient("down/there").GetProperties(ctx, nil); err != nil {
		t.Errorf("the existing blob is gone: %v", err)
	}
}

// TestStalls: requests that hang (no byte moves) are abandoned after the
// stall bound and retried; no operation hangs.
func TestStalls(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg, p := behindProxy(t, az, "stall")
	pol := fastPolicy
	pol.Stall = time.Second
	cfg.Stall = pol.Stall
	b := storage.Wrap(open(t, cfg), pol)
	ctx := t.Context()
	p.Set(testenv.Faults{Stall: 0.3, Seed: 5})
	gen := storagetest.NewGen(9, 20<<20)
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

// TestStallWithoutWrap: the backend's own transport fails a request whose
// connection moves no byte for the stall bound (idle-timeout dialer), with
// a retryable error, even without the wrapper's watchdog.
func TestStallWithoutWrap(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg, p := behindProxy(t, az, "idle")
	cfg.Stall = 500 * time.Millisecond
	raw := open(t, cfg)
	p.Set(testenv.Faults{Stall: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := raw.Stat(ctx, "anything")
	if !storage.IsRetryable(err) || ctx.Err() != nil {
		t.Fatalf("Stat through a stalled connection: %v after %s, want a retryable error after about 0.5 s", err, time.Since(start))
	}
	t.Logf("stalled Stat failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}
