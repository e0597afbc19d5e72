// Package fsutil holds the file writes the commands share: the crash-safe
// replace of a small file, and the writer that hands a large file to disk
// while it is written (Writeback). It imports only the standard library
// and golang.org/x/sys/unix.
//
// Imports: none
package fsutil
