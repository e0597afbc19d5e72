// Package archtest checks the import rules of this module's packages: every
// package's comment (its doc.go) carries one line
//
//	Imports: internal/storage, internal/format, go.etcd.io/etcd/client/v3
//
// listing the packages of this module it may import and the restricted
// external modules it may use (go.etcd.io/etcd/server/v3,
// go.etcd.io/etcd/etcdutl/v3, go.etcd.io/etcd/client/v3,
// github.com/minio/minio-go/v7, cloud.google.com/go/storage,
// github.com/prometheus/client_golang), or
// "none". TestImports compares those lines with `go list` and enforces the
// direction rules of the doc.go files (nothing in internal/ imports cmd/,
// storage backends import internal/storage only and only
// internal/storage/backends imports them, internal/format knows no storage
// and no etcd, ...). Only non-test imports count: tests may import anything.
//
// The package holds only tests.
//
// Imports: none
package archtest
