package grafana

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

const dashboardFile = "etcd-backup.json"

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *datasourceRef `json:"datasource"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // of a collapsed row
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Requires []struct {
		Type    string `json:"type"`
		ID      string `json:"id"`
		Version string `json:"version"`
	} `json:"__requires"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	ID            *int    `json:"id"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels returns the panels, those of collapsed rows included.
func allPanels(d dashboard) []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// builtins are Grafana's own variables a query may use.
var builtins = []string{"__rate_interval", "__interval", "__range"}

var varRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// TestDashboardImportable checks what Grafana 10/11 needs to import the
// dashboard (Dashboards > Import, or file provisioning) and show it as
// meant: a Prometheus input and datasource variable used by every query,
// job and instance variables, distinct panel ids, panels inside the 24-column
// grid that do not overlap, and queries that use only defined variables.
func TestDashboardImportable(t *testing.T) {
	d := load(t)
	if d.UID == "" || len(d.UID) > 40 || d.Title == "" {
		t.Errorf("uid %q (1 to 40 characters) and title %q must be set", d.UID, d.Title)
	}
	if d.ID != nil {
		t.Errorf("id = %d: an exported dashboard has \"id\": null (Grafana assigns one)", *d.ID)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d: want one Grafana 10 and 11 read without migration surprises (36..41)", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one datasource input DS_PROMETHEUS of plugin prometheus", d.Inputs)
	}
	requires := map[string]string{}
	for _, r := range d.Requires {
		requires[r.Type+"/"+r.ID] = r.Version
	}
	if v := requires["grafana/grafana"]; !strings.HasPrefix(v, "10.") {
		t.Errorf("__requires grafana version %q, want 10.x (the oldest Grafana it is written for)", v)
	}
	if _, ok := requires["datasource/prometheus"]; !ok {
		t.Error("__requires lists no prometheus datasource")
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` || ds.Current.Value != "${DS_PROMETHEUS}" {
		t.Errorf("templating: want a variable datasource of type datasource, query prometheus, current ${DS_PROMETHEUS}; got %+v", ds)
	}
	for _, name := range []string{"job", "instance"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("templating: want a query variable %s on ${datasource}; got %+v", name, v)
		}
	}

	// Panels: ids, grid, datasource, queries.
	type cell struct{ x, y int }
	taken := map[cell]string{}
	ids := map[int]string{}
	for _, p := range allPanels(d) {
		if p.ID <= 0 {
			t.Errorf("panel %q: id %d", p.Title, p.ID)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at x=%d y=%d", other, p.Title, x, y)
				}
				taken[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				t.Errorf("row %q has queries", p.Title)
			}
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || *p.Datasource != (datasourceRef{"prometheus", "${datasource}"}) {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s: empty expr", p.Title, tg.RefID)
			}
			if tg.Datasource == nil || *tg.Datasource != *p.Datasource {
				t.Errorf("panel %q query %s: datasource %+v differs from the panel's", p.Title, tg.RefID, tg.Datasource)
			}
			for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := vars[m[1]]; !ok && !slices.Contains(builtins, m[1]) {
					t.Errorf("panel %q query %s uses undefined variable $%s", p.Title, tg.RefID, m[1])
				}
			}
			if !strings.Contains(tg.Expr, `job=~"$job"`) {
				t.Errorf("panel %q query %s does not filter by the job variable: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
}

// exprs returns every PromQL expression of the dashboard by where it is.
func exprs(d dashboard) map[string]string {
	out := map[string]string{}
	for _, p := range allPanels(d) {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %d %q query %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	return out
}

// labelValues matches the Grafana variable query label_values(SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// TestDashboardPromQL has promtool parse every query: each becomes a
// recording rule (variables replaced by sample values) in a rules file that
// `promtool check rules` checks. The selectors of the variables'
// label_values() queries are checked the same way.
func TestDashboardPromQL(t *testing.T) {
	bin := testenv.Bin(t, "promtool")
	d := load(t)
	all := exprs(d)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: query %s: %v", v.Name, v.Query, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		all["variable "+v.Name] = m[1]
	}
	subst := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1d",
		"$job", "etcd-backup", "$instance", "127.0.0.1:9785")
	type recording struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []recording
	var where []string
	for w := range all {
		where = append(where, w)
	}
	slices.Sort(where)
	for i, w := range where {
		e := subst.Replace(all[w])
		if strings.Contains(e, "$") {
			t.Errorf("%s: a variable is left after substitution: %s", w, e)
		}
		rules = append(rules, recording{Record: fmt.Sprintf("dashboard_query_%d", i), Expr: e})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "check", "rules", file)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		for i, w := range where {
			t.Logf("dashboard_query_%d = %s", i, w)
		}
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out.String())
	}
	t.Logf("promtool parsed %d queries", len(rules))
}
