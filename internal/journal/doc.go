// Package journal holds the continuous journal: the etcd events recorded
// between full snapshots, their byte framing (docs/format.md, "Journal
// segments"), and the rules that make a chain of segments restorable.
//
// It is pure encoding and chain arithmetic over manifests: it imports
// internal/format (manifests, integrity errors) and etcd's API types
// (mvccpb), never storage, the etcd client or etcd's server packages.
//
// Imports: internal/format
package journal
