package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// rpoRun is one total-loss run: load, SIGKILL of everything, restore latest.
type rpoRun struct {
	KillAfter    time.Duration // load before the kill
	Acked        int
	Failed       int64
	Rate         float64 // achieved acknowledged puts per second
	Leader       string  // leader when the load started
	SnapshotRev  int64   // revision of the snapshot the journal follows
	LastAckRev   int64
	SealedMetric int64 // highest etcd_backup_journal_sealed_revision of the agents just before the kill
	JournalEnd   int64 // what list --json says the journal reaches, after the kill
	Segments     int
	RestoredRev  int64
	Missing      int
	MissingBelow int           // missing acknowledged writes at or below the restored revision: must be 0
	RPO          time.Duration // newest ack - oldest missing ack (0: none missing)
	KillSpread   time.Duration // how long the kill(2) of the process group took
	SealedAge    time.Duration // kill time - ack time of the write at the journal end revision
	Restore      sample
	Replay       replayLog
}

func (b *bench) measureRPO(ctx context.Context) error {
	for i := range b.opt.runs {
		logf("RPO run %d/%d", i+1, b.opt.runs)
		r, err := b.rpoRun(ctx, i)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			b.fail(fmt.Sprintf("RPO run %d", i+1), err)
			continue
		}
		b.rpo = append(b.rpo, r)
		logf("RPO run %d: %d acknowledged in %.1fs (%.0f/s), last acked revision %d, sealed %d (metric) / %d (repository), restored %d: %d missing, RPO %.3fs; restore %.2fs",
			i+1, r.Acked, r.KillAfter.Seconds(), r.Rate, r.LastAckRev, r.SealedMetric, r.JournalEnd, r.RestoredRev, r.Missing, r.RPO.Seconds(), r.Restore.Wall.Seconds())
	}
	return nil
}

func (b *bench) removeLater(dir string) func() {
	return func() {
		if !b.opt.keep {
			os.RemoveAll(dir)
		}
	}
}

