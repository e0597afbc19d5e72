package clusterrestore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// OrderVersion is the format version of order.json.
const OrderVersion = 1

// BundleBase is the object name, within an order, of the prepared
// database every member restores.
const BundleBase = "bundle.db.zst.age"

// Order is a restore order (order.json): what every member must restore.
type Order struct {
	FormatVersion  int       `json:"format_version"`
	ID             string    `json:"id"`
	Created        time.Time `json:"created"`
	By             string    `json:"by"` // host of the coordinator
	SpecHash       string    `json:"spec_hash"`
	BackupID       string    `json:"backup_id"`
	ToRevision     int64     `json:"to_revision,omitempty"`
	ToTime         time.Time `json:"to_time,omitzero"`
	Revision       int64     `json:"revision"` // every member's revision after the restore (bump included)
	InitialCluster string    `json:"initial_cluster"`
	Token          string    `json:"initial_cluster_token"`
	RevisionBump   uint64    `json:"bump_revision,omitempty"`
	MarkCompacted  bool      `json:"mark_compacted,omitempty"`
	Force          bool      `json:"force,omitempty"`
	Members        []string  `json:"members"`
	// Recipients maps each member to the fingerprint of the agent key the
	// bundle is encrypted to.
	Recipients map[string]string `json:"recipients"`
	// Bundle describes the prepared database: an etcd snapshot stream
	// (trailer included), zstd-compressed and encrypted to the members'
	// agent keys, stored as BundleBase beside order.json.
	Bundle *format.Manifest `json:"bundle"`
}

// Has reports whether member is one of the order's members.
func (o *Order) Has(member string) bool {
	for _, m := range o.Members {
		if m == member {
			return true
		}
	}
	return false
}

// States a member goes through, each reported once in this order, except
// that a resumed member repeats the steps it had not finished.
const (
	StateAccepted = "accepted" // the agent took the order
	StateChecked  = "checked"  // it looked at its etcd (ClusterHealthy)
	StateFetching = "fetching" // while the old etcd still runs
	StateStopping = "stopping"
	StateBuilding = "building"
	StateBuilt    = "built"    // the old etcd has stopped, the new data dir is in place
	StateStarting = "starting" // after start.json: every member has built
	StateHealthy  = "healthy"  // terminal: etcd runs the restored data
	StateFailed   = "failed"   // terminal: Error says why
)

// Terminal reports whether a member in state s is done with the order.
func Terminal(s string) bool { return s == StateHealthy || s == StateFailed }

// Report is one step of a member (reports/<member>/<NN>-<state>.json).
type Report struct {
	Member string    `json:"member"`
	State  string    `json:"state"`
	Time   time.Time `json:"time"`
	Agent  string    `json:"agent"` // host/pid of the agent
	Error  string    `json:"error,omitempty"`
	// ClusterHealthy (checked): the member's etcd answered a linearizable
	// read, so the cluster still has a quorum.
	ClusterHealthy bool   `json:"cluster_healthy,omitempty"`
	Endpoint       string `json:"endpoint,omitempty"`
	DataDir        string `json:"data_dir,omitempty"`
	MovedAside     string `json:"moved_aside,omitempty"`
	// Healthy: what the restored member serves.
	Revision  int64  `json:"revision,omitempty"`
	HashKV    uint32 `json:"hash_kv,omitempty"`
	HashNote  string `json:"hash_note,omitempty"`
	MemberID  string `json:"member_id,omitempty"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// Decision is the coordinator's go (or cancel) once every member checked
// in: go.json lets members stop etcd; cancel.json ends the order untouched.
type Decision struct {
	Time   time.Time `json:"time"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
}

// Result is the outcome the coordinator records (result.json), for audit.
type Result struct {
	Time     time.Time         `json:"time"`
	OK       bool              `json:"ok"`
	Error    string            `json:"error,omitempty"`
	Revision int64             `json:"revision"`
	Members  map[string]Report `json:"members"`
}

// AgentKey is what an agent publishes so that restore orders can be
// encrypted to it (agents/<member>/<fingerprint>.pub.json).
type AgentKey struct {
	Member    string    `json:"member"`
	Recipient string    `json:"recipient"` // age1…
	Agent     string    `json:"agent"`
	Created   time.Time `json:"created"`
}

// specHash identifies what was asked, so that running the same command
// again resumes the open order instead of starting another.
func specHash(ref string, toRev int64, toTime time.Time, initialCluster, token string, bump uint64, mark bool) string {
	s := fmt.Sprintf("%s|%d|%s|%s|%s|%d|%t", ref, toRev, toTime.UTC().Format(time.RFC3339Nano), initialCluster, token, bump, mark)
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:12])
}

// memberStates are the reports of one order, by member, in order.
type memberStates map[string][]string // member → report object bases ("01-accepted.json")

// parseReports groups an order's object names by member.
func parseReports(objects []string) (memberStates, map[string]bool) {
	ms := memberStates{}
	top := map[string]bool{}
	for _, o := range objects {
		rest, ok := strings.CutPrefix(o, "reports/")
		if !ok {
			top[o] = true
			continue
		}
		member, base, ok := strings.Cut(rest, "/")
		if ok && !strings.Contains(base, "/") {
			ms[member] = append(ms[member], base)
		}
	}
	for _, v := range ms {
		sort.Strings(v)
	}
	return ms, top
}

// stateOf is the state a report base names ("03-fetching.json" → fetching).
func stateOf(base string) string {
	_, s, _ := strings.Cut(strings.TrimSuffix(path.Base(base), ".json"), "-")
	return s
}

// last returns the newest state of a member ("" when none).
func (ms memberStates) last(member string) string {
	r := ms[member]
	if len(r) == 0 {
		return ""
	}
	return stateOf(r[len(r)-1])
}

// has reports whether a member reported state s.
func (ms memberStates) has(member, s string) bool {
	for _, b := range ms[member] {
		if stateOf(b) == s {
			return true
		}
	}
	return false
}
