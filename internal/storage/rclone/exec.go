package rclone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// rclone exit codes (rclone docs, "Exit code").
const (
	exitDirNotFound  = 3 // directory not found
	exitFileNotFound = 4 // file not found
	exitTemporary    = 5 // temporary error, more retries might fix it
	exitNoTransfer   = 9 // no files transferred (with --error-on-no-transfer)
)

// killDelay is how long a process has after SIGTERM (to abort uploads)
// before SIGKILL.
const killDelay = 10 * time.Second

// stderrKeep is how much of rclone's stderr is kept for error messages.
const stderrKeep = 16 << 10

// globalFlags go before every subcommand.
var globalFlags = []string{
	"--ask-password=false", // never prompt for an encrypted config's password
	"--retries", "1",       // storage.Wrap retries every operation
	"--low-level-retries", "2",
	"--contimeout", "15s",
	"--use-server-modtime",
}

// cmdError is a failed rclone command.
type cmdError struct {
	sub  string // subcommand
	code int    // exit code; -1 when killed by a signal
	msg  string // from stderr, cleaned and redacted
}

func (e *cmdError) Error() string {
	msg := e.msg
	if msg == "" {
		msg = "no error message"
	}
	if e.code < 0 {
		return fmt.Sprintf("rclone %s: killed: %s", e.sub, msg)
	}
	return fmt.Sprintf("rclone %s: %s (exit code %d)", e.sub, msg, e.code)
}

// exitCode returns the exit code of a failed rclone command in err, or 0.
func exitCode(err error) int {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0
}

// proc is a running rclone command.
type proc struct {
	r      *Remote
	ctx    context.Context
	sub    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // when started with pipeIn
	stdout io.ReadCloser  // when started with pipeOut
	stderr *tailBuffer

	killOnce sync.Once
	killer   *time.Timer
}

// startOpts say how to connect a command's standard streams.
type startOpts struct {
	stdin   io.Reader // fixed input; nil is /dev/null
	pipeIn  bool      // give proc.stdin instead
	pipeOut bool      // give proc.stdout; otherwise stdout is discarded
}

// start runs "rclone <global flags> sub args...". ctx cancellation sends
// SIGTERM, then SIGKILL after killDelay.
func (r *Remote) start(ctx context.Context, o startOpts, sub string, args ...string) (*proc, error) {
	argv := make([]string, 0, len(r.global)+1+len(args))
	argv = append(argv, r.global...)
	argv = append(argv, sub)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, r.bin, argv...)
	cmd.Env = r.env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killDelay
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{r: r, ctx: ctx, sub: sub, cmd: cmd, stderr: &tailBuffer{max: stderrKeep}}
	cmd.Stderr = p.stderr
	var err error
	switch {
	case o.pipeIn:
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("rclone %s: %w", sub, err)
		}
	case o.stdin != nil:
		cmd.Stdin = o.stdin
	}
	if o.pipeOut {
		if p.stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("rclone %s: %w", sub, err)
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rclone %s: start %s: %w", sub, r.bin, err)
	}
	return p, nil
}

// terminate asks rclone to stop (SIGTERM lets it abort a multipart upload)
// and kills it if it has not exited after killDelay.
func (p *proc) terminate() {
	p.killOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		p.killer = time.AfterFunc(killDelay, func() { _ = p.cmd.Process.Kill() })
	})
}

