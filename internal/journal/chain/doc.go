// Package chain is the arithmetic of journal chains: what a chain's objects
// (segments and roll-ups, told apart only by their revision ranges) let a
// restore reach, and which of them a reader fetches. It is the one place
// that decides "what can be restored to where"; it works on names and
// ranges only, never on storage.
//
// Imports: internal/format
package chain
