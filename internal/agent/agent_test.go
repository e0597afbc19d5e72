package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

var shared struct {
	once sync.Once
	cl   *embedded.Cluster
	cli  *etcd.Client
	err  error
}

// sharedEtcd returns a client of a one-member in-process cluster shared by
// the tests that do not change it.
func sharedEtcd(t *testing.T) *etcd.Client {
	t.Helper()
	shared.once.Do(func() {
		var specs []embedded.MemberSpec
		dir, err := os.MkdirTemp("", "agent-test-")
		if err == nil {
			specs, err = embedded.NewSpecs(dir, "m", 1)
		}
		if err == nil {
			shared.cl, err = embedded.Start(context.Background(), specs, "")
		}
		if err == nil {
			shared.cli, err = etcd.Connect(etcd.Config{Endpoints: shared.cl.Endpoints()})
		}
		shared.err = err
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.cli
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cl != nil {
		shared.cli.Close()
		shared.cl.Close()
		os.RemoveAll(filepath.Dir(shared.cl.Specs[0].DataDir))
	}
	os.Exit(code)
}

// testBackend is a real local repository directory with two switches: a
// gate that holds the payload upload in flight (the upload has begun, its
// temporary file exists, it reads nothing until the gate opens), and a
// failure switch that makes the storage unreachable.
type testBackend struct {
	*local.Dir
	gate     atomic.Pointer[chan struct{}] // nil: open
	uploads  chan string                   // payload names, as their upload begins
	cur, max atomic.Int32
	down     atomic.Bool
}

var errDown = storage.Retryable(errors.New("connection refused (test: storage down)"))

func newTestBackend(t *testing.T) *testBackend {
	t.Helper()
	d, err := local.New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	return &testBackend{Dir: d, uploads: make(chan string, 100)}
}

// hold makes the next payload uploads wait; the returned func lets them go.
func (b *testBackend) hold() func() {
	g := make(chan struct{})
	b.gate.Store(&g)
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

func (b *testBackend) Put(ctx context.Context, name string, r io.Reader) error {
	if b.down.Load() {
		return errDown
	}
	if !strings.Contains(name, ".db.zst") {
		return b.Dir.Put(ctx, name, r)
	}
	n := b.cur.Add(1)
	defer b.cur.Add(-1)
	for {
		m := b.max.Load()
		if n <= m || b.max.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case b.uploads <- name:
	default:
	}
	if g := b.gate.Load(); g != nil {
		r = &gatedReader{ctx: ctx, gate: *g, r: r}
	}
	return b.Dir.Put(ctx, name, r)
}

func (b *testBackend) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if b.down.Load() {
		return errDown
	}
	return b.Dir.List(ctx, prefix, fn)
}

func (b *testBackend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if b.down.Load() {
		return nil, errDown
	}
	return b.Dir.Get(ctx, name)
}

func (b *testBackend) Stat(ctx context.Context, name string) (storage.Info, error) {
	if b.down.Load() {
		return storage.Info{}, errDown
	}
	return b.Dir.Stat(ctx, name)
}

type gatedReader struct {
	ctx  context.Context
	gate chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	select {
	case <-g.gate:
		return g.r.Read(p)
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
}

// notes records sd_notify messages.
type notes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notes) Notify(s string) {
	n.mu.Lock()
	n.msgs = append(n.msgs, s)
	n.mu.Unlock()
}

func (n *notes) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, prefix) {
				c++
			}
		}
	}
	return c
}

