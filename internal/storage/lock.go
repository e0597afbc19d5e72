package storage

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Retention asks the store to keep an object unchanged and undeleted until
// Until (S3 Object Lock): in GOVERNANCE mode only a principal allowed to
// bypass governance retention can remove it early, in COMPLIANCE mode
// nobody can.
type Retention struct {
	Until time.Time
	Mode  string // "GOVERNANCE" or "COMPLIANCE"
}

// LockModes are the retention modes, as --lock-mode takes them.
var LockModes = []string{"governance", "compliance"}

// ParseLockMode returns the Retention.Mode of a --lock-mode value.
func ParseLockMode(s string) (string, error) {
	switch strings.ToLower(s) {
	case "governance":
		return "GOVERNANCE", nil
	case "compliance":
		return "COMPLIANCE", nil
	}
	return "", fmt.Errorf("%w: lock mode %q: want governance or compliance", ErrBadURL, s)
}

type retentionKey struct{}

// WithRetention returns ctx carrying r: a backend that can lock objects
// writes the objects Put under it with that retention.
func WithRetention(ctx context.Context, r Retention) context.Context {
	return context.WithValue(ctx, retentionKey{}, r)
}

// RetentionFrom returns the retention ctx carries, if any.
func RetentionFrom(ctx context.Context) (Retention, bool) {
	r, ok := ctx.Value(retentionKey{}).(Retention)
	return r, ok
}

// Locker is implemented by backends that can lock the objects they write
// (Put honours WithRetention). CheckLock says whether this repository can:
// for S3, whether the bucket has Object Lock enabled.
type Locker interface {
	CheckLock(ctx context.Context) error
}

// Locked is a Backend that writes every object with a retention of For
// from the moment of the write (the backend must be a Locker; see
// LockFor).
type Locked struct {
	Backend
	For  time.Duration
	Mode string
	now  func() time.Time
}

// LockFor returns b writing every object locked for d in mode (a
// Retention mode), after checking that b can lock objects at all.
func LockFor(ctx context.Context, b Backend, d time.Duration, mode string) (*Locked, error) {
	l, ok := As[Locker](b)
	if !ok {
		return nil, fmt.Errorf("%w: --lock-for needs a store that can lock objects (s3:// with Object Lock); %s cannot", ErrBadURL, b.Location())
	}
	if err := l.CheckLock(ctx); err != nil {
		return nil, err
	}
	return &Locked{Backend: b, For: d, Mode: mode, now: time.Now}, nil
}

// Put writes the object with a retention until now + For, or the one ctx
// already carries (a caller that records it, as a manifest does).
func (l *Locked) Put(ctx context.Context, name string, r io.Reader) error {
	if _, ok := RetentionFrom(ctx); !ok {
		ctx = WithRetention(ctx, Retention{Until: l.Until(), Mode: l.Mode})
	}
	return l.Backend.Put(ctx, name, r)
}

// Until is the end of the retention of an object written now.
func (l *Locked) Until() time.Time { return l.now().Add(l.For).UTC() }

// Unwrap returns the backend below.
func (l *Locked) Unwrap() Backend { return l.Backend }
