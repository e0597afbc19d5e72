package writer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"

	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Defaults of Config.
const (
	DefaultFlush      = time.Second
	DefaultMaxSegment = 4 << 20
)

// ErrCompacted: etcd has compacted revisions the chain still needs. The
// chain cannot go on; a new full snapshot starts a new one.
var ErrCompacted = errors.New("etcd compacted the revisions the journal needs")

// ErrChainBroken: the chain in the repository has a gap, an overlap or a
// damaged segment, so it cannot be continued; a new snapshot starts a new one.
var ErrChainBroken = errors.New("journal chain cannot be continued")

// Config configures Run.
type Config struct {
	Client     *clientv3.Client
	Repo       *repo.Repo
	Recipients []format.Recipient
	Flush      time.Duration // seal at least this often while events arrive (0: 1s)
	MaxSegment int           // seal when this many raw bytes are buffered (0: 4 MiB)
	Writer     string        // who writes (member name), recorded in manifests
	Logger     *slog.Logger
	// OnSealed is told about each segment this writer published.
	OnSealed func(s Sealed)
	// OnEvents is told how many events were received.
	OnEvents func(n int)
	// OnProgress is told, about every Flush, that etcd confirmed the watch
	// has sent every event up to rev: the journal is caught up, even when
	// nothing changes (etcd's progress notification).
	OnProgress func(rev int64, at time.Time)
	// SealTimeout bounds the final seal after ctx is done (0: 10s).
	SealTimeout time.Duration
}

// Sealed is a segment a writer published.
type Sealed struct {
	chain.Object
	Records, Events int
	// Batch is the records of the segment (the caller must not change
	// them): for a roll-up spool.
	Batch []*codec.Record
}

// record is a journal record with its size estimate.
type record struct {
	codec.Record
	size int
}

type segment struct {
	recs  []*record
	bytes int
	first time.Time // when its first record arrived
}

type writer struct {
	cfg   Config
	log   *slog.Logger
	chain string
	base  *format.Manifest
	st    *store.Store
	next  atomic.Int64 // start revision of the next segment to seal
}

// Run journals the chain of snapshot base until ctx is done: it resumes
// after the last segment of the chain already in the repository (or at
// base.Revision+1), and seals segments. When ctx is done it seals what it
// holds and returns nil. It returns an error wrapping ErrCompacted when etcd
// no longer has the revisions it needs, ErrChainBroken when the chain in the
// repository cannot be continued, and any other error when watching or
// sealing fails; then nothing past the last sealed revision is trusted, and
// calling Run again resumes from the repository.
func Run(ctx context.Context, cfg Config, base *format.Manifest) error {
	cfg = cfg.withDefaults()
	st := store.New(cfg.Repo)
	from, resumed, err := resume(ctx, cfg, st, base)
	if err != nil {
		return err
	}
	w := &writer{cfg: cfg, log: cfg.Logger.With("chain", base.ID), chain: base.ID, base: base, st: st}
	w.next.Store(from)
	w.log.Info("journaling", "from_revision", from, "resumed_objects", resumed)

	// The watch and the uploader stop together; the final seal outlives ctx.
	wt := &watch{client: cfg.Client, ctx: ctx}
	wt.open(from)
	defer wt.stop()
	upl := startUploader(ctx, w)
	r := &run{w: w, wt: wt, upl: upl, leases: map[int64]bool{}, cur: &segment{}, lctx: context.WithoutCancel(ctx)}
	return r.loop(ctx)
}

