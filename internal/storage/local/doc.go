// Package local implements storage.Backend on a directory of the local file
// system (or any mounted file system that supports hard links).
//
// It owns the on-disk representation of a repository: object "a/b/c" is the
// file <root>/a/b/c. Put writes a ".tmp-*" file next to the target, fsyncs it
// and publishes it with link(2), which fails instead of overwriting, so Put is
// atomic and create-only without locks. List never shows ".tmp-*" files.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout; it stores opaque named objects only.
//
// Imports: internal/storage
package local
