package agent

import (
	"context"
	"errors"
	"filippo.io/age"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// Defaults of Config.
const (
	DefaultListen   = "127.0.0.1:9785"
	DefaultGrace    = 30 * time.Second
	DefaultRetryMax = 3
	DefaultBackoff  = time.Second
	// DefaultMaxAgeSlots: --max-age defaults to this many slots.
	DefaultMaxAgeSlots = 3
	// keptRuns is how many finished runs /status shows.
	keptRuns = 20
)

// Config configures an Agent.
type Config struct {
	Schedule     Schedule      // required
	Jitter       time.Duration // random delay added to each scheduled run (capped at half a slot)
	RetryMax     int           // retries of a failed run within its slot
	RetryBackoff time.Duration // wait before the first retry; doubles each time (0: 1s)

	// LeaderOnly: a scheduled run proceeds only when the member behind
	// Endpoint is the raft leader and no backup of the slot is in the
	// repository; the snapshot is streamed from that member.
	LeaderOnly bool
	// Endpoint is the client URL of the agent's own member (the first
	// --endpoints entry).
	Endpoint string

	MaxAge  time.Duration // /healthz fails when the newest backup is older (0: 3 slots)
	Grace   time.Duration // on shutdown, how long a backup in flight may go on (0: 30s)
	Listen  string        // HTTP address; "" serves nothing
	Refresh time.Duration // how often the repository is read for /healthz and the metrics (0: half a slot, 1s to 30s)

	Client   *etcd.Client
	OpenRepo func(ctx context.Context) (*repo.Repo, error) // called until it succeeds
	// Backup holds the recipients and compression level; the agent sets
	// Endpoint, BeforeUpload and Logger.
	Backup backup.Options
	// AfterBackup, when set, runs after each backup this agent published
	// (scheduled or on demand), before the next backup may start: the
	// place for prune. Its error is logged and counted, and does not make
	// the backup fail.
	AfterBackup func(ctx context.Context) error

	Logger   *slog.Logger
	Registry *prometheus.Registry // metrics are registered here; /metrics serves it
	Notifier Notifier             // nil: sd_notify to $NOTIFY_SOCKET
	// Continuous: journal every revision between snapshots (docs/format.md,
	// "Journal segments"); JournalFlush and JournalMaxSegment tune sealing
	// (0: continuous' defaults); WriterName is recorded in segment manifests.
	Continuous        bool
	JournalFlush      time.Duration
	JournalMaxSegment int
	WriterName        string
	// RollupEvery is how often the open chain's aged segments are rolled
	// up (internal/journal/rollup; 0: a minute, negative: never), and a
	// closed chain is packed once the next one starts. RollupIdentities
	// open encrypted chains for it (without them those are left as they are).
	RollupEvery      time.Duration
	RollupAfter      time.Duration // segments older than this are merged (0: rollup's default)
	RollupFanout     int           // objects of a tier per roll-up (0: rollup's default)
	RollupIdentities []age.Identity

	// Watchdog is systemd's watchdog timeout (WATCHDOG_USEC); WATCHDOG=1 is
	// sent every third of it. 0: no watchdog pings.
	Watchdog time.Duration
}

// RunRecord is one finished run, as /status shows it.
type RunRecord struct {
	Trigger   string     `json:"trigger"` // "schedule" or "manual"
	Slot      *time.Time `json:"slot,omitempty"`
	Started   time.Time  `json:"started"`
	Finished  time.Time  `json:"finished"`
	Attempts  int        `json:"attempts"`
	Result    string     `json:"result"`           // success, failure, skipped
	Reason    string     `json:"reason,omitempty"` // why skipped
	ID        string     `json:"id,omitempty"`
	Revision  int64      `json:"revision,omitempty"`
	Member    string     `json:"member,omitempty"`
	Error     string     `json:"error,omitempty"`
	HookError string     `json:"after_backup_error,omitempty"`
}

// state is what the agent knows; guarded by Agent.mu.
type state struct {
	seen          bool             // the repository was read at least once
	newest        *format.Manifest // newest intact backup in the repository
	gen           int              // counts the backups this agent published
	repoErr       error            // of the last look at the repository
	repoChecked   time.Time        // when the repository was last read successfully
	isLeader      *bool
	leaderChecked time.Time
	running       *time.Time // start of the backup in flight
	nextRun       time.Time
	lastSuccess   time.Time
	runs          []RunRecord // newest first
	journal       JournalStatus
}

// Agent runs scheduled backups and serves their state.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	m       *metrics
	jm      *journalMetrics
	sem     chan struct{}
	sched   *scheduler
	notify  Notifier
	refresh time.Duration
	// rollupPending: closed chains packed by a roll-up pass whose pieces a
	// later pass removes (under mu)
	rollupPending map[string]*format.Manifest
	// spools hold the records this agent sealed, by chain, so roll-ups
	// read them locally (no GET, no key for encrypted chains) (under mu)
	spools map[string]*rollup.Spool
	maxAge time.Duration

	stopCh     chan struct{}   // closed when shutdown begins
	runCtx     context.Context // of every backup; cancelled when the grace period is over
	cancelRuns context.CancelFunc

	repoMu sync.Mutex
	repo   *repo.Repo

	mu sync.Mutex
	st state
}

