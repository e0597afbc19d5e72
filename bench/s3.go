package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/bench/internal/s3bench"

	"github.com/minio/minio-go/v7"
)

// s3Server is versitygw (posix backend) on loopback with one bucket
// (bench/internal/s3bench), started the way internal/testenv starts it for
// the tests.
type s3Server struct{ *s3bench.Server }

func startS3(ctx context.Context, bin, dir string) (*s3Server, error) {
	spawn := func(logPath, bin string, args ...string) (func() bool, func(), error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = benchkit.ChildEnv()
		done, err := startDaemon(cmd, logPath)
		if err != nil {
			return nil, nil, err
		}
		exited := func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		return exited, func() { stopDaemon(cmd) }, nil
	}
	s, err := s3bench.Start(ctx, spawn, bin, dir, "etcd-backup-bench")
	if err != nil {
		return nil, fmt.Errorf("%v%s", err, logTail(filepath.Join(dir, "versitygw.log")))
	}
	return &s3Server{s}, nil
}

// url is the repository URL of prefix.
func (s *s3Server) url(prefix string) string { return s.URL(s.Endpoint, prefix) }

// env gives etcd-backup the server's credentials.
func (s *s3Server) env() []string { return s.Creds() }

// prefixSize returns the total and largest object size under prefix.
func (s *s3Server) prefixSize(ctx context.Context, prefix string) (total, largest int64, err error) {
	for o := range s.Client.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
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
	return s.RemovePrefix(ctx, prefix)
}

func (s *s3Server) stop() {
	if s != nil {
		s.Stop()
	}
}
