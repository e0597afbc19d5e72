package codec

import (
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Record is everything the journal holds about one etcd revision: the
// events of that revision in the order etcd emitted them (their order is
// their sub-revision), and the TTL of each lease that is referenced by these
// events and was not seen earlier in the chain.
type Record struct {
	Revision int64
	// Time is when the agent received the revision from etcd (wall clock of
	// the agent), used by restore --to-time. Etcd does not timestamp
	// revisions; this is within the watch latency of the commit.
	Time   time.Time
	Events []*mvccpb.Event
	Leases []Lease
}

// Lease is one lease as the agent looked it up: its ID and granted TTL.
// TTL 0 means the lease was already gone when looked up; replay grants it
// with FallbackLeaseTTL.
type Lease struct {
	ID  int64
	TTL int64
}

// FallbackLeaseTTL is the TTL (seconds) replay gives a lease whose TTL the
// agent could not learn because it had already expired or been revoked.
const FallbackLeaseTTL = 60
