// Package clusterrestore restores a whole cluster with one command
// (restore-cluster) through restore orders in the repository, carried out
// by the agent on every node. docs/format.md "Restore orders" gives the
// objects; docs/operations.md the runbook.
//
// The coordinator (Run) resolves the backup and prepares one database, with
// the journal replayed here, once, so members cannot diverge; encrypts it
// to the members' agent keys (age), so no private key of a backup ever
// reaches the repository or an agent; publishes the order; and, once every
// member has checked in, writes go (or cancel, when a member still sees a
// quorum and the order has no Force). It returns when every member reports
// healthy at the same revision and HashKV, or at the timeout, naming who
// is not done; running it again resumes the open order.
//
// The executor (Executor, in the agent) publishes its key, polls for
// orders naming its member, whether or not etcd answers, and carries each
// out at most once: stop etcd, fetch and check the prepared database,
// build the data dir with etcd's restore beside the old one, move the old
// one aside, start etcd, wait until it serves. Every step is reported as a
// new object (the repository is create-only).
//
// Imports: internal/datadir, internal/etcd, internal/format, internal/repo, internal/restore, internal/storage
package clusterrestore
