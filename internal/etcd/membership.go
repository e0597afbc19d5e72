package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// ErrTimeout: a bounded wait (join, promote) ran out of time.
var ErrTimeout = errors.New("timed out")

// Member is one entry of the cluster's member list.
type Member struct {
	ID         uint64
	Name       string // empty until the member has started
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

func fromPB(m *etcdserverpb.Member) Member {
	return Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
}

// Members lists the cluster's members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	r, err := c.MemberList(ctx)
	if err != nil {
		return nil, classify(c.cfg.Endpoints, err)
	}
	out := make([]Member, len(r.Members))
	for i, m := range r.Members {
		out[i] = fromPB(m)
	}
	return out, nil
}

// transient reports whether a membership change error clears by itself:
// etcd refuses changes right after another one ("unhealthy cluster"), allows
// a limited number of learners, and refuses promotion until the learner has
// caught up.
func transient(err error) (bool, string) {
	desc := rpctypes.ErrorDesc(err)
	switch {
	case errors.Is(err, errNotStarted):
		return true, "the learner's etcd to start (start etcd on that node)"
	case strings.Contains(desc, "unhealthy cluster"):
		return true, "the cluster to be healthy (etcd refuses membership changes right after another one)"
	case strings.Contains(desc, "too many learner members"):
		return true, "another learner to be promoted (etcd allows a limited number of learners)"
	case strings.Contains(desc, "not enough started members"):
		return true, "every member to have started"
	case strings.Contains(desc, "in sync with leader"):
		return true, "the learner to catch up with the leader"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(desc, "Unavailable"), strings.Contains(desc, "leader changed"),
		strings.Contains(desc, "no leader"), strings.Contains(desc, "request timed out"):
		return true, "a leader to answer"
	}
	return false, ""
}

// retry runs op with exponential backoff until it succeeds, fails
// permanently, or ctx ends. It logs what it waits for.
func retry(ctx context.Context, log *slog.Logger, what string, op func(context.Context) error) error {
	backoff := 200 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		ok, waitingFor := transient(err)
		if !ok {
			return err
		}
		last = err
		log.Info("waiting", "for", waitingFor, "action", what, "attempt", attempt, "reason", rpctypes.ErrorDesc(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: still waiting for %s (last answer: %v)", ErrTimeout, what, waitingFor, rpctypes.ErrorDesc(last))
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 3*time.Second {
			backoff = 3 * time.Second
		}
	}
}

// AddLearner adds a learner with peerURLs, retrying while etcd says the
// change cannot be made yet. If a member with the same peer URLs already
// exists it is returned as is (so re-running join is harmless). It returns
// the member and the full member list after the change.
func (c *Client) AddLearner(ctx context.Context, log *slog.Logger, peerURLs []string) (Member, []Member, error) {
	var (
		added   Member
		members []Member
	)
	err := retry(ctx, log, "add learner", func(ctx context.Context) error {
		ms, err := c.Members(ctx)
		if err != nil {
			return err
		}
		if m, ok := findByPeerURLs(ms, peerURLs); ok {
			added, members = m, ms
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, c.timeout())
		defer cancel()
		r, err := c.MemberAddAsLearner(rctx, peerURLs)
		if err != nil {
			return err
		}
		added = fromPB(r.Member)
		for _, m := range r.Members {
			members = append(members, fromPB(m))
		}
		return nil
	})
	return added, members, err
}

func findByPeerURLs(ms []Member, peerURLs []string) (Member, bool) {
	for _, m := range ms {
		for _, u := range m.PeerURLs {
			for _, p := range peerURLs {
				if u == p {
					return m, true
				}
			}
		}
	}
	return Member{}, false
}

// FindMember finds a member by name or by one of its peer URLs.
func FindMember(ms []Member, name string, peerURLs []string) (Member, bool) {
	for _, m := range ms {
		if name != "" && m.Name == name {
			return m, true
		}
	}
	return findByPeerURLs(ms, peerURLs)
}

// InitialCluster renders the member list as etcd's --initial-cluster, with
// name given to the member identified by self (a member that has not
// started yet has no name).
func InitialCluster(ms []Member, self uint64, name string) string {
	var parts []string
	for _, m := range ms {
		n := m.Name
		if m.ID == self {
			n = name
		}
		if n == "" {
			continue // another member added but not started: etcd names it on start
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// errNotStarted is transient: a learner added by join appears in the member
// list without a name until its etcd starts.
var errNotStarted = errors.New("learner added but not started")

// WaitMember finds the member by name or peer URLs. When it is not there
// yet but an unstarted member is (join done, etcd starting), it waits for
// it to start, within ctx.
func (c *Client) WaitMember(ctx context.Context, log *slog.Logger, name string, peerURLs []string) (Member, error) {
	var found Member
	err := retry(ctx, log, "find member", func(ctx context.Context) error {
		ms, err := c.Members(ctx)
		if err != nil {
			return err
		}
		if m, ok := FindMember(ms, name, peerURLs); ok {
			found = m
			return nil
		}
		for _, m := range ms {
			if m.Name == "" {
				return errNotStarted
			}
		}
		return fmt.Errorf("no member %s %v in the cluster: run 'etcd-backup join' on that node first", name, peerURLs)
	})
	return found, err
}

// Promote promotes learner id to a voting member once it has caught up,
// retrying until etcd accepts or ctx ends. Promoting a member that is
// already a voter is a no-op.
func (c *Client) Promote(ctx context.Context, log *slog.Logger, id uint64) error {
	return retry(ctx, log, "promote learner", func(ctx context.Context) error {
		ms, err := c.Members(ctx)
		if err != nil {
			return err
		}
		var me *Member
		for i := range ms {
			if ms[i].ID == id {
				me = &ms[i]
			}
		}
		if me == nil {
			return fmt.Errorf("member %s is no longer in the cluster", HexID(id))
		}
		if !me.IsLearner {
			return nil
		}
		c.logProgress(ctx, log, *me)
		rctx, cancel := context.WithTimeout(ctx, c.timeout())
		defer cancel()
		_, err = c.MemberPromote(rctx, id)
		if err != nil && strings.Contains(rpctypes.ErrorDesc(err), "can only promote a learner member") &&
			!strings.Contains(rpctypes.ErrorDesc(err), "in sync") {
			return nil // promoted meanwhile
		}
		return err
	})
}

// logProgress reports how far the learner is behind, when its client URL
// answers.
func (c *Client) logProgress(ctx context.Context, log *slog.Logger, m Member) {
	if len(m.ClientURLs) == 0 {
		log.Info("learner has not started yet (no client URL): start etcd on that node", "member", m.Name)
		return
	}
	st := c.Status(ctx, m.ClientURLs[0])
	if st.Err != nil {
		return
	}
	log.Debug("learner progress", "member", m.Name, "raft_index", st.RaftIndex, "revision", st.Revision)
}
