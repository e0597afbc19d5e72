// Package transfer copies backups between repositories or cluster names
// (a second site, a migration), verifying every byte on the way: the stored
// object's size and sha256 always (no key needed, encrypted payloads are
// copied as they are), and the decoded snapshot's checksums and etcd's hash
// when the payload is unencrypted or an identity is given. The destination
// manifest is written last, so a half-copied backup is never listed.
//
// It composes internal/repo, internal/format and the storage.Backend
// interface (internal/storage); it must not import etcd or concrete storage
// packages.
//
// Imports: internal/format, internal/journal/chain, internal/journal/store, internal/repo, internal/storage
package transfer
