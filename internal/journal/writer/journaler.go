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
	if cfg.Flush <= 0 {
		cfg.Flush = DefaultFlush
	}
	if cfg.MaxSegment <= 0 {
		cfg.MaxSegment = DefaultMaxSegment
	}
	if cfg.SealTimeout <= 0 {
		cfg.SealTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := store.New(cfg.Repo)
	cov, err := st.Coverage(ctx, base)
	if err != nil {
		return err
	}
	if cov.Break != nil {
		return fmt.Errorf("%w: chain %s: %v", ErrChainBroken, base.ID, cov.Break)
	}
	// The cluster behind the endpoints must be the one the chain records:
	// the same cluster ID, and a history that has not gone back (a cluster
	// restored from a backup while this agent ran). Otherwise its revisions
	// would be appended to another history.
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cur0, err := cfg.Client.Get(gctx, "\x00", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("read the cluster's revision: %w", err)
	}
	if err := sameCluster(base, cur0.Header.ClusterId); err != nil {
		return err
	}
	if cur0.Header.Revision < cov.End {
		return fmt.Errorf("%w: the cluster is at revision %d, before the journal's end %d: it was restored or replaced since chain %s was written",
			ErrChainBroken, cur0.Header.Revision, cov.End, base.ID)
	}
	w := &writer{cfg: cfg, log: log.With("chain", base.ID), chain: base.ID, base: base, st: st}
	w.next.Store(cov.End + 1)
	w.log.Info("journaling", "from_revision", cov.End+1, "resumed_objects", len(cov.Objects))

	// The watch and the uploader stop together; the final seal outlives ctx.
	// Under backpressure the watch is canceled, not just left unread: the
	// etcd client library reads the gRPC stream eagerly and would buffer,
	// without bound, everything etcd sends. It is opened again after the
	// last revision received once the uploader takes the full segment.
	var wch clientv3.WatchChan
	stopWatch := func() {}
	var wctx context.Context
	openWatch := func(from int64) {
		var cancel context.CancelFunc
		wctx, cancel = context.WithCancel(clientv3.WithRequireLeader(context.WithoutCancel(ctx)))
		stopWatch = cancel
		wch = cfg.Client.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))
	}
	var lastProgress time.Time
	openWatch(cov.End + 1)
	defer func() { stopWatch() }()
	lctx := context.WithoutCancel(ctx) // lease lookups

	upCtx, stopUp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopUp()
	up := make(chan *segment)
	upErr := make(chan error, 1)
	go func() {
		for s := range up {
			if err := w.seal(upCtx, s); err != nil {
				upErr <- err
				// Drain so the reader never blocks on a dead uploader.
				for range up {
				}
				return
			}
		}
		upErr <- nil
	}()
	// finish stops the watch and returns cause (nil: ctx is done). Unless
	// keep is false (what was received cannot be trusted), it first seals
	// cur and lets the upload in flight finish, within SealTimeout: those
	// revisions are whole and in order, and etcd may no longer have them
	// (a compaction).
	finish := func(cur *segment, cause error, keep bool) error {
		stopWatch()
		if keep {
			// The timeout covers the segment the uploader may still be
			// sealing, not only cur.
			t := time.AfterFunc(cfg.SealTimeout, stopUp)
			defer t.Stop()
			if len(cur.recs) > 0 {
				select {
				case up <- cur:
				case err := <-upErr:
					close(up)
					return errors.Join(cause, err)
				}
			}
		} else {
			stopUp()
		}
		close(up)
		if err := <-upErr; err != nil && cause == nil {
			return err
		}
		return cause
	}

	leases := map[int64]bool{}
	cur := &segment{}
	tick := time.NewTicker(max(cfg.Flush/10, 10*time.Millisecond)) // a seal is late by at most a tenth of Flush
	defer tick.Stop()
	var lastRev int64
	for {
		ready := len(cur.recs) > 0 && (time.Since(cur.first) >= cfg.Flush || cur.bytes >= cfg.MaxSegment)
		var sendCh chan *segment
		if ready {
			sendCh = up
		}
		in := wch
		if cur.bytes >= cfg.MaxSegment {
			in = nil // backpressure: etcd holds the events until the uploader catches up
		}
		select {
		case <-ctx.Done():
			return finish(cur, nil, true)
		case err := <-upErr:
			stopWatch()
			close(up)
			return err
		case sendCh <- cur:
			cur = &segment{}
			if wch == nil {
				openWatch(lastRev + 1)
			}
		case <-tick.C:
			if cfg.OnProgress != nil && wch != nil && time.Since(lastProgress) >= cfg.Flush {
				lastProgress = time.Now()
				pctx, cancel := context.WithTimeout(wctx, cfg.Flush)
				go func() { defer cancel(); cfg.Client.RequestProgress(pctx) }()
			}
			if cur.bytes >= cfg.MaxSegment && wch != nil {
				// The uploader is still busy a tick later: etcd holds the
				// events meanwhile.
				stopWatch()
				wch = nil
			}
		case resp, ok := <-in:
			if !ok {
				if ctx.Err() != nil {
					return finish(cur, nil, true)
				}
				return finish(cur, errors.New("etcd closed the watch"), true)
			}
			if resp.CompactRevision != 0 {
				return finish(cur, fmt.Errorf("%w: the journal needs revision %d, etcd compacted up to %d", ErrCompacted, max(lastRev+1, w.next.Load()), resp.CompactRevision), true)
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return finish(cur, fmt.Errorf("%w: %v", ErrCompacted, err), true)
				}
				return finish(cur, fmt.Errorf("watch: %w", err), true)
			}
			if err := sameCluster(base, resp.Header.ClusterId); err != nil {
				return finish(cur, err, false)
			}
			if len(resp.Events) == 0 {
				if resp.IsProgressNotify() && cfg.OnProgress != nil {
					cfg.OnProgress(resp.Header.Revision, time.Now().UTC())
				}
				continue
			}
			now := time.Now().UTC()
			if cfg.OnEvents != nil {
				cfg.OnEvents(len(resp.Events))
			}
			for _, cev := range resp.Events {
				ev := (*mvccpb.Event)(cev)
				rev := ev.Kv.ModRevision
				if rev < lastRev {
					return finish(cur, fmt.Errorf("watch went back from revision %d to %d", lastRev, rev), false)
				}
				if rev == lastRev {
					if n := len(cur.recs); n > 0 && cur.recs[n-1].Revision == rev {
						r := cur.recs[n-1]
						r.Events = append(r.Events, ev)
						r.size += ev.Size()
						cur.bytes += ev.Size()
						w.addLease(lctx, leases, r, ev)
						continue
					}
					if rev >= w.next.Load() {
						return finish(cur, fmt.Errorf("etcd split revision %d across watch responses after it was sealed", rev), false)
					}
					continue
				}
				lastRev = rev
				if rev < w.next.Load() {
					continue // another writer sealed it already
				}
				r := &record{Record: codec.Record{Revision: rev, Time: now, Events: []*mvccpb.Event{ev}}, size: ev.Size() + 32}
				w.addLease(lctx, leases, r, ev)
				if len(cur.recs) == 0 {
					cur.first = time.Now()
				}
				cur.recs = append(cur.recs, r)
				cur.bytes += r.size
			}
		}
	}
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
