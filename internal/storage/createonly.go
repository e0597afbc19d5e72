package storage

import (
	"context"
	"errors"
)

// ErrNotCreateOnly: the storage does not make concurrent Puts of one name
// exclusive. Put still refuses a name that exists when it looks (its
// ErrExists holds between writers that do not overlap), but of two writers
// racing for one name both may succeed, the later one replacing the
// object. See CreateOnlyChecker.
var ErrNotCreateOnly = errors.New("storage does not enforce create-only writes")

// CreateOnlyChecker is implemented by backends whose create-only Put,
// between concurrent writers, rests on a server feature that not every
// server has: S3's conditional write, "If-None-Match: *". It is optional:
// find it with As, or call CheckCreateOnly.
type CreateOnlyChecker interface {
	// CheckCreateOnly finds out, by writing and removing a probe object,
	// whether the server enforces create-only writes, once per process
	// and bucket (later calls return the first answer). It returns nil
	// when it does, an error wrapping ErrNotCreateOnly when it does not,
	// and another error when it could not tell (storage unreachable, no
	// permission to write); the latter are not remembered.
	CheckCreateOnly(ctx context.Context) error
}

// CheckCreateOnly asks b (or a backend it wraps) whether concurrent Puts of
// one name are exclusive. Backends without CreateOnlyChecker answer nil:
// the local backend's are (a hard link never replaces a file); rclone's are
// exact within one process only, as its package documents, which no probe
// would change.
func CheckCreateOnly(ctx context.Context, b Backend) error {
	c, ok := As[CreateOnlyChecker](b)
	if !ok {
		return nil
	}
	return c.CheckCreateOnly(ctx)
}
