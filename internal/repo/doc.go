// Package repo knows where things live in a storage backend (docs/format.md,
// "Object layout"): the repository marker, per-cluster snapshot manifests
// and payloads, and how a backup reference (ID, ID prefix, "latest",
// --from-member) resolves to a manifest.
//
// It imports internal/storage, internal/format and internal/journal (the
// chain rules a backup's journal coverage follows) only; it must not import
// etcd packages.
//
// Imports: internal/format, internal/journal, internal/storage
package repo
