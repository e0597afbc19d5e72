package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-backup/etcd-backup/internal/etcd"
)

// drillLoop runs 'etcd-backup verify --drill latest' every `every` in a
// child process: the drill starts an etcd inside the process that runs it,
// and whatever happens to that etcd must not take the agent down. With
// leader-only, only the leader's agent drills, so a cluster drills once.
type drillLoop struct {
	every    time.Duration
	args     []string // verify's arguments after "verify --drill latest"
	log      *slog.Logger
	isLeader func(context.Context) bool // nil: always drill

	lastSuccess prometheus.Gauge
	lastRun     prometheus.Gauge
	duration    prometheus.Gauge
	runs        *prometheus.CounterVec
}

func newDrillLoop(every time.Duration, args []string, log *slog.Logger, reg prometheus.Registerer) *drillLoop {
	d := &drillLoop{
		every: every, args: args, log: log,
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_drill_success_timestamp_seconds",
			Help: "When a restore drill of the newest backup last passed (Unix time)."}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_drill_timestamp_seconds",
			Help: "When the last restore drill ended (Unix time)."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_drill_duration_seconds",
			Help: "How long the last restore drill took."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_drill_runs_total",
			Help: "Restore drills by result (success, failure)."}, []string{"result"}),
	}
	reg.MustRegister(d.lastSuccess, d.lastRun, d.duration, d.runs)
	d.runs.WithLabelValues("success")
	d.runs.WithLabelValues("failure")
	return d
}

// run drills once shortly after start (so a new deployment reports soon)
// and then every d.every, until ctx ends.
func (d *drillLoop) run(ctx context.Context) {
	first := min(d.every, time.Minute)
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if d.isLeader == nil || d.isLeader(ctx) {
			d.once(ctx)
		}
		t.Reset(d.every)
	}
}

func (d *drillLoop) once(ctx context.Context) {
	self, err := os.Executable()
	if err != nil {
		d.log.Error("restore drill: cannot find this program", "error", err)
		return
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, self, append([]string{"verify", "--drill", "latest", "--quiet"}, d.args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	took := time.Since(start)
	d.duration.Set(took.Seconds())
	d.lastRun.SetToCurrentTime()
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: not a drill failure
		}
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if code == exitNoBackup {
			d.log.Info("restore drill: no backup yet")
			return
		}
		d.runs.WithLabelValues("failure").Inc()
		d.log.Error("restore drill failed", "exit_code", code, "output", strings.TrimSpace(out.String()))
		return
	}
	d.runs.WithLabelValues("success").Inc()
	d.lastSuccess.SetToCurrentTime()
	d.log.Info("restore drill passed", "seconds", took.Seconds(), "result", strings.TrimSpace(out.String()))
}

// drillArgs are the verify flags that reach the same repository with the
// same keys as the agent.
func drillArgs(g *Globals, identities []string) []string {
	args := []string{"--repo", g.Repo, "--cluster", g.Cluster}
	if g.RcloneConfig != "" {
		args = append(args, "--rclone-config", g.RcloneConfig)
	}
	for _, id := range identities {
		args = append(args, "--identity", id)
	}
	return args
}

// leaderCheck reports whether the member behind ep is the raft leader.
func leaderCheck(cli *etcd.Client, ep string) func(context.Context) bool {
	return func(ctx context.Context) bool { return cli.Status(ctx, ep).IsLeader() }
}
