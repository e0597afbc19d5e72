// Package s3bench starts versitygw (posix backend) on loopback with one
// bucket for the benchmark commands (bench/faults, bench/journal), as
// internal/testenv starts it for tests. Each command starts the process
// itself (its own child tracking), through Spawn.
//
// Imports: bench/internal/benchkit, github.com/minio/minio-go/v7
package s3bench
