package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/internal/faultproxy"

	"github.com/dustin/go-humanize"
)

// faultsAt is error level (percent) as proxy faults: level% of requests
// answered 503 SlowDown, level/2 % of response bodies cut.
func faultsAt(level float64, seed int64) faultproxy.Faults {
	return faultproxy.Faults{Error503: level / 100, CutBody: level / 200, Seed: seed}
}

// transferRun is one snapshot or restore through the proxy.
type transferRun struct {
	Op    string // "snapshot" or "restore"
	Level float64
	Run   int
	Seed  int64
	Res   result
	Stats faultproxy.Stats // the proxy's counters over the command
	Load  float64          // 1-minute load average just before
	OK    bool
	Why   string // when not OK
}

// restoreCluster is the --initial-cluster of the restored member: the
// address only needs to be valid, nothing listens.
const restoreCluster = "m1=http://127.0.0.1:2380"

// measureTransfers measures etcd-backup snapshot and restore through the
// proxy at every error level, runs × levels × {snapshot, restore}, the
// order of the levels rotated between runs.
func (b *bench) measureTransfers(ctx context.Context) error {
	if err := b.fillTo(ctx, b.opt.size); err != nil {
		return err
	}
	ep := b.etcd.clientURL
	db, err := b.etcd.dbSize(ctx)
	if err != nil {
		return err
	}
	// The backup every restore reads, written directly (not through the
	// proxy).
	r, err := mustRun(ctx, b.opt.runTimeout, b.s3.Env(), b.eb, "snapshot", "--repo", b.s3.URL(b.s3.Endpoint, "ref"), "--endpoints", ep, "--quiet")
	if err != nil {
		return fmt.Errorf("reference backup: %w", err)
	}
	_, stored, err := b.s3.Backups(ctx, "ref")
	if err != nil {
		return err
	}
	b.refBackup = backupInfo{ID: r.lastLine(), DBSize: db, Stored: stored}
	logf("reference backup %s: db %s, stored %s", b.refBackup.ID, humanize.IBytes(uint64(db)), humanize.IBytes(uint64(stored)))

	restoreDir := filepath.Join(b.tmp, "restore")
	for run := range b.opt.runs {
		for _, level := range rotate(b.opt.levels, run) {
			seed := int64(level*1000) + int64(run)*10 + 1
			if err := b.snapshotRun(ctx, level, run, seed); err != nil {
				return err
			}
			if err := b.restoreRun(ctx, level, run, seed+1, restoreDir); err != nil {
				return err
			}
		}
	}
	return nil
}

// through runs one etcd-backup command with the proxy set to level, and
// returns its result and the proxy's counters over it.
func (b *bench) through(ctx context.Context, level float64, seed int64, args ...string) (result, faultproxy.Stats, float64, error) {
	syscall.Sync() // no writeback of the previous command in this one
	load := benchkit.LoadAvg()
	b.proxy.Set(faultsAt(level, seed))
	b.proxy.ResetStats()
	res, err := runCmd(ctx, b.opt.runTimeout, b.s3.Env(), b.eb, args...)
	st := b.proxy.Stats()
	b.proxy.Set(faultproxy.Faults{})
	return res, st, load, err
}

func (b *bench) snapshotRun(ctx context.Context, level float64, run int, seed int64) error {
	prefix := fmt.Sprintf("snap-%g-%d", level, run)
	res, st, load, err := b.through(ctx, level, seed, "snapshot", "--repo", b.s3.URL(b.proxy.Addr, prefix), "--endpoints", b.etcd.clientURL, "--quiet")
	if err != nil {
		return err
	}
	tr := &transferRun{Op: "snapshot", Level: level, Run: run, Seed: seed, Res: res, Stats: st, Load: load, OK: res.ok()}
	if !tr.OK {
		tr.Why = res.why()
	} else {
		// A success must have stored an intact backup: read it all back
		// directly (not through the proxy) with every check of verify.
		id := res.lastLine()
		vr, err := runCmd(ctx, b.opt.runTimeout, b.s3.Env(), b.eb, "verify", id, "--repo", b.s3.URL(b.s3.Endpoint, prefix), "--quiet")
		if err != nil {
			return err
		}
		if !vr.ok() {
			tr.OK = false
			tr.Why = fmt.Sprintf("snapshot exited 0 with backup %q, but `verify` of it (directly, no faults) failed: %s", id, vr.why())
		}
	}
	b.transfers = append(b.transfers, tr)
	b.logRun(tr)
	if err := b.s3.RemovePrefix(ctx, prefix); err != nil {
		return fmt.Errorf("clean up %s: %w", prefix, err)
	}
	return nil
}

func (b *bench) restoreRun(ctx context.Context, level float64, run int, seed int64, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	res, st, load, err := b.through(ctx, level, seed, "restore", "latest", "--repo", b.s3.URL(b.proxy.Addr, "ref"),
		"--data-dir", filepath.Join(dir, "m1.etcd"), "--name", "m1", "--initial-cluster", restoreCluster, "--quiet")
	if err != nil {
		return err
	}
	tr := &transferRun{Op: "restore", Level: level, Run: run, Seed: seed, Res: res, Stats: st, Load: load, OK: res.ok()}
	if !tr.OK {
		tr.Why = res.why()
	}
	b.transfers = append(b.transfers, tr)
	b.logRun(tr)
	return nil
}

func (b *bench) logRun(tr *transferRun) {
	outcome := "ok"
	if !tr.OK {
		outcome = "FAILED: " + tr.Why
	}
	logf("%s at %g%% run %d: %.2fs, %d requests, %d 503s, %d cut; %s", tr.Op, tr.Level, tr.Run+1, tr.Res.Wall.Seconds(),
		tr.Stats.Requests, tr.Stats.Injected503, tr.Stats.Cut, outcome)
}

// rotate returns v rotated left by r, so that every level runs in every
// position as often, spreading machine noise.
func rotate[T any](v []T, r int) []T {
	out := make([]T, 0, len(v))
	for i := range v {
		out = append(out, v[(i+r)%len(v)])
	}
	return out
}
