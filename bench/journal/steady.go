package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// costRun is the leader's agent under one load.
type costRun struct {
	Target     float64
	Achieved   float64
	Acked      int
	Failed     int64
	CPUPerSec  float64 // agent user+sys seconds per second of load
	LeaderCPU  float64 // the etcd leader's, likewise
	HWMWindow  int64   // agent peak RSS from the start of the load to the end of the drain (-1: unknown)
	HWMLife    int64   // agent peak RSS over its whole life (VmHWM before the reset; includes its first snapshot)
	RSSEnd     int64
	Events     float64 // etcd_backup_journal_events_total at the end
	Segments   float64
	LastAckRev int64
	SealedEnd  int64 // sealed revision 2 s after the load
	P50, P99   time.Duration
}

func (c *costRun) lag() int64 { return max(c.LastAckRev-c.SealedEnd, 0) }

// latencyRun is one phase of the latency comparison.
type latencyRun struct {
	Agent               bool
	Achieved            float64
	Acked               int
	Failed              int64
	P50, P99            time.Duration
	Max                 time.Duration
	LeaderCPU, AgentCPU float64 // CPU-s/s over the load
	Load                float64 // 1-minute load average at the end
}

type restoreRun struct {
	NoJournal bool
	S         sample
	Replay    replayLog
	Rev       int64 // restored revision (from restore's log)
}

type replayResult struct {
	SnapshotRev int64
	JournalEnd  int64
	Segments    int
	ExtraLoad   int // puts added to reach -min-events
	Runs        []restoreRun
	Verified    string // what the check of one restored member found
	Profile     *replayProfile
}

// steady is the shared cluster of the agent cost, latency and replay
// measurements: one repository, one journal chain that each new agent
// resumes (nothing compacts), so the journal grows over all of them.
type steady struct {
	b     *bench
	c     *cluster
	dir   string
	repo  string
	clis  []*clientv3.Client
	phase int
}

func (b *bench) measureSteady(ctx context.Context) error {
	dir := filepath.Join(b.tmp, "steady")
	defer b.removeLater(dir)()
	logf("steady: starting a 3-member etcd %s cluster", etcdVersion)
	c, err := startCluster(ctx, b.etcd, filepath.Join(dir, "cluster"))
	if err != nil {
		return err
	}
	defer c.kill()
	clis, closeClis, err := newClients(c.endpoints(), 4)
	if err != nil {
		return err
	}
	defer closeClis()
	repoDir := filepath.Join(b.repos, "steady-repo")
	defer b.removeLater(repoDir)()
	s := &steady{b: b, c: c, dir: dir, repo: "file://" + repoDir, clis: clis}
	if b.opt.prefill > 0 {
		logf("steady: writing %d keys for the first snapshot", b.opt.prefill)
		if err := prefill(ctx, clis, b.opt.prefill); err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
	}

	for r := range b.opt.costRuns {
		if !b.opt.sections["cost"] {
			break
		}
		rates := slices.Clone(b.opt.rates)
		if r%2 == 1 {
			slices.Reverse(rates)
		}
		for _, rate := range rates {
			cr, err := s.cost(ctx, rate)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				b.fail(fmt.Sprintf("agent cost at %.0f txn/s", rate), err)
				continue
			}
			b.cost = append(b.cost, cr)
		}
	}
	for r := range b.opt.latencyRuns {
		if !b.opt.sections["latency"] {
			break
		}
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, withAgent := range order {
			lr, err := s.latency(ctx, withAgent)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				b.fail(fmt.Sprintf("latency run %d (agent %v)", r+1, withAgent), err)
				continue
			}
			b.latency = append(b.latency, lr)
		}
	}
	if !b.opt.sections["replay"] {
		return nil
	}
	rr, err := s.replay(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	b.replay = rr
	return nil
}

