package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Server is versitygw (posix backend) on loopback with one bucket, started
// the way internal/testenv starts it for the tests.
type s3Server struct {
	endpoint, bucket, access, secret, region string
	dir                                      string
	cmd                                      *exec.Cmd
	client                                   *minio.Client
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startS3(ctx context.Context, bin, dir string) (*s3Server, error) {
	s := &s3Server{
		bucket: "etcd-backup-bench",
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
		lastErr = s.start(ctx, bin, data)
		if lastErr == nil {
			return s, nil
		}
		if s.cmd != nil {
			stopDaemon(s.cmd)
			s.cmd = nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("versitygw: %v%s", lastErr, logTail(filepath.Join(dir, "versitygw.log")))
}

func (s *s3Server) start(ctx context.Context, bin, data string) error {
	cmd := exec.Command(bin,
		"--port", s.endpoint,
		"--access", s.access,
		"--secret", s.secret,
		"--region", s.region,
		"--quiet",
		"posix", data)
	cmd.Env = benchkit.ChildEnv()
	done, err := startDaemon(cmd, filepath.Join(s.dir, "versitygw.log"))
	if err != nil {
		return err
	}
	s.cmd = cmd
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("exited before answering")
		case <-ctx.Done():
			return ctx.Err()
		default:
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

// url is the repository URL of prefix.
func (s *s3Server) url(prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", s.bucket, prefix, s.endpoint, s.region)
}

// env gives etcd-backup the server's credentials.
func (s *s3Server) env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.access,
		"AWS_SECRET_ACCESS_KEY=" + s.secret,
		"AWS_REGION=" + s.region,
	}
}

// prefixSize returns the total and largest object size under prefix.
func (s *s3Server) prefixSize(ctx context.Context, prefix string) (total, largest int64, err error) {
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
		if o.Err != nil {
			return 0, 0, o.Err
		}
		total += o.Size
		largest = max(largest, o.Size)
	}
	return total, largest, nil
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

func (s *s3Server) stop() {
	if s != nil && s.cmd != nil {
		stopDaemon(s.cmd)
	}
}
