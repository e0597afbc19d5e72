// Package format owns the bytes of repository format v1 (docs/format.md):
// the manifest and its checksum trailer, backup IDs, the payload encoding
// age(zstd(raw etcd snapshot)) with every checksum the reader must check, and
// the format version rule.
//
// It knows no storage backend and no etcd client: it must not import
// internal/storage, internal/etcd or any go.etcd.io package.
//
// Imports: internal/iopipe
package format
