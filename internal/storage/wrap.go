package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Wrap returns b with what every backend gets, composed once (Open in
// internal/storage/backends is its only production caller):
//
//   - one name rule, CheckName, for every operation;
//   - retries with exponential backoff and jitter of every operation that
//     is safe to retry (Get, Stat, List, Remove; Put when its source is an
//     io.ReadSeeker, such as a manifest or a journal segment in memory;
//     the replayable steps of a streamed Put through Retry), bounded by
//     Policy.Timeout;
//   - reads that resume: a Get that fails mid-body continues from the byte
//     it reached, pinned to the same object (RangeGetter);
//   - stall bounds: a try that moves no byte for Policy.Stall is abandoned
//     and retried.
//
// The result reports errors as the Backend contract says, plus
// *GiveUpError (ErrUnavailable) when retries are spent. Optional interfaces
// of b (Janitor, ...) are found with As.
func Wrap(b Backend, p Policy) Backend {
	return &wrapped{b: b, p: p.withDefaults()}
}

// As finds, in b or the backends it wraps, one implementing T.
func As[T any](b Backend) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		u, ok := b.(interface{ Unwrap() Backend })
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	var zero T
	return zero, false
}

type wrapped struct {
	b Backend
	p Policy
}

var _ Backend = (*wrapped)(nil)

func (w *wrapped) Unwrap() Backend  { return w.b }
func (w *wrapped) Location() string { return w.b.Location() }
func (w *wrapped) Close() error     { return w.b.Close() }

// Put stores r under name. A seekable source is retried as a whole (an
// ErrExists after a failed try is success when the stored object holds
// exactly r's bytes: the earlier try landed but its answer was lost); a
// stream is tried once, and the backend retries its replayable steps.
func (w *wrapped) Put(ctx context.Context, name string, r io.Reader) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	ctx = withPolicy(ctx, w.p)
	s, ok := r.(io.ReadSeeker)
	var start int64
	if ok {
		var err error
		if start, err = s.Seek(0, io.SeekCurrent); err != nil {
			ok = false
		}
	}
	if !ok {
		return w.b.Put(ctx, name, r)
	}
	ctx = context.WithValue(ctx, inRetryKey{}, true)
	rt := newRetrier(w.p, "put", name)
	for try := 0; ; try++ {
		if try > 0 {
			if _, err := s.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("put %q: rewind source: %w", name, err)
			}
		}
		err := w.putTry(ctx, name, s)
		if err == nil {
			rt.done()
			return nil
		}
		if try > 0 && errors.Is(err, ErrExists) && w.holds(ctx, name, s, start) {
			rt.done()
			return nil
		}
		if err = rt.failed(ctx, err); err != nil {
			return err
		}
	}
}

// putTry is one try of a Put from a seekable source, abandoned when
// neither the source is read nor the answer comes for Policy.Stall.
func (w *wrapped) putTry(ctx context.Context, name string, s io.Reader) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := time.AfterFunc(w.p.Stall, func() { cancel(errStalled) })
	err := w.b.Put(tctx, name, &kickReader{r: s, t: t, d: w.p.Stall})
	if !t.Stop() && context.Cause(tctx) == errStalled && err != nil && ctx.Err() == nil {
		return stallError(w.p.Stall, err)
	}
	return err
}

// kickReader resets a watchdog timer whenever bytes are read.
type kickReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.t.Reset(k.d)
	}
	return n, err
}

// holds reports whether the object name holds exactly the bytes of s from
// start on. It compares chunk by chunk: s may be a large file.
func (w *wrapped) holds(ctx context.Context, name string, s io.ReadSeeker, start int64) bool {
	if _, err := s.Seek(start, io.SeekStart); err != nil {
		return false
	}
	rc, err := w.Get(ctx, name)
	if err != nil {
		return false
	}
	defer rc.Close()
	a, b := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		n, errA := io.ReadFull(s, a)
		m, errB := io.ReadFull(rc, b[:n+1]) // one more: the object must end too
		if errA == io.ErrUnexpectedEOF {
			errA = io.EOF
		}
		if errB == io.ErrUnexpectedEOF {
			errB = io.EOF
		}
		if m != n || !bytes.Equal(a[:n], b[:m]) {
			return false
		}
		switch {
		case errA == io.EOF && errB == io.EOF:
			return true
		case errA != nil || errB != nil:
			return false
		}
	}
}

// Stat describes the object name.
func (w *wrapped) Stat(ctx context.Context, name string) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, fmt.Errorf("stat: %w", err)
	}
	var info Info
	err := w.do(ctx, "stat", name, func(ctx context.Context) error {
		var err error
		info, err = w.b.Stat(ctx, name)
		return err
	})
	return info, err
}

// Remove deletes the object name. A try that failed may still have
// removed it (its answer lost): then a later try reports ErrNotFound, which
// every caller takes as "gone", as it must for a concurrent remover anyway.
func (w *wrapped) Remove(ctx context.Context, name string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return w.do(ctx, "remove", name, func(ctx context.Context) error {
		return w.b.Remove(ctx, name)
	})
}

