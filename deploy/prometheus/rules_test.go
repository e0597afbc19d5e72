package prometheus

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

const (
	rulesFile     = "etcd-backup-rules.yml"
	rulesTestFile = "etcd-backup-rules_test.yml"
	// runbookPrefix is where every runbook_url points: the docs of this
	// repository's main branch.
	runbookPrefix = "https://github.com/etcd-backup/etcd-backup/blob/main/"
)

// severities are the values of the severity label, most urgent first.
var severities = []string{"critical", "warning", "info"}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type unitTestFile struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name           string `json:"name"`
		Interval       string `json:"interval"`
		StartTimestamp string `json:"start_timestamp"`
		InputSeries    []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func readStrict(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func alerts(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readStrict(t, rulesFile, &f)
	var out []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no alerting rule", rulesFile)
	}
	return out
}

// promtool runs promtool with args in dir and returns its combined output.
func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Bin(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestRulesCheck runs `promtool check rules` with every linter, lint
// findings fatal.
func TestRulesCheck(t *testing.T) {
	out, err := promtool(t, ".", "check", "rules", "--lint=all", "--lint-fatal", rulesFile)
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	t.Logf("promtool check rules:\n%s", out)
}

// TestRulesUnit runs the unit tests of etcd-backup-rules_test.yml.
func TestRulesUnit(t *testing.T) {
	out, err := promtool(t, ".", "test", "rules", rulesTestFile)
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", rulesTestFile, err, out)
	}
}

// TestRulesConventions checks what promtool does not: every alert has a
// severity label among severities and a summary, a description and a
// runbook_url into this repository's docs whose file and anchor exist.
func TestRulesConventions(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]map[string]bool{} // doc file -> its heading anchors
	seen := map[string]bool{}
	for _, r := range alerts(t) {
		if seen[r.Alert] {
			t.Errorf("alert %s defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if !strings.HasPrefix(r.Alert, "EtcdBackup") {
			t.Errorf("alert %s: name does not start with EtcdBackup", r.Alert)
		}
		if !slices.Contains(severities, r.Labels["severity"]) {
			t.Errorf("alert %s: severity label %q, want one of %v", r.Alert, r.Labels["severity"], severities)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s annotation", r.Alert, a)
			}
		}
		if !strings.Contains(r.Expr, `job=~"etcd-backup.*"`) {
			t.Errorf("alert %s: the expression does not select job=~\"etcd-backup.*\" like the others: %s", r.Alert, r.Expr)
		}
		u := r.Annotations["runbook_url"]
		if !strings.HasPrefix(u, runbookPrefix+"docs/") {
			t.Errorf("alert %s: runbook_url %q does not start with %sdocs/", r.Alert, u, runbookPrefix)
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Fragment == "" {
			t.Errorf("alert %s: runbook_url %q has no #anchor", r.Alert, u)
			continue
		}
		doc := strings.TrimPrefix(pu.Path, "/etcd-backup/etcd-backup/blob/main/")
		if anchors[doc] == nil {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(doc)))
			if err != nil {
				t.Errorf("alert %s: runbook_url %q: %v", r.Alert, u, err)
				continue
			}
			anchors[doc] = headingAnchors(string(b))
		}
		if !anchors[doc][pu.Fragment] {
			t.Errorf("alert %s: runbook_url %q: %s has no heading with anchor #%s", r.Alert, u, doc, pu.Fragment)
		}
	}
}

// headingAnchors returns the anchors GitHub gives the Markdown headings of
// doc: lower case, punctuation dropped but '-' and '_', spaces as '-', and
// -1, -2, ... appended to repeats. Headings inside code blocks do not count.
func headingAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	count := map[string]int{}
	fence := false
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r > 127:
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := count[a]; n > 0 {
			out[a+"-"+strconv.Itoa(n)] = true
		} else {
			out[a] = true
		}
		count[a]++
	}
	return out
}

