// Package testenv holds helpers for tests that need real external programs:
// finding test binaries (Bin), free loopback ports (FreePort) and a real
// S3-compatible server (StartS3, versitygw on 127.0.0.1).
//
// A missing binary fails the test with a hint instead of skipping it: the
// binaries are installed by scripts/install-test-deps.sh (make test does), and
// a silently skipped test hides a broken setup.
//
// testenv is imported only from _test.go files. Of this module it imports only
// internal/embedded and internal/etcd (StartEtcd: an in-process cluster and a
// client on it), which import nothing of this module themselves. It must not
// import anything else of this module (storage backends, repository code): it
// talks to the programs it starts with their own clients, so that every other
// package can use it in tests without import cycles (internal/embedded and
// internal/etcd can too, from external _test packages).
//
// Imports: internal/embedded, internal/etcd, github.com/minio/minio-go/v7
package testenv
