// Package testenv holds helpers for tests that need real external programs:
// finding test binaries (Bin), free loopback ports (FreePort), real
// S3-compatible servers on 127.0.0.1: versitygw (StartS3) and MinIO
// (StartMinIO) — EachS3 runs a test once per server, so that the S3 backend
// is proven on both, and MakeLockedBucket makes a bucket with versioning and
// Object Lock —, a Google Cloud Storage emulator (StartGCS, fake-gcs-server
// on 127.0.0.1, spoken to with plain JSON API requests: testenv does not
// import the GCS client), and Azure Blob Storage's emulator (StartAzurite,
// or SharedAzurite for one process per test binary with a fresh container
// per test: azurite-blob on 127.0.0.1 with the well-known development
// account).
//
// StartFaultProxy puts a reverse proxy on 127.0.0.1 in front of such a server
// (use its Addr as the S3 endpoint) that injects what real object stores and
// flaky networks do, as set with FaultProxy.Set: 503 SlowDown answers, response
// bodies cut short, stalled requests, added latency, a dead endpoint and a
// server that ignores If-None-Match (with SetCredentials). It
// forwards requests unchanged (Host header included, so SigV4 signatures
// made for the proxy's address stay valid) and counts requests and bytes
// (FaultProxy.Stats), e.g. to check how much a backup read from storage. The
// proxy itself is internal/faultproxy (benchmarks use it too); testenv ties
// it to the test's lifetime.
//
// A missing binary fails the test with a hint instead of skipping it: the
// binaries are installed by scripts/install-test-deps.sh (make test does), and
// a silently skipped test hides a broken setup.
//
// testenv is imported only from _test.go files. Of this module it imports only
// internal/embedded and internal/etcd (StartEtcd: an in-process cluster and a
// client on it) and internal/faultproxy (the proxy), which import nothing of
// this module themselves. It must not import anything else of this module
// (storage backends, repository code): it talks to the programs it starts
// with their own clients, so that every other package can use it in tests
// without import cycles (internal/embedded, internal/etcd and
// internal/faultproxy can too, from external _test packages).
//
// Imports: internal/embedded, internal/etcd, internal/faultproxy, github.com/minio/minio-go/v7, github.com/Azure/azure-sdk-for-go/sdk
package testenv