func (b *bench) rpoRun(ctx context.Context, i int) (*rpoRun, error) {
	dir := filepath.Join(b.tmp, fmt.Sprintf("rpo%d", i+1))
	defer b.removeLater(dir)()
	c, err := startCluster(ctx, b.etcd, filepath.Join(dir, "cluster"))
	if err != nil {
		return nil, err
	}
	defer c.kill()
	repo := "file://" + filepath.Join(b.repos, fmt.Sprintf("rpo%d-repo", i+1))
	defer b.removeLater(strings.TrimPrefix(repo, "file://"))()
	eps := c.endpoints()
	var agents []*agent
	defer func() {
		for _, a := range agents {
			a.d.kill()
		}
	}()
	for j, m := range c.members {
		a, err := startAgent(ctx, c.pg, b.eb, m.name, dir, repo, ownFirst(eps, j), "--leader-only")
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	ja, snapRev, err := waitJournaling(ctx, agents, 90*time.Second)
	if err != nil {
		return nil, err
	}
	r := &rpoRun{SnapshotRev: snapRev, Leader: ja.name}
	clis, closeClis, err := newClients(eps, 4)
	if err != nil {
		return nil, err
	}
	defer closeClis()

	span := int64(b.opt.killMax - b.opt.killMin)
	r.KillAfter = b.opt.killMin + time.Duration(b.rng.Int64N(span+1))
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	prefix := fmt.Sprintf("/rpo/%d/", i+1)
	resCh := make(chan *loadResult, 1)
	go func() { resCh <- runLoad(lctx, clis, loadConfig{prefix: prefix, rate: b.opt.rpoRate}) }()
	if err := sleepCtx(ctx, r.KillAfter); err != nil {
		lcancel()
		<-resCh
		return nil, err
	}
	r.SealedMetric = sealed(agents)

	// The disaster: every etcd member and every agent at the same instant,
	// one kill(2) of their process group.
	t0 := time.Now()
	err = c.pg.kill()
	killAt := t0.UnixNano()
	r.KillSpread = time.Since(t0)
	if err != nil {
		lcancel()
		<-resCh
		return nil, fmt.Errorf("kill the process group: %w", err)
	}
	// Responses already on their way still count as acknowledged.
	_ = sleepCtx(ctx, 300*time.Millisecond)
	lcancel()
	res := <-resCh
	c.kill()
	for _, a := range agents {
		a.d.kill()
	}
	r.Acked, r.Failed, r.LastAckRev = len(res.acks), res.failed, res.lastRev()
	r.Rate = float64(len(res.acks)) / r.KillAfter.Seconds()
	if len(res.acks) == 0 {
		return nil, fmt.Errorf("no write was acknowledged%s", logTail(c.members[0].d.logPath, 10))
	}

	info, err := listNewest(ctx, b.eb, repo)
	if err != nil {
		return nil, err
	}
	if info.Revision != snapRev {
		logf("RPO run %d: the newest snapshot is at revision %d, not the first one (%d)", i+1, info.Revision, snapRev)
		r.SnapshotRev = info.Revision
	}
	r.JournalEnd = info.journalEnd()
	if info.Journal != nil {
		r.Segments = info.Journal.Segments
	}

	// Restore into a fresh one-member cluster; the old one is gone.
	rdir := filepath.Join(dir, "restored")
	ms, err := newMembers(rdir, "r", 1)
	if err != nil {
		return nil, err
	}
	var stderr string
	r.Restore, _, stderr, err = b.restore(ctx, repo, ms[0], "latest")
	if err != nil {
		return nil, err
	}
	r.Replay = parseReplay(stderr)
	rc, err := startMembers(ctx, b.etcd, rdir, ms, "new", nil)
	if err != nil {
		return nil, fmt.Errorf("start the restored member: %w", err)
	}
	defer rc.kill()
	gctx, cancel := context.WithTimeout(ctx, time.Minute)
	got, err := rc.cli.Get(gctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read the restored member: %w", err)
	}
	r.RestoredRev = got.Header.Revision
	have := make(map[string]bool, len(got.Kvs))
	for _, kv := range got.Kvs {
		have[string(kv.Key)] = true
	}
	for _, a := range res.acks {
		if a.rev == r.JournalEnd {
			r.SealedAge = time.Duration(killAt - a.at)
		}
	}
	newest := res.acks[len(res.acks)-1].at
	for _, a := range res.acks { // by ack time: the first missing is the oldest
		if have[res.key(a.seq)] {
			continue
		}
		if r.Missing == 0 {
			r.RPO = time.Duration(newest - a.at)
		}
		r.Missing++
		if a.rev <= r.RestoredRev {
			r.MissingBelow++
		}
	}
	if r.MissingBelow > 0 {
		b.fail(fmt.Sprintf("RPO run %d", i+1), fmt.Errorf("%d acknowledged writes at or below the restored revision %d are missing", r.MissingBelow, r.RestoredRev))
	}
	return r, nil
}

// restore runs `etcd-backup restore` of repo into m's data dir, measured.
func (b *bench) restore(ctx context.Context, repo string, m *member, args ...string) (sample, string, string, error) {
	a := append(append([]string{"restore"}, args...), "--repo", repo, "--data-dir", m.dir, "--name", m.name,
		"--initial-cluster", m.name+"="+m.peerURL, "--initial-cluster-token", "etcd-backup-bench-journal", "--log-format", "json")
	if err := os.MkdirAll(filepath.Dir(m.dir), 0o700); err != nil {
		return sample{}, "", "", err
	}
	syscall.Sync()
	return measure(ctx, 10*time.Minute, b.eb, a...)
}

// replayLog is restore's "journal replayed" log record.
type replayLog struct {
	Found      bool
	Events     int64
	Records    int64
	Revision   int64
	EventsPerS float64
	// RevisionsPerS: records (one a revision) per second, over the same
	// time as EventsPerS.
	RevisionsPerS float64
	Open          string
	Replay        string
	Commit        string
}

// parseReplay finds the "journal replayed" record in restore's JSON log.
func parseReplay(stderr string) replayLog {
	var out replayLog
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, "journal replayed") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		num := func(k string) float64 {
			switch v := m[k].(type) {
			case float64:
				return v
			case string:
				var f float64
				fmt.Sscan(v, &f)
				return f
			}
			return 0
		}
		// Durations: slog's JSON handler writes nanoseconds.
		str := func(k string) string {
			switch v := m[k].(type) {
			case string:
				return v
			case float64:
				return time.Duration(v).Round(time.Millisecond).String()
			}
			return "?"
		}
		out = replayLog{Found: true, Events: int64(num("events")), Records: int64(num("records")), Revision: int64(num("revision")),
			EventsPerS: num("events_per_s"), RevisionsPerS: num("revisions_per_s"), Open: str("open"), Replay: str("replay"), Commit: str("commit")}
		if out.RevisionsPerS == 0 && out.Events > 0 {
			// A binary from before revisions_per_s: same time base.
			out.RevisionsPerS = float64(out.Records) * out.EventsPerS / float64(out.Events)
		}
	}
	return out
}
