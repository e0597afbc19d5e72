package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// quotaBytes is --quota-backend-bytes of the benchmark cluster: 8 GiB,
// etcd's recommended maximum, far above the largest size measured.
const quotaBytes = 8 << 30

type member struct {
	name      string
	dir       string
	clientURL string
	peerURL   string
	logPath   string
	cmd       *exec.Cmd
	done      chan struct{}
}

// cluster is an etcd cluster on loopback (3 members, or 1 for the large
// database).
type cluster struct {
	bin     string
	dir     string
	opt     clusterOptions
	members []*member
	cli     *clientv3.Client
}

// clusterOptions shape a cluster; the zero value is the benchmark's
// 3-member cluster with an 8 GiB quota.
type clusterOptions struct {
	members int      // 0: 3
	quota   int64    // --quota-backend-bytes; 0: quotaBytes
	extra   []string // more etcd flags
}

// startCluster starts a fresh cluster in dir and waits until it has a
// leader. Ports are chosen free; a start that loses a port race is retried
// on new ports.
func startCluster(ctx context.Context, bin, dir string, opt clusterOptions) (*cluster, error) {
	if opt.members == 0 {
		opt.members = 3
	}
	if opt.quota == 0 {
		opt.quota = quotaBytes
	}
	var err error
	for attempt := range 3 {
		c := &cluster{bin: bin, dir: filepath.Join(dir, fmt.Sprintf("try%d", attempt)), opt: opt}
		if err = c.start(ctx); err == nil {
			return c, nil
		}
		c.stop()
		if ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

func (c *cluster) start(ctx context.Context) error {
	var initial []string
	for i := range c.opt.members {
		cp, err := benchkit.FreePort()
		if err != nil {
			return err
		}
		pp, err := benchkit.FreePort()
		if err != nil {
			return err
		}
		m := &member{
			name:      fmt.Sprintf("m%d", i+1),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", cp),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", pp),
		}
		m.dir = filepath.Join(c.dir, m.name)
		m.logPath = filepath.Join(c.dir, m.name+".log")
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	for _, m := range c.members {
		args := []string{
			"--name=" + m.name,
			"--data-dir=" + m.dir,
			"--listen-client-urls=" + m.clientURL,
			"--advertise-client-urls=" + m.clientURL,
			"--listen-peer-urls=" + m.peerURL,
			"--initial-advertise-peer-urls=" + m.peerURL,
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token=etcd-backup-bench",
			fmt.Sprintf("--quota-backend-bytes=%d", c.opt.quota),
			// The machine is shared and small: a longer election timeout
			// keeps leadership stable while the fill saturates the CPUs.
			"--heartbeat-interval=200",
			"--election-timeout=2000",
			"--logger=zap",
			"--log-level=warn",
		}
		cmd := exec.Command(c.bin, append(args, c.opt.extra...)...)
		cmd.Env = benchkit.ChildEnv()
		done, err := startDaemon(cmd, m.logPath)
		if err != nil {
			return fmt.Errorf("start %s: %w", m.name, err)
		}
		m.cmd, m.done = cmd, done
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	c.cli = cli
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, m := range c.members {
			select {
			case <-m.done:
				return fmt.Errorf("etcd member %s exited during start-up%s", m.name, logTail(m.logPath))
			default:
			}
		}
		if _, err := c.leader(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready within 60s: %v%s", err, logTail(c.members[0].logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// status asks every member for its status.
func (c *cluster) status(ctx context.Context) ([]*clientv3.StatusResponse, error) {
	var out []*clientv3.StatusResponse
	for _, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := c.cli.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", m.name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// leader returns the member every member agrees is the leader.
func (c *cluster) leader(ctx context.Context) (*member, error) {
	sts, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	lead := sts[0].Leader
	for _, s := range sts {
		if s.Leader == 0 || s.Leader != lead {
			return nil, errors.New("no agreed leader yet")
		}
	}
	for i, s := range sts {
		if s.Header.MemberId == lead {
			return c.members[i], nil
		}
	}
	return nil, errors.New("leader is not one of the members")
}

// dbSize returns the backend size reported by member m.
func (c *cluster) dbSize(ctx context.Context, m *member) (int64, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := c.cli.Status(sctx, m.clientURL)
	if err != nil {
		return 0, err
	}
	return r.DbSize, nil
}

// settle waits until every member has applied the same raft index (so
// followers are idle during measurements) and returns the leader.
func (c *cluster) settle(ctx context.Context) (*member, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		sts, err := c.status(ctx)
		if err == nil {
			same := true
			for _, s := range sts {
				if s.RaftAppliedIndex != sts[0].RaftAppliedIndex || s.RaftIndex != sts[0].RaftIndex {
					same = false
				}
			}
			if same {
				return c.leader(ctx)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster did not settle within 2m (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *cluster) stop() {
	if c.cli != nil {
		c.cli.Close()
	}
	for _, m := range c.members {
		if m.cmd != nil {
			stopDaemon(m.cmd)
		}
	}
}
