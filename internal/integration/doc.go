// Package integration holds tests that run the library end to end on
// in-process etcd clusters (go.etcd.io/etcd/server/v3/embed) and real
// storage: a local directory and the S3 test server.
//
// Imports: none
package integration
