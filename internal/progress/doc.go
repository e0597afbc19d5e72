// Package progress reports the progress of one long byte stream (a snapshot,
// a restore, a verify, a copy) on stderr: a status line redrawn in place when
// stderr is a terminal, plain periodic log lines otherwise. It has no
// dependencies beyond the standard library and go-humanize; deciding whether
// stderr is a terminal is the caller's (golang.org/x/term).
//
// Imports: none
package progress
