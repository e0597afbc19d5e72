package restore

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// ErrBadSpec: the cluster description is wrong; nothing was touched.
var ErrBadSpec = errors.New("bad restore settings")

// DefaultToken is etcd's default initial cluster token.
const DefaultToken = "etcd-cluster"

// Spec is what the operator asked for, as given on the command line.
type Spec struct {
	DataDir        string
	Name           string
	InitialCluster string // name=url[,name=url...]
	PeerURLs       string // --initial-advertise-peer-urls, comma separated
	Token          string
	Founding       bool
	RevisionBump   uint64
	MarkCompacted  bool
}

// Plan is the validated restore of one member.
type Plan struct {
	DataDir        string
	Name           string
	InitialCluster string // canonical: sorted by name
	PeerURLs       []string
	Token          string
	Members        map[string][]string
	Founding       bool
	RevisionBump   uint64
	MarkCompacted  bool
}

func specErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadSpec}, args...)...)
}

// ParseInitialCluster parses etcd's --initial-cluster syntax.
func ParseInitialCluster(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, specErr("--initial-cluster entry %q is not name=peer-url", part)
		}
		if err := checkPeerURL(u); err != nil {
			return nil, err
		}
		out[name] = append(out[name], u)
	}
	if len(out) == 0 {
		return nil, specErr("--initial-cluster is empty")
	}
	return out, nil
}

func checkPeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return specErr("bad peer URL %q: want http(s)://host:port, e.g. https://10.0.0.1:2380", s)
	}
	return nil
}

func formatCluster(ms map[string][]string) string {
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		for _, u := range ms[n] {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// MakePlan validates s. It touches nothing.
func MakePlan(s Spec) (*Plan, error) {
	if s.DataDir == "" {
		return nil, specErr("--data-dir is required")
	}
	if s.Name == "" {
		return nil, specErr("--name is required (this member's etcd --name)")
	}
	if s.MarkCompacted && s.RevisionBump == 0 {
		return nil, specErr("--mark-compacted needs --bump-revision N")
	}
	if s.RevisionBump > 0 && !s.MarkCompacted {
		// etcd's restore bumps only a revision it also marks compacted:
		// clients watching from an older revision must be told to re-list.
		return nil, specErr("--bump-revision needs --mark-compacted (etcd bumps only a revision it marks compacted, so watchers re-list)")
	}
	var peers []string
	for _, u := range strings.Split(s.PeerURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			if err := checkPeerURL(u); err != nil {
				return nil, err
			}
			peers = append(peers, u)
		}
	}
	members := map[string][]string{}
	if s.InitialCluster != "" {
		var err error
		if members, err = ParseInitialCluster(s.InitialCluster); err != nil {
			return nil, err
		}
	}
	mine, listed := members[s.Name]
	switch {
	case listed && len(peers) > 0 && !sameSet(mine, peers):
		return nil, specErr("--initial-advertise-peer-urls %v differ from %s's entry in --initial-cluster %v", peers, s.Name, mine)
	case listed && len(peers) == 0:
		peers = mine
	case !listed && s.InitialCluster != "" && !s.Founding:
		return nil, specErr("--name %q is not in --initial-cluster %q", s.Name, s.InitialCluster)
	case !listed && len(peers) == 0:
		return nil, specErr("give this member's peer URL: --initial-advertise-peer-urls (or --initial-cluster with %s=URL)", s.Name)
	}
	if s.Founding {
		// A founding member starts a one-member cluster; the others join later.
		members = map[string][]string{s.Name: peers}
	} else {
		members[s.Name] = peers
	}
	token := s.Token
	if token == "" {
		token = DefaultToken
	}
	return &Plan{
		DataDir: s.DataDir, Name: s.Name, InitialCluster: formatCluster(members), PeerURLs: peers,
		Token: token, Members: members, Founding: s.Founding, RevisionBump: s.RevisionBump, MarkCompacted: s.MarkCompacted,
	}, nil
}

// EtcdFlags returns the flags etcd should be started with on this member
// after the restore. (etcd ignores the --initial-* flags once its data dir
// exists; they are given so that the unit and the data dir agree.)
func (p *Plan) EtcdFlags() []string {
	return []string{
		"--name=" + p.Name,
		"--data-dir=" + p.DataDir,
		"--initial-advertise-peer-urls=" + strings.Join(p.PeerURLs, ","),
		"--initial-cluster=" + p.InitialCluster,
		"--initial-cluster-token=" + p.Token,
		"--initial-cluster-state=new",
	}
}