// errLostLeadership: the member was no longer the leader when the snapshot
// stream opened.
var errLostLeadership = errors.New("the member is no longer the raft leader")

// ErrStopping: the agent is shutting down and takes no new backup.
var ErrStopping = errors.New("the agent is shutting down")

// New checks cfg and registers the metrics. Run starts the agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Schedule == nil {
		return nil, errors.New("agent: no schedule")
	}
	if cfg.Client == nil || cfg.OpenRepo == nil {
		return nil, errors.New("agent: no etcd client or repository")
	}
	if cfg.LeaderOnly && cfg.Endpoint == "" {
		return nil, errors.New("agent: --leader-only needs this member's client URL as the first --endpoints entry")
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultBackoff
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:    cfg,
		log:    log,
		clock:  realClock{},
		sem:    make(chan struct{}, 1),
		notify: cfg.Notifier,
		stopCh: make(chan struct{}),
	}
	a.runCtx, a.cancelRuns = context.WithCancel(context.Background())
	if a.notify == nil {
		a.notify = SystemdNotifier{Logger: log}
	}
	period := Period(cfg.Schedule, time.Now())
	if period <= 0 {
		return nil, fmt.Errorf("agent: schedule %s does not fire", cfg.Schedule)
	}
	a.maxAge = cfg.MaxAge
	if a.maxAge <= 0 {
		a.maxAge = DefaultMaxAgeSlots * period
	}
	a.refresh = cfg.Refresh
	if a.refresh <= 0 {
		a.refresh = min(max(period/2, time.Second), 30*time.Second)
	}
	a.m = newMetrics(cfg.Registry, a)
	if cfg.Continuous {
		a.jm = newJournalMetrics(cfg.Registry)
	}
	a.sched = &scheduler{
		sched:    cfg.Schedule,
		clock:    a.clock,
		jitter:   cfg.Jitter,
		randN:    rand.Int64N,
		retryMax: cfg.RetryMax,
		backoff:  cfg.RetryBackoff,
		log:      log,
		sem:      a.sem,
		attempt:  a.scheduledAttempt,
		planned:  a.planned,
		finished: a.finished,
		overran: func(n int) {
			a.m.skipped.WithLabelValues(reasonOverrun).Add(float64(n))
		},
	}
	return a, nil
}

// MaxAge is the effective --max-age.
func (a *Agent) MaxAge() time.Duration { return a.maxAge }

