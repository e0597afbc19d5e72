// Package drilltest makes damaged backups for tests: a backup altered inside
// its bbolt file with every checksum recomputed, which only a restore drill
// (etcd's HashKV) can tell from a good one. It is imported only from
// _test.go files.
//
// Imports: internal/format, internal/repo, internal/restore
package drilltest
