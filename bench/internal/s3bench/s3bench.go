package s3bench

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

// Spawn starts bin with args, output appended to logPath, and returns
// whether it has exited and how to kill it.
type Spawn func(logPath, bin string, args ...string) (exited func() bool, kill func(), err error)

// Server is versitygw on loopback with one bucket. The benchmark talks to
// it directly (set-up, listing, clean-up) and etcd-backup through a fault
// proxy.
type Server struct {
	Endpoint, Bucket, Access, Secret, Region string
	// Dir holds the log and data/ (the posix backend: data/<bucket>/<key>).
	Dir    string
	Client *minio.Client
	exited func() bool
	kill   func()
}

// Data is the posix backend's directory of the bucket.
func (s *Server) Data() string { return filepath.Join(s.Dir, "data", s.Bucket) }

// Log is versitygw's log file.
func (s *Server) Log() string { return filepath.Join(s.Dir, "versitygw.log") }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start starts versitygw (bin) on a free loopback port with its data under
// dir, waits until it answers and creates bucket (retrying on a new port
// when the port was taken meanwhile).
func Start(ctx context.Context, spawn Spawn, bin, dir, bucket string) (*Server, error) {
	s := &Server{
		Bucket: bucket,
		Access: "AKBENCH" + strings.ToUpper(randHex(7)),
		Secret: randHex(20),
		Region: "us-east-1",
		Dir:    dir,
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
		s.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = s.start(ctx, spawn, bin, data); lastErr == nil {
			return s, nil
		}
		s.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("versitygw: %v", lastErr)
}

func (s *Server) start(ctx context.Context, spawn Spawn, bin, data string) error {
	var err error
	s.exited, s.kill, err = spawn(s.Log(), bin,
		"--port", s.Endpoint, "--access", s.Access, "--secret", s.Secret, "--region", s.Region, "--quiet",
		"posix", data)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.exited() {
			return fmt.Errorf("exited before answering")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		resp, err := hc.Get("http://" + s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Client, err = minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.Access, s.Secret, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Client.MakeBucket(mctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

// Stop kills versitygw.
func (s *Server) Stop() {
	if s.kill != nil {
		s.kill()
		s.kill = nil
	}
}

// URL is the repository URL of prefix through endpoint (host:port: a
// proxy's, or the server's own for set-up steps a proxy must not count).
func (s *Server) URL(endpoint, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", s.Bucket, prefix, endpoint, s.Region)
}

// Creds are the server's credentials as environment variables.
func (s *Server) Creds() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.Access, "AWS_SECRET_ACCESS_KEY=" + s.Secret, "AWS_REGION=" + s.Region}
}

// Env gives etcd-backup the server's credentials.
func (s *Server) Env() []string { return benchkit.ChildEnv(s.Creds()...) }

// Backups counts the manifests under prefix and returns the size of the
// largest other object (a payload).
func (s *Server) Backups(ctx context.Context, prefix string) (manifests int, largest int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for o := range s.Client.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
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

// RemovePrefix deletes every object under prefix.
func (s *Server) RemovePrefix(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	objs := s.Client.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true})
	for e := range s.Client.RemoveObjects(ctx, s.Bucket, objs, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return e.Err
		}
	}
	return nil
}
