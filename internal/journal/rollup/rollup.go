package rollup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
)

// Defaults of Options.
const (
	DefaultMinAge   = 2 * time.Minute
	DefaultFanout   = 32
	DefaultMaxBytes = 64 << 20
	// tierBase is the stored size below which an object is in tier 0.
	tierBase = 16 << 10
)

// Options configures Run.
type Options struct {
	// Recipients encrypt the roll-ups (the writer's); Identities read the
	// objects they merge when those are encrypted.
	Recipients []format.Recipient
	Identities []age.Identity
	// MinAge: objects whose last record was received less than this ago
	// are left alone in an open chain (0: DefaultMinAge).
	MinAge time.Duration
	// Fanout: how many objects of a tier make a roll-up (0: DefaultFanout).
	Fanout int
	// MaxBytes: the stored size a roll-up stays under (0: DefaultMaxBytes).
	MaxBytes int64
	// Closed: pack the whole chain (a newer chain has started).
	Closed bool
	// Local, when set, supplies revisions the caller holds itself (the
	// writer's Spool): runs it holds are read there, not from the
	// repository, so they need no identity and no GET.
	Local Source
	// Settle: an object that another makes redundant is removed once that
	// other object has been stored this long (wall clock; 0: a minute,
	// negative: at once), so that a listing running while a roll-up is
	// published sees either the roll-up or every piece it merged.
	Settle time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Result tells what Run did.
type Result struct {
	Written      int   // roll-ups stored
	Merged       int   // objects they took in
	Removed      int   // objects removed (merged or redundant)
	BytesRead    int64 // stored bytes of the merged objects
	BytesWritten int64 // stored bytes of the roll-ups
	// Pending: roll-ups were written whose pieces a later pass removes.
	Pending bool
	// Skipped: runs left as they were, encrypted and neither held by
	// Options.Local nor readable with Options.Identities.
	Skipped int
}

func (o Options) norm() Options {
	if o.MinAge <= 0 {
		o.MinAge = DefaultMinAge
	}
	if o.Fanout < 2 {
		o.Fanout = DefaultFanout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Settle == 0 {
		o.Settle = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func tier(size, fanout int64) int {
	t := 0
	for lim := int64(tierBase); size >= lim && t < 16; lim *= fanout {
		t++
	}
	return t
}

// Plan returns the runs of objects Run would merge in a chain whose
// snapshot records revision base (the cover of objs from base).
func Plan(base int64, objs []chain.Object, opt Options) [][]chain.Object {
	opt = opt.norm()
	cov := chain.Cover(base, objs)
	horizon := opt.Now().Add(-opt.MinAge)
	var runs [][]chain.Object
	if opt.Closed {
		var run []chain.Object
		var bytes int64
		for _, o := range cov.Objects {
			if len(run) > 0 && bytes+o.Size > opt.MaxBytes {
				if len(run) > 1 {
					runs = append(runs, run)
				}
				run, bytes = nil, 0
			}
			run = append(run, o)
			bytes += o.Size
		}
		if len(run) > 1 {
			runs = append(runs, run)
		}
		return runs
	}
	var run []chain.Object
	var bytes int64
	flush := func() {
		if len(run) >= opt.Fanout {
			runs = append(runs, run)
		}
		run, bytes = nil, 0
	}
	for _, o := range cov.Objects {
		if o.LastTime.IsZero() || o.LastTime.After(horizon) {
			break // too young; so is what follows
		}
		if len(run) > 0 && (tier(o.Size, int64(opt.Fanout)) != tier(run[0].Size, int64(opt.Fanout)) || bytes+o.Size > opt.MaxBytes) {
			flush()
		}
		run = append(run, o)
		bytes += o.Size
		if len(run) == 4*opt.Fanout {
			flush()
		}
	}
	flush()
	return runs
}

// Run rolls up the chain of snapshot base once (see the package comment):
// it first removes the objects that others, stored at least Settle ago,
// make redundant (the pieces of earlier roll-ups, two writers' copies),
// then writes the roll-ups its plan calls for. Their pieces are removed by
// a later pass (Result.Pending says one is due).
func Run(ctx context.Context, st *store.Store, base *format.Manifest, opt Options) (Result, error) {
	opt = opt.norm()
	var res Result
	kept, removed, err := removeSettled(ctx, st, base.ID, opt.Settle)
	res.Removed += removed
	if err != nil {
		return res, err
	}
	for _, run := range Plan(base.Revision, kept, opt) {
		local := opt.Local != nil && opt.Local.Has(run[0].Start, run[len(run)-1].End)
		if !local && len(opt.Identities) == 0 && anyEncrypted(run) {
			res.Skipped++
			continue
		}
		o, err := merge(ctx, st, base, run, opt)
		if err != nil {
			return res, err
		}
		res.Written++
		res.Merged += len(run)
		res.BytesWritten += o.Size
		for _, x := range run {
			res.BytesRead += x.Size
		}
		res.Pending = true
		opt.Logger.Info("journal objects rolled up", "chain", base.ID, "objects", len(run),
			"start_revision", o.Start, "end_revision", o.End, "stored_bytes", o.Size)
	}
	if opt.Settle < 0 && res.Pending {
		// Nothing to wait for: the pieces go now.
		_, removed, err := removeSettled(ctx, st, base.ID, opt.Settle)
		res.Removed += removed
		res.Pending = false
		return res, err
	}
	return res, nil
}

// removeSettled lists the chain, removes its settled redundant objects and
// returns the ones left.
func removeSettled(ctx context.Context, st *store.Store, chainID string, settle time.Duration) ([]chain.Object, int, error) {
	l, err := st.List(ctx, chainID)
	if err != nil {
		return nil, 0, err
	}
	gone := map[string]bool{}
	for _, x := range settled(l.Objects, settle) {
		if err := st.Remove(ctx, chainID, x); err != nil {
			return nil, len(gone), err
		}
		gone[x.Name] = true
	}
	var kept []chain.Object
	for _, x := range l.Objects {
		if !gone[x.Name] {
			kept = append(kept, x)
		}
	}
	return kept, len(gone), nil
}

// settled returns the redundant objects of objs (chain.Redundant) that an
// object stored at least settle ago covers.
func settled(objs []chain.Object, settle time.Duration) []chain.Object {
	var out []chain.Object
	for _, x := range chain.Redundant(objs) {
		for _, y := range objs {
			if y.Err != nil || y.Name == x.Name || y.Start > x.Start || y.End < x.End {
				continue
			}
			if settle < 0 || (!y.ModTime.IsZero() && time.Since(y.ModTime) >= settle) {
				out = append(out, x)
				break
			}
		}
	}
	return out
}

// merge writes one object holding every revision of run, read from the
// repository with every check, and returns it once stored.
func merge(ctx context.Context, st *store.Store, base *format.Manifest, run []chain.Object, opt Options) (chain.Object, error) {
	first, last := run[0], run[len(run)-1]
	t0, t1 := first.FirstTime, last.LastTime
	local := opt.Local != nil && opt.Local.Has(first.Start, last.End)
	if local {
		// The spool's records carry this writer's receive times, which
		// may differ from another writer's object in the run.
		opt.Local.Read(first.Start, first.Start, func(r *codec.Record) error { t0 = r.Time; return nil })
		opt.Local.Read(last.End, last.End, func(r *codec.Record) error { t1 = r.Time; return nil })
	}
	name := chain.Name(first.Start, last.End, t0, t1, store.Nonce(), len(opt.Recipients) > 0)
	o, _ := chain.ParseName(name)
	p := &store.Plan{Chain: base.ID, Base: first.Start - 1, Objects: run, ToRevision: last.End, End: last.End, ClusterID: base.ClusterID}
	pr, pw := io.Pipe()
	counter := &countWriter{w: pw}
	go func() {
		seal, err := store.Encode(counter, base.ID, base.ClusterID, opt.Recipients, func(w *codec.Writer) error {
			if local {
				return opt.Local.Read(first.Start, last.End, w.Write)
			}
			return st.Read(ctx, p, opt.Identities, store.Prefetch{}, w.Write)
		})
		if err == nil && (seal.Start != o.Start || seal.End != o.End || !seal.FirstTime.Equal(o.FirstTime) || !seal.LastTime.Equal(o.LastTime)) {
			// Another writer's object, with its own receive times, took
			// the place of a piece meanwhile: the name would lie. Nothing
			// is published; the next run plans again.
			err = fmt.Errorf("roll-up of %s read revisions %d..%d (%s..%s), not those planned: the chain changed meanwhile",
				o.Label(base.ID), seal.Start, seal.End, seal.FirstTime, seal.LastTime)
		}
		pw.CloseWithError(err)
	}()
	err := st.Put(ctx, base.ID, o, pr)
	pr.CloseWithError(errors.New("roll-up abandoned"))
	if err != nil {
		return o, fmt.Errorf("roll-up: %w", err)
	}
	o.Size = counter.n
	return o, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func anyEncrypted(run []chain.Object) bool {
	for _, o := range run {
		if o.Encrypted {
			return true
		}
	}
	return false
}
