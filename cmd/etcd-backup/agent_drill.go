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

// checkMode is what a checkLoop runs: a full read-back ('verify latest',
// --verify-every) or a restore drill ('verify --drill latest',
// --drill-every).
type checkMode struct {
	name   string   // in metric names and logs: "verify", "drill"
	what   string   // in logs and help: "full verify", "restore drill"
	args   []string // the command before the repository flags
	plural string   // in metric help
}

var (
	verifyMode = checkMode{name: "verify", what: "full verify", plural: "Full verifies of the newest backup (every byte read back)",
		args: []string{"verify", "latest", "--quiet"}}
	drillMode = checkMode{name: "drill", what: "restore drill", plural: "Restore drills of the newest backup",
		args: []string{"verify", "--drill", "latest", "--quiet"}}
)

// Results of a check, the values of the result label.
const (
	checkSuccess = "success" // the backup passed
	checkFailure = "failure" // exit 4: the bytes were read and do not match, the backup is damaged
	checkError   = "error"   // any other exit (storage down, wrong key, killed, ...): the backup was not judged
)

// checkLoop runs 'etcd-backup verify [--drill] latest' every `every` in a
// child process: a drill starts an etcd inside the process that runs it,
// and whatever happens to that etcd (or to a long read-back) must not take
// the agent down. With leader-only, only the leader's agent checks, so a
// cluster checks once.
type checkLoop struct {
	mode     checkMode
	every    time.Duration
	args     []string // verify's repository and key flags, after mode.args
	log      *slog.Logger
	isLeader func(context.Context) bool // nil: always check
	exe      string                     // the program to run; "": this one (os.Executable)

	lastSuccess prometheus.Gauge
	lastRun     prometheus.Gauge
	duration    prometheus.Gauge
	runs        *prometheus.CounterVec
}

// newCheckLoop registers the loop's metrics: etcd_backup_last_<name>_success_timestamp_seconds,
// etcd_backup_last_<name>_timestamp_seconds, etcd_backup_last_<name>_duration_seconds and
// etcd_backup_<name>_runs_total{result}.
func newCheckLoop(mode checkMode, every time.Duration, args []string, log *slog.Logger, reg prometheus.Registerer) *checkLoop {
	n := mode.name
	d := &checkLoop{
		mode: mode, every: every, args: args, log: log,
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_" + n + "_success_timestamp_seconds",
			Help: "When a " + mode.what + " of the newest backup last passed (Unix time)."}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_" + n + "_timestamp_seconds",
			Help: "When the last " + mode.what + " ended (Unix time)."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_last_" + n + "_duration_seconds",
			Help: "How long the last " + mode.what + " took."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_" + n + "_runs_total",
			Help: mode.plural + " by result: success; failure (the backup is damaged: exit 4); error (not judged: storage, key, ...)."}, []string{"result"}),
	}
	reg.MustRegister(d.lastSuccess, d.lastRun, d.duration, d.runs)
	for _, r := range []string{checkSuccess, checkFailure, checkError} {
		d.runs.WithLabelValues(r)
	}
	return d
}

// run checks once shortly after start (so a new deployment reports soon)
// and then every d.every, until ctx ends.
func (d *checkLoop) run(ctx context.Context) {
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

func (d *checkLoop) once(ctx context.Context) {
	self := d.exe
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			d.log.Error(d.mode.what+": cannot find this program", "error", err)
			d.runs.WithLabelValues(checkError).Inc()
			return
		}
		self = exe
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, self, append(append([]string(nil), d.mode.args...), d.args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	took := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return // shutting down: not a result
	}
	d.duration.Set(took.Seconds())
	d.lastRun.SetToCurrentTime()
	output := strings.TrimSpace(out.String())
	code := 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	}
	switch result := checkResult(code); {
	case code == exitNoBackup:
		d.log.Info(d.mode.what + ": no backup yet")
	case result == checkSuccess:
		d.runs.WithLabelValues(checkSuccess).Inc()
		d.lastSuccess.SetToCurrentTime()
		d.log.Info(d.mode.what+" passed", "seconds", took.Seconds(), "result", output)
	case result == checkFailure:
		d.runs.WithLabelValues(checkFailure).Inc()
		d.log.Error(d.mode.what+" FAILED: the newest backup is damaged", "exit_code", code, "output", output)
	default:
		d.runs.WithLabelValues(checkError).Inc()
		d.log.Error(d.mode.what+" could not check the newest backup (not judged)", "exit_code", code, "error", err, "output", output)
	}
}

// checkResult maps the exit code of 'verify' to a result: only an
// integrity failure (exit 4) says the backup is damaged.
func checkResult(code int) string {
	switch code {
	case exitOK:
		return checkSuccess
	case exitIntegrity:
		return checkFailure
	}
	return checkError
}

// checkArgs are the verify flags that reach the same repository with the
// same keys and storage retry policy as the agent.
func checkArgs(g *Globals, identities []string) []string {
	args := []string{"--repo", g.Repo, "--cluster", g.Cluster}
	if g.RcloneConfig != "" {
		args = append(args, "--rclone-config", g.RcloneConfig)
	}
	if g.StorageTimeout > 0 {
		args = append(args, "--storage-timeout", g.StorageTimeout.String())
	}
	if g.StorageStall > 0 {
		args = append(args, "--storage-stall-timeout", g.StorageStall.String())
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
