package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestRunbookSameMachines follows runbook (a): every member's data is
// corrupted; the cluster is restored on the same machines, same peer URLs,
// same data dir paths. The corrupted data dirs are moved aside, not deleted.
func TestRunbookSameMachines(t *testing.T) {
	repoDir := t.TempDir()
	specs := newSpecs(t, "m", 3)
	c := startCluster(t, "3.6.16", specs)
	want := putKeys(t, c.client(), "/cfg/", 150, 64)
	mustCLI(t, nil, "snapshot", "--endpoints", strings.Join(c.endpoints(), ","), "--repo", repoDir)
	c.killAll()
	for _, s := range specs { // corruption on every member
		if err := os.WriteFile(filepath.Join(s.DataDir, "member", "snap", "db"), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ic := embedded.InitialCluster(specs)
	for _, s := range specs {
		mustCLI(t, nil, "restore", "--repo", repoDir, "--data-dir", s.DataDir, "--name", s.Name,
			"--initial-cluster", ic, "--initial-cluster-token", "e2e")
		aside, _ := filepath.Glob(s.DataDir + ".pre-restore-*")
		if len(aside) != 1 {
			t.Fatalf("corrupted data dir of %s not moved aside: %v", s.Name, aside)
		}
		if b, _ := os.ReadFile(filepath.Join(aside[0], "member", "snap", "db")); string(b) != "garbage" {
			t.Fatalf("moved-aside data dir of %s changed", s.Name)
		}
	}
	restored := startCluster(t, "3.6.16", specs) // same --initial-cluster as the restore
	for _, ep := range restored.endpoints() {
		checkKeys(t, ep, "/cfg/", want)
	}
}

// TestRunbookFromAnotherMember follows runbook (d): backups come from
// several members; the operator restores the newest backup of a chosen
// member (the old kit's "change the founding member").
func TestRunbookFromAnotherMember(t *testing.T) {
	repoDir := t.TempDir()
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	want := putKeys(t, c.client(), "/x/", 50, 10)
	ids := map[string]string{}
	for _, p := range c.procs[1:] { // back up from m2 and from m3 only
		ids[p.spec.Name] = mustCLI(t, nil, "snapshot", "--endpoints", p.spec.ClientURL, "--repo", repoDir).lastLine()
	}
	var listed []struct{ ID, Member string }
	if err := json.Unmarshal([]byte(mustCLI(t, nil, "list", "--repo", repoDir, "--json", "--from-member", "m2").stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != ids["m2"] || listed[0].Member != "m2" {
		t.Fatalf("list --from-member m2 = %+v, want %s", listed, ids["m2"])
	}
	c.killAll()
	n := newSpecs(t, "n", 1)[0]
	// The old kit's setting names the founding member's peer URL.
	out := mustCLI(t, []string{"ETCD_RESTORE_MASTER_ADV_PEER_URLS=" + n.PeerURL}, "restore", "--from-member", "m2",
		"--repo", repoDir, "--data-dir", n.DataDir, "--name", n.Name)
	if !strings.Contains(out.stdout, ids["m2"]) {
		t.Fatalf("restore --from-member m2 did not use m2's backup %s:\n%s", ids["m2"], out.stdout)
	}
	r := cli(t, nil, "restore", "--from-member", "m1", "--founding", "--repo", repoDir,
		"--data-dir", filepath.Join(t.TempDir(), "d"), "--name", "x", "--initial-advertise-peer-urls", n.PeerURL)
	if r.code != 3 {
		t.Fatalf("restore --from-member of a member without backups: exit %d, want 3\n%s", r.code, r.stderr)
	}
	startCluster(t, "3.6.16", []embedded.MemberSpec{n})
	checkKeys(t, n.ClientURL, "/x/", want)
}

// TestRunbookSecondSite follows runbook (e): backups are copied to a second
// site (S3) with copy, and the cluster is restored from there.
func TestRunbookSecondSite(t *testing.T) {
	srv := testenv.StartS3(t)
	env := srv.Env()
	primary, second := t.TempDir(), srv.URL("site2")
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	want := putKeys(t, c.client(), "/site/", 100, 32)
	eps := strings.Join(c.endpoints(), ",")
	mustCLI(t, nil, "snapshot", "--endpoints", eps, "--repo", primary)
	last := mustCLI(t, nil, "snapshot", "--endpoints", eps, "--repo", primary).lastLine()

	out := mustCLI(t, env, "copy", "all", "--repo", primary, "--to-repo", second, "--to-cluster", "prod")
	if strings.Count(out.stdout, " copied ") != 2 {
		t.Fatalf("copy all: %s", out.stdout)
	}
	again := mustCLI(t, env, "copy", "all", "--repo", primary, "--to-repo", second, "--to-cluster", "prod")
	if strings.Count(again.stdout, "already in destination") != 2 {
		t.Fatalf("second copy all should skip both: %s", again.stdout)
	}
	mustCLI(t, env, "verify", last, "--repo", second, "--cluster", "prod")

	// A damaged source backup is not copied, and the destination lists nothing new.
	bad := mustCLI(t, nil, "snapshot", "--endpoints", eps, "--repo", primary).lastLine()
	payload := filepath.Join(primary, "clusters", "default", "snapshots", bad+".db.zst")
	data, err := os.ReadFile(payload)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(payload, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, env, "copy", bad, "--repo", primary, "--to-repo", second, "--to-cluster", "prod"); r.code != 4 {
		t.Fatalf("copy of a damaged backup: exit %d, want 4\n%s", r.code, r.stderr)
	}
	if r := cli(t, env, "verify", bad, "--repo", second, "--cluster", "prod"); r.code != 3 {
		t.Fatalf("damaged backup is listed in the destination (verify exit %d)", r.code)
	}

	c.killAll()
	specs := newSpecs(t, "s", 3)
	ic := embedded.InitialCluster(specs)
	for _, s := range specs {
		mustCLI(t, env, "restore", last, "--repo", second, "--cluster", "prod", "--data-dir", s.DataDir,
			"--name", s.Name, "--initial-cluster", ic, "--initial-cluster-token", "e2e")
	}
	r := startCluster(t, "3.6.16", specs) // same --initial-cluster as the restore
	for _, ep := range r.endpoints() {
		checkKeys(t, ep, "/site/", want)
	}
}
