package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// HashKVTimeout bounds one HashKV request. etcd hashes the whole key bucket
// to answer (0.2 s for 300 MiB in the page cache), and holds its backend's
// read lock meanwhile.
const HashKVTimeout = 5 * time.Minute

// KVHash is one member's answer to HashKV.
type KVHash struct {
	Revision        int64 // the revision asked for (the hash covers revisions up to it)
	Hash            uint32
	CompactRevision int64  // the member's compaction revision when it hashed
	MemberID        uint64 // the member that answered
	CurrentRevision int64  // the member's revision when it answered
}

// ErrHashCompacted: HashKV was asked for a revision the member has compacted.
var ErrHashCompacted = errors.New("revision compacted")

// ErrHashFutureRevision: HashKV was asked for a revision the member does not
// have yet.
var ErrHashFutureRevision = errors.New("revision not reached")

// HashKV asks the member behind endpoint ep for etcd's hash of its key space
// at revision rev (etcd ≥ 3.3). Revisions compacted on the member, or not
// yet reached, fail with ErrHashCompacted or ErrHashFutureRevision. etcd 3.4
// (and early 3.5 releases) also refuse rev equal to the compaction revision,
// as compacted.
func (c *Client) HashKV(ctx context.Context, ep string, rev int64) (KVHash, error) {
	if rev <= 0 {
		return KVHash{}, fmt.Errorf("HashKV on %s: revision %d: give a revision", ep, rev)
	}
	ctx, cancel := context.WithTimeout(ctx, HashKVTimeout)
	defer cancel()
	r, err := c.Maintenance.HashKV(ctx, ep, rev)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return KVHash{}, fmt.Errorf("HashKV on %s at revision %d: %w", ep, rev, ErrHashCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return KVHash{}, fmt.Errorf("HashKV on %s at revision %d: %w", ep, rev, ErrHashFutureRevision)
	case err != nil:
		return KVHash{}, fmt.Errorf("HashKV on %s at revision %d: %w", ep, rev, c.cfg.diagnose([]string{ep}, err))
	}
	h := KVHash{Revision: rev, Hash: r.Hash, CompactRevision: r.CompactRevision}
	if r.Header != nil {
		h.MemberID, h.CurrentRevision = r.Header.MemberId, r.Header.Revision
	}
	return h, nil
}
