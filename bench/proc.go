package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sample is one measured run of one or more child processes.
type sample struct {
	Wall      time.Duration
	MaxRSS    int64         // bytes, largest peak RSS of the processes
	CPU       time.Duration // user+sys of the client processes
	LeaderCPU time.Duration // user+sys the etcd leader spent meanwhile (0 if not tracked)
}

// then combines two samples of processes run one after the other.
func (s sample) then(o sample) sample {
	return sample{
		Wall:      s.Wall + o.Wall,
		MaxRSS:    max(s.MaxRSS, o.MaxRSS),
		CPU:       s.CPU + o.CPU,
		LeaderCPU: s.LeaderCPU + o.LeaderCPU,
	}
}

// tailBuffer keeps the last few KiB written to it, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return ""
	}
	return "\n  output: " + strings.ReplaceAll(s, "\n", "\n  ")
}

// spawnEnv names the file where the spawner (bench/spawner) writes the
// rusage of the command it ran.
const spawnEnv = "ETCD_BACKUP_BENCH_SPAWN_RESULT"

// spawnResult is what the spawner writes.
type spawnResult struct {
	WallNS, UtimeNS, StimeNS, MaxRSSKiB int64
}

// spawnerBin is the spawner built at set-up.
var spawnerBin string

var spawnSeq atomic.Int64

// measure runs one command to completion, bounded by timeout, through the
// spawner (see bench/spawner for why), and returns its wall time, peak RSS and CPU time (from its
// rusage).
func measure(ctx context.Context, timeout time.Duration, env []string, bin string, args ...string) (sample, error) {
	resFile := filepath.Join(os.TempDir(), fmt.Sprintf("etcd-backup-bench-%d-%d.json", os.Getpid(), spawnSeq.Add(1)))
	defer os.Remove(resFile)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, spawnerBin, append([]string{bin}, args...)...)
	cmd.Env = append(append([]string(nil), env...), spawnEnv+"="+resFile)
	var out tailBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	s := sample{Wall: time.Since(start)}
	var res spawnResult
	if b, rerr := os.ReadFile(resFile); rerr == nil && json.Unmarshal(b, &res) == nil {
		s = sample{Wall: time.Duration(res.WallNS), MaxRSS: res.MaxRSSKiB * 1024, CPU: time.Duration(res.UtimeNS + res.StimeNS)}
	} else if err == nil {
		err = fmt.Errorf("spawner wrote no result: %v", rerr)
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return s, fmt.Errorf("%s %s: %v%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return s, nil
}

// procs tracks long-running child processes (etcd members, versitygw) so
// that they are killed on exit, also after an error or an interrupt.
var procs = struct {
	sync.Mutex
	m map[*exec.Cmd]chan struct{}
}{m: map[*exec.Cmd]chan struct{}{}}

// startDaemon starts cmd, writing its output to logPath, and returns a
// channel closed when it exits.
func startDaemon(cmd *exec.Cmd, logPath string) (chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	procs.Lock()
	procs.m[cmd] = done
	procs.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done, nil
}

// stopDaemon kills a process started by startDaemon and waits for it.
func stopDaemon(cmd *exec.Cmd) {
	procs.Lock()
	done, ok := procs.m[cmd]
	delete(procs.m, cmd)
	procs.Unlock()
	if !ok {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// stopAllDaemons kills every process still tracked.
func stopAllDaemons() {
	procs.Lock()
	var cmds []*exec.Cmd
	for c := range procs.m {
		cmds = append(cmds, c)
	}
	procs.Unlock()
	for _, c := range cmds {
		stopDaemon(c)
	}
}

// logTail returns the end of a log file, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return "\n" + path + ":\n" + string(b)
}

// dirSize returns the total size of the regular files under dir and the
// size of the largest one.
func dirSize(dir string) (total, largest int64) {
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
			largest = max(largest, fi.Size())
		}
		return nil
	})
	return total, largest
}