// leaderAgent starts a continuous agent on the current leader, its only
// endpoint, and waits until it has caught up with the cluster.
func (s *steady) leaderAgent(ctx context.Context) (*agent, *member, error) {
	lead, err := s.c.waitLeader(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.phase++
	a, err := startAgent(ctx, nil, s.b.eb, fmt.Sprintf("%s-%d", lead.name, s.phase), s.dir, s.repo, []string{lead.clientURL})
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := waitJournaling(ctx, []*agent{a}, 90*time.Second); err != nil {
		a.d.kill()
		return nil, nil, err
	}
	// Catch up: the journal must reach the revision of now (the previous
	// phase may have run without an agent).
	rev, err := s.c.revision(ctx)
	if err != nil {
		a.d.kill()
		return nil, nil, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	var checked time.Time
	for {
		if sealed([]*agent{a}) >= rev {
			break
		}
		if time.Since(checked) > 2*time.Second {
			checked = time.Now()
			if info, err := listNewest(ctx, s.b.eb, s.repo); err == nil && info.journalEnd() >= rev {
				break
			}
		}
		if time.Now().After(deadline) {
			a.d.kill()
			return nil, nil, fmt.Errorf("agent did not catch up with revision %d within 2m%s", rev, logTail(a.d.logPath, 15))
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			a.d.kill()
			return nil, nil, err
		}
	}
	return a, lead, nil
}

// settle starts a load phase on a quiet disk: no phase inherits the
// previous one's writeback (or the agent's catch-up).
func settle(ctx context.Context) error {
	syscall.Sync()
	return sleepCtx(ctx, 2*time.Second)
}

// stopAgent stops a with SIGTERM (it seals what it holds).
func stopAgent(a *agent) error {
	if !a.d.terminate(40 * time.Second) {
		return fmt.Errorf("agent %s did not exit within 40s of SIGTERM%s", a.name, logTail(a.d.logPath, 15))
	}
	if st := a.d.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("agent %s: %v%s", a.name, st, logTail(a.d.logPath, 15))
	}
	return nil
}

func (s *steady) cost(ctx context.Context, rate float64) (*costRun, error) {
	logf("agent cost at %.0f txn/s for %v", rate, s.b.opt.duration)
	a, lead, err := s.leaderAgent(ctx)
	if err != nil {
		return nil, err
	}
	defer a.d.kill()
	if err := settle(ctx); err != nil {
		return nil, err
	}
	pid := a.d.pid()
	cr := &costRun{Target: rate, HWMLife: procStatusKiB(pid, "VmHWM"), HWMWindow: -1}
	hwmReset := resetHWM(pid) == nil
	cpu0, lcpu0, t0 := benchkit.ProcCPU(pid), benchkit.ProcCPU(lead.d.pid()), time.Now()
	res := runLoad(ctx, s.clis, loadConfig{prefix: fmt.Sprintf("/cost/%.0f/", rate), rate: rate, duration: s.b.opt.duration})
	wall := time.Since(t0).Seconds()
	cr.CPUPerSec = (benchkit.ProcCPU(pid) - cpu0).Seconds() / wall
	cr.LeaderCPU = (benchkit.ProcCPU(lead.d.pid()) - lcpu0).Seconds() / wall
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	cr.SealedEnd = int64(a.metric("etcd_backup_journal_sealed_revision"))
	if hwmReset {
		cr.HWMWindow = procStatusKiB(pid, "VmHWM")
	}
	cr.HWMLife = max(cr.HWMLife, cr.HWMWindow)
	cr.RSSEnd = procStatusKiB(pid, "VmRSS")
	cr.Events = a.metric("etcd_backup_journal_events_total")
	cr.Segments = a.metric("etcd_backup_journal_segments_total")
	cr.Acked, cr.Failed, cr.Achieved, cr.LastAckRev = len(res.acks), res.failed, res.achieved(), res.lastRev()
	lat := res.latencies()
	cr.P50, cr.P99 = percentile(lat, 50), percentile(lat, 99)
	logf("agent cost at %.0f txn/s: achieved %.0f/s, agent %.3f CPU-s/s, peak RSS %.1f MiB (window) %.1f MiB (life), sealed %d of %d (lag %d)",
		rate, cr.Achieved, cr.CPUPerSec, float64(cr.HWMWindow)/(1<<20), float64(cr.HWMLife)/(1<<20), cr.SealedEnd, cr.LastAckRev, cr.lag())
	if err := stopAgent(a); err != nil {
		return nil, err
	}
	return cr, nil
}

func (s *steady) latency(ctx context.Context, withAgent bool) (*latencyRun, error) {
	var a *agent
	var lead *member
	var err error
	if withAgent {
		if a, lead, err = s.leaderAgent(ctx); err != nil {
			return nil, err
		}
		defer a.d.kill()
	} else if lead, err = s.c.waitLeader(ctx); err != nil {
		return nil, err
	}
	if err := settle(ctx); err != nil {
		return nil, err
	}
	s.phase++
	acpu := func() time.Duration {
		if a == nil {
			return 0
		}
		return benchkit.ProcCPU(a.d.pid())
	}
	lcpu0, acpu0, t0 := benchkit.ProcCPU(lead.d.pid()), acpu(), time.Now()
	res := runLoad(ctx, s.clis, loadConfig{prefix: fmt.Sprintf("/latency/%d/", s.phase), rate: s.b.opt.rpoRate, duration: s.b.opt.duration})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wall := time.Since(t0).Seconds()
	lat := res.latencies()
	lr := &latencyRun{Agent: withAgent, Achieved: res.achieved(), Acked: len(res.acks), Failed: res.failed,
		P50: percentile(lat, 50), P99: percentile(lat, 99),
		LeaderCPU: (benchkit.ProcCPU(lead.d.pid()) - lcpu0).Seconds() / wall, AgentCPU: (acpu() - acpu0).Seconds() / wall, Load: benchkit.LoadAvg()}
	if len(lat) > 0 {
		lr.Max = lat[len(lat)-1]
	}
	logf("latency, agent %v: %.0f/s, p50 %v, p99 %v, leader %.3f CPU-s/s, agent %.3f CPU-s/s, load %.1f", withAgent, lr.Achieved,
		lr.P50.Round(10*time.Microsecond), lr.P99.Round(10*time.Microsecond), lr.LeaderCPU, lr.AgentCPU, lr.Load)
	if a != nil {
		if err := stopAgent(a); err != nil {
			return nil, err
		}
	}
	return lr, nil
}

func (s *steady) replay(ctx context.Context) (*replayResult, error) {
	rr := &replayResult{}
	var a *agent
	if _, err := os.Stat(strings.TrimPrefix(s.repo, "file://")); errors.Is(err, fs.ErrNotExist) {
		// No section before ran an agent (-sections replay): one makes the
		// repository and its first snapshot.
		if a, _, err = s.leaderAgent(ctx); err != nil {
			return nil, err
		}
		defer a.d.kill()
	}
	info, err := listNewest(ctx, s.b.eb, s.repo)
	if err != nil {
		return nil, err
	}
	rev, err := s.c.revision(ctx)
	if err != nil {
		return nil, err
	}
	if n := info.journalEnd() - info.Revision; a != nil || n < s.b.opt.minEvents || info.journalEnd() < rev {
		// The last phase ran without an agent, or the journal is too short:
		// an agent catches up, and adds load with it until it is long enough.
		if a == nil {
			if a, _, err = s.leaderAgent(ctx); err != nil {
				return nil, err
			}
			defer a.d.kill()
		}
		const rate = 2000.0
		need := s.b.opt.minEvents - (rev - info.Revision)
		if need > 0 {
			logf("replay: the journal will have %d events; adding about %d at %.0f txn/s", rev-info.Revision, need, rate)
		}
		for tries := 0; need > 0 && tries < 5; tries++ {
			d := time.Duration(float64(need)/rate*float64(time.Second)) + time.Second
			res := runLoad(ctx, s.clis, loadConfig{prefix: fmt.Sprintf("/fill/%d/", tries), rate: rate, duration: min(d, 5*time.Minute)})
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rr.ExtraLoad += len(res.acks)
			need -= int64(len(res.acks))
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, err
		}
		if err := stopAgent(a); err != nil {
			return nil, err
		}
	}
	// Everything written is sealed: no agent runs, the last stopped cleanly.
	if rev, err = s.c.revision(ctx); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, time.Minute)
	live, err := s.c.cli.Get(gctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, err
	}
	if info, err = listNewest(ctx, s.b.eb, s.repo); err != nil {
		return nil, err
	}
	rr.SnapshotRev, rr.JournalEnd = info.Revision, info.journalEnd()
	if info.Journal != nil {
		rr.Segments = info.Journal.Segments
	}
	if rr.JournalEnd != rev {
		return nil, fmt.Errorf("the journal reaches revision %d, the cluster is at %d", rr.JournalEnd, rev)
	}
	logf("replay: snapshot at revision %d, journal to %d (%d segments)", rr.SnapshotRev, rr.JournalEnd, rr.Segments)

	out := filepath.Join(s.dir, "restore")
	defer os.RemoveAll(out)
	for r := range s.b.opt.replayRuns {
		modes := []bool{false, true}
		if r%2 == 1 {
			modes = []bool{true, false}
		}
		for _, noJournal := range modes {
			if err := os.RemoveAll(out); err != nil {
				return nil, err
			}
			ms, err := newMembers(out, "r", 1)
			if err != nil {
				return nil, err
			}
			args := []string{"latest"}
			if noJournal {
				args = append(args, "--no-journal")
			}
			smp, _, stderr, err := s.b.restore(ctx, s.repo, ms[0], args...)
			if err != nil {
				return nil, err
			}
			run := restoreRun{NoJournal: noJournal, S: smp, Replay: parseReplay(stderr)}
			run.Rev = run.Replay.Revision
			logf("replay: restore latest (no journal: %v) %.2fs, peak RSS %.0f MiB, %d events at %.0f events/s",
				noJournal, smp.Wall.Seconds(), float64(smp.MaxRSS)/(1<<20), run.Replay.Events, run.Replay.EventsPerS)
			if !noJournal && rr.Verified == "" {
				rr.Verified = s.verify(ctx, out, ms, rev, live.Count)
			}
			rr.Runs = append(rr.Runs, run)
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, err
	}
	if rr.Profile, err = s.profileReplay(ctx, s.repo, out); err != nil {
		s.b.fail("replay: profile", err)
	} else {
		logf("replay: profiled restore.Execute: %.2fs, %.2f CPU-s", rr.Profile.S.Wall.Seconds(), rr.Profile.S.CPU.Seconds())
	}
	return rr, nil
}

// verify starts the restored member and compares its revision and key
// count with the live cluster's.
func (s *steady) verify(ctx context.Context, dir string, ms []*member, rev, count int64) string {
	rc, err := startMembers(ctx, s.b.etcd, dir, ms, "new", nil)
	if err != nil {
		s.b.fail("replay: start the restored member", err)
		return "could not start the restored member"
	}
	defer rc.kill()
	gctx, cancel := context.WithTimeout(ctx, time.Minute)
	got, err := rc.cli.Get(gctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		s.b.fail("replay: read the restored member", err)
		return "could not read the restored member"
	}
	v := fmt.Sprintf("restored member: revision %d, %d keys; live cluster: revision %d, %d keys", got.Header.Revision, got.Count, rev, count)
	if got.Header.Revision != rev || got.Count != count {
		s.b.fail("replay", fmt.Errorf("restore latest differs from the cluster: %s", v))
		return v + " — **MISMATCH**"
	}
	return v + " — identical"
}

func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
