package gcs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/gcs"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

func config(srv *testenv.GCSServer, prefix string) gcs.Config {
	return gcs.Config{Bucket: srv.Bucket, Prefix: prefix, Endpoint: "http://" + srv.Endpoint}
}

func open(t *testing.T, cfg gcs.Config) *gcs.Bucket {
	t.Helper()
	b, err := gcs.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("gcs.New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	srv := testenv.StartGCS(t)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		// A fresh prefix per subtest: an empty repository.
		return open(t, config(srv, fmt.Sprintf("conformance/%d", n.Add(1))))
	})
}

// TestConformanceBucketRoot runs the suite at the root of fresh buckets, so
// that prefix handling cannot hide a bug.
func TestConformanceBucketRoot(t *testing.T) {
	srv := testenv.StartGCS(t)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		bucket := fmt.Sprintf("root-%d", n.Add(1))
		if err := srv.CreateBucket(bucket); err != nil {
			t.Fatal(err)
		}
		return open(t, gcs.Config{Bucket: bucket, Endpoint: "http://" + srv.Endpoint})
	})
}

// TestEmulatorFromEnvironment: without an endpoint in the URL, the client
// follows $STORAGE_EMULATOR_HOST (and sends no credentials).
func TestEmulatorFromEnvironment(t *testing.T) {
	srv := testenv.StartGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Endpoint)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
	b := open(t, gcs.Config{Bucket: srv.Bucket, Prefix: "env"})
	ctx := t.Context()
	if err := b.Put(ctx, "x", strings.NewReader("through the emulator")); err != nil {
		t.Fatal(err)
	}
	if !srv.ObjectExists(t, "env/x") {
		t.Fatal("the object is not on the emulator")
	}
	if got := b.Location(); got != "gs://"+srv.Bucket+"/env" {
		t.Errorf("Location() = %q", got)
	}
}

func TestMissingBucket(t *testing.T) {
	srv := testenv.StartGCS(t)
	_, err := gcs.New(t.Context(), gcs.Config{Bucket: "no-such-bucket", Endpoint: "http://" + srv.Endpoint})
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("New on a missing bucket: %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "create it first") {
		t.Errorf("error %q gives no hint", err)
	}
}

func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	port := testenv.FreePort(t)
	_, err := gcs.New(ctx, gcs.Config{Bucket: "bucket", Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)})
	if err == nil || !storage.IsRetryable(err) {
		t.Fatalf("New on a closed port (outside a retry policy): %v, want a retryable error", err)
	}
}
