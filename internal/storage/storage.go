package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Errors returned by every Backend. Callers test them with errors.Is.
var (
	// ErrNotFound: the object (or, from Open, the repository root) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: Put was asked to create an object that already exists.
	// Nothing was written.
	ErrExists = errors.New("object already exists")
	// ErrBadURL: the repository URL cannot be parsed or names an unknown scheme.
	ErrBadURL = errors.New("bad repository URL")
	// ErrChanged: a resumed read found another object under the name than
	// the one it started reading (RangeGetter's pin did not match). The
	// bytes read so far must be discarded; nothing was judged.
	ErrChanged = errors.New("object changed while being read")
	// ErrUnavailable: storage kept failing with transient errors (network,
	// throttling, 5xx, stalls) until the retry budget ran out. Errors with
	// it are *GiveUpError. It says nothing about the data: whatever was
	// being read was not judged.
	ErrUnavailable = errors.New("storage unavailable")
)

// Info describes one stored object.
type Info struct {
	Name    string    // full object name relative to the backend root, '/' separated
	Size    int64     // bytes stored
	ModTime time.Time // when the backend recorded it (used to age orphans)
}

// Backend stores immutable objects under '/'-separated names relative to the
// repository root. Implementations must be safe for concurrent use.
//
// Contract, checked by storagetest.Run for every implementation:
//   - Put is atomic and create-only: until it returns nil, no reader (Get,
//     Stat, List) sees the object; when it returns an error or ctx is
//     cancelled, nothing is left visible under name. If name already exists
//     Put returns an error wrapping ErrExists and changes nothing. Put reads r
//     to EOF and must not buffer the whole object in memory: r may be
//     arbitrarily large and of unknown length. If reading r fails, Put aborts
//     and returns that error (wrapped).
//   - Get returns an error wrapping ErrNotFound when name does not exist. The
//     returned reader streams the object; the caller closes it.
//   - Stat returns ErrNotFound like Get.
//   - List calls fn for every object whose name starts with prefix, in
//     lexical order of name. It does not return objects whose Put has not
//     completed. An error from fn stops the listing and is returned.
//   - Remove deletes an object; removing a missing object returns an error
//     wrapping ErrNotFound.
//   - Errors worth retrying (network, throttling, 5xx) are wrapped with
//     Retryable; others are permanent.
//   - Names are checked by Wrap (CheckName) before a backend sees them;
//     backends may assume valid names.
//
// Backends do not retry: Wrap composes retries, resumed reads and stall
// bounds around every backend, once, in Open. A backend whose operation is
// made of several requests (a multipart upload) runs each replayable step
// through Retry, which follows the policy Wrap put in the context.
type Backend interface {
	Put(ctx context.Context, name string, r io.Reader) error
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	Stat(ctx context.Context, name string) (Info, error)
	List(ctx context.Context, prefix string, fn func(Info) error) error
	Remove(ctx context.Context, name string) error
	// Location is a human-readable description of the repository root,
	// free of credentials, for logs and errors.
	Location() string
	Close() error
}

// RetryableError marks an error as transient (network, throttling, server
// errors). Backends wrap such errors with Retryable.
type RetryableError struct{ Err error }

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable wraps err as transient. It returns nil for nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &RetryableError{Err: err}
}

// IsRetryable reports whether err (or anything it wraps) is transient. An
// error from a retry loop that gave up (ErrUnavailable) is not: its retries
// are spent.
func IsRetryable(err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return false
	}
	var r *RetryableError
	return errors.As(err, &r)
}

// RangeGetter is implemented by backends that can read an object from an
// offset, which lets Wrap resume a read that failed mid-body.
//
// GetRange opens name from byte off (0 <= off). pin identifies the object
// version a resumed read must continue: "" for a first read; otherwise the
// pin an earlier GetRange of the same name returned, and when the object
// under name is no longer that one GetRange fails with an error wrapping
// ErrChanged. It returns the pin of the object it opened (an ETag, a
// generation, an inode and size, ...; "" when the backend cannot tell).
// When off equals the object's size the reader is empty. Errors are those
// of Get.
type RangeGetter interface {
	GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error)
}

func badURL(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadURL}, args...)...)
}
