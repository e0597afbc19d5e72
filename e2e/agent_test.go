package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// lockedBuffer collects a process's output; safe to read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProc is one `etcd-backup agent` process.
type agentProc struct {
	name string
	url  string // http://127.0.0.1:port
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startAgent starts `etcd-backup agent` listening on a free loopback port
// with args and env, and waits until it serves HTTP.
func startAgent(t *testing.T, name string, env []string, args ...string) *agentProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := &agentProc{name: name, url: "http://" + addr, log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"agent", "--listen", addr}, args...)...)
	// Not the test runner's systemd: NOTIFY_SOCKET only where a test sets it.
	p.cmd.Env = append(cleanEnv(), append([]string{"NOTIFY_SOCKET=", "WATCHDOG_USEC="}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", p.name, p.log.String())
		}
	})
	poll(t, 20*time.Second, "agent "+name+" serving HTTP", func() bool {
		select {
		case <-p.done:
			t.Fatalf("agent %s exited: %v\n%s", name, p.err, p.log.String())
		default:
		}
		resp, err := http.Get(p.url + "/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *agentProc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("agent %s still running %s after SIGTERM", p.name, within)
	}
	if p.err != nil {
		t.Fatalf("agent %s: %v\n%s", p.name, p.err, p.log.String())
	}
}

// poll checks cond every 20ms until it holds, failing after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type agentStatus struct {
	IsLeader *bool `json:"is_leader"`
	Healthy  bool  `json:"healthy"`
	Newest   *struct {
		ID       string    `json:"id"`
		Time     time.Time `json:"time"`
		Revision int64     `json:"revision"`
		Member   string    `json:"member"`
	} `json:"newest"`
	Runs []struct {
		Trigger, Result, Reason, ID, Error string
	} `json:"runs"`
}

func (p *agentProc) status(t *testing.T) agentStatus {
	t.Helper()
	_, body := httpGet(t, p.url+"/status")
	var s agentStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("agent %s /status: %v\n%s", p.name, err, body)
	}
	return s
}

// metrics scrapes /metrics with Prometheus's own text parser.
func (p *agentProc) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := httpGet(t, p.url+"/metrics")
	var parser expfmt.TextParser
	mf, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("agent %s /metrics: %v", p.name, err)
	}
	return mf
}

// metric returns the value of name{labels} (a histogram's count), or -1
// when there is no such series.
func metric(mf map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := mf[name]
	if f == nil {
		return -1
	}
	for _, m := range f.Metric {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

type agentListEntry struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Member   string    `json:"member"`
	Revision int64     `json:"revision"`
	Error    string    `json:"error"`
}

func listBackups(t *testing.T, env []string, repoURL string) []agentListEntry {
	t.Helper()
	var out []agentListEntry
	if err := json.Unmarshal([]byte(mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAgentSystemdNotify runs the agent binary as systemd would run
// etcd-backup-agent.service (Type=notify, WatchdogSec=): READY=1 once it
// serves HTTP, WATCHDOG=1 again and again, STATUS= after runs, STOPPING=1
// and exit 0 on SIGTERM.
func TestAgentSystemdNotify(t *testing.T) {
	c := startCluster(t, "3.6.16", newSpecs(t, "n", 1))
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				msgs <- line
			}
		}
	}()
	// Start by hand (not startAgent): READY=1 must come when HTTP answers,
	// so nothing may poll HTTP first.
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(binary, "agent", "--endpoints", c.endpoints()[0], "--repo", t.TempDir(),
		"--interval", "1s", "--listen", addr)
	cmd.Env = append(cleanEnv(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=300000")
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("agent log:\n%s", log.String())
		}
	})

	next := func(what string, match func(string) bool) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", what)
				}
				if match(m) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s from the agent within 20s", what)
			}
		}
	}
	next("READY=1", func(m string) bool { return m == "READY=1" })
	if code, _ := httpGet(t, "http://"+addr+"/healthz"); code != 200 && code != 503 {
		t.Fatalf("healthz right after READY=1: %d", code)
	}
	for i := range 3 {
		next(fmt.Sprintf("WATCHDOG=1 #%d", i+1), func(m string) bool { return m == "WATCHDOG=1" })
	}
	st := next("STATUS= after a backup", func(m string) bool { return strings.HasPrefix(m, "STATUS=last run success") })
	t.Log(st)
	next("another WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })

	cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1", func(m string) bool { return m == "STOPPING=1" })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
}

// slotOf is the agent's slot of t for --interval d (in UTC, without a
// monotonic reading, so that equal slots are equal map keys).
func slotOf(t time.Time, d time.Duration) time.Time { return t.Truncate(d).UTC() }

