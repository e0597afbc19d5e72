package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// serverVersions are the etcd servers restores are tested against: Debian's
// etcd-server package (3.4) and releases built from the module proxy.
var serverVersions = []string{"3.4", "3.5.35", "3.6.16", "3.7.3"}

// TestDisasterRecoveryNewMachines is the whole-cluster runbook on real etcd
// processes of every supported version: back up through the CLI, SIGKILL
// every member, restore all three on new peer URLs, start etcd, read every
// key from every member.
func TestDisasterRecoveryNewMachines(t *testing.T) {
	for _, v := range serverVersions {
		t.Run("etcd-"+v, func(t *testing.T) {
			repoDir := t.TempDir()
			old := startCluster(t, v, newSpecs(t, "m", 3))
			want := putKeys(t, old.client(), "/registry/pods/", 300, 200)

			snap := mustCLI(t, nil, "snapshot", "--endpoints", strings.Join(old.endpoints(), ","), "--repo", repoDir)
			id := snap.lastLine()

			var listed []map[string]any
			if err := json.Unmarshal([]byte(mustCLI(t, nil, "list", "--repo", repoDir, "--json").stdout), &listed); err != nil {
				t.Fatal(err)
			}
			if len(listed) != 1 || listed[0]["id"] != id {
				t.Fatalf("list shows %v, want one backup %s", listed, id)
			}
			for _, field := range []string{"id", "time", "revision", "member", "cluster_id", "etcd_version", "size", "stored_size"} {
				if _, ok := listed[0][field]; !ok {
					t.Errorf("list --json lacks %q", field)
				}
			}
			if ev, _ := listed[0]["etcd_version"].(string); !strings.HasPrefix(ev, v) {
				t.Errorf("etcd_version %q, want %s", ev, v)
			}
			mustCLI(t, nil, "verify", id, "--repo", repoDir)

			old.killAll()

			specs := newSpecs(t, "m", 3) // new machines: new ports, new data dirs
			ic := embedded.InitialCluster(specs)
			for _, s := range specs {
				mustCLI(t, nil, "restore", "latest", "--repo", repoDir, "--data-dir", s.DataDir,
					"--name", s.Name, "--initial-cluster", ic, "--initial-cluster-token", "e2e")
			}
			restored := startCluster(t, v, specs) // same --initial-cluster as the restore
			for _, ep := range restored.endpoints() {
				checkKeys(t, ep, "/registry/pods/", want)
			}
			// The restored cluster takes writes and has three voting members.
			cl := restored.client()
			if _, err := cl.Put(t.Context(), "/after", "restore"); err != nil {
				t.Fatal(err)
			}
			ml, err := cl.MemberList(t.Context())
			if err != nil || len(ml.Members) != 3 {
				t.Fatalf("member list after restore: %v %v", ml, err)
			}
		})
	}
}
