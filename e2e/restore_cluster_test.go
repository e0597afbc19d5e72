package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// supervised is an etcd member started and stopped by shell scripts, as a
// supervisor would: the agent drives it with --etcd-start-command and
// --etcd-stop-command.
type supervised struct {
	spec        embedded.MemberSpec
	start, stop string // script paths
	pidFile     string
	logFile     string
}

// superviseMember writes start and stop scripts for one member of a cluster
// described by ic. The member is not started.
func superviseMember(t *testing.T, version string, s embedded.MemberSpec, ic string) *supervised {
	t.Helper()
	dir := t.TempDir()
	m := &supervised{spec: s, start: filepath.Join(dir, "start.sh"), stop: filepath.Join(dir, "stop.sh"),
		pidFile: filepath.Join(dir, "etcd.pid"), logFile: filepath.Join(dir, "etcd.log")}
	args := strings.Join([]string{
		etcdBinary(t, version),
		"--name=" + s.Name, "--data-dir=" + s.DataDir,
		"--listen-peer-urls=" + s.PeerURL, "--initial-advertise-peer-urls=" + s.PeerURL,
		"--listen-client-urls=" + s.ClientURL, "--advertise-client-urls=" + s.ClientURL,
		"--initial-cluster=" + ic, "--initial-cluster-state=new", "--initial-cluster-token=e2e",
		"--heartbeat-interval=100", "--election-timeout=1000",
	}, " ")
	start := fmt.Sprintf(`#!/bin/sh
# start etcd %[1]s unless it runs; return at once
if [ -f %[2]s ] && [ -d /proc/$(cat %[2]s) ] && ! grep -q '^State:.*Z' /proc/$(cat %[2]s)/status; then exit 0; fi
nohup %[3]s </dev/null >>%[4]s 2>&1 &
echo $! > %[2]s
`, s.Name, m.pidFile, args, m.logFile)
	stop := fmt.Sprintf(`#!/bin/sh
# stop etcd %[1]s (SIGTERM) and return once it has exited
[ -f %[2]s ] || exit 0
p=$(cat %[2]s)
kill -${SIG:-TERM} $p 2>/dev/null
while [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; do sleep 0.1; done
rm -f %[2]s
`, s.Name, m.pidFile)
	for p, body := range map[string]string{m.start: start, m.stop: stop} {
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { m.kill(t) })
	return m
}

