package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// ErrUnreachable: no endpoint answered.
var ErrUnreachable = errors.New("etcd unreachable")

// Config holds etcdctl-style connection settings.
type Config struct {
	Endpoints          []string
	CACert, Cert, Key  string
	User, Password     string
	DialTimeout        time.Duration
	CommandTimeout     time.Duration // per unary request; 0 means 10s
	InsecureSkipVerify bool
}

func (c Config) clientConfig(endpoints []string) (*clientv3.Config, error) {
	spec := &clientv3.ConfigSpec{
		Endpoints:        endpoints,
		DialTimeout:      c.DialTimeout,
		KeepAliveTime:    30 * time.Second,
		KeepAliveTimeout: 10 * time.Second,
	}
	if spec.DialTimeout == 0 {
		spec.DialTimeout = 5 * time.Second
	}
	secure := c.CACert != "" || c.Cert != "" || c.Key != "" || c.InsecureSkipVerify
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") {
			secure = true
		}
	}
	if secure {
		spec.Secure = &clientv3.SecureConfig{Cert: c.Cert, Key: c.Key, Cacert: c.CACert, InsecureSkipVerify: c.InsecureSkipVerify}
	}
	if c.User != "" {
		user, pass := c.User, c.Password
		if u, p, ok := strings.Cut(c.User, ":"); ok && pass == "" {
			user, pass = u, p
		}
		spec.Auth = &clientv3.AuthConfig{Username: user, Password: pass}
	}
	cfg, err := clientv3.NewClientConfig(spec, zap.NewNop())
	if err != nil {
		return nil, fmt.Errorf("etcd TLS settings: %w", err)
	}
	cfg.Logger = zap.NewNop()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithDisableServiceConfig())
	cfg.MaxCallRecvMsgSize = 0
	return cfg, nil
}

// Client is a connection to a cluster through the configured endpoints.
type Client struct {
	cfg Config
	*clientv3.Client
}

// Connect opens a client on every endpoint. It does not contact etcd yet.
func Connect(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints: pass --endpoints")
	}
	cc, err := cfg.clientConfig(cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(*cc)
	if err != nil {
		return nil, unreachable(cfg.Endpoints, err)
	}
	return &Client{cfg: cfg, Client: cli}, nil
}

// ForEndpoint opens a client on one endpoint with the same settings.
func (c *Client) ForEndpoint(ep string) (*Client, error) {
	cfg := c.cfg
	cfg.Endpoints = []string{ep}
	return Connect(cfg)
}

func (c *Client) timeout() time.Duration {
	if c.cfg.CommandTimeout > 0 {
		return c.cfg.CommandTimeout
	}
	return 10 * time.Second
}

func unreachable(eps []string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, strings.Join(eps, ","), err)
}

// classify turns client errors into ErrUnreachable where the cause is that
// no member answered, and keeps auth and other server answers as they are.
func classify(eps []string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrPermissionDenied) ||
		errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrInvalidAuthToken) {
		return fmt.Errorf("etcd refused the credentials: %w (check --user/--password)", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "Unavailable") || strings.Contains(err.Error(), "DeadlineExceeded") {
		return unreachable(eps, err)
	}
	return err
}

// MemberStatus is what one endpoint says about its member.
type MemberStatus struct {
	Endpoint  string
	ID        uint64
	Name      string
	ClusterID uint64
	Leader    uint64
	Version   string
	Revision  int64
	RaftIndex uint64
	RaftTerm  uint64
	DBSize    int64
	IsLearner bool
	Err       error
}

// IsLeader reports whether the member was the raft leader.
func (s MemberStatus) IsLeader() bool { return s.Err == nil && s.ID != 0 && s.ID == s.Leader }

// Status asks one endpoint for its member's status.
func (c *Client) Status(ctx context.Context, ep string) MemberStatus {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	st := MemberStatus{Endpoint: ep}
	r, err := c.Maintenance.Status(ctx, ep)
	if err != nil {
		st.Err = classify([]string{ep}, err)
		return st
	}
	st.ID, st.ClusterID, st.Leader = r.Header.MemberId, r.Header.ClusterId, r.Leader
	st.Version, st.Revision = r.Version, r.Header.Revision
	st.RaftIndex, st.RaftTerm, st.DBSize, st.IsLearner = r.RaftIndex, r.RaftTerm, r.DbSize, r.IsLearner
	return st
}

