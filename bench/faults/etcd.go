package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// quotaBytes is --quota-backend-bytes of the member: 8 GiB, etcd's
// recommended maximum, far above the sizes measured.
const quotaBytes = 8 << 30

// member is a one-member etcd cluster on loopback.
type member struct {
	clientURL string
	d         *daemon
	cli       *clientv3.Client
}

// startEtcd starts a fresh one-member cluster in dir and waits until it has
// a leader. Ports are chosen free; a start that loses a port race is retried
// on new ports.
func startEtcd(ctx context.Context, bin, dir string) (*member, error) {
	var err error
	for attempt := range 3 {
		var m *member
		if m, err = tryStartEtcd(ctx, bin, filepath.Join(dir, fmt.Sprintf("try%d", attempt))); err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func tryStartEtcd(ctx context.Context, bin, dir string) (*member, error) {
	cp, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	pp, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &member{clientURL: fmt.Sprintf("http://127.0.0.1:%d", cp)}
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", pp)
	logPath := filepath.Join(dir, "etcd.log")
	m.d, err = startDaemon("etcd", logPath, benchkit.ChildEnv(), bin,
		"--name=m1",
		"--data-dir="+filepath.Join(dir, "m1.etcd"),
		"--listen-client-urls="+m.clientURL,
		"--advertise-client-urls="+m.clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=m1="+peerURL,
		"--initial-cluster-state=new",
		"--initial-cluster-token=etcd-backup-bench-faults",
		fmt.Sprintf("--quota-backend-bytes=%d", int64(quotaBytes)),
		"--logger=zap",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	m.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{m.clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		m.stop()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m.d.exited() {
			m.stop()
			return nil, fmt.Errorf("etcd exited during start-up%s", logTail(logPath, 20))
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := m.cli.Status(sctx, m.clientURL)
		cancel()
		if err == nil && st.Leader != 0 {
			return m, nil
		}
		if err == nil {
			err = errors.New("no leader yet")
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("etcd not ready within 60s: %v%s", err, logTail(logPath, 20))
		}
		select {
		case <-ctx.Done():
			m.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dbSize is the member's backend size.
func (m *member) dbSize(ctx context.Context) (int64, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := m.cli.Status(sctx, m.clientURL)
	if err != nil {
		return 0, err
	}
	return st.DbSize, nil
}

func (m *member) stop() {
	if m.cli != nil {
		m.cli.Close()
	}
	m.d.kill()
}
