package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults of Policy.
const (
	// DefaultTimeout is how long an operation keeps retrying once it
	// starts failing: long enough to ride out a store's throttling burst
	// or a network blip, short enough that a command run by hand reports
	// storage being down within minutes.
	DefaultTimeout = 5 * time.Minute
	// DefaultStall is how long a request may go without moving a byte
	// before it is abandoned and retried (a hung server, a half-open TCP
	// connection).
	DefaultStall = time.Minute

	defaultMinBackoff = 200 * time.Millisecond
	defaultMaxBackoff = 10 * time.Second
)

// Policy says how Wrap retries. The zero value means the defaults.
type Policy struct {
	// Timeout bounds the retries of one operation: once a try fails, the
	// operation gives up (ErrUnavailable) when the next try would start
	// later than Timeout after the first failure since the operation last
	// made progress. A read that resumes and moves bytes starts a new
	// budget. 0 means DefaultTimeout.
	Timeout time.Duration
	// Stall abandons a try (and retries it) that moves no byte for this
	// long. 0 means DefaultStall.
	Stall time.Duration
	// MinBackoff and MaxBackoff bound the wait between tries: it doubles
	// from MinBackoff up to MaxBackoff, with jitter (each wait is drawn
	// between half and all of its bound), so that many clients throttled
	// at once do not come back at once. 0 means 200 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger gets a debug line per retry and a warning per operation that
	// needed retries. nil discards.
	Logger *slog.Logger
	// OnRetry, when set, is called before each retry with the operation
	// ("get", "put", "list", "stat", "remove", or a backend's step such as
	// "upload part") and the error (for metrics).
	OnRetry func(op string, err error)
	// OnGiveUp, when set, is called when an operation gives up
	// (ErrUnavailable).
	OnGiveUp func(op string)
}

