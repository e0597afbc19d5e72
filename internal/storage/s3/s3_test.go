package s3_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/s3"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

func config(srv *testenv.S3Server, prefix string) s3.Config {
	return s3.Config{
		Bucket:      srv.Bucket,
		Prefix:      prefix,
		Endpoint:    srv.Endpoint,
		Region:      srv.Region,
		PathStyle:   true,
		Credentials: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
	}
}

func open(t *testing.T, cfg s3.Config) *s3.Bucket {
	t.Helper()
	b, err := s3.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("s3.New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		var n atomic.Int64
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			// A fresh prefix per subtest: an empty repository.
			return open(t, config(srv, fmt.Sprintf("conformance/%d", n.Add(1))))
		})
	})
}

// TestConformanceBucketRoot runs the suite at the root of fresh buckets, so
// that prefix handling cannot hide a bug.
func TestConformanceBucketRoot(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			srv := start(t)
			return open(t, config(srv, ""))
		})
	})
}

// TestIfNoneMatch documents that the test server honours If-None-Match: *
// on PutObject and on CompleteMultipartUpload, so that the conformance suite
// checks conditional writes, not only the HEAD check before them.
func TestIfNoneMatch(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		ctx := t.Context()
		c := srv.Client(t)
		core := minio.Core{Client: c}
		opts := minio.PutObjectOptions{}
		opts.SetMatchETagExcept("*")
		if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("1"), 1, opts); err != nil {
			t.Fatal(err)
		}
		_, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("2"), 1, opts)
		if minio.ToErrorResponse(err).StatusCode != 412 {
			t.Errorf("PutObject with If-None-Match on an existing key: %v, want 412 PreconditionFailed", err)
		}

		id, err := core.NewMultipartUpload(ctx, srv.Bucket, "k", minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := core.PutObjectPart(ctx, srv.Bucket, "k", id, 1, strings.NewReader("3"), 1, minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = core.CompleteMultipartUpload(ctx, srv.Bucket, "k", id, []minio.CompletePart{{PartNumber: 1, ETag: p.ETag}}, opts)
		if minio.ToErrorResponse(err).StatusCode != 412 {
			t.Errorf("CompleteMultipartUpload with If-None-Match on an existing key: %v, want 412 PreconditionFailed", err)
		}
		_ = core.AbortMultipartUpload(ctx, srv.Bucket, "k", id)

		// And the Bucket's own Put, past its HEAD check, relies on it: the
		// conformance suite's ConcurrentSameName exercises that race.
	})
}

// TestFailedPutLeavesNoUpload checks that a multipart upload whose reader
// fails, or whose context is cancelled, is aborted on the server.
func TestFailedPutLeavesNoUpload(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		b := open(t, config(srv, "repo"))
		boom := errors.New("boom")
		err := b.Put(t.Context(), "obj", storagetest.NewGen(1, 100<<20).FailAfter(40<<20, boom))
		if !errors.Is(err, boom) {
			t.Fatalf("Put with failing reader: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err = b.Put(ctx, "obj2", storagetest.NewGen(1, 1<<40)) // would take forever
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put with expiring context: %v", err)
		}
		for u := range srv.Client(t).ListIncompleteUploads(t.Context(), srv.Bucket, "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			t.Errorf("incomplete upload left behind: %s (%s)", u.Key, u.UploadID)
		}
	})
}

