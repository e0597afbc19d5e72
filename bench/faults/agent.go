package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/internal/faultproxy"

	"github.com/dustin/go-humanize"
)

// keepLast is the retention of the agent measurement.
const keepLast = 2

// traffic is what the proxy counted over a span: one agent cycle, or one
// command.
type traffic struct {
	GetBytes int64            // response body bytes of GETs: bytes read from storage (listings included)
	Sent     int64            // every response body byte sent to the client
	Received int64            // request body bytes: uploads
	Requests int64            // every request
	ByMethod map[string]int64 // requests by method
	Wall     time.Duration
}

// sub is the traffic between two readings of the proxy's counters.
func sub(after, before faultproxy.Stats, wall time.Duration) traffic {
	t := traffic{
		GetBytes: after.GetBodyBytes - before.GetBodyBytes,
		Sent:     after.BytesSent - before.BytesSent,
		Received: after.BytesReceived - before.BytesReceived,
		Requests: after.Requests - before.Requests,
		ByMethod: map[string]int64{},
		Wall:     wall,
	}
	for m, n := range after.ByMethod {
		if d := n - before.ByMethod[m]; d != 0 {
			t.ByMethod[m] = d
		}
	}
	return t
}

// agentRun is one agent measured over several cycles.
type agentRun struct {
	Label    string // "after" or "before"
	Rev      string // git revision of the binary ("" for the working tree)
	Cycles   []traffic
	Left     int   // backups in the repository after the run
	Payload  int64 // the largest payload in the repository
	Failed   float64
	HookFail float64
	Err      string
}

// pruneRun is one standalone prune through the proxy, right after a new
// backup, as the agent's retention runs.
type pruneRun struct {
	ReadBack      bool
	T             traffic
	Before, After int // backups before and after
	OK            bool
	Why           string
}

// measureAgents measures the bytes and requests of agent cycles: the agent
// of the working tree (after), standalone prunes (plain and --read-back) on
// its repository, and the agent of -before-rev (before).
func (b *bench) measureAgents(ctx context.Context) error {
	if err := b.fillTo(ctx, b.opt.agentSize); err != nil {
		return err
	}
	after := b.runAgent(ctx, "after", "", b.eb, "agent-after")
	b.agents = append(b.agents, after)
	if err := ctx.Err(); err != nil {
		return err
	}
	if after.Err == "" {
		if err := b.measurePrunes(ctx, "agent-after"); err != nil {
			return err
		}
	}
	if b.ebBefore != "" {
		b.agents = append(b.agents, b.runAgent(ctx, "before", b.opt.beforeRev, b.ebBefore, "agent-before"))
	}
	return ctx.Err()
}

