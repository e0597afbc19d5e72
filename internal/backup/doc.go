// Package backup runs one full backup end to end: choose the member, open
// its snapshot stream, encode it (sha256, zstd, age) straight into the
// repository, and publish the manifest only when every check passed.
//
// It composes internal/etcd, internal/format and internal/repo; it must not
// import etcd server packages or any concrete storage backend.
//
// Imports: internal/etcd, internal/format, internal/repo, internal/version
package backup