// List calls fn for every object whose name starts with prefix. A listing
// that fails is retried from the start and skips what fn has seen, so fn
// sees every name once, in order. An error from fn is returned as is.
func (w *wrapped) List(ctx context.Context, prefix string, fn func(Info) error) error {
	rt := newRetrier(w.p, "list", prefix)
	var (
		last   string
		seen   bool
		fnErr  error
		stallD = w.p.Stall
	)
	for {
		tctx, cancel := context.WithCancelCause(ctx)
		t := time.AfterFunc(stallD, func() { cancel(errStalled) })
		err := w.b.List(tctx, prefix, func(i Info) error {
			t.Stop()
			defer t.Reset(stallD)
			if seen && i.Name <= last {
				return nil
			}
			if err := fn(i); err != nil {
				fnErr = err
				return err
			}
			last, seen = i.Name, true
			rt.progress()
			return nil
		})
		stalled := !t.Stop() && context.Cause(tctx) == errStalled
		cancel(nil)
		switch {
		case fnErr != nil:
			return fnErr
		case err == nil:
			rt.done()
			return nil
		case stalled && ctx.Err() == nil:
			err = stallError(stallD, err)
		}
		if err = rt.failed(ctx, err); err != nil {
			return err
		}
	}
}

// do runs a one-request operation with retries, each try bounded by
// Policy.Stall.
func (w *wrapped) do(ctx context.Context, op, name string, fn func(ctx context.Context) error) error {
	ctx = withPolicy(ctx, w.p)
	rt := newRetrier(w.p, op, name)
	for {
		err := tryWithStall(ctx, w.p.Stall, fn)
		if err == nil {
			rt.done()
			return nil
		}
		if err = rt.failed(ctx, err); err != nil {
			return err
		}
	}
}

// Get opens the object name. The reader resumes after a failure mid-body
// (from the byte it reached, pinned to the same object) while the backend
// can (RangeGetter), and abandons a read that moves no byte for
// Policy.Stall.
func (w *wrapped) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	g := &resumer{w: w, ctx: withPolicy(ctx, w.p), name: name, rt: newRetrier(w.p, "get", name)}
	g.rg, _ = w.b.(RangeGetter)
	if err := g.open(); err != nil {
		return nil, err
	}
	return g, nil
}

// resumer is the reader Get returns.
type resumer struct {
	w    *wrapped
	ctx  context.Context
	name string
	rg   RangeGetter // nil: the backend cannot resume
	rt   *retrier

	mu     sync.Mutex // guards rc and cancel against a concurrent Close
	rc     io.ReadCloser
	cancel context.CancelCauseFunc
	tctx   context.Context
	timer  *time.Timer

	off    int64  // bytes delivered
	pin    string // the object's version, from the first GetRange
	err    error  // sticky
	closed atomic.Bool
}

// open opens the object at g.off, retrying until it succeeds or gives up.
func (g *resumer) open() error {
	for {
		err := g.try()
		if err == nil {
			return nil
		}
		if err = g.rt.failed(g.ctx, err); err != nil {
			return err
		}
	}
}

// try opens the object once.
func (g *resumer) try() error {
	if g.closed.Load() {
		return errReadClosed
	}
	stall := g.w.p.Stall
	tctx, cancel := context.WithCancelCause(g.ctx)
	t := time.AfterFunc(stall, func() { cancel(errStalled) })
	var (
		rc  io.ReadCloser
		pin string
		err error
	)
	switch {
	case g.rg != nil:
		rc, pin, err = g.rg.GetRange(tctx, g.name, g.off, g.pin)
	case g.off == 0:
		rc, err = g.w.b.Get(tctx, g.name)
	default:
		err = fmt.Errorf("this store cannot resume a read at byte %d", g.off)
	}
	stalled := !t.Stop() && context.Cause(tctx) == errStalled
	if err == nil && stalled {
		rc.Close()
		err = errors.New("opened too late")
	}
	if err != nil {
		cancel(nil)
		if stalled && g.ctx.Err() == nil {
			return stallError(stall, err)
		}
		return err
	}
	if g.pin == "" {
		g.pin = pin
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		rc.Close()
		cancel(nil)
		return errReadClosed
	}
	g.rc, g.cancel, g.tctx, g.timer = rc, cancel, tctx, t
	return nil
}

var errReadClosed = errors.New("read after Close")

// Read reads the object. A failure mid-body closes the current request and
// opens the object again at the byte reached; bytes already read are
// delivered first.
func (g *resumer) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.closed.Load() {
		return 0, fmt.Errorf("get %q: %w", g.name, errReadClosed)
	}
	g.timer.Reset(g.w.p.Stall)
	n, err := g.rc.Read(p)
	stopped := g.timer.Stop()
	if n > 0 {
		g.off += int64(n)
		g.rt.progress()
	}
	if err == nil || err == io.EOF {
		return n, err
	}
	switch {
	case g.closed.Load():
		g.err = fmt.Errorf("get %q: %w", g.name, errReadClosed)
		return n, g.err
	case g.ctx.Err() != nil:
		g.err = fmt.Errorf("get %q: %w", g.name, g.ctx.Err())
		g.closeCurrent()
		return n, g.err
	}
	// Every failure mid-body is the transport's (a cut connection, a
	// reset, a stall): the object is read again from where it stopped.
	// A permanent condition shows on reopening (gone, changed, refused).
	cause := Retryable(err)
	if !stopped && context.Cause(g.tctx) == errStalled {
		cause = stallError(g.w.p.Stall, err)
	}
	g.closeCurrent()
	if ferr := g.rt.failed(g.ctx, fmt.Errorf("read at byte %d: %w", g.off, cause)); ferr != nil {
		g.err = ferr
		return n, g.err
	}
	if oerr := g.open(); oerr != nil {
		g.err = oerr
		return n, g.err
	}
	return n, nil
}

// closeCurrent ends the current request.
func (g *resumer) closeCurrent() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rc != nil {
		g.timer.Stop()
		g.rc.Close()
		g.cancel(nil)
		g.rc = nil
	}
}

// Close ends the read; it may be called while a Read is blocked.
func (g *resumer) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rc != nil {
		g.timer.Stop()
		g.cancel(errReadClosed)
		g.rc.Close()
	}
	return nil
}
