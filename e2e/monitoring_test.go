package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"
)

// The monitoring files a release ships (deploy/prometheus, deploy/grafana).
const (
	alertRulesFile = "../deploy/prometheus/etcd-backup-rules.yml"
	dashboardFile  = "../deploy/grafana/etcd-backup.json"
)

// metricRef matches an etcd_backup_* metric name in PromQL (and in Grafana's
// label_values()): not preceded by a character that would make it part of
// a longer name. Label values ("etcd-backup.*") have a hyphen and never
// match.
var metricRef = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(etcd_backup_[a-zA-Z0-9_]+)`)

// metricNames returns the etcd_backup_* names exprs use, each once, sorted.
func metricNames(exprs []string) []string {
	var out []string
	for _, e := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	slices.Sort(out)
	return out
}

// alertRuleExprs returns the expressions of every rule in the rules file.
func alertRuleExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// dashboardExprs returns every query of the dashboard: the panels' PromQL
// ("expr", in rows too) and the template variables' queries ("query",
// "definition"), found by walking the whole JSON.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		case string:
			if key == "expr" || key == "query" || key == "definition" {
				out = append(out, v)
			}
		}
	}
	walk("", doc)
	return out
}

// exported reports whether a scrape has name: a family of that name, or a
// histogram's (summary's) _bucket, _sum or _count series.
func exported(mf map[string]*dto.MetricFamily, name string) bool {
	if mf[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok || mf[base] == nil {
			continue
		}
		switch mf[base].GetType() {
		case dto.MetricType_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func TestMetricNamesAndExported(t *testing.T) {
	got := metricNames([]string{
		`min by (job) (etcd_backup_latest_age_seconds{job=~"etcd-backup.*"}) > 7200`,
		`rate(etcd_backup_duration_seconds_bucket[5m]) / xetcd_backup_not_a_ref + etcd_backup_latest_age_seconds`,
		`label_values(etcd_backup_repository_up{job=~"$job"}, instance)`,
	})
	if want := []string{"etcd_backup_duration_seconds_bucket", "etcd_backup_latest_age_seconds", "etcd_backup_repository_up"}; !slices.Equal(got, want) {
		t.Errorf("metricNames = %v, want %v", got, want)
	}
	h, g := dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE
	mf := map[string]*dto.MetricFamily{"a_seconds": {Type: &h}, "b_count": {Type: &g}, "c": {Type: &g}}
	for name, want := range map[string]bool{"a_seconds_bucket": true, "a_seconds_sum": true, "a_seconds": true,
		"b_count": true, "b": false, "c_count": false, "c_bucket": false, "d": false} {
		if exported(mf, name) != want {
			t.Errorf("exported(%s) = %v, want %v", name, !want, want)
		}
	}
}

// TestMonitoringMetricsExported starts the real agent against a real etcd
// with every optional metric family turned on (--continuous, --verify-every,
// --drill-every, --keep-last, --leader-only), waits until each kind of event
// behind them has happened once (a backup, a journal segment, a passed
// verify and drill), and checks that its /metrics exports every
// etcd_backup_* metric the alert rules and the dashboard query. No
// allowlist: every family is registered when the agent starts (its label
// values too), except etcd_backup_latest_age_seconds, which is absent until
// the agent has read the repository once; the wait covers it.
func TestMonitoringMetricsExported(t *testing.T) {
	rules, dash := metricNames(alertRuleExprs(t)), metricNames(dashboardExprs(t))
	if len(rules) < 10 || len(dash) < 10 {
		t.Fatalf("found only %d metric names in %s and %d in %s: is the extraction broken?", len(rules), alertRulesFile, len(dash), dashboardFile)
	}

	c := startCluster(t, "3.6.16", newSpecs(t, "mon", 1))
	cl := c.client()
	putKeys(t, cl, "/mon/", 20, 10)
	a := startAgent(t, "monitoring", nil, "--endpoints", c.endpoints()[0], "--repo", t.TempDir(),
		"--interval", "2s", "--leader-only", "--continuous", "--journal-flush", "100ms",
		"--verify-every", "3s", "--drill-every", "3s", "--keep-last", "3", "--copy-to", t.TempDir(), "--copy-every", "1s")

	var mf map[string]*dto.MetricFamily
	lastPut, n := time.Time{}, 0
	poll(t, 3*time.Minute, "a backup, a journal segment, a passed verify and drill in /metrics", func() bool {
		if time.Since(lastPut) > 200*time.Millisecond { // changes for the journal
			lastPut, n = time.Now(), n+1
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cl.Put(ctx, fmt.Sprintf("/mon/live/%d", n%10), fmt.Sprint(n))
			cancel()
			if err != nil {
				t.Logf("put: %v", err)
			}
		}
		mf = a.metrics(t)
		return metric(mf, "etcd_backup_latest_age_seconds") >= 0 &&
			metric(mf, "etcd_backup_runs_total", "result", "success") >= 1 &&
			metric(mf, "etcd_backup_duration_seconds") >= 1 &&
			metric(mf, "etcd_backup_journal_segments_total") >= 1 &&
			metric(mf, "etcd_backup_journal_caught_up_timestamp_seconds") > 0 &&
			metric(mf, "etcd_backup_verify_runs_total", "result", "success") >= 1 &&
			metric(mf, "etcd_backup_drill_runs_total", "result", "success") >= 1
	})

	for _, f := range []struct {
		file  string
		names []string
	}{{alertRulesFile, rules}, {dashboardFile, dash}} {
		for _, name := range f.names {
			if !exported(mf, name) {
				t.Errorf("%s uses %s, which the agent does not export", f.file, name)
			}
		}
		t.Logf("%s: all %d etcd_backup_* metrics it uses are exported: %s", f.file, len(f.names), strings.Join(f.names, " "))
	}
	var unused []string
	for name := range mf {
		if strings.HasPrefix(name, "etcd_backup_") && !slices.ContainsFunc(dash, func(d string) bool { return d == name || strings.HasPrefix(d, name+"_") }) {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("exported, not on the dashboard: %v", unused)
	a.stop(t, 30*time.Second)
}
