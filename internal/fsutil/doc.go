// Package fsutil holds the crash-safe file write the commands share. It
// imports only the standard library.
//
// Imports: none
package fsutil
