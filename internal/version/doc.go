// Package version holds the build's version strings, set with -ldflags.
//
// Imports: none
package version
