package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// ErrUnreachable: no endpoint answered.
var ErrUnreachable = errors.New("etcd unreachable")

// ErrTLS: etcd answered, but the TLS handshake failed (untrusted or wrong
// server certificate, missing or refused client certificate, not TLS at all).
var ErrTLS = errors.New("TLS handshake with etcd failed")

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
		if u, p, ok := strings.Cut(c.User, ":"); ok { // name:password, as etcdctl's --user
			user, pass = u, p
		}
		spec.Auth = &clientv3.AuthConfig{Username: user, Password: pass}
	}
	cfg, err := clientv3.NewClientConfig(spec, zap.NewNop())
	if err != nil {
		return nil, fmt.Errorf("etcd TLS settings: %w", err)
	}
	cfg.Logger = zap.NewNop()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithDisableServiceConfig(), experimental.WithBufferPool(grpcBufferPool))
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
		// With --user, New authenticates: a wrong password is an answer.
		return nil, cfg.diagnose(cfg.Endpoints, err)
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

// statusTimeout bounds the first contact with a member: a member that does
// not answer within the dial timeout is treated as unreachable.
func (c *Client) statusTimeout() time.Duration {
	d := c.cfg.DialTimeout
	if d <= 0 {
		d = 5 * time.Second
	}
	return min(d, c.timeout())
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

// diagnose is classify, and when that says unreachable, looks for the
// reason in a TLS handshake of its own with the client's settings: gRPC
// reports a failed handshake only as "context deadline exceeded", which sends
// operators looking for a dead etcd instead of a certificate problem.
func (c Config) diagnose(eps []string, err error) error {
	err = classify(eps, err)
	if !errors.Is(err, ErrUnreachable) {
		return err
	}
	for _, ep := range eps {
		if terr := c.tlsProblem(ep); terr != nil {
			return fmt.Errorf("%w: %s: %w", ErrTLS, ep, terr)
		}
	}
	return err
}

// tlsProblem returns why a TLS connection to the https endpoint ep fails, or
// nil when it works, ep is not https or the failure is not TLS's.
func (c Config) tlsProblem(ep string) error {
	u, err := url.Parse(ep)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" {
		return nil
	}
	cc, err := c.clientConfig([]string{ep})
	if err != nil || cc.TLS == nil {
		return nil
	}
	tc := cc.TLS.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	tc.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d := &tls.Dialer{Config: tc}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	inHandshake := err != nil
	if err == nil {
		defer conn.Close()
		// With TLS 1.3 the server checks the client certificate after the
		// handshake; its refusal arrives as an alert on the first read.
		conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err = conn.Read(make([]byte, 1))
	}
	var (
		verr *tls.CertificateVerificationError
		rerr tls.RecordHeaderError
		oerr *net.OpError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &uerr) && c.CACert == "":
		return fmt.Errorf("%w (no --cacert given: pass the CA that signed etcd's certificate)", err)
	case errors.As(err, &uerr):
		return fmt.Errorf("%w (etcd's certificate is not signed by the CA in --cacert %s)", err, c.CACert)
	case errors.As(err, &herr):
		return fmt.Errorf("%w (use an endpoint address that etcd's certificate names)", err)
	case errors.As(err, &verr):
		return err
	case errors.As(err, &rerr):
		return fmt.Errorf("%w (this endpoint does not speak TLS: try http://)", err)
	case inHandshake && errors.Is(err, io.EOF):
		return errors.New("etcd closed the connection during the TLS handshake (this endpoint does not speak TLS: try http://)")
	case errors.As(err, &oerr) && oerr.Op == "remote error":
		if c.Cert == "" {
			return fmt.Errorf("etcd refused the connection: %w (no --cert/--key given: etcd wants a client certificate signed by its --trusted-ca-file)", err)
		}
		return fmt.Errorf("etcd refused the connection: %w (check that --cert/--key is signed by etcd's --trusted-ca-file)", err)
	}
	return nil
}

// endpointsErr is the error of every endpoint, none of them unreachable.
type endpointsErr []error

func (e endpointsErr) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return "no endpoint could be used: " + strings.Join(msgs, "; ")
}

func (e endpointsErr) Unwrap() []error { return e }

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
	ctx, cancel := context.WithTimeout(ctx, c.statusTimeout())
	defer cancel()
	st := MemberStatus{Endpoint: ep}
	r, err := c.Maintenance.Status(ctx, ep)
	if err != nil {
		st.Err = c.cfg.diagnose([]string{ep}, err)
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
	var failed endpointsErr
	unreach := false
	for _, s := range sts {
		if s.Err != nil {
			errs = append(errs, s.Err.Error())
			failed = append(failed, s.Err)
			unreach = unreach || errors.Is(s.Err, ErrUnreachable)
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
		if !unreach { // every endpoint answered: keep why (TLS, credentials)
			return MemberStatus{}, failed
		}
		return MemberStatus{}, fmt.Errorf("%w: no endpoint answered (%s)", ErrUnreachable, strings.Join(errs, "; "))
	}
	sort.SliceStable(ok, func(i, j int) bool {
		if ok[i].IsLeader() != ok[j].IsLeader() {
			return ok[i].IsLeader()
		}
		return ok[i].RaftIndex > ok[j].RaftIndex
	})
	return ok[0], nil
}

// HexID formats a member or cluster ID as etcdctl does.
func HexID(id uint64) string { return fmt.Sprintf("%016x", id) }
