package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/retention"
	"github.com/etcd-backup/etcd-backup/internal/transfer"
)

// copyLoop keeps a second repository (agent --copy-to) a copy of the
// first: every --copy-every it copies the backups and journal objects the
// second site lacks (transfer.Mirror), and applies the agent's retention
// there after a backup was copied. It runs beside the agent's backups and
// never holds them up: a second site that is down only delays copies.
type copyLoop struct {
	every    time.Duration
	open     func(ctx context.Context) (src, dst *repo.Repo, err error)
	ids      []ageIdentity
	policy   retention.Policy
	orphan   time.Duration
	isLeader func(context.Context) bool
	log      *slog.Logger

	lastSuccess prometheus.Gauge
	runs        *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	known       map[string]bool
}

func newCopyLoop(every time.Duration, log *slog.Logger, reg prometheus.Registerer) *copyLoop {
	l := &copyLoop{every: every, log: log, known: map[string]bool{},
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_backup_copy_last_success_timestamp_seconds",
			Help: "When the second site (--copy-to) last held every backup and journal object of this one (Unix time)."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_copy_runs_total",
			Help: "Copy passes to the second site (--copy-to) by result: success, error (the second site or the source could not be read or written; retried next pass)."}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_copy_bytes_total",
			Help: "Stored bytes copied to the second site, by kind: snapshot, journal."}, []string{"kind"}),
	}
	reg.MustRegister(l.lastSuccess, l.runs, l.bytes)
	for _, r := range []string{checkSuccess, checkError} {
		l.runs.WithLabelValues(r)
	}
	for _, k := range []string{"snapshot", "journal"} {
		l.bytes.WithLabelValues(k)
	}
	return l
}

func (l *copyLoop) run(ctx context.Context) {
	t := time.NewTimer(min(l.every, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.isLeader == nil || l.isLeader(ctx) {
			l.once(ctx)
		}
		t.Reset(l.every)
	}
}

func (l *copyLoop) once(ctx context.Context) {
	src, dst, err := l.open(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.runs.WithLabelValues(checkError).Inc()
			l.log.Warn("second site: cannot open the repositories; copying next pass", "error", err)
		}
		return
	}
	defer closeRepo(src)
	defer closeRepo(dst)
	// The newest two chains: the open one, and the one just closed (its
	// roll-ups are made as the next starts).
	res, err := transfer.Mirror(ctx, src, dst, l.ids, l.known, 2, l.log)
	l.bytes.WithLabelValues("snapshot").Add(float64(res.BackupBytes))
	l.bytes.WithLabelValues("journal").Add(float64(res.JournalBytes))
	if err != nil {
		if ctx.Err() == nil {
			l.runs.WithLabelValues(checkError).Inc()
			l.log.Warn("second site: copy failed; copying the rest next pass", "error", err, "to", dst.Backend().Location())
		}
		return
	}
	if res.Backups > 0 && !l.policy.Empty() {
		rep, err := prune.Run(ctx, dst, l.policy, prune.Options{Logger: l.log, OrphanAge: l.orphan})
		if err != nil {
			l.runs.WithLabelValues(checkError).Inc()
			l.log.Warn("second site: retention failed", "error", err)
			return
		}
		for _, b := range rep.Backups {
			if b.Removed {
				delete(l.known, b.ID)
			}
		}
	}
	l.runs.WithLabelValues(checkSuccess).Inc()
	l.lastSuccess.SetToCurrentTime()
	if res.Backups > 0 || res.JournalObjects > 0 {
		l.log.Info("second site: copied", "backups", res.Backups, "journal_objects", res.JournalObjects,
			"bytes", res.BackupBytes+res.JournalBytes, "to", dst.Backend().Location())
	}
}
