// Package testenv holds helpers for tests that need real external programs:
// finding test binaries (Bin), free loopback ports (FreePort) and a real
// S3-compatible server (StartS3, versitygw on 127.0.0.1).
//
// A missing binary fails the test with a hint instead of skipping it: the
// binaries are installed by scripts/install-test-deps.sh (make test does), and
// a silently skipped test hides a broken setup.
//
// testenv is imported only from _test.go files. It must not import any package
// of this module (storage backends, etcd code): it talks to the programs it
// starts with their own clients, so that every package can use it in tests
// without import cycles.
package testenv
