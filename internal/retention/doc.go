// Package retention decides which backups a retention policy keeps. It is
// pure: backups and a policy in, one decision per backup out. It follows the
// semantics of restic's "forget" (--keep-last, --keep-hourly, ...,
// --keep-within) exactly, except that time buckets are computed in UTC; see
// docs/retention.md.
//
// Imports: none
package retention
