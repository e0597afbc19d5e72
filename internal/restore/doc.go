// Package restore turns a backup and a description of the new cluster into
// this member's data directory. Planning (plan.go) is pure: flags in, a
// validated, printable plan out. Executing (execute.go) fetches and checks
// the backup completely before it touches the data directory.
//
// It must not import concrete storage backends or the etcd client.
//
// Imports: internal/datadir, internal/format, internal/fsutil, internal/iopipe, internal/journal/codec, internal/journal/replay, internal/journal/store, internal/repo
package restore
