package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestGCSJournalRestoreCopy runs the CLI against a GCS emulator
// (fake-gcs-server) through gs:// URLs: a snapshot, a continuous agent
// journaling into the bucket, list and verify, copy to a second gs://
// repository, restore of the latest state from the copy and of an earlier
// revision (--to-revision) from the first, every key read back.
func TestGCSJournalRestoreCopy(t *testing.T) {
	srv := testenv.StartGCS(t)
	repoURL := srv.URL("etcd/prod")
	// No credentials anywhere: an http:// endpoint gets none, whatever
	// the environment says.
	env := []string{"GOOGLE_APPLICATION_CREDENTIALS=/nonexistent/credentials.json"}

	c := startCluster(t, "3.6.16", newSpecs(t, "g", 1))
	cl := c.client()
	before := putKeys(t, cl, "/gcs/before/", 50, 300)
	snap := mustCLI(t, env, "snapshot", "--endpoints", c.endpoints()[0], "--repo", repoURL)
	if id := snap.lastLine(); id == "" {
		t.Fatal("snapshot printed no backup ID")
	}

	a := startAgent(t, "g1", env, "--continuous", "--journal-flush", "200ms", "--interval", "1h",
		"--repo", repoURL, "--endpoints", c.endpoints()[0])
	waitFirstSnapshot(t, []*agentProc{a})
	early := map[string]string{}
	for k, v := range before {
		early[k] = v
	}
	for k, v := range putKeys(t, cl, "/gcs/early/", 40, 200) {
		early[k] = v
	}
	mid := currentRevision(t, cl)
	all := map[string]string{}
	for k, v := range early {
		all[k] = v
	}
	for b := 0; b < 3; b++ {
		for k, v := range putKeys(t, cl, fmt.Sprintf("/gcs/late/%d/", b), 30, 200) {
			all[k] = v
		}
		time.Sleep(300 * time.Millisecond) // several segments
	}
	rev := currentRevision(t, cl)
	waitSealed(t, []*agentProc{a}, rev, 30*time.Second)
	a.stop(t, 20*time.Second)

	var listed []s3ListEntry
	if err := json.Unmarshal([]byte(mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) == 0 {
		t.Error("list shows no backup")
	}
	for _, e := range listed {
		if e.Error != "" || e.StoredSize <= 0 {
			t.Errorf("list entry %+v", e)
		}
	}
	if out := mustCLI(t, env, "verify", "latest", "--repo", repoURL).stdout; !strings.Contains(out, "journal ok") {
		t.Errorf("verify does not report the journal:\n%s", out)
	}

	// A second gs:// repository: copy carries snapshots and journals; a
	// re-run copies nothing.
	second := srv.URL("etcd/second")
	out := mustCLI(t, env, "copy", "all", "--repo", repoURL, "--to-repo", second).stdout
	if !strings.Contains(out, " journal: ") {
		t.Errorf("copy did not copy a journal:\n%s", out)
	}
	if out := mustCLI(t, env, "copy", "all", "--repo", repoURL, "--to-repo", second).stdout; strings.Contains(out, " journal: ") || strings.Contains(out, " copied (") {
		t.Errorf("a second copy copied again:\n%s", out)
	}
	c.killAll()

	// The latest state, from the copy.
	specs := newSpecs(t, "r", 1)
	out = mustCLI(t, env, "restore", "latest", "--repo", second, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL)).stdout
	if !saysRevision(out, rev) {
		t.Errorf("restore latest does not name revision %d:\n%s", rev, out)
	}
	r := startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/gcs/", all)
	r.killAll()

	// An earlier revision, from the first repository.
	specs = newSpecs(t, "p", 1)
	out = mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--to-revision", fmt.Sprint(mid),
		"--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL)).stdout
	if !saysRevision(out, mid) {
		t.Errorf("restore --to-revision %d does not name that revision:\n%s", mid, out)
	}
	startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/gcs/", early)
}

// TestGCSBadRepository: a missing bucket is "no such repository" (exit 3),
// and a malformed gs:// URL a usage error (exit 2).
func TestGCSBadRepository(t *testing.T) {
	srv := testenv.StartGCS(t)
	missing := strings.Replace(srv.URL("p"), srv.Bucket, "missing-bucket", 1)
	expectCleanFailure(t, cli(t, nil, "list", "--repo", missing), 3, "create it first")
	expectCleanFailure(t, cli(t, nil, "list", "--repo", "gs://Bad_Bucket/p"), 2, "lowercase")
	expectCleanFailure(t, cli(t, nil, "list", "--repo", "gcs://bucket/p"), 2, "gs://bucket/prefix")
}
