// Package faultproxy is an HTTP reverse proxy on 127.0.0.1 that injects the
// faults real object stores and flaky networks produce, in front of a
// plain-http S3 server such as versitygw: 503 SlowDown answers, response
// bodies cut short, stalled requests, added latency, a dead endpoint and a
// server that ignores If-None-Match (see Faults). It forwards requests
// unchanged (Host header included, so SigV4 signatures made for the proxy's
// address stay valid; only StripIfNoneMatch changes a request, and signs it
// again with the credentials given to SetCredentials) and counts requests
// by method and bytes in both directions (Proxy.Stats), e.g. to see how much
// a command read from storage.
//
// Tests use it through internal/testenv (StartFaultProxy, which closes it in
// t.Cleanup); the benchmarks (bench/faults) use it directly. It is test and
// benchmark equipment: no command of etcd-backup imports it.
//
// It imports only the standard library and minio-go's SigV4 signer, with
// which StripIfNoneMatch signs the requests it changes.
//
// Imports: github.com/minio/minio-go/v7
package faultproxy
