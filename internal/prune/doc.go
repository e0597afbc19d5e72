// Package prune removes the backups a retention policy no longer keeps,
// orphan payloads, and the backend's stale leftovers, while guaranteeing
// that the newest verified backup survives. See docs/retention.md.
//
// "Verified" is cheap by default: the backup was checked byte for byte
// when it was written (its manifest, written last, records the sha256 and
// size of what was stored), so prune only checks that it is still there:
// the manifest passes its checksum and the payload exists with the stored
// size the manifest records. Options.ReadBack reads the backup back in
// full instead, as 'etcd-backup verify' does.
//
// It is used by the prune command and by the agent after each backup.
//
// It decides with internal/retention, checks backups with internal/restore
// (VerifyStored, Fetch for ReadBack) and reads and removes through
// internal/repo and the storage.Backend interface; it must not import a
// concrete storage backend or etcd packages.
//
// Imports: internal/format, internal/journal/chain, internal/journal/store, internal/repo, internal/restore, internal/retention, internal/storage
package prune