// Run serves HTTP on cfg.Listen, tells systemd it is ready, and runs
// backups on the schedule until ctx is done. Then it stops scheduling,
// gives a backup in flight cfg.Grace to finish before cancelling it, and
// returns nil. It fails only when it cannot listen.
func (a *Agent) Run(ctx context.Context) error {
	// Backups run with runCtx: it outlives ctx by the grace period.
	runCtx, cancelRuns := a.runCtx, a.cancelRuns
	defer cancelRuns()

	var srv *http.Server
	if a.cfg.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s (--listen): %w", a.cfg.Listen, err)
		}
		a.log.Info("serving /metrics, /healthz, /status and POST /backup", "address", "http://"+ln.Addr().String())
		if !isLoopback(ln.Addr()) {
			a.log.Warn("--listen is not a loopback address: anyone who reaches it can read /status and start backups with POST /backup (no authentication); bind 127.0.0.1 and scrape locally, or firewall the port",
				"address", ln.Addr().String())
		}
		srv = &http.Server{
			Handler:           a.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		}
		go srv.Serve(ln)
	}

	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		a.watchRepo(ctx)
	}()
	if a.cfg.Continuous {
		bg.Add(1)
		go func() {
			defer bg.Done()
			a.journalLoop(ctx)
			a.closeSpools("")
		}()
	}
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		a.sched.run(ctx, runCtx)
	}()

	a.log.Info("agent started", "schedule", a.cfg.Schedule.String(), "leader_only", a.cfg.LeaderOnly,
		"endpoint", a.cfg.Endpoint, "jitter", a.cfg.Jitter, "retry_max", a.cfg.RetryMax,
		"max_age", a.maxAge, "grace", a.cfg.Grace)
	a.notify.Notify("READY=1\nSTATUS=" + a.statusLine())
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	if a.cfg.Watchdog > 0 {
		go a.watchdog(wdCtx, a.cfg.Watchdog/3)
	}

	<-ctx.Done()
	a.log.Info("stopping: no new backups; a backup in flight may finish", "grace", a.cfg.Grace)
	a.notify.Notify("STOPPING=1\nSTATUS=stopping")
	close(a.stopCh)

	idle := make(chan struct{})
	go func() {
		<-schedDone
		a.sem <- struct{}{} // any on-demand backup has finished too
		close(idle)
	}()
	grace := time.NewTimer(a.cfg.Grace)
	select {
	case <-idle:
		grace.Stop()
	case <-grace.C:
		a.log.Warn("the backup in flight did not finish within --grace: cancelling it (nothing is published)", "grace", a.cfg.Grace)
		cancelRuns()
		<-idle
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	bg.Wait()
	a.repoMu.Lock()
	if a.repo != nil {
		a.repo.Backend().Close()
		a.repo = nil
	}
	a.repoMu.Unlock()
	a.log.Info("agent stopped")
	return nil
}

func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// watchdog pings systemd's watchdog every interval. It takes the state lock
// first, so a deadlocked agent stops pinging and systemd restarts it. A
// long backup does not stop the pings: it is not a hang.
func (a *Agent) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		a.view()
		a.notify.Notify("WATCHDOG=1")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// openRepo returns the repository, opening it on first use (and again after
// a failed open).
func (a *Agent) openRepo(ctx context.Context) (*repo.Repo, error) {
	a.repoMu.Lock()
	defer a.repoMu.Unlock()
	if a.repo != nil {
		return a.repo, nil
	}
	r, err := a.cfg.OpenRepo(ctx)
	if err != nil {
		return nil, err
	}
	a.repo = r
	return r, nil
}

// view returns a copy of the state.
func (a *Agent) view() state {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.st
	v.runs = append([]RunRecord(nil), a.st.runs...)
	return v
}

func (a *Agent) planned(t time.Time) {
	a.mu.Lock()
	a.st.nextRun = t
	a.mu.Unlock()
	a.m.nextRun.Set(float64(t.UnixNano()) / 1e9)
	a.notify.Notify("STATUS=" + a.statusLine())
}