func (m *supervised) run(t *testing.T, script string, env ...string) {
	t.Helper()
	cmd := exec.Command("sh", script)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// kill SIGKILLs the member, as a crash would.
func (m *supervised) kill(t *testing.T) { m.run(t, m.stop, "SIG=KILL") }

func (m *supervised) logTail() string {
	b, _ := os.ReadFile(m.logFile)
	return tail(string(b), 20)
}

// waitServing waits until every member answers a linearizable read.
func waitServing(t *testing.T, members []*supervised, within time.Duration) {
	t.Helper()
	for _, m := range members {
		poll(t, within, "etcd "+m.spec.Name+" serving", func() bool {
			cl, err := clientv3.New(clientv3.Config{Endpoints: []string{m.spec.ClientURL}, DialTimeout: time.Second})
			if err != nil {
				return false
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err = cl.Get(ctx, "health")
			return err == nil
		})
	}
}

// orderAgent starts an agent that carries out restore orders for member m.
func orderAgent(t *testing.T, m *supervised, repoURL, stateDir string, extra ...string) *agentProc {
	t.Helper()
	args := append([]string{"--repo", repoURL, "--endpoints", m.spec.ClientURL, "--interval", "1h",
		"--name", m.spec.Name, "--data-dir", m.spec.DataDir, "--state-dir", stateDir, "--order-poll", "300ms",
		"--etcd-stop-command", "sh " + m.stop, "--etcd-start-command", "sh " + m.start}, extra...)
	return startAgent(t, m.spec.Name, nil, args...)
}

// hashKVs returns each member's revision and HashKV at rev.
func hashKVs(t *testing.T, members []*supervised, rev int64) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range members {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{m.spec.ClientURL}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h, err := cl.HashKV(ctx, m.spec.ClientURL, rev)
		cancel()
		cl.Close()
		if err != nil {
			t.Fatalf("HashKV on %s at %d: %v", m.spec.Name, rev, err)
		}
		out[m.spec.Name] = fmt.Sprintf("%08x", h.Hash)
	}
	return out
}

// TestRestoreCluster: the whole runbook as one command. Three real etcd
// members under a small supervisor, one agent each; encrypted backups with
// a journal; every member SIGKILLed and its data destroyed; then
// 'restore-cluster latest --identity KEY' from another "machine" brings back
// every member with the same revision and HashKV and every key. A healthy
// cluster is refused without --force. A member whose agent is down makes
// the command fail naming it; after the agent returns, the same command
// resumes and completes. Finally the cluster moves to new machines (new
// names and ports) in one command.
func TestRestoreCluster(t *testing.T) {
	repoURL := filepath.Join(t.TempDir(), "repo")
	keys := t.TempDir()
	idFile, recipient, _ := writeAgeIdentity(t, keys)
	specs := newSpecs(t, "c", 3)
	ic := embedded.InitialCluster(specs)
	var members []*supervised
	for _, s := range specs {
		m := superviseMember(t, "3.6.16", s, ic)
		m.run(t, m.start)
		members = append(members, m)
	}
	waitServing(t, members, 60*time.Second)

	states := make([]string, len(members))
	var agents []*agentProc
	for i, m := range members {
		states[i] = t.TempDir()
		agents = append(agents, orderAgent(t, m, repoURL, states[i], "--leader-only", "--continuous", "--journal-flush", "200ms", "--encrypt-to", recipient))
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{specs[0].ClientURL, specs[1].ClientURL, specs[2].ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := putKeys(t, cl, "/rc/a/", 200, 100)
	waitFirstSnapshot(t, agents)
	for k, v := range putKeys(t, cl, "/rc/b/", 100, 100) {
		want[k] = v
	}
	rev := currentRevision(t, cl)
	waitSealed(t, agents, rev, 60*time.Second)

	// The agents' own keys open no backup.
	for i := range members {
		expectCleanFailure(t, cli(t, nil, "verify", "latest", "--repo", repoURL, "--identity", filepath.Join(states[i], "order-key.txt")), 5)
	}

	// Disaster: every member crashes and its data is destroyed.
	for _, m := range members {
		m.kill(t)
		if err := os.WriteFile(filepath.Join(m.spec.DataDir, "member", "snap", "db"), []byte("destroyed"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	rc := func(args ...string) result {
		t.Helper()
		return cli(t, nil, append([]string{"restore-cluster", "--repo", repoURL, "--initial-cluster", ic,
			"--identity", idFile, "--poll", "300ms"}, args...)...)
	}
	res := rc("latest", "--timeout", "2m", "--json")
	t.Logf("restore-cluster: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	if res.code != 0 {
		for _, m := range members {
			t.Logf("%s etcd log:\n%s", m.spec.Name, m.logTail())
		}
		t.Fatalf("restore-cluster exit %d", res.code)
	}
	// --json: one report per line; every member reaches healthy.
	healthy := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var rep struct {
			Member, State string
			Revision      int64
		}
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		if rep.State == "healthy" && rep.Revision == rev {
			healthy[rep.Member] = true
		}
	}
	for _, m := range members {
		if !healthy[m.spec.Name] {
			t.Errorf("--json shows no healthy report at revision %d for %s:\n%s", rev, m.spec.Name, res.stdout)
		}
		checkKeys(t, m.spec.ClientURL, "/rc/", want)
	}
	// The audit record stays in the repository; the decryptable bundle does not.
	results, _ := filepath.Glob(filepath.Join(repoURL, "clusters", "default", "orders", "*", "result.json"))
	bundles, _ := filepath.Glob(filepath.Join(repoURL, "clusters", "default", "orders", "*", "bundle.db.zst.age"))
	if len(results) != 1 || len(bundles) != 0 {
		t.Errorf("after the order: result.json %v, bundles %v; want one result and no bundle", results, bundles)
	}
	hashes := hashKVs(t, members, rev)
	if hashes["c1"] != hashes["c2"] || hashes["c2"] != hashes["c3"] {
		t.Fatalf("members differ at revision %d: %v", rev, hashes)
	}
	for _, m := range members {
		aside, _ := filepath.Glob(m.spec.DataDir + ".pre-restore-*")
		if len(aside) != 1 {
			t.Errorf("%s: old data dir moved aside: %v, want one", m.spec.Name, aside)
		}
	}

	// A healthy cluster is refused, and nothing changes.
	res = rc("latest", "--timeout", "1m")
	expectCleanFailure(t, res, 1, "still healthy")
	for _, m := range members {
		aside, _ := filepath.Glob(m.spec.DataDir + ".pre-restore-*")
		if len(aside) != 1 {
			t.Errorf("%s: a refused order moved data: %v", m.spec.Name, aside)
		}
	}

	// One agent down: the command fails naming it; when the agent is back,
	// the same command resumes and completes.
	agents[2].stop(t, 20*time.Second)
	res = rc("latest", "--force", "--timeout", "15s")
	t.Logf("agent c3 down: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	expectCleanFailure(t, res, 1, "c3")
	agents[2] = orderAgent(t, members[2], repoURL, states[2])
	res = rc("latest", "--force", "--timeout", "2m")
	t.Logf("resumed: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	if res.code != 0 || !strings.Contains(res.stderr, "resuming") {
		t.Fatalf("resumed restore-cluster: exit %d (want 0, resuming the open order)\n%s", res.code, res.stderr)
	}
	for _, m := range members {
		checkKeys(t, m.spec.ClientURL, "/rc/", want)
	}
	for _, a := range agents {
		a.stop(t, 20*time.Second)
	}
	for _, m := range members {
		m.kill(t)
	}

	// New machines: new names and addresses, new agents; the old ones gone.
	newSpecsList := newSpecs(t, "n", 3)
	nic := embedded.InitialCluster(newSpecsList)
	var fresh []*supervised
	for _, s := range newSpecsList {
		m := superviseMember(t, "3.6.16", s, nic)
		fresh = append(fresh, m)
		orderAgent(t, m, repoURL, t.TempDir())
	}
	res = cli(t, nil, "restore-cluster", "latest", "--repo", repoURL, "--initial-cluster", nic,
		"--identity", idFile, "--poll", "300ms", "--timeout", "2m")
	t.Logf("new machines: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	if res.code != 0 {
		t.Fatalf("restore-cluster onto new machines: exit %d", res.code)
	}
	for _, m := range fresh {
		checkKeys(t, m.spec.ClientURL, "/rc/", want)
	}
	nh := hashKVs(t, fresh, rev)
	if nh["n1"] != hashes["c1"] || nh["n2"] != nh["n1"] || nh["n3"] != nh["n1"] {
		t.Errorf("new machines' HashKV at %d: %v, want all %s", rev, nh, hashes["c1"])
	}
}

// TestRestoreClusterPointInTimeEtcd34: restore-cluster --to-revision on
// etcd 3.4 servers (Debian's): every member comes back at exactly that
// revision with the same HashKV and the keys as they were then.
func TestRestoreClusterPointInTimeEtcd34(t *testing.T) {
	repoURL := filepath.Join(t.TempDir(), "repo")
	specs := newSpecs(t, "p", 3)
	ic := embedded.InitialCluster(specs)
	var members []*supervised
	var agents []*agentProc
	for _, s := range specs {
		m := superviseMember(t, "3.4", s, ic)
		m.run(t, m.start)
		members = append(members, m)
	}
	waitServing(t, members, 60*time.Second)
	for _, m := range members {
		agents = append(agents, orderAgent(t, m, repoURL, t.TempDir(), "--leader-only", "--continuous", "--journal-flush", "200ms"))
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{specs[0].ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := putKeys(t, cl, "/pit/a/", 100, 50)
	waitFirstSnapshot(t, agents)
	for k, v := range putKeys(t, cl, "/pit/b/", 50, 50) {
		want[k] = v
	}
	target := currentRevision(t, cl)
	putKeys(t, cl, "/pit/c/", 50, 50) // after the target: must not come back
	waitSealed(t, agents, currentRevision(t, cl), 60*time.Second)
	for _, m := range members {
		m.kill(t)
	}
	res := cli(t, nil, "restore-cluster", "--to-revision", fmt.Sprint(target), "--repo", repoURL,
		"--initial-cluster", ic, "--poll", "300ms", "--timeout", "2m")
	t.Logf("restore-cluster --to-revision %d: exit %d\n%s\n%s", target, res.code, res.stdout, res.stderr)
	if res.code != 0 {
		for _, m := range members {
			t.Logf("%s etcd log:\n%s", m.spec.Name, m.logTail())
		}
		t.Fatalf("exit %d", res.code)
	}
	for _, m := range members {
		checkKeys(t, m.spec.ClientURL, "/pit/", want)
	}
	h := hashKVs(t, members, target)
	if h["p1"] != h["p2"] || h["p2"] != h["p3"] {
		t.Fatalf("members differ at revision %d: %v", target, h)
	}
}
