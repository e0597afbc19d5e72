package clusterrestore

import (
	"testing"
	"time"
)

func TestParseReports(t *testing.T) {
	ms, top := parseReports([]string{
		"order.json", "bundle.db.zst.age", "go.json",
		"reports/m1/01-accepted.json", "reports/m1/02-checked.json", "reports/m1/03-fetching.json",
		"reports/m2/01-accepted.json", "reports/m2/02-checked.json", "reports/m2/03-failed.json",
		"reports/m3/x/01-odd.json", // not a report: ignored
	})
	if !top["order.json"] || !top["go.json"] || top["start.json"] {
		t.Errorf("top-level objects %v", top)
	}
	if got := ms.last("m1"); got != StateFetching {
		t.Errorf("m1 is %q, want fetching", got)
	}
	if !ms.has("m2", StateChecked) || ms.has("m2", StateBuilt) || !Terminal(ms.last("m2")) {
		t.Errorf("m2 reports %v", ms["m2"])
	}
	if len(ms["m3"]) != 0 || ms.last("m3") != "" {
		t.Errorf("m3 reports %v, want none", ms["m3"])
	}
	o := &Order{Members: []string{"m1", "m2"}}
	if !allChecked(o, ms) || allTerminal(o, ms) || allBuilt(o, ms) {
		t.Errorf("checked %v terminal %v built %v, want true false false", allChecked(o, ms), allTerminal(o, ms), allBuilt(o, ms))
	}
	ms["m1"] = append(ms["m1"], "04-stopping.json", "05-building.json", "06-built.json")
	if !allBuilt(o, ms) { // m2 failed: the others start anyway
		t.Errorf("all built or failed: allBuilt false")
	}
}

func TestSpecHash(t *testing.T) {
	at := time.Date(2026, 11, 22, 9, 40, 59, 0, time.UTC)
	base := specHash("latest", 0, at, "m1=http://a:2380", "t", 0, false)
	if base != specHash("latest", 0, at.In(time.FixedZone("x", 3600)), "m1=http://a:2380", "t", 0, false) {
		t.Error("the same instant in another zone hashes differently")
	}
	for i, other := range []string{
		specHash("20261122T094059.000Z-00000000", 0, at, "m1=http://a:2380", "t", 0, false),
		specHash("latest", 5, at, "m1=http://a:2380", "t", 0, false),
		specHash("latest", 0, at, "m1=http://b:2380", "t", 0, false),
		specHash("latest", 0, at, "m1=http://a:2380", "u", 0, false),
		specHash("latest", 0, at, "m1=http://a:2380", "t", 10, true),
	} {
		if other == base {
			t.Errorf("case %d: a different request has the same spec hash", i)
		}
	}
}

func TestParseMembers(t *testing.T) {
	names, canon, err := parseMembers("m2=http://b:2380, m1=http://a:2380")
	if err != nil || len(names) != 2 || names[0] != "m1" || canon != "m1=http://a:2380,m2=http://b:2380" {
		t.Fatalf("parseMembers: %v %q %v", names, canon, err)
	}
	for _, bad := range []string{"", "m1", "m1=ftp://a:2380"} {
		if _, _, err := parseMembers(bad); err == nil {
			t.Errorf("parseMembers(%q) accepted", bad)
		}
	}
}