// newAgent builds an agent on cli and b; edit adjusts the config.
func newAgent(t *testing.T, cli *etcd.Client, b storage.Backend, edit func(*Config)) (*Agent, *notes) {
	t.Helper()
	n := &notes{}
	cfg := Config{
		Schedule: later{},
		Client:   cli,
		OpenRepo: func(ctx context.Context) (*repo.Repo, error) { return repo.Open(ctx, b, "default") },
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(),
		Notifier: n,
		Refresh:  50 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, n
}

// later is a schedule whose first run is an hour after the test starts.
type later struct{}

func (later) Next(t time.Time) time.Time { return t.Add(time.Hour) }
func (later) String() string             { return "an hour later" }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runAgent runs a until the test ends (or the returned stop is called) and
// returns stop, which waits for Run to return.
func runAgent(t *testing.T, a *Agent) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ids(t *testing.T, b storage.Backend) []string {
	t.Helper()
	r, err := repo.Open(context.Background(), b, "default")
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.IDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func leaderIndex(t *testing.T, cli *etcd.Client) int {
	t.Helper()
	for i, st := range cli.Statuses(context.Background()) {
		if st.IsLeader() {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}

func TestLeaderOnlyChecks(t *testing.T) {
	cl, cli := testenv.StartEtcd(t, 3)
	b := newTestBackend(t)
	agents := make([]*Agent, 3)
	for i, ep := range cl.Endpoints() {
		agents[i], _ = newAgent(t, cli, b, func(c *Config) { c.LeaderOnly, c.Endpoint = true, ep })
	}
	ctx := context.Background()
	now := time.Now()
	slot := Slot{Start: now.Add(-time.Minute), End: now.Add(time.Hour)}
	li := leaderIndex(t, cli)

	// Followers skip without touching the repository; the leader backs up
	// from its own member.
	for i, a := range agents {
		if i == li {
			continue
		}
		if res := a.scheduledAttempt(ctx, slot, 1); res.Skip != reasonNotLeader || res.Err != nil {
			t.Fatalf("follower %d: %+v, want skipped not_leader", i, res)
		}
		if v := testutil.ToFloat64(a.m.isLeader); v != 0 {
			t.Errorf("follower %d: is_leader %v", i, v)
		}
	}
	res := agents[li].scheduledAttempt(ctx, slot, 1)
	if res.Err != nil || res.Manifest == nil {
		t.Fatalf("leader: %+v", res)
	}
	if m := res.Manifest; m.Endpoint != cl.Endpoints()[li] || !m.Leader {
		t.Fatalf("backup from %s (leader %v), want the leader's own member %s", m.Endpoint, m.Leader, cl.Endpoints()[li])
	}
	if v := testutil.ToFloat64(agents[li].m.isLeader); v != 1 {
		t.Errorf("leader: is_leader %v", v)
	}
	// The same slot again: taken.
	if res := agents[li].scheduledAttempt(ctx, slot, 1); res.Skip != reasonSlotTaken {
		t.Fatalf("leader, same slot: %+v, want skipped slot_taken", res)
	}

	// Leadership moves: in the same slot the new leader finds it taken; in
	// the next one it backs up, and the old leader skips.
	to := (li + 1) % 3
	lc, err := clientv3.New(clientv3.Config{Endpoints: []string{cl.Endpoints()[li]}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	st := cli.Status(ctx, cl.Endpoints()[to])
	if _, err := lc.MoveLeader(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new leader", func() bool { return cli.Status(ctx, cl.Endpoints()[to]).IsLeader() })
	if res := agents[to].scheduledAttempt(ctx, slot, 1); res.Skip != reasonSlotTaken {
		t.Fatalf("new leader, same slot: %+v, want slot_taken", res)
	}
	next := Slot{Start: time.Now(), End: time.Now().Add(time.Hour)}
	if res := agents[li].scheduledAttempt(ctx, next, 1); res.Skip != reasonNotLeader {
		t.Fatalf("old leader, next slot: %+v, want not_leader", res)
	}
	res = agents[to].scheduledAttempt(ctx, next, 1)
	if res.Err != nil || res.Manifest == nil || res.Manifest.Endpoint != cl.Endpoints()[to] {
		t.Fatalf("new leader, next slot: %+v", res)
	}

	// The check right before the upload: a follower that got past the
	// first check (here: called directly) uploads nothing.
	before := ids(t, b)
	if res := agents[li].backup(ctx, true); res.Skip != reasonNotLeader || res.Err != nil {
		t.Fatalf("follower's backup: %+v, want skipped not_leader", res)
	}
	if after := ids(t, b); len(after) != len(before) {
		t.Fatalf("follower's aborted backup left %d backups, want %d", len(after), len(before))
	}
	if len(before) != 2 {
		t.Fatalf("%d backups, want 2", len(before))
	}
}

func TestLeaderOnlyRetriesWhenMemberDown(t *testing.T) {
	cli, err := etcd.Connect(etcd.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	b := newTestBackend(t)
	// A member that does not answer: a failed attempt, worth retrying.
	a, _ := newAgent(t, cli, b, func(c *Config) { c.LeaderOnly, c.Endpoint = true, "http://127.0.0.1:1" })
	res := a.scheduledAttempt(context.Background(), Slot{Start: time.Now(), End: time.Now().Add(time.Hour)}, 1)
	if res.Err == nil || !res.Retry || !errors.Is(res.Err, etcd.ErrUnreachable) {
		t.Fatalf("%+v, want a retryable unreachable error", res)
	}
	if v := testutil.ToFloat64(a.m.failures); v != 1 {
		t.Errorf("failures_total %v, want 1", v)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// value returns the value of the series of name with label=value ("" for
// none), and whether it exists.
func value(mf map[string]*dto.MetricFamily, name, label, lv string) (float64, bool) {
	f := mf[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		match := label == ""
		for _, l := range m.Label {
			if l.GetName() == label && l.GetValue() == lv {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestHTTP(t *testing.T) {
	cli := sharedEtcd(t)
	b := newTestBackend(t)
	a, _ := newAgent(t, cli, b, func(c *Config) { c.MaxAge = 1500 * time.Millisecond })
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	runAgent(t, a)

	// An empty repository is unhealthy; latest_age is +Inf.
	eventually(t, 10*time.Second, "healthz: no backup", func() bool {
		code, body := get(t, srv.URL+"/healthz")
		return code == 503 && strings.Contains(body, "no backup in the repository yet")
	})
	if v, ok := value(scrape(t, srv.URL), "etcd_backup_latest_age_seconds", "", ""); !ok || v < 1e308 {
		t.Errorf("latest_age on an empty repository: %v %v, want +Inf", v, ok)
	}

	resp, err := http.Get(srv.URL + "/backup")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET /backup: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}

	resp, err = http.Post(srv.URL+"/backup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got BackupInfo
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got.ID == "" || got.Revision <= 0 || got.Member != "m1" {
		t.Fatalf("POST /backup: %d %+v", resp.StatusCode, got)
	}
	if list := ids(t, b); len(list) != 1 || list[0] != got.ID {
		t.Fatalf("repository holds %v, want [%s]", list, got.ID)
	}

	code, body := get(t, srv.URL+"/healthz")
	if code != 200 || !strings.Contains(body, got.ID) {
		t.Fatalf("healthz after a backup: %d %s", code, body)
	}
	var st StatusReport
	_, body = get(t, srv.URL+"/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Newest == nil || st.Newest.ID != got.ID || len(st.Runs) != 1 || st.Runs[0].Trigger != "manual" ||
		st.Runs[0].Result != "success" || st.Runs[0].ID != got.ID || !st.Healthy || st.NextRun == nil || !st.Repository.Reachable {
		t.Fatalf("status: %s", body)
	}

	mf := scrape(t, srv.URL)
	for _, c := range []struct {
		name, label, lv string
		check           func(float64) bool
	}{
		{"etcd_backup_runs_total", "result", "success", func(v float64) bool { return v == 1 }},
		{"etcd_backup_runs_total", "result", "failure", func(v float64) bool { return v == 0 }},
		{"etcd_backup_skipped_total", "reason", "not_leader", func(v float64) bool { return v == 0 }},
		{"etcd_backup_failures_total", "", "", func(v float64) bool { return v == 0 }},
		{"etcd_backup_size_bytes", "kind", "raw", func(v float64) bool { return v == float64(got.Size) }},
		{"etcd_backup_size_bytes", "kind", "stored", func(v float64) bool { return v == float64(got.StoredSize) }},
		{"etcd_backup_latest_revision", "", "", func(v float64) bool { return v == float64(got.Revision) }},
		{"etcd_backup_latest_age_seconds", "", "", func(v float64) bool { return v >= 0 && v < 60 }},
		{"etcd_backup_last_success_timestamp_seconds", "", "", func(v float64) bool { return v > float64(got.Time.Unix())-1 }},
		{"etcd_backup_last_attempt_timestamp_seconds", "", "", func(v float64) bool { return v > 0 }},
		{"etcd_backup_duration_seconds", "", "", func(v float64) bool { return v == 1 }},
		{"etcd_backup_repository_up", "", "", func(v float64) bool { return v == 1 }},
	} {
		if v, ok := value(mf, c.name, c.label, c.lv); !ok || !c.check(v) {
			t.Errorf("%s{%s=%q} = %v (present %v)", c.name, c.label, c.lv, v, ok)
		}
	}

	// Older than --max-age: unhealthy, and healthy again after a backup.
	eventually(t, 10*time.Second, "healthz: too old", func() bool {
		code, body := get(t, srv.URL+"/healthz")
		return code == 503 && strings.Contains(body, "more than --max-age")
	})
	if _, err := a.BackupNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.URL+"/healthz"); code != 200 {
		t.Fatalf("healthz after a new backup: %d %s", code, body)
	}

	// Storage unreachable: unhealthy at once (the next refresh), with the
	// reason; a backup now fails with the error in JSON.
	b.down.Store(true)
	eventually(t, 10*time.Second, "healthz: unreachable", func() bool {
		code, body := get(t, srv.URL+"/healthz")
		return code == 503 && strings.Contains(body, "repository unreachable") && strings.Contains(body, "storage down")
	})
	resp, err = http.Post(srv.URL+"/backup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var fail map[string]string
	json.NewDecoder(resp.Body).Decode(&fail)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(fail["error"], "storage down") {
		t.Fatalf("POST /backup with storage down: %d %v", resp.StatusCode, fail)
	}
	if v, _ := value(scrape(t, srv.URL), "etcd_backup_repository_up", "", ""); v != 0 {
		t.Errorf("repository_up %v with storage down", v)
	}
	b.down.Store(false)
	if _, err := a.BackupNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "healthz: back", func() bool {
		code, _ := get(t, srv.URL+"/healthz")
		return code == 200
	})
	mf = scrape(t, srv.URL)
	if v, _ := value(mf, "etcd_backup_runs_total", "result", "failure"); v != 1 {
		t.Errorf("runs_total{failure} %v, want 1", v)
	}
	if v, _ := value(mf, "etcd_backup_failures_total", "", ""); v != 1 {
		t.Errorf("failures_total %v, want 1", v)
	}
}

func TestNoOverlap(t *testing.T) {
	cli := sharedEtcd(t)
	b := newTestBackend(t)
	a, _ := newAgent(t, cli, b, func(c *Config) { c.Schedule = Every(time.Second) })
	release := b.hold()
	defer release()
	runAgent(t, a)

	// A scheduled backup is in flight, held; an on-demand one waits for it.
	select {
	case <-b.uploads:
	case <-time.After(10 * time.Second):
		t.Fatal("no scheduled backup started")
	}
	manual := make(chan error, 1)
	go func() {
		_, err := a.BackupNow(context.Background())
		manual <- err
	}()
	// Let the next slot start while the first upload is held: neither the
	// scheduler nor the on-demand run may start another upload.
	next := time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)
	eventually(t, 5*time.Second, "the next slot", func() bool { return time.Now().After(next) })
	select {
	case <-b.uploads:
		t.Fatal("a second upload started while the first was in flight")
	default:
	}
	release()
	if err := <-manual; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two more scheduled backups", func() bool { return len(ids(t, b)) >= 4 })
	if m := b.max.Load(); m != 1 {
		t.Fatalf("%d uploads at once", m)
	}
}

func TestGrace(t *testing.T) {
	cli := sharedEtcd(t)

	t.Run("finishes within grace", func(t *testing.T) {
		b := newTestBackend(t)
		a, n := newAgent(t, cli, b, func(c *Config) { c.Schedule, c.Grace = Every(time.Second), 30*time.Second })
		release := b.hold()
		defer release()
		stop := runAgent(t, a)
		<-b.uploads
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }()
		eventually(t, 5*time.Second, "STOPPING=1", func() bool { return n.count("STOPPING=1") == 1 })
		if _, err := a.BackupNow(context.Background()); !errors.Is(err, ErrStopping) {
			t.Fatalf("on-demand backup while stopping: %v, want ErrStopping", err)
		}
		release()
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if got := ids(t, b); len(got) != 1 {
			t.Fatalf("%d backups, want the one in flight", len(got))
		}
	})

	t.Run("cancelled after grace", func(t *testing.T) {
		b := newTestBackend(t)
		a, _ := newAgent(t, cli, b, func(c *Config) { c.Schedule, c.Grace = Every(time.Second), 300*time.Millisecond })
		b.hold() // never released
		stop := runAgent(t, a)
		<-b.uploads
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
			t.Fatalf("Run returned %s after the stop, want about the grace period", d)
		}
		if got := ids(t, b); len(got) != 0 {
			t.Fatalf("backups %v after a cancelled upload, want none", got)
		}
		// Nothing left behind: the aborted upload's temporary file is gone.
		var files []string
		filepath.Walk(b.Location(), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && !strings.HasSuffix(p, repo.MarkerName) {
				files = append(files, p)
			}
			return nil
		})
		if len(files) != 0 {
			t.Fatalf("files left in the repository: %v", files)
		}
		st := a.Status()
		if len(st.Runs) != 1 || st.Runs[0].Result != "failure" || !strings.Contains(st.Runs[0].Error, "context canceled") {
			t.Fatalf("runs %+v, want one failure: context canceled", st.Runs)
		}
	})
}

func TestWatchdogAndNotify(t *testing.T) {
	cli := sharedEtcd(t)
	a, n := newAgent(t, cli, newTestBackend(t), func(c *Config) { c.Watchdog = 60 * time.Millisecond })
	stop := runAgent(t, a)
	eventually(t, 5*time.Second, "READY=1 and 3 x WATCHDOG=1", func() bool {
		return n.count("READY=1") == 1 && n.count("WATCHDOG=1") >= 3
	})
	if n.count("STATUS=") == 0 {
		t.Error("no STATUS= with READY=1")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n.count("STOPPING=1") != 1 {
		t.Error("no STOPPING=1")
	}
}

func TestSystemdNotifier(t *testing.T) {
	// The real sd_notify path: a datagram socket named by $NOTIFY_SOCKET.
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	SystemdNotifier{}.Notify("READY=1\nSTATUS=hello")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	nr, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:nr]); got != "READY=1\nSTATUS=hello" {
		t.Fatalf("got %q", got)
	}
	t.Setenv("WATCHDOG_USEC", "1500000")
	if d, err := WatchdogFromEnv(); err != nil || d != 1500*time.Millisecond {
		t.Fatalf("watchdog %v %v", d, err)
	}
}