// TestAgentLeaderOnly: three agents, one per member of a real etcd 3.6
// cluster, --leader-only, backing up to a real S3 server every 2s, while the
// leader is moved twice and then SIGKILLed, and while the storage goes away
// and comes back.
//
// Exactly-once per slot: no slot may hold two scheduled backups. Missing
// slots: at most one per forced leader change (three here). A change costs
// a slot only if it lands between the old leader's agent's check and the new
// leader's agent's check in the same slot, or, for a killed leader, if the
// election is still running (followers still name the dead leader) at the
// next slot's start; the next slot is then the new leader's, since the
// election (500 ms election timeout in the harness) ends well within one
// 2s interval. The test moves and kills at mid-slot, so a miss is rare.
func TestAgentLeaderOnly(t *testing.T) {
	const interval = 2 * time.Second
	started := time.Now()
	srv := testenv.StartS3(t)
	env := srv.Env()
	repoURL := srv.URL("agent")
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	eps := c.endpoints()

	agents := make([]*agentProc, 3)
	for i := range agents {
		own := []string{eps[i]}
		for j, ep := range eps {
			if j != i {
				own = append(own, ep)
			}
		}
		agents[i] = startAgent(t, c.procs[i].spec.Name, env, "--leader-only", "--interval", interval.String(),
			"--jitter", "100ms", "--retry-max", "3", "--retry-backoff", "200ms", "--max-age", "5s", "--grace", "5s",
			"--dial-timeout", "1s", "--command-timeout", "2s",
			// Storage down must fail a run within this test's patience.
			"--storage-timeout", "3s",
			"--repo", repoURL, "--endpoints", strings.Join(own, ","))
	}

	ctx := context.Background()
	statusOf := func(ep string) (id, leader uint64, ok bool) {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
		if err != nil {
			return 0, 0, false
		}
		defer cl.Close()
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := cl.Status(sctx, ep)
		if err != nil {
			return 0, 0, false
		}
		return r.Header.MemberId, r.Leader, true
	}
	alive := map[int]bool{0: true, 1: true, 2: true}
	// leader returns the index of the member all live members agree leads.
	leader := func() int {
		var lead uint64
		for i := range eps {
			if !alive[i] {
				continue
			}
			_, l, ok := statusOf(eps[i])
			if !ok || l == 0 || (lead != 0 && l != lead) {
				return -1
			}
			lead = l
		}
		for i := range eps {
			if id, _, _ := statusOf(eps[i]); alive[i] && id == lead {
				return i
			}
		}
		return -1
	}
	// midSlot waits until the clock is half an interval into a slot.
	midSlot := func() {
		poll(t, 2*interval, "mid-slot", func() bool {
			off := time.Since(slotOf(time.Now(), interval))
			return off >= interval/2 && off < interval/2+200*time.Millisecond
		})
	}
	waitSlots := func(n int) {
		end := slotOf(time.Now(), interval).Add(time.Duration(n) * interval).Add(interval / 2)
		poll(t, time.Duration(n+2)*interval, fmt.Sprintf("%d slots", n), func() bool { return time.Now().After(end) })
	}
	type change struct {
		at    time.Time // when the test saw the new leader
		to    int
		what  string
		since time.Time
	}
	var changes []change

	// The first backup: the window of checked slots starts after it.
	poll(t, 20*time.Second, "a first backup", func() bool { return agents[0].status(t).Newest != nil })
	first := slotOf(time.Now(), interval).Add(interval)
	waitSlots(2)

	move := func(to int) {
		from := leader()
		if from < 0 {
			t.Fatal("no agreed leader")
		}
		midSlot()
		toID, _, _ := statusOf(eps[to])
		lc, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[from]}, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		since := time.Now()
		if _, err := lc.MoveLeader(mctx, toID); err != nil {
			t.Fatalf("move leader %d -> %d: %v", from, to, err)
		}
		poll(t, 10*time.Second, "the moved leader", func() bool { return leader() == to })
		changes = append(changes, change{at: time.Now(), to: to, what: fmt.Sprintf("move %s -> %s", agents[from].name, agents[to].name), since: since})
		t.Logf("leader moved %s -> %s", agents[from].name, agents[to].name)
	}
	l0 := leader()
	move((l0 + 1) % 3)
	waitSlots(3)
	move((l0 + 2) % 3)
	waitSlots(2)

	// SIGKILL the leader's etcd.
	killed := leader()
	// Kill a quarter into a slot: after its upload, well before the next.
	poll(t, 2*interval, "a quarter into a slot", func() bool {
		o := time.Since(slotOf(time.Now(), interval))
		return o >= interval/4 && o < interval/4+200*time.Millisecond
	})
	since := time.Now()
	c.procs[killed].kill()
	alive[killed] = false
	var newLeader int
	poll(t, 10*time.Second, "a new leader after the kill", func() bool { newLeader = leader(); return newLeader >= 0 })
	changes = append(changes, change{at: time.Now(), to: newLeader, what: "kill " + agents[killed].name + ", new leader " + agents[newLeader].name, since: since})
	t.Logf("killed %s's etcd; new leader %s after %s", agents[killed].name, agents[newLeader].name, time.Since(since).Round(time.Millisecond))
	waitSlots(3)

	// The checked window ends here, mid-slot: every upload of the slots
	// before has ended, the current slot's too.
	midSlot()
	last := slotOf(time.Now(), interval) // included
	backups := listBackups(t, env, repoURL)
	scrapes := make([]map[string]*dto.MetricFamily, 3)
	for i, a := range agents {
		scrapes[i] = a.metrics(t)
	}

	perSlot := map[time.Time][]agentListEntry{}
	for _, b := range backups {
		if b.Error != "" {
			t.Fatalf("damaged backup %s: %s", b.ID, b.Error)
		}
		perSlot[slotOf(b.Time, interval)] = append(perSlot[slotOf(b.Time, interval)], b)
	}
	var missing []time.Time
	for s := first; !s.After(last); s = s.Add(interval) {
		switch n := len(perSlot[s]); {
		case n > 1:
			t.Errorf("slot %s has %d backups: %+v", s.Format("15:04:05"), n, perSlot[s])
		case n == 0:
			missing = append(missing, s)
		}
	}
	for s, bs := range perSlot { // before the window too
		if len(bs) > 1 && s.Before(first) {
			t.Errorf("slot %s has %d backups: %+v", s.Format("15:04:05"), len(bs), bs)
		}
	}
	slots := int(last.Sub(first)/interval) + 1
	t.Logf("%d slots checked, %d backups, %d missing %v", slots, len(backups), len(missing), missing)
	if len(missing) > len(changes) {
		t.Errorf("%d slots without a backup, want at most one per leader change (%d)", len(missing), len(changes))
	}
	// After each change, the new leader's agent takes over within one
	// interval: a backup from it whose time is less than an interval (plus
	// its jitter and a retry) after the new leader was known.
	for _, ch := range changes {
		var firstByNew time.Time
		for _, b := range backups {
			if b.Member == agents[ch.to].name && b.Time.After(ch.since) && (firstByNew.IsZero() || b.Time.Before(firstByNew)) {
				firstByNew = b.Time
			}
		}
		if firstByNew.IsZero() {
			t.Errorf("%s: no backup from the new leader", ch.what)
			continue
		}
		took := firstByNew.Sub(ch.at)
		t.Logf("%s: the new leader's first backup %s after it was known", ch.what, took.Round(time.Millisecond))
		if took > interval+500*time.Millisecond {
			t.Errorf("%s: the new leader's agent took %s to take over, want within one interval (%s)", ch.what, took, interval)
		}
	}
	// Every backup since the first change came from the leader of its
	// time; before it, from the first leader.
	for _, b := range backups {
		want := l0
		for _, ch := range changes {
			if b.Time.After(ch.at) {
				want = ch.to
			}
		}
		moving := false
		for _, ch := range changes {
			moving = moving || (b.Time.After(ch.since) && !b.Time.After(ch.at))
		}
		if !moving && b.Member != agents[want].name {
			t.Errorf("backup %s from %s, want from the leader %s", b.ID, b.Member, agents[want].name)
		}
	}

	// Metrics, as Prometheus would read them.
	successes, leaders := 0.0, 0
	for i, mf := range scrapes {
		successes += metric(mf, "etcd_backup_runs_total", "result", "success")
		if metric(mf, "etcd_backup_is_leader") == 1 {
			leaders++
			if i != newLeader {
				t.Errorf("agent %s says its member leads; the leader is %s", agents[i].name, agents[newLeader].name)
			}
		}
		if v := metric(mf, "etcd_backup_skipped_total", "reason", "not_leader"); v <= 0 {
			t.Errorf("agent %s: skipped_total{not_leader} = %v, want > 0 (every agent was a follower for a while)", agents[i].name, v)
		}
		newest := backups[0]
		if v := metric(mf, "etcd_backup_latest_revision"); v != float64(newest.Revision) {
			t.Errorf("agent %s: latest_revision %v, want %d", agents[i].name, v, newest.Revision)
		}
		if v := metric(mf, "etcd_backup_latest_age_seconds"); v < 0 || v > 2*interval.Seconds() {
			t.Errorf("agent %s: latest_age_seconds %v", agents[i].name, v)
		}
		if v := metric(mf, "etcd_backup_repository_up"); v != 1 {
			t.Errorf("agent %s: repository_up %v", agents[i].name, v)
		}
		if s := metric(mf, "etcd_backup_runs_total", "result", "success"); s > 0 {
			if metric(mf, "etcd_backup_size_bytes", "kind", "raw") <= 0 || metric(mf, "etcd_backup_size_bytes", "kind", "stored") <= 0 ||
				metric(mf, "etcd_backup_duration_seconds") < s || metric(mf, "etcd_backup_last_success_timestamp_seconds") < float64(started.Unix()) {
				t.Errorf("agent %s: size, duration or last_success missing after %v successes", agents[i].name, s)
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d agents say their member leads, want 1", leaders)
	}
	if int(successes) != len(backups) {
		t.Errorf("the agents count %v successful runs, the repository holds %d backups", successes, len(backups))
	}
	if v := metric(scrapes[killed], "etcd_backup_failures_total"); v <= 0 {
		t.Errorf("agent %s (etcd killed): failures_total %v, want > 0", agents[killed].name, v)
	}

	// Storage goes away: /healthz fails (unreachable, then too old) and
	// the leader's runs fail; it comes back: a backup succeeds and /healthz
	// is 200 again.
	la := agents[newLeader]
	failuresBefore := metric(la.metrics(t), "etcd_backup_runs_total", "result", "failure")
	srv.Stop()
	down := time.Now()
	poll(t, 20*time.Second, "healthz 503 with the storage down", func() bool {
		code, body := httpGet(t, la.url+"/healthz")
		return code == 503 && strings.Contains(body, "repository unreachable")
	})
	poll(t, 20*time.Second, "the newest backup older than --max-age", func() bool {
		return metric(la.metrics(t), "etcd_backup_latest_age_seconds") > 5
	})
	// A run fails once its attempts (each one retrying storage for
	// --storage-timeout) are over.
	poll(t, 20*time.Second, "a failed run with the storage down", func() bool {
		return metric(la.metrics(t), "etcd_backup_runs_total", "result", "failure") > failuresBefore
	})
	if v := metric(la.metrics(t), "etcd_backup_repository_up"); v != 0 {
		t.Errorf("repository_up %v with the storage down", v)
	}
	t.Logf("storage down for %s", time.Since(down).Round(time.Millisecond))
	srv.Start()
	up := time.Now()
	poll(t, 20*time.Second, "healthz 200 after the storage came back", func() bool {
		code, _ := httpGet(t, la.url+"/healthz")
		return code == 200
	})
	if st := la.status(t); st.Newest == nil || st.Newest.Time.Before(up.Add(-interval)) {
		t.Errorf("healthy again, but the newest backup is %+v, from before the storage came back", st.Newest)
	}
	t.Logf("healthy %s after the storage came back", time.Since(up).Round(time.Millisecond))

	// POST /backup on a follower's agent: a backup now, that list shows.
	follower := agents[(newLeader+1)%3]
	if (newLeader+1)%3 == killed {
		follower = agents[(newLeader+2)%3]
	}
	resp, err := http.Post(follower.url+"/backup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var posted struct{ ID, Error string }
	json.NewDecoder(resp.Body).Decode(&posted)
	resp.Body.Close()
	if resp.StatusCode != 200 || posted.ID == "" {
		t.Fatalf("POST /backup: %d %+v", resp.StatusCode, posted)
	}
	found := false
	for _, b := range listBackups(t, env, repoURL) {
		found = found || b.ID == posted.ID
	}
	if !found {
		t.Fatalf("list does not show %s", posted.ID)
	}
	if code, _ := httpGet(t, follower.url+"/backup"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /backup: %d, want 405", code)
	}

	for _, a := range agents {
		a.stop(t, 10*time.Second)
	}
	t.Logf("agent test took %s", time.Since(started).Round(time.Second))
}

// TestAgentUsage: bad schedules are usage errors (exit 2), before anything
// is contacted.
func TestAgentUsage(t *testing.T) {
	repo := t.TempDir()
	for _, args := range [][]string{
		{"--schedule", "not cron"},
		{"--schedule", "*/5 * * * *", "--interval", "1m"},
		{"--interval", "100ms"},
		{"--retry-max", "-1"},
	} {
		r := cli(t, nil, append([]string{"agent", "--repo", repo, "--listen", ""}, args...)...)
		if r.code != 2 {
			t.Errorf("agent %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
	// Every flag from the environment, like the systemd unit passes them.
	r := cli(t, []string{"ETCD_BACKUP_REPO=" + repo, "ETCD_BACKUP_SCHEDULE=*/5 * * * *", "ETCD_BACKUP_INTERVAL=1m", "ETCD_BACKUP_LISTEN="}, "agent")
	if r.code != 2 || !strings.Contains(r.stderr, "not both") {
		t.Errorf("both from the environment: exit %d\n%s", r.code, r.stderr)
	}
}
