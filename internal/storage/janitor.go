package storage

import (
	"context"
	"time"
)

// Janitor is implemented by backends whose interrupted writes can leave
// leftovers that List does not show and Remove cannot name: the local
// backend's ".tmp-*" files of a killed Put, S3's incomplete multipart
// uploads (invisible, but billed). It is optional: callers test for it with
// a type assertion, and prune calls it after removing backups.
type Janitor interface {
	// RemoveStale removes such leftovers older than olderThan, in the whole
	// repository (not only one cluster's part of it), and returns a
	// description of each (a name relative to the root, with details such
	// as an upload ID). olderThan must exceed the longest write still
	// running, or RemoveStale aborts it (that write then fails; it never
	// publishes a partial object). On error, removed lists what was removed
	// before it.
	RemoveStale(ctx context.Context, olderThan time.Duration) (removed []string, err error)
}
