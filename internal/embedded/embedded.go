package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// MemberSpec describes one member to start.
type MemberSpec struct {
	Name      string
	DataDir   string
	PeerURL   string // http://127.0.0.1:port
	ClientURL string // http://127.0.0.1:port
}

// Cluster is a set of running in-process members.
type Cluster struct {
	Specs   []MemberSpec
	Members []*embed.Etcd
}

// FreePorts reserves n loopback TCP ports. The ports are released before
// return, so another process could take one; callers retry on failure.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NewSpecs lays out n members named prefix1..prefixN under dir with fresh
// loopback ports.
func NewSpecs(dir, prefix string, n int) ([]MemberSpec, error) {
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	specs := make([]MemberSpec, n)
	for i := range specs {
		name := fmt.Sprintf("%s%d", prefix, i+1)
		specs[i] = MemberSpec{
			Name:      name,
			DataDir:   filepath.Join(dir, name+".etcd"),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
	}
	return specs, nil
}

// InitialCluster renders specs as etcd's --initial-cluster.
func InitialCluster(specs []MemberSpec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = s.Name + "=" + s.PeerURL
	}
	return strings.Join(parts, ",")
}

func config(s MemberSpec, initialCluster, state string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = s.Name
	cfg.Dir = s.DataDir
	pu, err := url.Parse(s.PeerURL)
	if err != nil {
		return nil, err
	}
	cu, err := url.Parse(s.ClientURL)
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = "etcd-backup-embedded"
	cfg.ClusterState = state
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	return cfg, nil
}

// Start starts every member (in parallel: a new cluster needs a quorum
// before any member is ready) and waits until each serves clients.
// initialCluster "" means the specs themselves.
func Start(ctx context.Context, specs []MemberSpec, initialCluster string) (*Cluster, error) {
	if initialCluster == "" {
		initialCluster = InitialCluster(specs)
	}
	c := &Cluster{Specs: specs, Members: make([]*embed.Etcd, len(specs))}
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg, err := config(s, initialCluster, embed.ClusterStateFlagNew)
			if err != nil {
				errs[i] = err
				return
			}
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				errs[i] = fmt.Errorf("start member %s: %w", s.Name, err)
				return
			}
			c.Members[i] = e
			select {
			case <-e.Server.ReadyNotify():
			case err := <-e.Err():
				errs[i] = fmt.Errorf("member %s: %w", s.Name, err)
			case <-ctx.Done():
				errs[i] = fmt.Errorf("member %s not ready: %w", s.Name, ctx.Err())
			case <-time.After(60 * time.Second):
				errs[i] = fmt.Errorf("member %s not ready after 60s", s.Name)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoints returns the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Specs))
	for i, s := range c.Specs {
		eps[i] = s.ClientURL
	}
	return eps
}

// Close stops every member: the followers in parallel, then the leader.
func (c *Cluster) Close() {
	// Followers first (in parallel), then the leader: stopping every member
	// at once makes the leader wait seconds to hand leadership over to
	// members that are going away.
	var wg sync.WaitGroup
	var leaders []*embed.Etcd
	for _, e := range c.Members {
		if e == nil {
			continue
		}
		if e.Server.Leader() == e.Server.MemberID() {
			leaders = append(leaders, e)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.Close()
		}()
	}
	wg.Wait()
	for _, e := range leaders {
		e.Close()
	}
}
