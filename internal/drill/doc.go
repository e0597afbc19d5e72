// Package drill runs a restore drill of one backup: fetch it through every
// check of docs/format.md, build a data dir from it with etcd's restore as a
// one-member cluster, start that member in-process on loopback ports, read
// every key back, and compare what a real etcd serves with what the backup
// claims: the key count of etcd's snapshot status reader, the manifest's
// revision, and etcd's HashKV at the recorded hash_kv revision. Everything
// happens in a temporary directory that is removed whatever happens.
//
// `verify --drill` and the agent's --drill-every call it. It composes
// internal/restore (Fetch), internal/datadir, internal/embedded and
// internal/etcd; it never touches a real data dir. Of etcd's server
// packages it imports only storage/schema, to read and lower the storage
// and cluster versions in its throwaway copy of the database (versions.go).
//
// Imports: internal/datadir, internal/embedded, internal/etcd, internal/format, internal/repo, internal/restore, go.etcd.io/etcd/client/v3, go.etcd.io/etcd/server/v3
package drill
