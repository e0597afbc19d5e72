// Package store keeps journal objects in a repository (docs/format.md,
// "Journal objects"): it lists a chain (one LIST; framing-1 segments also
// cost a GET of their manifest each), writes framing-2 objects create-only,
// removes them, and reads a chain's records in order with every check of
// the format, fetching objects concurrently ahead of the reader within a
// memory budget, and planning again when a roll-up has replaced an object
// it was about to read.
//
// Imports: internal/format, internal/journal/chain, internal/journal/codec, internal/repo, internal/storage
package store
