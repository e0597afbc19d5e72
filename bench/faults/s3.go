package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/bench/internal/s3bench"
)

// startS3 starts versitygw (bench/internal/s3bench) as a tracked daemon.
func startS3(ctx context.Context, bin, dir string) (*s3bench.Server, error) {
	spawn := func(logPath, bin string, args ...string) (func() bool, func(), error) {
		d, err := startDaemon("versitygw", logPath, benchkit.ChildEnv(), bin, args...)
		if err != nil {
			return nil, nil, err
		}
		return d.exited, d.kill, nil
	}
	s, err := s3bench.Start(ctx, spawn, bin, dir, "etcd-backup-bench-faults")
	if err != nil {
		return nil, fmt.Errorf("%v%s", err, logTail(filepath.Join(dir, "versitygw.log"), 20))
	}
	return s, nil
}