func (cfg Config) withDefaults() Config {
	if cfg.Flush <= 0 {
		cfg.Flush = DefaultFlush
	}
	if cfg.MaxSegment <= 0 {
		cfg.MaxSegment = DefaultMaxSegment
	}
	if cfg.SealTimeout <= 0 {
		cfg.SealTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// resume returns the revision the chain of base goes on from (after what
// the repository already covers), and how many objects it holds, once it
// has checked that the cluster behind the endpoints is the one the chain
// records: the same cluster ID, and a history that has not gone back (a
// cluster restored from a backup while this agent ran). Otherwise its
// revisions would be appended to another history.
func resume(ctx context.Context, cfg Config, st *store.Store, base *format.Manifest) (int64, int, error) {
	cov, err := st.Coverage(ctx, base)
	if err != nil {
		return 0, 0, err
	}
	if cov.Break != nil {
		return 0, 0, fmt.Errorf("%w: chain %s: %v", ErrChainBroken, base.ID, cov.Break)
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cur, err := cfg.Client.Get(gctx, "\x00", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return 0, 0, fmt.Errorf("read the cluster's revision: %w", err)
	}
	if err := sameCluster(base, cur.Header.ClusterId); err != nil {
		return 0, 0, err
	}
	if cur.Header.Revision < cov.End {
		return 0, 0, fmt.Errorf("%w: the cluster is at revision %d, before the journal's end %d: it was restored or replaced since chain %s was written",
			ErrChainBroken, cur.Header.Revision, cov.End, base.ID)
	}
	return cov.End + 1, len(cov.Objects), nil
}

// watch is the watch on the whole key space. Under backpressure it is
// canceled, not just left unread: the etcd client library reads the gRPC
// stream eagerly and would buffer, without bound, everything etcd sends.
// It is opened again after the last revision received once the uploader
// takes the full segment.
type watch struct {
	client *clientv3.Client
	ctx    context.Context // the writer's: the watch outlives it until stop
	ch     clientv3.WatchChan
	wctx   context.Context
	cancel context.CancelFunc
}

func (wt *watch) open(from int64) {
	wt.wctx, wt.cancel = context.WithCancel(clientv3.WithRequireLeader(context.WithoutCancel(wt.ctx)))
	wt.ch = wt.client.Watch(wt.wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))
}

func (wt *watch) stop() {
	if wt.cancel != nil {
		wt.cancel()
	}
}

// pause cancels the watch (backpressure); open resumes it.
func (wt *watch) pause() {
	wt.stop()
	wt.ch = nil
}

// uploader seals the segments handed to it, one at a time, in order.
type uploader struct {
	up   chan *segment
	err  chan error
	stop context.CancelFunc // cancels a seal in flight
}

func startUploader(ctx context.Context, w *writer) *uploader {
	upCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	u := &uploader{up: make(chan *segment), err: make(chan error, 1), stop: stop}
	go func() {
		for s := range u.up {
			if err := w.seal(upCtx, s); err != nil {
				u.err <- err
				// Drain so the reader never blocks on a dead uploader.
				for range u.up {
				}
				return
			}
		}
		u.err <- nil
	}()
	return u
}

// run is the state of one Run's loop.
type run struct {
	w            *writer
	wt           *watch
	upl          *uploader
	leases       map[int64]bool
	cur          *segment
	lastRev      int64
	lastProgress time.Time
	lctx         context.Context // lease lookups
}

// finish stops the watch and returns cause (nil: ctx is done). Unless keep
// is false (what was received cannot be trusted), it first seals cur and
// lets the upload in flight finish, within SealTimeout: those revisions
// are whole and in order, and etcd may no longer have them (a compaction).
func (r *run) finish(cause error, keep bool) error {
	r.wt.stop()
	u := r.upl
	defer u.stop()
	if keep {
		// The timeout covers the segment the uploader may still be
		// sealing, not only cur.
		t := time.AfterFunc(r.w.cfg.SealTimeout, u.stop)
		defer t.Stop()
		if len(r.cur.recs) > 0 {
			select {
			case u.up <- r.cur:
			case err := <-u.err:
				close(u.up)
				return errors.Join(cause, err)
			}
		}
	} else {
		u.stop()
	}
	close(u.up)
	if err := <-u.err; err != nil && cause == nil {
		return err
	}
	return cause
}

// loop receives the watch and hands full or due segments to the uploader
// until ctx is done or something fails.
func (r *run) loop(ctx context.Context) error {
	cfg := r.w.cfg
	tick := time.NewTicker(max(cfg.Flush/10, 10*time.Millisecond)) // a seal is late by at most a tenth of Flush
	defer tick.Stop()
	for {
		cur := r.cur
		ready := len(cur.recs) > 0 && (time.Since(cur.first) >= cfg.Flush || cur.bytes >= cfg.MaxSegment)
		var sendCh chan *segment
		if ready {
			sendCh = r.upl.up
		}
		in := r.wt.ch
		if cur.bytes >= cfg.MaxSegment {
			in = nil // backpressure: etcd holds the events until the uploader catches up
		}
		select {
		case <-ctx.Done():
			return r.finish(nil, true)
		case err := <-r.upl.err:
			r.wt.stop()
			close(r.upl.up)
			r.upl.stop()
			return err
		case sendCh <- cur:
			r.cur = &segment{}
			if r.wt.ch == nil {
				r.wt.open(r.lastRev + 1)
			}
		case <-tick.C:
			if cfg.OnProgress != nil && r.wt.ch != nil && time.Since(r.lastProgress) >= cfg.Flush {
				r.lastProgress = time.Now()
				pctx, cancel := context.WithTimeout(r.wt.wctx, cfg.Flush)
				go func() { defer cancel(); cfg.Client.RequestProgress(pctx) }()
			}
			if cur.bytes >= cfg.MaxSegment && r.wt.ch != nil {
				// The uploader is still busy a tick later: etcd holds the
				// events meanwhile.
				r.wt.pause()
			}
		case resp, ok := <-in:
			if !ok {
				if ctx.Err() != nil {
					return r.finish(nil, true)
				}
				return r.finish(errors.New("etcd closed the watch"), true)
			}
			if keep, err := r.receive(resp); err != nil {
				return r.finish(err, keep)
			}
		}
	}
}

// receive adds a watch response's events to the current segment. An error
// ends the run; keep says whether what was received before can be sealed.
func (r *run) receive(resp clientv3.WatchResponse) (keep bool, err error) {
	w, cfg := r.w, r.w.cfg
	if resp.CompactRevision != 0 {
		return true, fmt.Errorf("%w: the journal needs revision %d, etcd compacted up to %d", ErrCompacted, max(r.lastRev+1, w.next.Load()), resp.CompactRevision)
	}
	if err := resp.Err(); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return true, fmt.Errorf("%w: %v", ErrCompacted, err)
		}
		return true, fmt.Errorf("watch: %w", err)
	}
	if err := sameCluster(w.base, resp.Header.ClusterId); err != nil {
		return false, err
	}
	if len(resp.Events) == 0 {
		if resp.IsProgressNotify() && cfg.OnProgress != nil {
			cfg.OnProgress(resp.Header.Revision, time.Now().UTC())
		}
		return true, nil
	}
	now := time.Now().UTC()
	if cfg.OnEvents != nil {
		cfg.OnEvents(len(resp.Events))
	}
	cur := r.cur
	for _, cev := range resp.Events {
		ev := (*mvccpb.Event)(cev)
		rev := ev.Kv.ModRevision
		if rev < r.lastRev {
			return false, fmt.Errorf("watch went back from revision %d to %d", r.lastRev, rev)
		}
		if rev == r.lastRev {
			if n := len(cur.recs); n > 0 && cur.recs[n-1].Revision == rev {
				rec := cur.recs[n-1]
				rec.Events = append(rec.Events, ev)
				rec.size += ev.Size()
				cur.bytes += ev.Size()
				w.addLease(r.lctx, r.leases, rec, ev)
				continue
			}
			if rev >= w.next.Load() {
				return false, fmt.Errorf("etcd split revision %d across watch responses after it was sealed", rev)
			}
			continue
		}
		r.lastRev = rev
		if rev < w.next.Load() {
			continue // sealed already (a resumed chain)
		}
		rec := &record{Record: codec.Record{Revision: rev, Time: now, Events: []*mvccpb.Event{ev}}, size: ev.Size() + 32}
		w.addLease(r.lctx, r.leases, rec, ev)
		if len(cur.recs) == 0 {
			cur.first = time.Now()
		}
		cur.recs = append(cur.recs, rec)
		cur.bytes += rec.size
	}
	return true, nil
}

