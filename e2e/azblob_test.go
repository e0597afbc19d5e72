package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestAzblobJournalRestoreCopy runs the operator's path on an azblob://
// repository in Azurite: a snapshot by the CLI, an agent journaling
// continuously, restore of the latest state and of an earlier revision
// (--to-revision) from snapshot plus journal, and copy to another
// azblob:// repository, which verifies and restores too.
func TestAzblobJournalRestoreCopy(t *testing.T) {
	az := testenv.SharedAzurite(t)
	env := az.Env()
	repoURL := az.URL("etcd/prod")

	c := startCluster(t, "3.6.16", newSpecs(t, "a", 1))
	cl := c.client()
	want := putKeys(t, cl, "/az/a/", 50, 200)
	first := mustCLI(t, env, "snapshot", "--endpoints", c.endpoints()[0], "--repo", repoURL).lastLine()

	a := startAgent(t, "a1", env, "--continuous", "--journal-flush", "200ms", "--interval", "1h",
		"--repo", repoURL, "--endpoints", c.endpoints()[0])
	waitFirstSnapshot(t, []*agentProc{a})
	for k, v := range putKeys(t, cl, "/az/b/", 40, 300) {
		want[k] = v
	}
	time.Sleep(300 * time.Millisecond) // another segment
	mid := currentRevision(t, cl)
	atMid := map[string]string{}
	for k, v := range want {
		atMid[k] = v
	}
	for k, v := range putKeys(t, cl, "/az/c/", 40, 300) {
		want[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := cl.Delete(ctx, "/az/a/000000")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	delete(want, "/az/a/000000")
	rev := currentRevision(t, cl)
	waitSealed(t, []*agentProc{a}, rev, 30*time.Second)
	a.stop(t, 20*time.Second)

	// The repository is in the container, under the URL's prefix, with
	// journal objects.
	journal := 0
	pager := az.Client(t).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: ptr("etcd/prod/")})
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			if strings.Contains(*it.Name, "/journal/") {
				journal++
			}
		}
	}
	if journal == 0 {
		t.Fatal("no journal object under etcd/prod/ in the container")
	}

	var listed []journalListEntry
	out := mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	// The agent journals on the CLI's snapshot (its schedule is an hour).
	if len(listed) == 0 || listed[len(listed)-1].ID != first {
		t.Fatalf("list shows %+v, want the CLI's snapshot %s", listed, first)
	}
	if j := listed[0].Journal; j == nil || j.Error != "" || j.End < rev {
		t.Fatalf("newest backup's journal %+v, want one up to revision %d", j, rev)
	}
	mustCLI(t, env, "verify", "latest", "--repo", repoURL)
	c.killAll()

	// Latest: every key, the deletion applied.
	specs := newSpecs(t, "r", 1)
	out = mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL)).stdout
	if !strings.Contains(out, fmt.Sprintf("(revision %d)", rev)) {
		t.Errorf("restore latest does not name revision %d:\n%s", rev, out)
	}
	r := startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/az/", want)
	r.killAll()

	// An earlier revision, from the snapshot and part of the journal.
	specs = newSpecs(t, "p", 1)
	mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--to-revision", strconv.FormatInt(mid, 10),
		"--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL))
	r = startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/az/", atMid)
	r.killAll()

	// Copy to another repository in the same container; the copy verifies
	// and restores.
	copyURL := az.URL("etcd/second-site")
	out = mustCLI(t, env, "copy", "all", "--repo", repoURL, "--to-repo", copyURL).stdout
	n := 0
	for _, e := range listed {
		if strings.Contains(out, e.ID+" copied (") {
			n++
		}
	}
	if n != len(listed) || !strings.Contains(out, "journal: ") {
		t.Fatalf("copy all copied %d backups, want %d with their journal:\n%s", n, len(listed), out)
	}
	again := mustCLI(t, env, "copy", "all", "--repo", repoURL, "--to-repo", copyURL).stdout
	t.Logf("second copy:\n%s", again)
	if strings.Contains(again, listed[0].ID+" copied (") || !strings.Contains(again, "already in destination") {
		t.Fatalf("second copy all should skip every backup:\n%s", again)
	}
	mustCLI(t, env, "verify", "latest", "--repo", copyURL)
	specs = newSpecs(t, "c", 1)
	mustCLI(t, env, "restore", "latest", "--repo", copyURL, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
		"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL))
	r = startCluster(t, "3.6.16", specs)
	checkKeys(t, specs[0].ClientURL, "/az/", want)
	r.killAll()
}

// TestAzblobBadRepository: a missing container is "no such repository"
// (exit 3) with a hint; a wrong key fails without retrying for minutes and
// without printing the key; malformed azblob:// URLs are usage errors
// (exit 2) before etcd is contacted.
func TestAzblobBadRepository(t *testing.T) {
	az := testenv.SharedAzurite(t)
	env := az.Env()
	noEtcd := "http://127.0.0.1:1"

	missing := strings.Replace(az.URL("x"), az.Container, "nosuchcontainer", 1)
	for _, args := range [][]string{
		{"list", "--repo", missing},
		{"snapshot", "--repo", missing, "--endpoints", noEtcd},
	} {
		r := cli(t, env, args...)
		expectCleanFailure(t, r, 3, "nosuchcontainer")
		if strings.Contains(r.stderr, az.Key) {
			t.Errorf("%v: the key in the output:\n%s", args, r.stderr)
		}
	}

	wrongKey := append([]string{}, env...)
	bad := "AAAA" + az.Key[4:]
	wrongKey = append(wrongKey, "AZURE_STORAGE_KEY="+bad)
	start := time.Now()
	r := cli(t, wrongKey, "list", "--repo", az.URL("x"))
	expectCleanFailure(t, r, 1, "check the credentials")
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("a wrong key took %s to report", took)
	}
	if strings.Contains(r.stderr, bad) {
		t.Errorf("the key in the output:\n%s", r.stderr)
	}

	for _, tc := range []struct{ url, want string }{
		{"azure://" + az.Container + "/x", "azblob://"},
		{"azblob://" + az.Endpoint + "/x", "?endpoint="},
		{"azblob://" + az.Container + "/x?endpoint=" + az.Endpoint, "no scheme"},
		{"azblob://" + az.Container + "/x?endpiont=http://" + az.Endpoint, "unknown parameter"},
	} {
		for _, args := range [][]string{
			{"list", "--repo", tc.url},
			{"snapshot", "--repo", tc.url, "--endpoints", noEtcd},
		} {
			expectCleanFailure(t, cli(t, env, args...), 2, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
