package main

// Process helpers, adapted from ../proc.go (package main there too, so it
// cannot be imported).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
)

// daemon is a long-running child: an etcd member or an agent.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when it has exited
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// daemons tracks every child still running, so that all are killed on exit,
// also after an error or an interrupt.
var daemons = struct {
	sync.Mutex
	m map[*daemon]bool
}{m: map[*daemon]bool{}}

// procGroup is a process group that daemons join, so that one kill(2) of
// the group SIGKILLs all of them at the same instant.
type procGroup struct{ pgid int }

// kill SIGKILLs every process of the group with one kill(2).
func (g *procGroup) kill() error {
	if g == nil || g.pgid == 0 {
		return errors.New("empty process group")
	}
	return syscall.Kill(-g.pgid, syscall.SIGKILL)
}

// startDaemon starts bin with args, output appended to logPath, in process
// group pg (nil: ours; the first daemon of an empty group leads it).
func startDaemon(pg *procGroup, name, logPath, bin string, args ...string) (*daemon, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = benchkit.ChildEnv()
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if pg != nil {
		cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pgid = true, pg.pgid
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if pg != nil && pg.pgid == 0 {
		pg.pgid = cmd.Process.Pid
	}
	d := &daemon{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	daemons.Lock()
	daemons.m[d] = true
	daemons.Unlock()
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// kill SIGKILLs d and waits for it.
func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
}

// terminate sends SIGTERM and waits up to grace, then kills. It reports
// whether d exited by itself.
func (d *daemon) terminate(grace time.Duration) bool {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if d.wait(grace) {
		return true
	}
	d.kill()
	return false
}

func (d *daemon) wait(within time.Duration) bool {
	select {
	case <-d.done:
		daemons.Lock()
		delete(daemons.m, d)
		daemons.Unlock()
		return true
	case <-time.After(within):
		return false
	}
}

// killAllDaemons kills every child still tracked.
func killAllDaemons() {
	daemons.Lock()
	var ds []*daemon
	for d := range daemons.m {
		ds = append(ds, d)
	}
	daemons.Unlock()
	for _, d := range ds {
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
	}
	for _, d := range ds {
		d.wait(10 * time.Second)
	}
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n" + path + " (end):\n  " + strings.Join(lines, "\n  ")
}

// procStatusKiB returns a "kB" field of /proc/<pid>/status (VmHWM, VmRSS)
// in bytes, or -1.
func procStatusKiB(pid int, key string) int64 {
	v := benchkit.ProcField(fmt.Sprintf("/proc/%d/status", pid), key)
	var kb int64
	if _, err := fmt.Sscanf(v, "%d kB", &kb); err != nil {
		return -1
	}
	return kb << 10
}

// resetHWM resets the peak RSS (VmHWM) of pid to its current RSS, so that a
// later VmHWM is the peak of what came after (Linux's clear_refs "5").
func resetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// sample is one measured run of a command.
type sample struct {
	Wall   time.Duration
	MaxRSS int64         // bytes, peak RSS of the command
	CPU    time.Duration // its user+sys
}

// spawnEnv names the file where the spawner (../spawner) writes the rusage
// of the command it ran.
const spawnEnv = "ETCD_BACKUP_BENCH_SPAWN_RESULT"

type spawnResult struct {
	WallNS, UtimeNS, StimeNS, MaxRSSKiB int64
}

var (
	// measureEnv is added to the environment of measured commands (the S3
	// credentials of the scale section).
	measureEnv []string
	spawnerBin string
	spawnSeq   atomic.Int64
)

// measure runs one command to completion through the spawner (see
// ../spawner: a child of this large process would report this process's
// peak RSS as its own), bounded by timeout, and returns its wall time, peak
// RSS and CPU time, and its stdout and stderr.
func measure(ctx context.Context, timeout time.Duration, bin string, args ...string) (sample, string, string, error) {
	resFile := filepath.Join(os.TempDir(), fmt.Sprintf("etcd-backup-bench-journal-%d-%d.json", os.Getpid(), spawnSeq.Add(1)))
	defer os.Remove(resFile)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, spawnerBin, append([]string{bin}, args...)...)
	cmd.Env = append(benchkit.ChildEnv(measureEnv...), spawnEnv+"="+resFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	s := sample{Wall: time.Since(start)}
	var res spawnResult
	if b, rerr := os.ReadFile(resFile); rerr == nil && json.Unmarshal(b, &res) == nil {
		s = sample{Wall: time.Duration(res.WallNS), MaxRSS: res.MaxRSSKiB << 10, CPU: time.Duration(res.UtimeNS + res.StimeNS)}
	} else if err == nil {
		err = fmt.Errorf("spawner wrote no result: %v", rerr)
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return s, stdout.String(), stderr.String(), fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err,
			tailString(stdout.String(), 20), tailString(stderr.String(), 20))
	}
	return s, stdout.String(), stderr.String(), nil
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
