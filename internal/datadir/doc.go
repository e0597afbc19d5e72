// Package datadir does everything offline to an etcd member's data
// directory: tells whether a live etcd holds it, builds a new one from a
// snapshot file with etcd's own restore code (etcdutl), moves an existing
// one aside, and swaps the new one into place only when it is complete.
//
// It is the only importer of etcdutl (etcd's restore code). etcd's server
// packages (go.etcd.io/etcd/server/v3) are imported directly only where
// etcd's own code has to run offline or in-process, never to talk to a live
// cluster: by internal/journal/replay (mvcc, backend, lease: it applies journal
// records to a db file), internal/drill (storage/schema: it reads and
// lowers the versions in a throwaway copy of a restored db) and
// internal/embedded (embed: it runs members in-process); this package may
// import them too, but reaches them through etcdutl. It must not import
// storage or repository packages.
//
// Imports: go.etcd.io/etcd/etcdutl/v3
package datadir