func TestHeadingAnchors(t *testing.T) {
	got := headingAnchors("# Title\n\n### EtcdBackupTooOld\n```sh\n# not a heading\n```\n## `--continuous`: every change, one-second RPO\n## A b\n## A b\n")
	for _, want := range []string{"title", "etcdbackuptooold", "--continuous-every-change-one-second-rpo", "a-b", "a-b-1"} {
		if !got[want] {
			t.Errorf("anchor %q missing from %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a comment in a code block counted as a heading")
	}
}

// TestRulesUnitCoverage checks that the unit tests expect every alert to
// fire somewhere and to stay quiet somewhere (an empty exp_alerts).
func TestRulesUnitCoverage(t *testing.T) {
	var ut unitTestFile
	readStrict(t, rulesTestFile, &ut)
	if !slices.Equal(ut.RuleFiles, []string{rulesFile}) {
		t.Fatalf("%s tests %v, want [%s]", rulesTestFile, ut.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, g := range ut.Tests {
		for _, c := range g.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	names := map[string]bool{}
	for _, r := range alerts(t) {
		names[r.Alert] = true
		if !fires[r.Alert] {
			t.Errorf("%s: no test case where %s fires", rulesTestFile, r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test case where %s stays quiet (exp_alerts: [])", rulesTestFile, r.Alert)
		}
	}
	for n := range fires {
		if !names[n] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, n, rulesFile)
		}
	}
	for n := range quiet {
		if !names[n] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, n, rulesFile)
		}
	}
}

// TestRulesUnitBites mutates each alert in a copy of the rules, once into
// an expression that never fires and once into one that always fires, and
// checks that the unit tests of that alert (the test groups that name it)
// then fail on it: each alert's expression really matters to them.
func TestRulesUnitBites(t *testing.T) {
	testenv.Bin(t, "promtool")
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var ut unitTestFile
	readStrict(t, rulesTestFile, &ut)
	groups := map[string][]string{} // alert -> names of the test groups that test it
	for _, g := range ut.Tests {
		for _, c := range g.AlertRuleTest {
			if !slices.Contains(groups[c.Alertname], g.Name) {
				groups[c.Alertname] = append(groups[c.Alertname], g.Name)
			}
		}
	}
	var names []string
	for _, r := range alerts(t) {
		names = append(names, r.Alert)
	}
	mutations := map[string]string{
		"never":  `vector(1) < 0`,
		"always": `vector(1)`,
	}
	sem := make(chan struct{}, 2) // promtool runs at a time
	for _, name := range names {
		for kind, expr := range mutations {
			t.Run(name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				mutated := mutate(t, b, name, expr)
				dir := t.TempDir()
				for f, data := range map[string][]byte{rulesFile: mutated, rulesTestFile: tests} {
					if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				args := []string{"test", "rules"}
				for _, g := range groups[name] {
					if g == "" {
						t.Fatalf("a test group of %s has no name: --run cannot select it", name)
					}
					args = append(args, "--run", "^"+regexp.QuoteMeta(g)+"$")
				}
				out, err := promtool(t, dir, append(args, rulesTestFile)...)
				if err == nil {
					t.Fatalf("with %s's expression replaced by %q the unit tests still pass:\n%s", name, expr, out)
				}
				if !regexp.MustCompile(`alertname: ` + regexp.QuoteMeta(name) + `\b`).MatchString(out) {
					t.Fatalf("with %s's expression replaced by %q promtool failed, but not on %s:\n%s", name, expr, name, out)
				}
			})
		}
	}
}

// mutate returns the rules file with the expression of alert name replaced
// by expr (and its for: dropped, so that "always" fires at once).
func mutate(t *testing.T, rules []byte, name, expr string) []byte {
	t.Helper()
	var f map[string]any
	if err := yaml.Unmarshal(rules, &f); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range f["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			m := r.(map[string]any)
			if m["alert"] == name {
				m["expr"] = expr
				delete(m, "for")
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("alert %s not found", name)
	}
	out, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
