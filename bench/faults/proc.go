package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// daemon is a long-running child: etcd, versitygw or an agent.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when it has exited
}

// daemons tracks every child still running, so that all are killed on
// exit, also after an error or an interrupt.
var daemons = struct {
	sync.Mutex
	m map[*daemon]bool
}{m: map[*daemon]bool{}}

// startDaemon starts bin with args in env, output appended to logPath. The
// child dies with this process (Pdeathsig).
func startDaemon(name, logPath string, env []string, bin string, args ...string) (*daemon, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
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

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) wait(within time.Duration) bool {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-d.done:
		daemons.Lock()
		delete(daemons.m, d)
		daemons.Unlock()
		return true
	case <-t.C:
		return false
	}
}

// kill SIGKILLs d and waits for it.
func (d *daemon) kill() {
	if d == nil {
		return
	}
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

// killAllDaemons kills every child still tracked.
func killAllDaemons() {
	daemons.Lock()
	var ds []*daemon
	for d := range daemons.m {
		ds = append(ds, d)
	}
	daemons.Unlock()
	for _, d := range ds {
		d.kill()
	}
}

// logTail returns the last n lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return "\n" + path + " (end):\n  " + strings.ReplaceAll(tailLines(string(b), n), "\n", "\n  ")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// result is one finished command.
type result struct {
	Wall     time.Duration
	Exit     int    // exit code; -1 when killed (timeout) or not started
	TimedOut bool   // killed after the command timeout
	Stdout   string // its standard output
	Stderr   string // the end of its standard error
}

func (r result) ok() bool { return r.Exit == 0 && !r.TimedOut }

// lastLine is the last non-empty line of stdout (etcd-backup snapshot
// prints the new backup's ID there).
func (r result) lastLine() string {
	return strings.TrimSpace(tailLines(strings.TrimSpace(r.Stdout), 1))
}

// why says in one line why a command failed.
func (r result) why() string {
	if r.TimedOut {
		return fmt.Sprintf("killed after the %v command timeout", r.Wall.Round(time.Second))
	}
	msg := strings.TrimSpace(tailLines(strings.TrimSpace(r.Stderr), 2))
	return fmt.Sprintf("exit %d: %s", r.Exit, strings.ReplaceAll(msg, "\n", " ⏎ "))
}

// runCmd runs bin with args in env to completion, bounded by timeout, and
// returns its wall time (start to exit), exit code and output. An error is
// returned only when the command could not be started or ctx ended; a
// command that fails or times out is a result.
func runCmd(ctx context.Context, timeout time.Duration, env []string, bin string, args ...string) (result, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{Wall: time.Since(start), Stdout: stdout.String(), Stderr: tailLines(stderr.String(), 20)}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case cctx.Err() != nil:
		r.Exit, r.TimedOut = -1, true
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	default:
		return r, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return r, nil
}

// mustRun is runCmd for set-up steps: any failure is an error.
func mustRun(ctx context.Context, timeout time.Duration, env []string, bin string, args ...string) (result, error) {
	r, err := runCmd(ctx, timeout, env, bin, args...)
	if err == nil && !r.ok() {
		err = fmt.Errorf("%s %s: %s", filepath.Base(bin), strings.Join(args, " "), r.why())
	}
	return r, err
}
