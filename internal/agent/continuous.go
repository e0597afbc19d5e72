package agent

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// Reasons a journal chain ended other than a new snapshot or a leader change.
const (
	restartCompacted = "compacted"
	restartBroken    = "chain_broken"
	restartError     = "error"
)

type journalMetrics struct {
	rollups        *prometheus.CounterVec
	sealedRevision prometheus.Gauge
	sealedTime     prometheus.Gauge
	segments       prometheus.Counter
	events         prometheus.Counter
	restarts       *prometheus.CounterVec
	active         prometheus.Gauge
	progress       prometheus.Gauge
}

func newJournalMetrics(reg prometheus.Registerer) *journalMetrics {
	m := &journalMetrics{
		rollups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_backup_journal_rollups_total",
			Help: "Roll-up passes over journal chains by result: success (objects merged or nothing to merge), error (the pass failed; the chain is left as it was), skipped (encrypted and no --identity to read it).",
		}, []string{"result"}),
		sealedRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_journal_sealed_revision",
			Help: "Last etcd revision this agent sealed into the journal (--continuous; 0: none yet).",
		}),
		sealedTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_journal_sealed_timestamp_seconds",
			Help: "Unix time when the agent received the last revision it sealed into the journal.",
		}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_backup_journal_segments_total",
			Help: "Journal segments this agent published.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_backup_journal_events_total",
			Help: "etcd events this agent received for the journal.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_backup_journal_restarts_total",
			Help: "Journal chains ended by a problem: compacted (etcd compacted revisions the journal needed: a new full snapshot starts a new chain), chain_broken (the chain in the repository has a gap or damage: likewise), error (watch or upload failed: resumed from the last sealed revision).",
		}, []string{"reason"}),
		progress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_journal_caught_up_timestamp_seconds",
			Help: "Unix time when etcd last confirmed this agent's journal watch had received every change (about every --journal-flush while journaling, also when nothing changes).",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_journal_active",
			Help: "1 while this agent journals (with --leader-only: while its member is the leader).",
		}),
	}
	for _, r := range []string{restartCompacted, restartBroken, restartError} {
		m.restarts.WithLabelValues(r)
	}
	for _, r := range []string{"success", "error", "skipped"} {
		m.rollups.WithLabelValues(r)
	}
	reg.MustRegister(m.rollups, m.sealedRevision, m.sealedTime, m.segments, m.events, m.restarts, m.active, m.progress)
	return m
}

// journalLoop runs the continuous journal until ctx is done: with
// --leader-only only while this agent's member leads. Each chain follows the
// newest snapshot in the repository; a newer snapshot (this agent's or
// another's) ends the chain, which is sealed, and starts the next.
func (a *Agent) journalLoop(ctx context.Context) {
	backoff := time.Second
	sleep := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, 15*time.Second)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		if a.cfg.LeaderOnly && !a.waitLeader(ctx) {
			return
		}
		base, err := a.chainBase(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("journal: no snapshot to start from", "error", err)
				if !sleep() {
					return
				}
			}
			continue
		}
		started := time.Now()
		err = a.runChain(ctx, base)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, writer.ErrCompacted), errors.Is(err, writer.ErrChainBroken):
			reason := restartCompacted
			if errors.Is(err, writer.ErrChainBroken) {
				reason = restartBroken
			}
			a.jm.restarts.WithLabelValues(reason).Inc()
			a.mu.Lock()
			a.st.journal.LastError = oneLine(err.Error())
			a.mu.Unlock()
			a.log.Warn("journal: the chain cannot go on; taking a new full snapshot to start a new journal", "chain", base.ID, "reason", reason, "error", err)
			if a.cfg.LeaderOnly && !a.stillLeader(ctx) {
				continue
			}
			// A chain that could not even start (etcd compacts faster than
			// a snapshot is taken): back off instead of taking snapshots
			// back to back.
			if time.Since(started) < 10*time.Second {
				if !sleep() {
					return
				}
			} else {
				backoff = time.Second
			}
			if _, err := a.BackupNow(ctx); err != nil {
				a.log.Error("journal: the new full snapshot failed", "error", err)
				if !sleep() {
					return
				}
			}
		case err != nil:
			a.mu.Lock()
			a.st.journal.LastError = oneLine(err.Error())
			a.mu.Unlock()
			a.jm.restarts.WithLabelValues(restartError).Inc()
			a.log.Warn("journal: stopped; resuming from the last sealed revision", "chain", base.ID, "error", err, "in", backoff)
			if !sleep() {
				return
			}
		default:
			backoff = time.Second
		}
	}
}