// Statuses asks every configured endpoint in parallel, in endpoint order.
func (c *Client) Statuses(ctx context.Context) []MemberStatus {
	eps := c.cfg.Endpoints
	out := make([]MemberStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c.Status(ctx, ep)
		}()
	}
	wg.Wait()
	return out
}

// MemberName looks up the name of member id (empty if unknown).
func (c *Client) MemberName(ctx context.Context, id uint64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	r, err := c.MemberList(ctx)
	if err != nil {
		return "", classify(c.cfg.Endpoints, err)
	}
	for _, m := range r.Members {
		if m.ID == id {
			return m.Name, nil
		}
	}
	return "", nil
}

// ChooseSnapshotSource picks the member to stream a snapshot from: the raft
// leader when one of the endpoints is the leader, otherwise the reachable
// voting member with the highest raft index. It fails with ErrUnreachable
// when no endpoint answers.
func (c *Client) ChooseSnapshotSource(ctx context.Context) (MemberStatus, error) {
	sts := c.Statuses(ctx)
	var ok []MemberStatus
	var errs []string
	for _, s := range sts {
		if s.Err != nil {
			errs = append(errs, s.Err.Error())
			continue
		}
		if !s.IsLearner {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		if len(errs) == 0 {
			return MemberStatus{}, errors.New("every endpoint is a learner: give at least one voting member in --endpoints")
		}
		return MemberStatus{}, fmt.Errorf("%w: no endpoint answered: %s", ErrUnreachable, strings.Join(errs, "; "))
	}
	sort.SliceStable(ok, func(i, j int) bool {
		if ok[i].IsLeader() != ok[j].IsLeader() {
			return ok[i].IsLeader()
		}
		return ok[i].RaftIndex > ok[j].RaftIndex
	})
	return ok[0], nil
}

// Snapshot is an open snapshot stream of one member.
type Snapshot struct {
	io.ReadCloser
	Member MemberStatus // status taken just before the stream was opened
	// Revision: every write at or below it is in the snapshot (read
	// linearizably on the member before the stream was opened).
	Revision int64
	// StreamRevision is the revision in the stream's first header.
	StreamRevision int64
	StorageVersion string
	client         *Client
}

// Close ends the stream and the member connection.
func (s *Snapshot) Close() error {
	err := s.ReadCloser.Close()
	s.client.Close()
	return err
}

// OpenSnapshot streams a snapshot from the member behind endpoint ep, after
// a linearizable read on it, so the snapshot holds every write acknowledged
// before the call.
func (c *Client) OpenSnapshot(ctx context.Context, ep string) (*Snapshot, error) {
	mc, err := c.ForEndpoint(ep)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Snapshot, error) {
		mc.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, mc.timeout())
	gr, err := mc.Get(rctx, "\x00", clientv3.WithCountOnly()) // linearizable (ReadIndex) read
	cancel()
	if err != nil {
		return fail(fmt.Errorf("linearizable read on %s: %w", ep, classify([]string{ep}, err)))
	}
	st := mc.Status(ctx, ep)
	if st.Err != nil {
		return fail(st.Err)
	}
	if st.Name, err = mc.MemberName(ctx, st.ID); err != nil {
		return fail(err)
	}
	resp, err := mc.SnapshotWithVersion(ctx)
	if err != nil {
		return fail(fmt.Errorf("open snapshot stream on %s: %w", ep, classify([]string{ep}, err)))
	}
	s := &Snapshot{ReadCloser: resp.Snapshot, Member: st, Revision: gr.Header.Revision,
		StorageVersion: resp.Version, client: mc}
	if resp.Header != nil {
		s.StreamRevision = resp.Header.Revision
	}
	if s.StreamRevision < s.Revision {
		s.StreamRevision = s.Revision
	}
	return s, nil
}

// HexID formats a member or cluster ID as etcdctl does.
func HexID(id uint64) string { return fmt.Sprintf("%016x", id) }
