package s3

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

func probeConfig(srv *testenv.S3Server, endpoint, prefix string) Config {
	return Config{
		Bucket: srv.Bucket, Prefix: prefix, Endpoint: endpoint, Region: srv.Region, PathStyle: true,
		Credentials: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
	}
}

// rawKeys lists every key in the bucket, probes included.
func rawKeys(t *testing.T, srv *testenv.S3Server) []string {
	t.Helper()
	var keys []string
	for oi := range srv.Client(t).ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// TestCheckCreateOnly: a server that honours If-None-Match passes the
// probe, which leaves nothing behind and runs once per process and bucket.
func TestCheckCreateOnly(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		p := testenv.StartFaultProxy(t, srv.Endpoint)
		b, err := New(t.Context(), probeConfig(srv, p.Addr, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		p.ResetStats()
		if err := b.CheckCreateOnly(t.Context()); err != nil {
			t.Fatalf("CheckCreateOnly on %s: %v, want nil", srv.Kind, err)
		}
		if st := p.Stats(); st.ByMethod["PUT"] != 2 || st.ByMethod["DELETE"] != 1 {
			t.Errorf("the probe sent %v, want 2 PUTs and 1 DELETE", st.ByMethod)
		}
		if keys := rawKeys(t, srv); len(keys) != 0 {
			t.Errorf("the probe left %q", keys)
		}
		// Once per process and bucket: another Bucket on the same one
		// (another prefix) asks nothing.
		b2, err := New(t.Context(), probeConfig(srv, p.Addr, "other"))
		if err != nil {
			t.Fatal(err)
		}
		defer b2.Close()
		p.ResetStats()
		if err := storage.CheckCreateOnly(t.Context(), storage.Wrap(b2, storage.Policy{})); err != nil {
			t.Fatalf("second CheckCreateOnly: %v", err)
		}
		if st := p.Stats(); st.Requests != 0 {
			t.Errorf("second CheckCreateOnly sent %v, want no request", st.ByMethod)
		}
	})
}

// TestCheckCreateOnlyIgnored puts the fault proxy, stripping If-None-Match,
// between the backend and a real server: the server then overwrites on a
// create-only PUT, as servers that ignore the header do, and the probe must
// say so. Put's HEAD check still refuses an existing name.
func TestCheckCreateOnlyIgnored(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		p := testenv.StartFaultProxy(t, srv.Endpoint)
		p.SetCredentials(srv.AccessKey, srv.SecretKey, srv.Region)
		p.Set(testenv.Faults{StripIfNoneMatch: true})
		b, err := New(t.Context(), probeConfig(srv, p.Addr, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		err = b.CheckCreateOnly(t.Context())
		if !errors.Is(err, storage.ErrNotCreateOnly) || !strings.Contains(err.Error(), "ignores") {
			t.Fatalf("CheckCreateOnly through a proxy that strips If-None-Match: %v, want ErrNotCreateOnly (ignores)", err)
		}
		t.Log(err)
		if p.Stats().Stripped != 2 {
			t.Errorf("the proxy stripped %d requests, want the probe's 2", p.Stats().Stripped)
		}
		if keys := rawKeys(t, srv); len(keys) != 0 {
			t.Errorf("the probe left %q", keys)
		}
		// The answer is remembered, even once the server behaves.
		p.Set(testenv.Faults{})
		if err := b.CheckCreateOnly(t.Context()); !errors.Is(err, storage.ErrNotCreateOnly) {
			t.Errorf("second CheckCreateOnly: %v, want the first answer", err)
		}

		// What the probe found: a create-only write past the HEAD check
		// overwrites.
		p.Set(testenv.Faults{StripIfNoneMatch: true})
		if err := b.Put(t.Context(), "obj", strings.NewReader("original")); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(t.Context(), "obj", strings.NewReader("again")); !errors.Is(err, storage.ErrExists) {
			t.Errorf("Put over an existing object: %v, want ErrExists from the HEAD check", err)
		}
		if err := b.putSingle(t.Context(), b.key("obj"), []byte("replaced"), newToken()); err != nil {
			t.Errorf("create-only PUT past the HEAD check: %v, want the overwrite the probe predicted", err)
		}
	})
}

// TestCheckCreateOnlyCannotTell: a probe that cannot write (storage down)
// returns the error, not a verdict, and is tried again next time.
func TestCheckCreateOnlyCannotTell(t *testing.T) {
	srv := testenv.StartS3(t)
	p := testenv.StartFaultProxy(t, srv.Endpoint)
	b, err := New(t.Context(), probeConfig(srv, p.Addr, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p.Set(testenv.Faults{Down: true})
	ctx := storage.WithPolicy(t.Context(), storage.Policy{Timeout: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	err = b.CheckCreateOnly(ctx)
	if err == nil || errors.Is(err, storage.ErrNotCreateOnly) {
		t.Fatalf("CheckCreateOnly with storage down: %v, want an error that is no verdict", err)
	}
	p.Set(testenv.Faults{})
	if err := b.CheckCreateOnly(t.Context()); err != nil {
		t.Fatalf("CheckCreateOnly once storage is back: %v", err)
	}
}

// TestStaleProbe: a probe object left behind (a process killed while
// probing) is invisible to List and removed by RemoveStale once old.
func TestStaleProbe(t *testing.T) {
	srv := testenv.StartS3(t)
	b, err := New(t.Context(), probeConfig(srv, srv.Endpoint, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	c := srv.Client(t)
	if _, err := c.PutObject(ctx, srv.Bucket, "repo/"+probePrefix+"left", strings.NewReader("1"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "obj", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := b.List(ctx, "", func(i storage.Info) error { listed = append(listed, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != "obj" {
		t.Errorf("List = %q, want only obj", listed)
	}
	removed, err := b.RemoveStale(ctx, time.Hour)
	if err != nil || len(removed) != 0 {
		t.Fatalf("RemoveStale(1h) = %q, %v; want nothing removed", removed, err)
	}
	time.Sleep(1100 * time.Millisecond)
	removed, err = b.RemoveStale(ctx, 0)
	if err != nil || len(removed) != 1 || !strings.HasPrefix(removed[0], probePrefix+"left (create-only probe") {
		t.Fatalf("RemoveStale(0) = %q, %v; want the probe", removed, err)
	}
	if keys := rawKeys(t, srv); len(keys) != 1 || keys[0] != "repo/obj" {
		t.Errorf("keys left: %q", keys)
	}
}