func (p Policy) withDefaults() Policy {
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.Stall <= 0 {
		p.Stall = DefaultStall
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = defaultMinBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = defaultMaxBackoff
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	return p
}

// GiveUpError is a storage operation that failed with transient errors
// until its retry budget (Policy.Timeout) ran out. It wraps ErrUnavailable
// and carries the last error as text only: the data was not judged, and
// the cause (a cut body's "unexpected EOF") must not read as damage.
type GiveUpError struct {
	Op    string // "get", "put", ...
	Name  string // object name
	Tries int
	For   time.Duration // time spent since the first failure
	Last  string        // the last error
}

func (e *GiveUpError) Error() string {
	what := e.Op
	if e.Name != "" {
		what += " " + e.Name
	}
	return fmt.Sprintf("storage error after %d tries over %s (%s): %s", e.Tries, e.For.Round(100*time.Millisecond), what, e.Last)
}

func (e *GiveUpError) Unwrap() error { return ErrUnavailable }

// retrier runs the tries of one operation.
type retrier struct {
	p     Policy
	op    string
	name  string
	tries int       // failed tries since the budget started
	since time.Time // first failure of the current budget
	total int       // failed tries in all
}

func newRetrier(p Policy, op, name string) *retrier {
	return &retrier{p: p, op: op, name: name}
}

// progress starts a new budget: the operation moved forward.
func (r *retrier) progress() { r.tries, r.since = 0, time.Time{} }

// failed records a failed try with err and waits before the next one. It
// returns nil to retry, or the error to return: err itself when it is
// permanent or ctx is done, a *GiveUpError when the budget is spent.
func (r *retrier) failed(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	if !IsRetryable(err) {
		return err
	}
	now := time.Now()
	if r.tries == 0 {
		r.since = now
	}
	r.tries++
	r.total++
	wait := r.backoff()
	if now.Add(wait).Sub(r.since) > r.p.Timeout {
		r.p.Logger.Warn("storage: giving up", "op", r.op, "name", r.name, "tries", r.tries, "error", err)
		if r.p.OnGiveUp != nil {
			r.p.OnGiveUp(r.op)
		}
		return &GiveUpError{Op: r.op, Name: r.name, Tries: r.tries, For: now.Sub(r.since), Last: err.Error()}
	}
	r.p.Logger.Debug("storage: retrying", "op", r.op, "name", r.name, "try", r.tries, "in", wait, "error", err)
	if r.p.OnRetry != nil {
		r.p.OnRetry(r.op, err)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	case <-t.C:
		return nil
	}
}

// backoff is the wait before the next try: doubling from MinBackoff, capped
// at MaxBackoff, drawn between half and all of that bound.
func (r *retrier) backoff() time.Duration {
	bound := r.p.MinBackoff
	for i := 1; i < r.tries && bound < r.p.MaxBackoff; i++ {
		bound *= 2
	}
	bound = min(bound, r.p.MaxBackoff)
	return bound/2 + rand.N(bound/2+1)
}

// done logs an operation that succeeded after retries.
func (r *retrier) done() {
	if r.total > 0 {
		r.p.Logger.Info("storage: succeeded after retries", "op", r.op, "name", r.name, "retries", r.total)
	}
}

// policyKey carries the Policy of the Wrap a backend is called through.
type policyKey struct{}

// inRetryKey marks a context whose caller already retries the whole
// operation: Retry then runs its step once.
type inRetryKey struct{}

func withPolicy(ctx context.Context, p Policy) context.Context {
	return context.WithValue(ctx, policyKey{}, p)
}

// WithPolicy returns ctx with policy p for the Retry steps of a backend
// called outside Wrap (while it is being opened).
func WithPolicy(ctx context.Context, p Policy) context.Context {
	return withPolicy(ctx, p.withDefaults())
}

// Retry runs step, a replayable part of a backend's operation (one part of
// a multipart upload, the request that completes it), with the retry policy
// of the Wrap the backend was called through: retryable errors are retried
// with backoff until the budget is spent, each try abandoned after
// Policy.Stall. Called outside a Wrap, or inside an operation Wrap already
// retries as a whole, it runs step once.
func Retry(ctx context.Context, what string, step func(ctx context.Context) error) error {
	p, ok := ctx.Value(policyKey{}).(Policy)
	if !ok || ctx.Value(inRetryKey{}) != nil {
		return step(ctx)
	}
	r := newRetrier(p, what, "")
	for {
		err := tryWithStall(ctx, p.Stall, step)
		if err == nil {
			r.done()
			return nil
		}
		if err = r.failed(ctx, err); err != nil {
			return err
		}
	}
}

// StepPolicy returns the policy under which Retry would retry a backend's
// replayable steps in ctx, and false when Retry would run a step once
// (outside a Wrap, or inside an operation Wrap retries as a whole). It is
// for backends whose client library resends a step itself (the GCS client
// resends a chunk of a resumable upload from its buffer): they configure
// that library's retries from it, so that one budget still governs.
func StepPolicy(ctx context.Context) (Policy, bool) {
	p, ok := ctx.Value(policyKey{}).(Policy)
	if !ok || ctx.Value(inRetryKey{}) != nil {
		return Policy{}, false
	}
	return p, true
}

// errStalled is the cause of a try abandoned for moving no byte.
var errStalled = errors.New("no progress")

// stallError is a try abandoned by its watchdog. It is retryable.
func stallError(d time.Duration, err error) error {
	return Retryable(fmt.Errorf("%w for %s, abandoned: %v", errStalled, d, err))
}

// tryWithStall runs fn with a context that is cancelled when fn has not
// returned within stall. A cancellation it caused is reported as a
// retryable stall.
func tryWithStall(ctx context.Context, stall time.Duration, fn func(ctx context.Context) error) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := time.AfterFunc(stall, func() { cancel(errStalled) })
	err := fn(tctx)
	stalled := !t.Stop() && context.Cause(tctx) == errStalled
	if err != nil && stalled && ctx.Err() == nil {
		return stallError(stall, err)
	}
	return err
}