// addLease looks up, once per chain and writer, the TTL of a lease that a
// put attaches.
func (w *writer) addLease(ctx context.Context, seen map[int64]bool, r *record, ev *mvccpb.Event) {
	id := ev.Kv.Lease
	if ev.Type != mvccpb.PUT || id == 0 || seen[id] {
		return
	}
	seen[id] = true
	var ttl int64
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := w.cfg.Client.TimeToLive(lctx, clientv3.LeaseID(id))
	switch {
	case err != nil:
		w.log.Warn("lease TTL lookup failed; replay will grant it the fallback TTL", "lease", fmt.Sprintf("%016x", id), "fallback_ttl", codec.FallbackLeaseTTL, "error", err)
	case resp.TTL == -1:
		// Already expired or revoked: its keys' deletion follows in the journal.
	default:
		ttl = resp.GrantedTTL
	}
	r.Leases = append(r.Leases, codec.Lease{ID: id, TTL: ttl})
	r.size += 16
}

// seal publishes the records of s from the next start revision on as one
// journal object (one create-only PUT). Another writer (an old leader's
// agent) may publish objects over the same revisions meanwhile: each holds
// every event of its range, so readers take either (chain.Cover) and a
// roll-up or prune removes the redundant one later.
func (w *writer) seal(ctx context.Context, s *segment) error {
	start := w.next.Load()
	recs := make([]*codec.Record, 0, len(s.recs))
	for _, r := range s.recs {
		if r.Revision >= start {
			recs = append(recs, &r.Record)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	o, data, err := store.Build(recs, w.chain, w.base.ClusterID, w.cfg.Recipients)
	if err != nil {
		// A revision whose events exceed codec.MaxFrame (one delete of
		// about a million keys) cannot be journaled: a new snapshot must
		// start a new chain after it.
		return fmt.Errorf("%w: encode journal records %d..%d: %v", ErrChainBroken, recs[0].Revision, recs[len(recs)-1].Revision, err)
	}
	// The storage layer retries the write (its source is in memory) within
	// --storage-timeout; when it gives up, the chain ends and the agent
	// starts the next one from what is sealed.
	if err := w.st.Put(ctx, w.chain, o, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("seal journal segment: %w", err)
	}
	w.next.Store(o.End + 1)
	events := 0
	for _, r := range recs {
		events += len(r.Events)
	}
	w.log.Debug("journal segment sealed", "start_revision", o.Start, "end_revision", o.End,
		"records", len(recs), "events", events, "stored_bytes", len(data))
	if w.cfg.OnSealed != nil {
		w.cfg.OnSealed(Sealed{Object: o, Records: len(recs), Events: events, Batch: recs})
	}
	return nil
}

// backoffStop ends retry at once with its error.
type backoffStop struct{ err error }

func (b backoffStop) Error() string { return b.err.Error() }
func (b backoffStop) Unwrap() error { return b.err }

// retry runs op until it succeeds, fails permanently, or ctx is done.
// Retryable storage errors are retried with backoff (0.2 s doubling to 5 s).
func retry(ctx context.Context, log *slog.Logger, what string, op func() error) error {
	wait := 200 * time.Millisecond
	for {
		err := op()
		var stop backoffStop
		switch {
		case err == nil:
			return nil
		case errors.As(err, &stop):
			return stop.err
		case !storage.IsRetryable(err):
			return err
		}
		log.Warn(what+" failed; retrying", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// sameCluster checks that the cluster answering is the one base was taken
// from (a cluster restored with a new token, or another cluster, is not).
func sameCluster(base *format.Manifest, id uint64) error {
	if base.ClusterID == "" || id == 0 {
		return nil
	}
	if got := fmt.Sprintf("%016x", id); got != base.ClusterID {
		return fmt.Errorf("%w: the endpoints now answer for cluster %s, chain %s is of cluster %s (restored or replaced?)",
			ErrChainBroken, got, base.ID, base.ClusterID)
	}
	return nil
}
