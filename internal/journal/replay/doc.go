// Package replay applies journal records (internal/journal) to an etcd
// database file offline, for point-in-time restore.
//
// Apply opens the bbolt database of a full snapshot (a plain etcd db file,
// without the sha256 trailer of `etcdctl snapshot save`) with etcd's own
// storage code, an mvcc store (go.etcd.io/etcd/server/v3/storage/mvcc) over
// a backend (storage/backend) with a lessor (lease) that is never promoted,
// exactly as an etcd member wires them, and applies each journal record as
// one write transaction. etcd's mvcc code computes every key's
// create_revision, mod_revision and version from the transactions, so after
// replaying revisions S+1..T onto a snapshot taken at S the keys are those
// etcd had at T; Apply checks that each computed revision, create_revision
// and version equals what the journal recorded and that the store is at the
// record's revision after each transaction (it is at the revision before
// the record's when the transaction starts, and each event of the record
// made one change). No cluster is contacted and no etcd server runs: the
// resulting file is turned into data directories by etcd's restore
// (internal/datadir.Build with SkipHashCheck), which also resets the
// consistent index and membership.
//
// # Records
//
// Records at or below the database's revision are skipped: the snapshot
// already holds them (a journal chain starts at or below the snapshot
// revision). Every applied record must be the next revision; a gap is an
// integrity error (format.ErrIntegrity). A PUT stores the key with its
// value and lease, a DELETE deletes the key (which must exist).
//
// # Leases
//
// Before a record's transaction, every lease listed in the record's Leases
// and every lease a PUT of the record refers to is granted with its original
// ID unless the lessor already has it (a lease of the snapshot). Its TTL is
// the one the journal recorded for that lease anywhere earlier in the
// source, or journal.FallbackLeaseTTL when the agent could not learn it.
// Because the lessor is never promoted, leases do not expire during replay,
// however long it takes; a restored etcd starts their full TTL (or the
// remaining TTL that etcd checkpointed into a snapshot lease) when its
// leader is elected.
//
// A watch does not report lease revocations, only the deletions of the keys
// they take with them. Removal rule: a lease that lost a key to a DELETE
// during replay and has no key attached after the last applied record is
// removed from the database. etcd revokes a lease together with its keys in
// one revision, so this removes the leases that were revoked or expired in
// the replayed range; a lease whose keys were deleted one by one while it
// stayed alive is removed too, which only anticipates its expiry (no key
// depends on it, and unless it is kept alive it expires within its TTL of
// the restore anyway). Removing a lease without keys changes no revision
// (Apply checks this). Leases never seen with a key by the journal are not
// visible to replay: those of the snapshot stay as they are, those granted
// later are absent.
//
// # Memory
//
// The uncommitted batch is bounded (a commit every 10,000 writes) and the
// records in flight are a few hundred (internal/journal/store reads ahead
// within its own budget). What grows with the replayed range is etcd's
// in-memory key index, which keeps every revision of every key, deleted
// keys included, until a compaction, as it does in a running etcd between
// two compactions: about 130 bytes of heap per replayed revision in
// BenchmarkReplay (a Kubernetes-like workload), garbage collector headroom
// included.
//
// # Result
//
// On success the database is committed and closed; it is a valid etcd db
// file at Result.Revision. Compactions done by the source cluster after the
// snapshot are not replayed (they change no key at the target revision);
// the restored history starts at the snapshot's compaction point.
// On error, Result reports how far replay got and the file must be
// discarded. When the journal ends before Options.ToRevision, the error
// wraps ErrNotCovered and Result.Revision is the last revision the journal
// covers.
//
// Imports: internal/format, internal/journal, go.etcd.io/etcd/server/v3
package replay
