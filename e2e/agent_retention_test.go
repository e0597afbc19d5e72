package e2e

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAgentAppliesRetention runs the agent with --keep-last 2: it keeps
// backing up every second while the repository never holds more than two
// backups (prune runs after each backup), and the newest is always there.
func TestAgentAppliesRetention(t *testing.T) {
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	putKeys(t, c.client(), "/r/", 20, 10)
	repoDir := t.TempDir()
	a := startAgent(t, "retention", nil, "--endpoints", c.endpoints()[0], "--repo", repoDir,
		"--interval", "1s", "--keep-last", "2")
	seen := map[string]bool{}
	poll(t, 40*time.Second, "five backups taken", func() bool {
		var listed []struct{ ID string }
		r := cli(t, nil, "list", "--repo", repoDir, "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &listed) != nil {
			return false
		}
		if len(listed) > 3 { // 2 kept + one just published before its prune ran
			t.Fatalf("retention not applied: %d backups listed", len(listed))
		}
		for _, b := range listed {
			seen[b.ID] = true
		}
		return len(seen) >= 5
	})
	a.stop(t, 30*time.Second)
	var listed []struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, nil, "list", "--repo", repoDir, "--json").stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 {
		t.Fatalf("after the agent stopped: %d backups, want 2 (--keep-last 2)", len(listed))
	}
}

// TestAgentDrills runs restore drills from the agent and exports their
// result as metrics.
func TestAgentDrills(t *testing.T) {
	c := startCluster(t, "3.6.16", newSpecs(t, "m", 1))
	putKeys(t, c.client(), "/d/", 50, 10)
	a := startAgent(t, "drill", nil, "--endpoints", c.endpoints()[0], "--repo", t.TempDir(),
		"--interval", "1s", "--drill-every", "2s")
	poll(t, 60*time.Second, "a passed drill in /metrics", func() bool {
		mf := a.metrics(t)
		return metric(mf, "etcd_backup_last_drill_success_timestamp_seconds") > 0 &&
			metric(mf, "etcd_backup_drill_runs_total", "result", "success") >= 1
	})
	if n := metric(a.metrics(t), "etcd_backup_drill_runs_total", "result", "failure"); n != 0 {
		t.Fatalf("%v failed drills on good backups", n)
	}
	a.stop(t, 30*time.Second)
}
