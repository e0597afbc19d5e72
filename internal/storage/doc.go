// Package storage defines the Backend interface every repository store
// implements and the errors its methods return. One package per backend
// lives below it; internal/storage/backends maps a repository URL to one.
// Backends know nothing about etcd, backups or the repository layout; they
// store named, immutable objects.
//
// It also owns the wrappers every backend is used through: Wrap composes
// retries (Retry, Policy), resumed reads (RangeGetter), stall bounds and the
// one name rule (CheckName) around a backend, once, in
// internal/storage/backends.Open; backends themselves do not retry.
//
// It imports nothing of this module: every other package may import it.
//
// Imports: none
package storage