func (a *Agent) setLeader(st etcd.MemberStatus) {
	leader := st.IsLeader()
	a.mu.Lock()
	a.st.isLeader = &leader
	a.st.leaderChecked = a.clock.Now()
	a.mu.Unlock()
	if leader {
		a.m.isLeader.Set(1)
	} else {
		a.m.isLeader.Set(0)
	}
}

// scheduledAttempt is one attempt of a scheduled run.
func (a *Agent) scheduledAttempt(ctx context.Context, slot Slot, n int) attemptResult {
	res := a.leaderOnlyChecks(ctx, slot)
	if res.Err == nil && res.Skip == "" {
		res = a.backup(ctx, a.cfg.LeaderOnly)
	}
	if res.Err != nil {
		a.m.failures.Inc()
	}
	return res
}

// leaderOnlyChecks decides, with --leader-only, whether this agent backs up
// slot: its member must be the leader now, and no backup of the slot may be
// in the repository already (another member's agent, an on-demand run).
func (a *Agent) leaderOnlyChecks(ctx context.Context, slot Slot) attemptResult {
	if !a.cfg.LeaderOnly {
		return attemptResult{}
	}
	st := a.cfg.Client.Status(ctx, a.cfg.Endpoint)
	a.setLeader(st)
	switch {
	case st.Err != nil:
		return attemptResult{Err: fmt.Errorf("status of this agent's member %s: %w", a.cfg.Endpoint, st.Err), Retry: true}
	case st.Leader == 0:
		return attemptResult{Err: fmt.Errorf("member %s knows no raft leader (election in progress?)", a.cfg.Endpoint), Retry: true}
	case !st.IsLeader():
		a.log.Debug("not the leader: skipping the slot", "slot", slot.Start, "leader", etcd.HexID(st.Leader))
		return attemptResult{Skip: reasonNotLeader}
	}
	id, err := a.slotTaken(ctx, slot)
	if err != nil {
		return attemptResult{Err: fmt.Errorf("look for a backup of the slot: %w", err), Retry: true}
	}
	if id != "" {
		a.log.Info("the slot has a backup already: skipping it", "slot", slot.Start, "id", id)
		return attemptResult{Skip: reasonSlotTaken}
	}
	return attemptResult{}
}

// slotTaken returns the ID of a backup in the repository whose ID time falls
// in slot, or "".
func (a *Agent) slotTaken(ctx context.Context, slot Slot) (string, error) {
	r, err := a.openRepo(ctx)
	if err != nil {
		return "", err
	}
	ids, err := r.IDs(ctx) // newest first
	if err != nil {
		return "", err
	}
	for _, id := range ids {
		t, err := format.IDTime(id)
		if err != nil {
			continue
		}
		if slot.Contains(t) {
			return id, nil
		}
		if t.Before(slot.Start) {
			break
		}
	}
	return "", nil
}

// backup takes one backup. own: stream from this agent's member and abort
// unless it is still the leader when the stream opens (--leader-only);
// otherwise the source is chosen as 'snapshot' does.
func (a *Agent) backup(ctx context.Context, own bool) attemptResult {
	r, err := a.openRepo(ctx)
	if err != nil {
		return attemptResult{Err: err, Retry: !errors.Is(err, context.Canceled)}
	}
	opt := a.cfg.Backup
	opt.Logger = a.log
	if own {
		opt.Endpoint = a.cfg.Endpoint
		opt.BeforeUpload = func(st etcd.MemberStatus) error {
			a.setLeader(st)
			if !st.IsLeader() {
				return errLostLeadership
			}
			return nil
		}
	}
	start := a.clock.Now()
	a.mu.Lock()
	a.st.running = &start
	a.mu.Unlock()
	a.m.lastAttempt.Set(float64(start.UnixNano()) / 1e9)
	m, err := backup.Run(ctx, a.cfg.Client, r, opt)
	end := a.clock.Now()
	a.m.duration.Observe(end.Sub(start).Seconds())
	a.mu.Lock()
	a.st.running = nil
	a.mu.Unlock()
	switch {
	case errors.Is(err, errLostLeadership):
		a.log.Info("leadership moved before the upload: skipping the slot")
		return attemptResult{Skip: reasonNotLeader}
	case err != nil:
		retry := !errors.Is(err, context.Canceled) && !errors.Is(err, format.ErrKey)
		return attemptResult{Err: err, Retry: retry}
	}
	a.m.lastSuccess.Set(float64(end.UnixNano()) / 1e9)
	a.m.size.WithLabelValues("raw").Set(float64(m.RawSize))
	a.m.size.WithLabelValues("stored").Set(float64(m.StoredSize))
	a.mu.Lock()
	a.st.lastSuccess = end
	a.mu.Unlock()
	a.sawBackup(m)
	res := attemptResult{Manifest: m}
	if a.cfg.AfterBackup != nil {
		if herr := a.cfg.AfterBackup(ctx); herr != nil {
			a.m.hookFailures.WithLabelValues("after_backup").Inc()
			a.log.Warn("after-backup work failed (the backup is published)", "id", m.ID, "error", herr)
			res.hookErr = herr
		}
	}
	return res
}

