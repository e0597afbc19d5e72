package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestJournalCompactedStartsNewChain: an agent stopped while etcd moved on
// and compacted past its journal cannot resume that chain; on restart it
// says so (log and metric), takes a new full snapshot and journals from it.
// Restore latest then holds everything, and history and verify read the new
// journal. A copy to a second site carries both journals and restores the
// same.
func TestJournalCompactedStartsNewChain(t *testing.T) {
	repo := t.TempDir()
	c := startCluster(t, "3.6.16", newSpecs(t, "c", 1))
	cl := c.client()
	args := journalAgentArgs(repo, c.endpoints(), 0, "200ms")
	a := startAgent(t, "c1", nil, args...)
	waitFirstSnapshot(t, []*agentProc{a})
	want := putKeys(t, cl, "/first/", 20, 20)
	rev := currentRevision(t, cl)
	waitSealed(t, []*agentProc{a}, rev, 20*time.Second)
	a.stop(t, 20*time.Second)

	// While no agent runs: more writes, then a compaction past everything
	// the chain would need to resume.
	for k, v := range putKeys(t, cl, "/while-down/", 20, 20) {
		want[k] = v
	}
	rev = currentRevision(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := cl.Compact(ctx, rev, clientv3.WithCompactPhysical())
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	b := startAgent(t, "c1", nil, args...)
	poll(t, 30*time.Second, "the agent to restart the journal after the compaction", func() bool {
		return metric(b.metrics(t), "etcd_backup_journal_restarts_total", "reason", "compacted") >= 1 &&
			len(listJournal(t, repo)) == 2
	})
	if !strings.Contains(b.log.String(), "taking a new full snapshot to start a new journal") {
		t.Errorf("agent log does not say it starts a new journal:\n%s", tail(b.log.String(), 20))
	}
	after := putKeys(t, cl, "/after/", 20, 20)
	for k, v := range after {
		want[k] = v
	}
	rev = currentRevision(t, cl)
	waitSealed(t, []*agentProc{b}, rev, 20*time.Second)
	b.stop(t, 20*time.Second)

	entries := listJournal(t, repo)
	if entries[0].Journal == nil || entries[0].Journal.End != rev || entries[0].Journal.Error != "" {
		t.Fatalf("newest backup's journal: %+v, want one reaching revision %d", entries[0].Journal, rev)
	}
	if j := entries[1].Journal; j == nil || j.Error != "" {
		t.Fatalf("older backup's journal: %+v", j)
	}

	hist := mustCLI(t, nil, "history", "--repo", repo, "--prefix", "/after/").stdout
	if n := strings.Count(hist, "\tPUT"); n != len(after) {
		t.Errorf("history shows %d puts under /after/, want %d:\n%s", n, len(after), hist)
	}
	if out := mustCLI(t, nil, "verify", "latest", "--repo", repo).stdout; !strings.Contains(out, "journal ok") {
		t.Errorf("verify does not report the journal:\n%s", out)
	}

	// A second site: copy carries the journals; a re-run copies nothing.
	second := t.TempDir()
	out := mustCLI(t, nil, "copy", "all", "--repo", repo, "--to-repo", second).stdout
	if strings.Count(out, " journal: ") != 2 {
		t.Errorf("copy did not copy both journals:\n%s", out)
	}
	if out := mustCLI(t, nil, "copy", "all", "--repo", repo, "--to-repo", second).stdout; strings.Contains(out, " journal: ") || strings.Contains(out, " copied (") {
		t.Errorf("a second copy copied again:\n%s", out)
	}

	c.killAll()
	specs := newSpecs(t, "r", 1)
	mustCLI(t, nil, "restore", "latest", "--repo", second, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL))
	startCluster(t, "3.6.16", specs)
	for _, p := range []string{"/first/", "/while-down/", "/after/"} {
		sub := map[string]string{}
		for k, v := range want {
			if strings.HasPrefix(k, p) {
				sub[k] = v
			}
		}
		checkKeys(t, specs[0].ClientURL, p, sub)
	}
}

func currentRevision(t *testing.T, cl *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cl.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}
