// Package datadir does everything offline to an etcd member's data
// directory: tells whether a live etcd holds it, builds a new one for a
// member of a new cluster from a checked database (CreateDB, then Finish:
// the steps of `etcdutl snapshot restore` after its copy, with etcd's own
// packages, so a restore writes the database once, where etcd reads it),
// moves an existing one aside, and swaps the new one into place only when
// it is complete.
//
// It is the only importer of etcdutl (etcd's snapshot status reader, for
// restore drills; the tests compare Finish with etcdutl's restore). etcd's
// server packages (go.etcd.io/etcd/server/v3) are imported only where
// etcd's own code has to run offline or in-process, never to talk to a
// live cluster: here (membership, WAL, raft snapshot, backend: the data
// dir), by internal/journal/replay (mvcc, backend, lease: it applies
// journal records to a db file), internal/drill (storage/schema: it reads
// and lowers the versions in a throwaway copy of a restored db) and
// internal/embedded (embed: it runs members in-process). It must not
// import storage or repository packages.
//
// Imports: go.etcd.io/etcd/etcdutl/v3, go.etcd.io/etcd/server/v3
package datadir