// finished records a scheduled run.
func (a *Agent) finished(r runResult) {
	slot := r.Slot.Start
	a.record(RunRecord{Trigger: "schedule", Slot: &slot, Started: r.Started, Finished: r.Finished, Attempts: r.Attempts}, r.attemptResult)
}

// record counts and keeps a finished run.
func (a *Agent) record(rec RunRecord, res attemptResult) {
	switch {
	case res.Err != nil:
		rec.Result, rec.Error = "failure", oneLine(res.Err.Error())
		a.log.Error("backup run failed", "trigger", rec.Trigger, "attempts", rec.Attempts, "error", res.Err)
	case res.Skip != "":
		rec.Result, rec.Reason = "skipped", res.Skip
		a.m.skipped.WithLabelValues(res.Skip).Inc()
	default:
		rec.Result = "success"
		rec.ID, rec.Revision, rec.Member = res.Manifest.ID, res.Manifest.Revision, res.Manifest.MemberName
		if res.hookErr != nil {
			rec.HookError = oneLine(res.hookErr.Error())
		}
	}
	a.m.runs.WithLabelValues(rec.Result).Inc()
	a.mu.Lock()
	a.st.runs = append([]RunRecord{rec}, a.st.runs...)
	if len(a.st.runs) > keptRuns {
		a.st.runs = a.st.runs[:keptRuns]
	}
	a.mu.Unlock()
	if rec.Trigger != "schedule" { // scheduled runs: planned tells, with the next run's time
		a.notify.Notify("STATUS=" + a.statusLine())
	}
}

