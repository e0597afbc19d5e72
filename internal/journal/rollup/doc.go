// Package rollup merges aged journal objects into larger ones, so that a
// chain of one-second segments becomes a handful of objects: cheaper to
// keep, to list and to restore from.
//
// Policy (Run): objects are grouped in size tiers (a tier is Fanout times
// the one below, from 16 KiB); in an open chain, a run of Fanout or more
// consecutive objects of one tier whose records are all older than MinAge
// is merged into one object; a closed chain (Options.Closed: a newer
// snapshot's chain has started) is packed into objects of up to MaxBytes.
//
// Safety: a roll-up is an ordinary framing-2 object over a range the
// chain already covers, written create-only from records read with every
// check of a restore; only once it is stored are the objects it merged
// removed. Readers that planned with a merged object list again and use
// the roll-up (store.Read), so they never see a gap; concurrent roll-ups
// (an old and a new leader) at worst write overlapping objects, which
// chain.Cover reads either way and chain.Redundant later removes; a crash
// leaves either the pieces, or the roll-up and pieces it makes redundant,
// which the next run or prune removes.
//
// Encrypted chains are read with the agent's --identity; without one they
// are left as they are (Run reports it).
//
// Imports: internal/format, internal/journal/chain, internal/journal/codec, internal/journal/store
package rollup
