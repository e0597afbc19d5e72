// Package journal is the continuous journal of etcd-backup: every change
// etcd makes between two full snapshots, kept so that a restore reaches any
// revision exactly. This directory holds the whole subsystem; this package
// itself holds no code. Its parts, each a package below:
//
//   - codec: the byte framing of a journal stream (records, frames, seal);
//   - chain: names of journal objects and the arithmetic of chains, the one
//     place that decides what a chain lets a restore reach;
//   - store: journal objects in a repository: listing, writing, reading a
//     chain with concurrent prefetch;
//   - writer: the watch that seals segments every flush interval;
//   - rollup: merging aged segments into larger objects;
//   - replay: applying records to an etcd database offline.
//
// Imports point down that list's reverse: codec and chain import nothing of
// the journal; store imports both; writer and rollup import store; replay
// imports codec only.
//
// Imports: none
package journal