// wait waits for the command and returns nil, an error wrapping ctx's error
// when ctx ended, or a *cmdError.
func (p *proc) wait() error {
	err := p.cmd.Wait()
	p.killOnce.Do(func() {}) // orders a concurrent terminate before reading killer
	if p.killer != nil {
		p.killer.Stop()
	}
	if h := p.r.onExit; h != nil {
		h(p.sub, p.cmd.ProcessState)
	}
	if err == nil {
		return nil
	}
	if ctxErr := p.ctx.Err(); ctxErr != nil {
		return fmt.Errorf("rclone %s: %w", p.sub, ctxErr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		// I/O error copying stdin or stdout (exec.ErrWaitDelay, ...).
		return fmt.Errorf("rclone %s: %w", p.sub, err)
	}
	code := ee.ExitCode()
	msg := p.r.redact(cleanStderr(p.stderr.String()))
	if code < 0 && msg == "" {
		msg = ee.String()
	}
	return &cmdError{sub: p.sub, code: code, msg: msg}
}

// output runs a command to completion and returns its standard output.
func (r *Remote) output(ctx context.Context, stdin io.Reader, sub string, args ...string) ([]byte, error) {
	p, err := r.start(ctx, startOpts{stdin: stdin, pipeOut: true}, sub, args...)
	if err != nil {
		return nil, err
	}
	out, readErr := io.ReadAll(io.LimitReader(p.stdout, 16<<20))
	if readErr == nil {
		// Discard anything beyond the limit so that rclone can finish.
		_, readErr = io.Copy(io.Discard, p.stdout)
	}
	if err := p.wait(); err != nil {
		return out, err
	}
	if readErr != nil {
		return out, fmt.Errorf("rclone %s: read output: %w", sub, readErr)
	}
	return out, nil
}

// run runs a command to completion, discarding its standard output.
func (r *Remote) run(ctx context.Context, sub string, args ...string) error {
	p, err := r.start(ctx, startOpts{}, sub, args...)
	if err != nil {
		return err
	}
	return p.wait()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// logPrefix matches the time stamp rclone puts before every log line.
var logPrefix = regexp.MustCompile(`^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? `)

// cleanStderr reduces rclone's log output to the message that says why it
// failed: the last "Failed to ..." entry (rclone's final word), else the last
// entry that is not a NOTICE or INFO, else the last entry. Lines without a
// time stamp continue the previous entry ("caused by: ...").
func cleanStderr(s string) string {
	var entries []string
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if e, ok := jsonLogEntry(line); ok {
			entries = append(entries, e)
		} else if loc := logPrefix.FindStringIndex(line); loc != nil {
			entries = append(entries, line[loc[1]:])
		} else if len(entries) > 0 {
			entries[len(entries)-1] += " " + line
		} else {
			entries = append(entries, line)
		}
	}
	pick := ""
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e, "Failed to "):
			pick = e
		case strings.HasPrefix(e, "NOTICE:"), strings.HasPrefix(e, "INFO"), strings.HasPrefix(e, "DEBUG"):
		case !strings.HasPrefix(pick, "Failed to "):
			pick = e
		}
	}
	if pick == "" && len(entries) > 0 {
		pick = entries[len(entries)-1]
	}
	pick = strings.TrimPrefix(pick, "ERROR : ")
	const maxLen = 2000
	if len(pick) > maxLen {
		pick = pick[:maxLen] + "…"
	}
	return pick
}

// jsonLogEntry converts a line of rclone's --use-json-log output to the
// form of its text log ("NOTICE: object: message", "object: message" for
// errors).
func jsonLogEntry(line string) (string, bool) {
	if !strings.HasPrefix(line, "{") {
		return "", false
	}
	var e struct {
		Level  string `json:"level"`
		Msg    string `json:"msg"`
		Object string `json:"object"`
	}
	if json.Unmarshal([]byte(line), &e) != nil || e.Level == "" {
		return "", false
	}
	msg := strings.Join(strings.Fields(e.Msg), " ")
	if e.Object != "" {
		msg = e.Object + ": " + msg
	}
	switch strings.ToLower(e.Level) {
	case "error", "critical", "alert", "emergency", "fatal":
		return msg, true
	default:
		return strings.ToUpper(e.Level) + ": " + msg, true
	}
}

// transientMarkers are (lower-case) fragments of rclone messages for
// conditions that retrying may fix: network failures, timeouts, server
// errors and throttling.
var transientMarkers = []string{
	"connection refused",
	"connection reset",
	"broken pipe",
	"i/o timeout",
	"tls handshake timeout",
	"timeout awaiting",
	"timed out",
	"context deadline exceeded",
	"unexpected eof",
	": eof",               // the connection closed before a response (Go's net/http)
	"send request failed", // aws-sdk-go's RequestError: no answer came
	"server misbehaving",
	"temporary failure in name resolution",
	"network is unreachable",
	"no route to host",
	"status code: 500", "status code: 502", "status code: 503", "status code: 504",
	"internalerror",
	"serviceunavailable",
	"slowdown",
	"throttl",
	"toomanyrequests", "too many requests", "status code: 429",
	"requesttimeout",
	"rate limit",
	"error 500", "error 502", "error 503", "error 504",
	"http error 5",
	"internal server error", "bad gateway", "service unavailable", "gateway timeout",
}

// permanentMarkers override transientMarkers: TLS and name resolution
// problems do not go away by retrying.
var permanentMarkers = []string{
	"x509:",
	"certificate",
	"no such host",
	"server gave http response to https client",
	"loadcustomcabundleerror",
	"didn't find section in config file",
}

// classify marks transient rclone failures storage.Retryable. Context
// errors and other errors are returned unchanged.
func classify(err error) error {
	var ce *cmdError
	if err == nil || !errors.As(err, &ce) {
		return err
	}
	msg := strings.ToLower(ce.msg)
	for _, m := range permanentMarkers {
		if strings.Contains(msg, m) {
			return err
		}
	}
	if ce.code == exitTemporary {
		return storage.Retryable(err)
	}
	for _, m := range transientMarkers {
		if strings.Contains(msg, m) {
			return storage.Retryable(err)
		}
	}
	return err
}

// envWithout returns env without the variable key.
func envWithout(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// envValue returns the value of key in env (the last one wins, as in exec).
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