// runAgent runs `agent --interval I --keep-last 2` of bin against the proxy
// (no faults) into prefix, waits for the warm-up cycles, then records the
// proxy's counters at the end of each cycle (when
// etcd_backup_runs_total{result="success"} goes up: after the backup and
// its retention).
func (b *bench) runAgent(ctx context.Context, label, rev, bin, prefix string) *agentRun {
	ar := &agentRun{Label: label, Rev: rev}
	fail := func(err error) *agentRun {
		ar.Err = err.Error()
		b.fail("agent "+label, err)
		return ar
	}
	b.proxy.Set(faultproxy.Faults{})
	logf("agent %s: --interval %v --keep-last %d, %d warm-up + %d measured cycles", label, b.opt.interval, keepLast, b.opt.warmup, b.opt.cycles)
	var d *daemon
	var url string
	var err error
	for range 3 { // a lost port race: another port
		port, perr := benchkit.FreePort()
		if perr != nil {
			return fail(perr)
		}
		url = fmt.Sprintf("http://127.0.0.1:%d", port)
		d, err = startDaemon("agent-"+label, filepath.Join(b.tmp, "agent-"+label+".log"), b.s3.Env(), bin,
			"agent", "--listen", strings.TrimPrefix(url, "http://"),
			"--repo", b.s3.URL(b.proxy.Addr, prefix), "--endpoints", b.etcd.clientURL,
			"--interval", b.opt.interval.String(), "--keep-last", strconv.Itoa(keepLast))
		if err != nil {
			return fail(err)
		}
		if err = waitHTTP(ctx, d, url+"/metrics"); err == nil {
			break
		}
		d.kill()
		d = nil
	}
	if d == nil {
		return fail(err)
	}
	defer func() {
		if !d.terminate(30 * time.Second) {
			logf("agent %s did not stop within 30s of SIGTERM; killed", label)
		}
		if n, payload, err := b.s3.Backups(context.Background(), prefix); err == nil {
			ar.Left, ar.Payload = n, payload
		}
	}()

	// Generous: a cycle that overruns its slot moves to the next one.
	deadline := time.Now().Add(time.Duration(b.opt.warmup+b.opt.cycles+3)*2*b.opt.interval + time.Minute)
	count, prev := -1.0, faultproxy.Stats{}
	prevAt := time.Now()
	for len(ar.Cycles) < b.opt.cycles {
		if d.exited() {
			return fail(fmt.Errorf("agent exited%s", logTail(d.logPath, 15)))
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%d of %d cycles within the time allowed%s", len(ar.Cycles), b.opt.cycles, logTail(d.logPath, 15)))
		}
		m, err := scrape(url + "/metrics")
		if err == nil {
			st := b.proxy.Stats() // right after the count, before the next cycle can start
			n := m[`etcd_backup_runs_total{result="success"}`]
			ar.Failed = m[`etcd_backup_runs_total{result="failure"}`]
			ar.HookFail = m[`etcd_backup_hook_failures_total{hook="after_backup"}`]
			switch {
			case n < float64(b.opt.warmup):
			case count < 0:
				count, prev, prevAt = n, st, time.Now()
			case n > count:
				if n > count+1 {
					logf("agent %s: %v cycles ended between two looks; counted as one span of %v cycles", label, n-count, n-count)
				}
				t := sub(st, prev, time.Since(prevAt))
				for k := float64(0); k < n-count; k++ { // the same average for each
					ar.Cycles = append(ar.Cycles, scale(t, 1/(n-count)))
				}
				logf("agent %s cycle %d: %s read from storage (GET bodies), %s uploaded, requests %s", label, len(ar.Cycles),
					humanize.IBytes(uint64(t.GetBytes)), humanize.IBytes(uint64(t.Received)), methods(t.ByMethod))
				count, prev, prevAt = n, st, time.Now()
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	if len(ar.Cycles) > b.opt.cycles {
		ar.Cycles = ar.Cycles[:b.opt.cycles]
	}
	return ar
}

// scale divides t's counts by 1/f (f = 1/cycles in one span).
func scale(t traffic, f float64) traffic {
	if f == 1 {
		return t
	}
	out := traffic{GetBytes: int64(float64(t.GetBytes) * f), Sent: int64(float64(t.Sent) * f), Received: int64(float64(t.Received) * f),
		Requests: int64(float64(t.Requests) * f), ByMethod: map[string]int64{}, Wall: time.Duration(float64(t.Wall) * f)}
	for m, n := range t.ByMethod {
		out.ByMethod[m] = int64(float64(n) * f)
	}
	return out
}

// measurePrunes runs `prune --keep-last 2` and `prune --read-back
// --keep-last 2` through the proxy on prefix, alternating, each right after
// a new backup taken directly (not through the proxy): the repository then
// holds 3 backups and prune removes one, as in an agent cycle.
func (b *bench) measurePrunes(ctx context.Context, prefix string) error {
	for i := range b.opt.pruneRuns {
		for _, readBack := range rotate([]bool{false, true}, i) {
			if _, err := mustRun(ctx, b.opt.runTimeout, b.s3.Env(), b.eb, "snapshot", "--repo", b.s3.URL(b.s3.Endpoint, prefix),
				"--endpoints", b.etcd.clientURL, "--quiet"); err != nil {
				return fmt.Errorf("backup before prune: %w", err)
			}
			pr := &pruneRun{ReadBack: readBack}
			var err error
			if pr.Before, _, err = b.s3.Backups(ctx, prefix); err != nil {
				return err
			}
			args := []string{"prune", "--repo", b.s3.URL(b.proxy.Addr, prefix), "--keep-last", strconv.Itoa(keepLast), "--quiet"}
			if readBack {
				args = append(args, "--read-back")
			}
			b.proxy.Set(faultproxy.Faults{})
			before := b.proxy.Stats()
			res, err := runCmd(ctx, b.opt.runTimeout, b.s3.Env(), b.eb, args...)
			if err != nil {
				return err
			}
			pr.T = sub(b.proxy.Stats(), before, res.Wall)
			pr.OK = res.ok()
			if !pr.OK {
				pr.Why = res.why()
				b.fail(strings.Join(args[:1], " ")+" --read-back="+strconv.FormatBool(readBack), fmt.Errorf("%s", pr.Why))
			}
			if pr.After, _, err = b.s3.Backups(ctx, prefix); err != nil {
				return err
			}
			b.prunes = append(b.prunes, pr)
			logf("prune (read-back %v): %d → %d backups, %s read from storage, requests %s", readBack, pr.Before, pr.After,
				humanize.IBytes(uint64(pr.T.GetBytes)), methods(pr.T.ByMethod))
		}
	}
	return nil
}

// waitHTTP waits until url answers (any status) or d exits.
func waitHTTP(ctx context.Context, d *daemon, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d.exited() {
			return fmt.Errorf("%s exited at start%s", d.name, logTail(d.logPath, 15))
		}
		if resp, err := httpClient.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving %s within 30s%s", d.name, url, logTail(d.logPath, 15))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape reads a Prometheus text exposition: series (name or
// name{labels}) -> value.
func scrape(url string) (map[string]float64, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// methodOrder is the order of methods in logs and tables.
var methodOrder = []string{"GET", "HEAD", "PUT", "POST", "DELETE"}

func methods(m map[string]int64) string {
	var parts []string
	for _, k := range methodOrder {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	for k, v := range m {
		if !slices.Contains(methodOrder, k) && v != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
