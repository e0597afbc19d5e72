package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Server is versitygw (posix backend) on loopback with one bucket, started
// as bench/s3.go and internal/testenv start it. The benchmark talks to it
// directly (set-up, listing, clean-up) and etcd-backup through the fault
// proxy.
type s3Server struct {
	endpoint, bucket, access, secret, region string
	dir                                      string
	d                                        *daemon
	client                                   *minio.Client
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startS3(ctx context.Context, bin, dir string) (*s3Server, error) {
	s := &s3Server{
		bucket: "etcd-backup-bench-faults",
		access: "AKBENCH" + strings.ToUpper(randHex(7)),
		secret: randHex(20),
		region: "us-east-1",
		dir:    dir,
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 {
		port, err := benchkit.FreePort()
		if err != nil {
			return nil, err
		}
		s.endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = s.start(ctx, bin, data); lastErr == nil {
			return s, nil
		}
		s.d.kill()
		s.d = nil
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("versitygw: %v%s", lastErr, logTail(filepath.Join(dir, "versitygw.log"), 20))
}

func (s *s3Server) start(ctx context.Context, bin, data string) error {
	var err error
	s.d, err = startDaemon("versitygw", filepath.Join(s.dir, "versitygw.log"), benchkit.ChildEnv(), bin,
		"--port", s.endpoint, "--access", s.access, "--secret", s.secret, "--region", s.region, "--quiet",
		"posix", data)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.d.exited() {
			return fmt.Errorf("exited before answering")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		resp, err := hc.Get("http://" + s.endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.client, err = minio.New(s.endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret, ""),
		Region:       s.region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(mctx, s.bucket, minio.MakeBucketOptions{Region: s.region}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

// url is the repository URL of prefix through endpoint (host:port: the
// proxy's, or the server's own for set-up steps the proxy must not count).
func (s *s3Server) url(endpoint, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", s.bucket, prefix, endpoint, s.region)
}

// env gives etcd-backup the server's credentials.
func (s *s3Server) env() []string {
	return benchkit.ChildEnv("AWS_ACCESS_KEY_ID="+s.access, "AWS_SECRET_ACCESS_KEY="+s.secret, "AWS_REGION="+s.region)
}

// backups counts the manifests under prefix and returns the size of the
// largest other object (a payload).
func (s *s3Server) backups(ctx context.Context, prefix string) (manifests int, largest int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
		if o.Err != nil {
			return 0, 0, o.Err
		}
		if strings.HasSuffix(o.Key, ".manifest.json") {
			manifests++
		} else {
			largest = max(largest, o.Size)
		}
	}
	return manifests, largest, nil
}

// removePrefix deletes every object under prefix.
func (s *s3Server) removePrefix(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	objs := s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true})
	for e := range s.client.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return e.Err
		}
	}
	return nil
}
