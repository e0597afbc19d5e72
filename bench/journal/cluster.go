package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type member struct {
	name      string
	dir       string
	clientURL string
	peerURL   string
	d         *daemon
}

// cluster is an etcd cluster on loopback (3 members, or 1 restored member).
type cluster struct {
	bin     string
	dir     string
	members []*member
	cli     *clientv3.Client
	pg      *procGroup // the members' process group
}

// newMembers picks free ports for n members named prefix1..prefixN under dir.
func newMembers(dir, prefix string, n int) ([]*member, error) {
	var ms []*member
	for i := range n {
		cp, err := benchkit.FreePort()
		if err != nil {
			return nil, err
		}
		pp, err := benchkit.FreePort()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s%d", prefix, i+1)
		ms = append(ms, &member{
			name:      name,
			dir:       filepath.Join(dir, name+".etcd"),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", cp),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", pp),
		})
	}
	return ms, nil
}

func initialCluster(ms []*member) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.name+"="+m.peerURL)
	}
	return strings.Join(parts, ",")
}

// startCluster starts a fresh 3-member cluster in dir and waits until it has
// a leader; a start that loses a port race is retried on new ports.
func startCluster(ctx context.Context, bin, dir string) (*cluster, error) {
	var err error
	for attempt := range 3 {
		sub := filepath.Join(dir, fmt.Sprintf("try%d", attempt))
		var ms []*member
		if ms, err = newMembers(sub, "m", 3); err != nil {
			return nil, err
		}
		var c *cluster
		if c, err = startMembers(ctx, bin, sub, ms, "new", &procGroup{}); err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		logf("cluster start failed, retrying: %v", err)
	}
	return nil, err
}

// startMembers starts etcd for ms (their data dirs may already hold a
// restored member) in process group pg, and waits until they have a leader.
func startMembers(ctx context.Context, bin, dir string, ms []*member, state string, pg *procGroup) (*cluster, error) {
	c := &cluster{bin: bin, dir: dir, members: ms, pg: pg}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ic := initialCluster(ms)
	for _, m := range ms {
		d, err := startDaemon(pg, m.name, filepath.Join(dir, m.name+".log"), bin,
			"--name="+m.name,
			"--data-dir="+m.dir,
			"--listen-client-urls="+m.clientURL,
			"--advertise-client-urls="+m.clientURL,
			"--listen-peer-urls="+m.peerURL,
			"--initial-advertise-peer-urls="+m.peerURL,
			"--initial-cluster="+ic,
			"--initial-cluster-state="+state,
			"--initial-cluster-token=etcd-backup-bench-journal",
			// Like ../cluster.go: the machine is shared and small; a
			// longer election timeout keeps leadership stable under load.
			"--heartbeat-interval=200",
			"--election-timeout=2000",
			"--logger=zap",
			"--log-level=warn",
		)
		if err != nil {
			c.kill()
			return nil, fmt.Errorf("start %s: %w", m.name, err)
		}
		m.d = d
	}
	cli, err := newClient(c.endpoints())
	if err != nil {
		c.kill()
		return nil, err
	}
	c.cli = cli
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, m := range ms {
			if m.d.exited() {
				c.kill()
				return nil, fmt.Errorf("etcd member %s exited during start-up%s", m.name, logTail(m.d.logPath, 15))
			}
		}
		_, err := c.leader(ctx)
		if err == nil {
			// A linearizable read: the cluster serves requests.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.cli.Get(rctx, "/health")
			cancel()
			if err == nil {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.kill()
			return nil, fmt.Errorf("cluster not ready within 60s: %v%s", err, logTail(ms[0].d.logPath, 15))
		}
		select {
		case <-ctx.Done():
			c.kill()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newClient(eps []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// leader returns the member every member agrees is the leader.
func (c *cluster) leader(ctx context.Context) (*member, error) {
	var lead uint64
	ids := make([]uint64, len(c.members))
	for i, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := c.cli.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", m.name, err)
		}
		if r.Leader == 0 || (lead != 0 && r.Leader != lead) {
			return nil, errors.New("no agreed leader yet")
		}
		lead, ids[i] = r.Leader, r.Header.MemberId
	}
	for i, id := range ids {
		if id == lead {
			return c.members[i], nil
		}
	}
	return nil, errors.New("leader is not one of the members")
}

// waitLeader waits up to a minute for an agreed leader.
func (c *cluster) waitLeader(ctx context.Context) (*member, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		m, err := c.leader(ctx)
		if err == nil {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader within 1m: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// revision returns the cluster's current revision.
func (c *cluster) revision(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := c.cli.Get(rctx, "/health")
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

// kill SIGKILLs every member.
func (c *cluster) kill() {
	if c.cli != nil {
		c.cli.Close()
		c.cli = nil
	}
	for _, m := range c.members {
		if m.d != nil {
			m.d.kill()
		}
	}
}
