// Package writer records etcd's history between full snapshots: a watch
// on the whole key space from a snapshot's revision+1 whose events are sealed
// into journal segments (internal/journal) every flush interval.
//
// Guarantees:
//   - A segment starting at revision S holds every event etcd emitted with a
//     revision in [S, end]: it is written by one watch that started at or
//     before S. The next segment of the chain starts at end+1.
//   - A segment is one object (framing 2, internal/journal/store), written
//     create-only in one PUT under a name that holds its revision range and
//     a random nonce. Two writers (an old and a new leader's agent) sealing
//     the same revisions both publish: every object holds every event of its
//     range, so readers take either (chain.Cover) and never see a gap;
//     roll-ups and prune remove the copy that became redundant.
//   - Memory is bounded: while the uploader is busy and the segment being
//     filled has reached its size limit, the watch is cancelled (the etcd
//     client buffers a watch without bound when it is not read) and opened
//     again after the last revision held once the uploader takes the
//     segment; etcd holds the events in its history meanwhile.
//   - Nothing unsealed is trusted: after a crash, the next writer starts
//     from the last sealed revision in the repository.
//
// It composes internal/journal (the segments), internal/repo (where they are
// stored) and the etcd client (the watch); it must not import etcd's server
// packages or any concrete storage backend.
//
// Imports: internal/format, internal/journal/chain, internal/journal/codec, internal/journal/store, internal/repo, internal/storage, go.etcd.io/etcd/client/v3
package writer
