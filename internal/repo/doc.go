// Package repo knows where things live in a storage backend (docs/format.md,
// "Object layout"): the repository marker, per-cluster snapshot manifests
// and payloads, and how a backup reference (ID, ID prefix, "latest",
// --from-member) resolves to a manifest.
//
// It imports internal/storage and internal/format only; it must not import
// etcd packages.
package repo