// BackupNow takes a backup now, after any backup in flight (backups never
// overlap). It ignores --leader-only and the slot: the snapshot is taken
// from the member 'snapshot' would choose. The backup is cancelled when ctx
// ends or when the shutdown grace period is over.
func (a *Agent) BackupNow(ctx context.Context) (*format.Manifest, error) {
	select {
	case <-a.stopCh:
		return nil, ErrStopping
	default:
	}
	select {
	case a.sem <- struct{}{}:
	case <-a.stopCh:
		return nil, ErrStopping
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-a.sem }()
	rctx, cancel := context.WithCancel(a.runCtx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	rec := RunRecord{Trigger: "manual", Started: a.clock.Now(), Attempts: 1}
	res := a.backup(rctx, false)
	if res.Err != nil {
		a.m.failures.Inc()
	}
	rec.Finished = a.clock.Now()
	a.record(rec, res)
	return res.Manifest, res.Err
}

// watchRepo reads the newest backup from the repository every a.refresh
// until ctx is done.
func (a *Agent) watchRepo(ctx context.Context) {
	for {
		a.refreshRepo(ctx)
		t := time.NewTimer(a.refresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refreshRepo looks up the newest intact backup in the repository.
func (a *Agent) refreshRepo(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, max(10*time.Second, a.refresh))
	defer cancel()
	gen := a.view().gen
	newest, err := a.newestBackup(rctx)
	if ctx.Err() != nil {
		return // shutting down: keep what we knew
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if a.st.repoErr == nil {
			a.log.Warn("cannot read the repository", "error", err)
		}
		a.st.repoErr = err
		a.m.repoUp.Set(0)
		return
	}
	if a.st.repoErr != nil {
		a.log.Info("the repository is readable again")
	}
	a.st.seen, a.st.repoErr, a.st.repoChecked = true, nil, a.clock.Now()
	a.m.repoUp.Set(1)
	// A backup this agent published while the listing ran stays the newest.
	if gen == a.st.gen || newest == nil || a.st.newest == nil || newest.ID >= a.st.newest.ID {
		a.setNewestLocked(newest)
	}
}

func (a *Agent) newestBackup(ctx context.Context) (*format.Manifest, error) {
	r, err := a.openRepo(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := r.IDs(ctx)
	if err != nil {
		return nil, err
	}
	known := a.view().newest
	for _, id := range ids {
		if known != nil && known.ID == id {
			return known, nil
		}
		m, err := r.ReadManifest(ctx, id)
		if errors.Is(err, format.ErrIntegrity) || errors.Is(err, format.ErrVersion) {
			a.log.Debug("skipping a damaged manifest", "id", id, "error", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	return nil, nil
}

// sawBackup records m as the newest backup when it is newer.
func (a *Agent) sawBackup(m *format.Manifest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.gen++
	if a.st.newest == nil || m.ID > a.st.newest.ID {
		a.setNewestLocked(m)
	}
}

func (a *Agent) setNewestLocked(m *format.Manifest) {
	a.st.newest = m
	if m != nil {
		a.m.latestRevision.Set(float64(m.Revision))
	} else {
		a.m.latestRevision.Set(0)
	}
}

// health says whether the repository holds a backup younger than --max-age.
func (a *Agent) health() (bool, string) {
	v := a.view()
	now := a.clock.Now()
	stale := 3*a.refresh + max(10*time.Second, a.refresh)
	switch {
	case v.repoErr != nil:
		return false, "repository unreachable: " + oneLine(v.repoErr.Error())
	case !v.seen:
		return false, "the repository has not been read yet"
	case now.Sub(v.repoChecked) > stale:
		return false, fmt.Sprintf("the repository was last read %s ago", now.Sub(v.repoChecked).Round(time.Second))
	case v.newest == nil:
		return false, "no backup in the repository yet"
	}
	age := now.Sub(v.newest.Created)
	if age > a.maxAge {
		return false, fmt.Sprintf("the newest backup %s is %s old, more than --max-age %s", v.newest.ID, age.Round(time.Second), a.maxAge)
	}
	return true, fmt.Sprintf("the newest backup %s is %s old (--max-age %s)", v.newest.ID, age.Round(time.Second), a.maxAge)
}

// statusLine is the one-line summary sent to systemd as STATUS=.
func (a *Agent) statusLine() string {
	v := a.view()
	var b strings.Builder
	if len(v.runs) == 0 {
		b.WriteString("no run yet")
	} else {
		r := v.runs[0]
		fmt.Fprintf(&b, "last run %s at %s", r.Result, r.Finished.UTC().Format(time.RFC3339))
		switch {
		case r.ID != "":
			fmt.Fprintf(&b, ": %s", r.ID)
		case r.Reason != "":
			fmt.Fprintf(&b, ": %s", r.Reason)
		case r.Error != "":
			fmt.Fprintf(&b, ": %s", r.Error)
		}
	}
	if !v.nextRun.IsZero() {
		fmt.Fprintf(&b, "; next run %s", v.nextRun.UTC().Format(time.RFC3339))
	}
	s := b.String()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// oneLine folds whitespace (an sd_notify message is newline-separated).
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