// chainBase is the newest intact snapshot in the repository; when there is
// none, this agent takes one.
func (a *Agent) chainBase(ctx context.Context) (*format.Manifest, error) {
	m, err := a.newestBackup(ctx)
	if err != nil {
		return nil, err
	}
	if m != nil {
		a.sawBackup(m)
		return m, nil
	}
	a.log.Info("journal: the repository has no snapshot yet; taking one to start from")
	return a.BackupNow(ctx)
}

// runChain journals base's chain until ctx is done, a newer snapshot
// appears, or (--leader-only) the member stops leading. It returns nil in
// those cases, after sealing what it held.
func (a *Agent) runChain(ctx context.Context, base *format.Manifest) error {
	r, err := a.openRepo(ctx)
	if err != nil {
		return err
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	sp := a.spool(base.ID)
	cfg := writer.Config{
		Client:     a.cfg.Client.Client,
		Repo:       r,
		Recipients: a.cfg.Backup.Recipients,
		Flush:      a.cfg.JournalFlush,
		MaxSegment: a.cfg.JournalMaxSegment,
		Writer:     a.cfg.WriterName,
		Logger:     a.log,
		OnSealed: func(s writer.Sealed) {
			if sp != nil {
				sp.Add(s.Batch)
			}
			a.mu.Lock()
			a.st.journal.SealedRevision, a.st.journal.SealedTime = s.End, timePtr(s.LastTime)
			a.mu.Unlock()
			a.jm.segments.Inc()
			a.jm.sealedRevision.Set(float64(s.End))
			a.jm.sealedTime.Set(float64(s.LastTime.UnixNano()) / 1e9)
		},
		OnEvents: func(n int) { a.jm.events.Add(float64(n)) },
		OnProgress: func(rev int64, at time.Time) {
			a.jm.progress.Set(float64(at.UnixNano()) / 1e9)
		},
	}
	a.jm.active.Set(1)
	a.mu.Lock()
	a.st.journal.Active, a.st.journal.Chain = true, base.ID
	a.mu.Unlock()
	defer func() {
		a.jm.active.Set(0)
		a.mu.Lock()
		a.st.journal.Active = false
		a.mu.Unlock()
	}()
	go func() { done <- writer.Run(jctx, cfg, base) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Roll-ups run beside the writer, one pass at a time: closed chains
	// once at the start, the open one every RollupEvery.
	every := a.cfg.RollupEvery
	if every == 0 {
		every = time.Minute
	}
	var rollTick <-chan time.Time
	rolling := make(chan struct{}, 1)
	roll := func(closed bool) {
		select {
		case rolling <- struct{}{}:
		default:
			return // the previous pass is still running
		}
		go func() {
			defer func() { <-rolling }()
			a.rollup(jctx, r, base, closed)
		}()
	}
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		rollTick = t.C
		roll(true)
	}
	defer func() { cancel(); rolling <- struct{}{} }() // stop and wait for a pass in flight
	for {
		select {
		case <-rollTick:
			roll(false)
		case err := <-done:
			return err
		case <-tick.C:
			if n := a.view().newest; n != nil && n.ID > base.ID {
				a.log.Info("journal: a newer snapshot exists; sealing this chain and starting the next", "chain", base.ID, "next", n.ID)
				cancel()
				return <-done
			}
			if a.cfg.LeaderOnly && !a.stillLeader(ctx) {
				a.log.Info("journal: this member is no longer the leader; sealing and stopping", "chain", base.ID)
				cancel()
				return <-done
			}
		}
	}
}

// stillLeader asks this agent's member whether it leads. An error counts as
// not leading: another member's agent takes over, and the chain's
// create-only segments keep the two from overlapping.
func (a *Agent) stillLeader(ctx context.Context) bool {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st := a.cfg.Client.Status(sctx, a.cfg.Endpoint)
	a.setLeader(st)
	return st.Err == nil && st.IsLeader()
}

// waitLeader returns true once this agent's member leads, false when ctx is
// done.
func (a *Agent) waitLeader(ctx context.Context) bool {
	for {
		if a.stillLeader(ctx) {
			return true
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// rollup runs one roll-up pass: with closed, over every chain but base's
// (packed: a newer chain has started), else over base's open chain.
func (a *Agent) rollup(ctx context.Context, r *repo.Repo, base *format.Manifest, closed bool) {
	st := store.New(r)
	opt := rollup.Options{Recipients: a.cfg.Backup.Recipients, Identities: a.cfg.RollupIdentities, Logger: a.log,
		MinAge: a.cfg.RollupAfter, Settle: a.cfg.RollupAfter / 2, Fanout: a.cfg.RollupFanout}
	bases := []*format.Manifest{base}
	a.mu.Lock()
	pending := a.rollupPending
	a.rollupPending = map[string]*format.Manifest{}
	a.mu.Unlock()
	if !closed {
		// Closed chains packed by an earlier pass: their pieces go now.
		for _, m := range pending {
			o := opt
			o.Closed, o.Local = true, a.spoolOf(m.ID)
			res, err := rollup.Run(ctx, st, m, o)
			switch {
			case err == nil && res.Pending:
				a.markPending(m)
			case err == nil:
				a.closeSpools(m.ID) // packed and settled: its records are in the repository for good
			}
		}
	}
	if closed {
		bases = nil
		chains, err := st.Chains(ctx)
		if err != nil {
			a.jm.rollups.WithLabelValues("error").Inc()
			a.log.Warn("journal roll-up: cannot list chains", "error", err)
			return
		}
		for _, id := range chains {
			if id >= base.ID {
				continue
			}
			m, err := r.ReadManifest(ctx, id)
			if err != nil {
				continue // its snapshot is gone or damaged: prune's business
			}
			bases = append(bases, m)
		}
		opt.Closed = true
	}
	for _, m := range bases {
		o := opt
		o.Local = a.spoolOf(m.ID)
		res, err := rollup.Run(ctx, st, m, o)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			a.jm.rollups.WithLabelValues("error").Inc()
			a.log.Warn("journal roll-up failed; the chain is left as it was", "chain", m.ID, "error", err)
		case res.Skipped > 0 && res.Written == 0:
			a.jm.rollups.WithLabelValues("skipped").Inc()
			a.log.Debug("journal roll-up skipped: encrypted objects this agent did not write, and no --identity", "chain", m.ID, "runs", res.Skipped)
		default:
			a.jm.rollups.WithLabelValues("success").Inc()
			if closed && res.Pending {
				a.markPending(m)
			}
			if res.Written > 0 {
				a.log.Info("journal rolled up", "chain", m.ID, "closed", closed, "rollups", res.Written, "merged", res.Merged, "removed", res.Removed)
			}
		}
	}
	if closed {
		// Closed chains had their pass: their records are in the
		// repository, packed or not; the spools go.
		a.mu.Lock()
		for id, sp := range a.spools {
			if id != base.ID {
				sp.Close()
				delete(a.spools, id)
			}
		}
		a.mu.Unlock()
	}
}

func (a *Agent) markPending(m *format.Manifest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rollupPending == nil {
		a.rollupPending = map[string]*format.Manifest{}
	}
	a.rollupPending[m.ID] = m
}

// spoolMax bounds a chain's roll-up spool on local disk.
const spoolMax = 256 << 20

// spool returns the roll-up spool of chainID, made if needed (nil when no
// temporary file can be made: roll-ups then read the repository).
func (a *Agent) spool(chainID string) *rollup.Spool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sp := a.spools[chainID]; sp != nil {
		return sp
	}
	sp, err := rollup.NewSpool("", spoolMax)
	if err != nil {
		a.log.Warn("journal: no local spool for roll-ups; they read the repository (encrypted chains need --identity)", "error", err)
		return nil
	}
	if a.spools == nil {
		a.spools = map[string]*rollup.Spool{}
	}
	a.spools[chainID] = sp
	return sp
}

func (a *Agent) spoolOf(chainID string) rollup.Source {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sp := a.spools[chainID]; sp != nil {
		return sp
	}
	return nil
}

// closeSpools removes the spool of chainID ("": every spool).
func (a *Agent) closeSpools(chainID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, sp := range a.spools {
		if chainID == "" || id == chainID {
			sp.Close()
			delete(a.spools, id)
		}
	}
}
