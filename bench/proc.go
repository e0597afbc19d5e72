package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const modulePath = "github.com/etcd-backup/etcd-backup"

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

// procCPU returns the user+sys CPU time a running process used so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
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

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// repoRoot is the nearest directory at or above the working directory
// holding this module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the etcd-backup repository (module " + modulePath + ")")
		}
		dir = parent
	}
}

// findBin looks name up like the test suite does: in $ETCD_BACKUP_TEST_BIN,
// <repo>/.cache/test-bin, then $PATH.
func findBin(root, name string) (string, error) {
	var dirs []string
	if v := os.Getenv("ETCD_BACKUP_TEST_BIN"); v != "" {
		dirs = append(dirs, filepath.SplitList(v)...)
	}
	dirs = append(dirs, filepath.Join(root, ".cache", "test-bin"))
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s not found in %s or $PATH: run scripts/install-test-deps.sh (make bench does)", name, strings.Join(dirs, ", "))
}

// childEnv is the environment of measured commands: ours, without the
// variables that would change what they do (their own configuration, Go
// runtime tuning, cloud credentials), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ETCD_BACKUP_"), strings.HasPrefix(k, "ETCDCTL_"), strings.HasPrefix(k, "ETCDUTL_"),
			strings.HasPrefix(k, "ETCD_"), strings.HasPrefix(k, "AWS_"), strings.HasPrefix(k, "RCLONE_"),
			strings.HasPrefix(k, "VGW_"), strings.HasPrefix(k, "ROOT_"),
			k == "GOGC", k == "GOMEMLIMIT", k == "GODEBUG", k == "GOMAXPROCS":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
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

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