// TestPutMemory streams 200 MiB into one object and samples the heap: a Put
// must hold a bounded amount of the object in memory, whatever its size.
//
// The bound, 40 MiB of heap growth: a Put keeps two 8 MiB part buffers live
// (one being uploaded, one being filled), 16 MiB. The rest is garbage: with
// plain http minio-go signs every 64 KiB chunk (HMAC state, headers), about
// 90 KiB of garbage per MiB sent, which Go's default GOGC=100 lets grow to
// about the live heap before collecting it. So the peak settles near
// 2 x 16 MiB: measured +31 MiB for 200 MiB and +33 MiB for a 1 GiB stream.
// 40 MiB leaves room for GC timing; three buffers (or 16 MiB parts, measured
// at +64 MiB on 1 GiB) would fail it.
func TestPutMemory(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		const (
			size  = 200 << 20
			bound = 40 << 20
		)
		srv := start(t)
		b := open(t, config(srv, "mem"))

		runtime.GC()
		runtime.GC() // twice: the second empties sync.Pool victim caches
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		before := ms.TotalAlloc

		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
		began := time.Now()
		g := storagetest.NewGen(7, size)
		err := b.Put(t.Context(), "big", g)
		elapsed := time.Since(began)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("Put(200 MiB): %v", err)
		}
		runtime.ReadMemStats(&ms)
		grew := int64(peak.Load()) - int64(base)
		t.Logf("200 MiB Put in %v (%.0f MiB/s): heap in use %.1f MiB before, peak %.1f MiB (+%.1f MiB); allocated %.1f MiB during the Put",
			elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds(),
			float64(base)/(1<<20), float64(peak.Load())/(1<<20), float64(grew)/(1<<20),
			float64(ms.TotalAlloc-before)/(1<<20))
		if grew > bound {
			t.Errorf("heap grew by %.1f MiB during a streamed Put, want at most %d MiB", float64(grew)/(1<<20), bound>>20)
		}
		info, err := b.Stat(t.Context(), "big")
		if err != nil || info.Size != size {
			t.Fatalf("Stat(big) = %+v, %v; want %d bytes", info, err, size)
		}
	})
}

func TestNewMissingBucket(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		cfg := config(srv, "")
		cfg.Bucket = "no-such-bucket"
		_, err := s3.New(t.Context(), cfg)
		if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "no-such-bucket") {
			t.Fatalf("New(missing bucket) = %v, want ErrNotFound naming the bucket", err)
		}
	})
}

func TestBadCredentials(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		cfg := config(srv, "")
		cfg.Credentials = credentials.NewStaticV4(srv.AccessKey, "wrong-secret", "")
		_, err := s3.New(t.Context(), cfg)
		if err == nil || storage.IsRetryable(err) || strings.Contains(err.Error(), "wrong-secret") {
			t.Fatalf("New(bad secret) = %v, want a permanent error without the secret", err)
		}
		t.Log(err)
	})
}

// TestEnvCredentials checks the default credential chain picks up the
// standard AWS environment variables.
func TestEnvCredentials(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		srv.SetEnv(t)
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
		cfg := config(srv, "env")
		cfg.Credentials = nil
		b := open(t, cfg)
		if err := b.Put(t.Context(), "x", strings.NewReader("y")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUnreachable checks that errors from a server that is down are
// retryable, and that the backend recovers when it is back.
func TestUnreachable(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		b := open(t, config(srv, "down"))
		if err := b.Put(t.Context(), "before", strings.NewReader("1")); err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		began := time.Now()
		_, err := b.Stat(t.Context(), "before")
		t.Logf("Stat with the server down failed after %v: %v", time.Since(began).Round(time.Millisecond), err)
		if !storage.IsRetryable(err) {
			t.Errorf("Stat with the server down: %v, want a retryable error", err)
		}
		err = b.Put(t.Context(), "during", strings.NewReader("2"))
		if !storage.IsRetryable(err) {
			t.Errorf("Put with the server down: %v, want a retryable error", err)
		}
		srv.Start()
		if _, err := b.Stat(t.Context(), "before"); err != nil {
			t.Errorf("Stat after restart: %v", err)
		}
		if err := b.Put(t.Context(), "during", strings.NewReader("2")); err != nil {
			t.Errorf("Put after restart: %v", err)
		}
	})
}

func TestLocation(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		b := open(t, config(srv, "a/b"))
		loc := b.Location()
		want := fmt.Sprintf("s3://%s/a/b?region=%s&endpoint=http://%s", srv.Bucket, srv.Region, srv.Endpoint)
		if loc != want {
			t.Errorf("Location() = %q, want %q", loc, want)
		}
		if strings.Contains(loc, srv.AccessKey) || strings.Contains(loc, srv.SecretKey) {
			t.Errorf("Location() %q contains credentials", loc)
		}
	})
}
