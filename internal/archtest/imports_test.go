package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// restricted are the external modules a package may import only when its
// Imports line lists them (or a package below them).
var restricted = []string{
	"go.etcd.io/etcd/server/v3",
	"go.etcd.io/etcd/etcdutl/v3",
	"go.etcd.io/etcd/client/v3",
	"github.com/minio/minio-go/v7",
	"github.com/Azure/azure-sdk-for-go/sdk",
	"cloud.google.com/go/storage",
	"github.com/prometheus/client_golang",
}

// Packages the direction rules name.
var (
	backendPkgs = []string{"internal/storage/local", "internal/storage/s3", "internal/storage/azblob", "internal/storage/gcs", "internal/storage/rclone"}
	// testPkgs are imported from _test.go files only.
	testPkgs = []string{"internal/testenv", "internal/storage/storagetest", "internal/drill/drilltest"}
	// serverImporters may import go.etcd.io/etcd/server/v3: etcd's own code
	// run offline or in-process (internal/datadir/doc.go says why).
	serverImporters = []string{"internal/datadir", "internal/drill", "internal/embedded", "internal/journal/replay"}
)

const importsPrefix = "// Imports:"

// pkg is one package of the module as the checker sees it.
type pkg struct {
	Rel      string   // import path relative to the module root: "internal/storage" ("." for the root)
	DocFiles []string // base names of the files that hold a package comment
	Doc      string   // the package comment(s), raw "// ..." lines joined by "\n"
	Imports  []string // non-test imports, full import paths
}

// docGo is the file that must hold rel's package comment.
func docGo(rel string) string { return path.Join(rel, "doc.go") }

// under reports whether p is prefix or a path below it.
func under(p, prefix string) bool {
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// restrictedModule returns the restricted module p belongs to, or "".
func restrictedModule(p string) string {
	for _, m := range restricted {
		if under(p, m) {
			return m
		}
	}
	return ""
}

// parseImports returns the entries of the one "// Imports:" line of doc
// (nil for "none").
func parseImports(doc string) ([]string, error) {
	var found []string
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), importsPrefix) {
			found = append(found, strings.TrimSpace(line))
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no %q line", importsPrefix)
	case 1:
	default:
		return nil, fmt.Errorf("more than one %q line (%d); keep one", importsPrefix, len(found))
	}
	line := found[0]
	if !strings.HasPrefix(line, importsPrefix+" ") {
		return nil, fmt.Errorf("malformed line %q: want %q followed by a comma-separated list or none", line, importsPrefix+" ")
	}
	var list []string
	for item := range strings.SplitSeq(strings.TrimPrefix(line, importsPrefix+" "), ",") {
		item = strings.TrimSpace(item)
		if item == "" || strings.ContainsAny(item, " \t") {
			return nil, fmt.Errorf("malformed line %q: want comma-separated import paths", line)
		}
		list = append(list, item)
	}
	if slices.Contains(list, "none") {
		if len(list) > 1 {
			return nil, fmt.Errorf("malformed line %q: none stands alone", line)
		}
		return nil, nil
	}
	return list, nil
}

// check returns every violation of the import rules in pkgs, the packages
// of module.
func check(module string, pkgs []pkg) []string {
	exists := map[string]bool{}
	for _, p := range pkgs {
		exists[p.Rel] = true
	}
	var problems []string
	for _, p := range pkgs {
		doc := docGo(p.Rel)
		report := func(format string, args ...any) {
			problems = append(problems, p.Rel+": "+fmt.Sprintf(format, args...))
		}
		switch {
		case len(p.DocFiles) == 0:
			report("no package comment: write one in %s, with an %q line", doc, importsPrefix+" ...")
			continue
		case !slices.Equal(p.DocFiles, []string{"doc.go"}):
			report("package comment in %s: keep one package comment, in %s", strings.Join(p.DocFiles, ", "), doc)
		}
		listed, err := parseImports(p.Doc)
		if err != nil {
			report("%v in the package comment: update %s", err, doc)
			continue
		}
		for _, l := range listed {
			if strings.Contains(strings.Split(l, "/")[0], ".") {
				if restrictedModule(l) == "" {
					report("%s lists %s, which is not one of the restricted external modules (%s); other external imports are not listed: update %s",
						importsPrefix, l, strings.Join(restricted, ", "), doc)
				}
			} else if !exists[l] {
				report("%s lists %s, which is no package of this module (a typo?): update %s", importsPrefix, l, doc)
			}
		}
		allowed := func(imp string) bool {
			return slices.ContainsFunc(listed, func(l string) bool { return under(imp, l) })
		}
		for _, imp := range p.Imports {
			rel, internal := "", false
			switch {
			case imp == module:
				rel, internal = ".", true
			case strings.HasPrefix(imp, module+"/"):
				rel, internal = strings.TrimPrefix(imp, module+"/"), true
			}
			switch {
			case internal && !allowed(rel):
				report("imports %s, which the %s line of %s does not list: add it there (if the import is meant) or drop the import", rel, importsPrefix, doc)
			case !internal && restrictedModule(imp) != "" && !allowed(imp):
				report("imports %s (restricted module %s), which the %s line of %s does not list: add %s there (if the import is meant) or drop the import",
					imp, restrictedModule(imp), importsPrefix, doc, restrictedModule(imp))
			}
			if internal {
				imp = rel
			}
			for _, msg := range direction(p.Rel, imp, internal) {
				report("imports %s: %s", imp, msg)
			}
		}
	}
	return problems
}

// direction returns the direction rules that from importing imp breaks.
// imp is relative to the module root when internal, a full import path
// otherwise.
func direction(from, imp string, internal bool) []string {
	var broken []string
	if internal && under(from, "internal") && under(imp, "cmd") {
		broken = append(broken, fmt.Sprintf("nothing under internal/ imports cmd/ (the commands sit on top of the library): move what both need into internal/ and update %s", docGo(from)))
	}
	if internal && slices.Contains(backendPkgs, from) && imp != "internal/storage" {
		broken = append(broken, fmt.Sprintf("a storage backend imports no package of this module but internal/storage (%s): drop the import", docGo(from)))
	}
	if internal && slices.Contains(backendPkgs, imp) && from != "internal/storage/backends" {
		broken = append(broken, "only internal/storage/backends imports concrete storage backends (internal/storage/backends/doc.go): open the repository with backends.Open and drop the import, and its entry in "+docGo(from))
	}
	if from == "internal/format" && ((internal && (under(imp, "internal/storage") || under(imp, "internal/etcd"))) || (!internal && under(imp, "go.etcd.io"))) {
		broken = append(broken, "internal/format knows no storage and no etcd (internal/format/doc.go): drop the import")
	}
	if internal && slices.Contains(testPkgs, imp) && !slices.Contains(testPkgs, from) {
		broken = append(broken, fmt.Sprintf("%s is imported from _test.go files only (%s): drop the import, and its entry in %s", imp, docGo(imp), docGo(from)))
	}
	if !internal && under(imp, "go.etcd.io/etcd/server/v3") && !slices.Contains(serverImporters, from) {
		broken = append(broken, fmt.Sprintf("only %s import etcd's server packages (internal/datadir/doc.go): drop the import, or change the rule there and in this test", strings.Join(serverImporters, ", ")))
	}
	if !internal && under(imp, "go.etcd.io/etcd/etcdutl/v3") && from != "internal/datadir" {
		broken = append(broken, "only internal/datadir imports etcdutl (internal/datadir/doc.go): drop the import")
	}
	return broken
}

// listed is what `go list -json` reports of a package, as far as used here.
type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	Module     *struct {
		Path string
		Main bool
	}
	Error *struct{ Err string }
}

// load lists the module's packages with `go list` from the module root.
func load(t *testing.T) (module string, pkgs []pkg) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside the module", gomod)
	}
	cmd := exec.Command("go", "list", "-e", "-json", "./...")
	cmd.Dir = filepath.Dir(gomod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list -e -json ./... in %s: %v\n%s", cmd.Dir, err, stderr.Bytes())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	var all []listed
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if l.Module != nil && l.Module.Main && module == "" {
			module = l.Module.Path
		}
		all = append(all, l)
	}
	if module == "" {
		t.Fatal("go list reported no package of the main module")
	}
	for _, l := range all {
		if l.Error != nil {
			t.Errorf("go list: %s: %s", l.ImportPath, l.Error.Err)
			continue
		}
		files := append(slices.Clone(l.GoFiles), l.CgoFiles...)
		if len(files) == 0 {
			continue // tests only: e2e, deploy/kubernetes
		}
		rel := "."
		if l.ImportPath != module {
			rel = strings.TrimPrefix(l.ImportPath, module+"/")
		}
		p := pkg{Rel: rel, Imports: l.Imports}
		slices.Sort(files)
		fset := token.NewFileSet()
		var docs []string
		for _, name := range files {
			f, err := parser.ParseFile(fset, filepath.Join(l.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			if f.Doc == nil {
				continue
			}
			p.DocFiles = append(p.DocFiles, name)
			for _, c := range f.Doc.List {
				docs = append(docs, c.Text)
			}
		}
		p.Doc = strings.Join(docs, "\n")
		pkgs = append(pkgs, p)
	}
	return module, pkgs
}

// TestImports checks every package's "// Imports:" line against the
// imports `go list` reports, and the direction rules.
func TestImports(t *testing.T) {
	module, pkgs := load(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages of %s; is the test running in the module?", len(pkgs), module)
	}
	for _, p := range check(module, pkgs) {
		t.Error(p)
	}
}

// TestCheck runs the checker on made-up packages that break each rule.
func TestCheck(t *testing.T) {
	const mod = "example.com/m"
	doc := func(imports string) string {
		return "// Package x does things.\n//\n// " + strings.TrimPrefix(importsPrefix, "// ") + " " + imports
	}
	p := func(rel, imports string, imps ...string) pkg {
		for i, imp := range imps {
			if under(imp, "internal") || under(imp, "cmd") {
				imps[i] = mod + "/" + imp
			}
		}
		return pkg{Rel: rel, DocFiles: []string{"doc.go"}, Doc: doc(imports), Imports: imps}
	}
	good := []pkg{
		p("internal/storage", "none", "io", "context"),
		p("internal/storage/local", "internal/storage", "os", "internal/storage"),
		p("internal/storage/backends", "internal/storage, internal/storage/local", "internal/storage", "internal/storage/local"),
		p("internal/format", "none", "github.com/klauspost/compress/zstd", "filippo.io/age"),
		p("internal/etcd", "go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/client/v3/concurrency", "go.etcd.io/etcd/client/pkg/v3/fileutil"),
		p("internal/embedded", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3/embed"),
		p("internal/testenv", "internal/etcd", "internal/etcd"),
		p("cmd/tool", "internal/storage/backends, internal/etcd, github.com/prometheus/client_golang",
			"internal/storage/backends", "internal/etcd", "github.com/prometheus/client_golang/prometheus"),
	}
	with := func(extra ...pkg) []pkg { return append(slices.Clone(good), extra...) }
	tests := []struct {
		name string
		pkgs []pkg
		want []string // each must appear in some problem; none: no problem
	}{
		{"clean", good, nil},
		{"no package comment", with(pkg{Rel: "internal/x"}), []string{"internal/x: no package comment: write one in internal/x/doc.go"}},
		{"comment outside doc.go", with(pkg{Rel: "internal/x", DocFiles: []string{"x.go"}, Doc: doc("none")}), []string{"package comment in x.go: keep one package comment, in internal/x/doc.go"}},
		{"two package comments", with(pkg{Rel: "internal/x", DocFiles: []string{"doc.go", "x.go"}, Doc: doc("none") + "\n// Package x.\n" + doc("none")}),
			[]string{"package comment in doc.go, x.go", "more than one"}},
		{"no Imports line", with(pkg{Rel: "internal/x", DocFiles: []string{"doc.go"}, Doc: "// Package x imports nothing."}), []string{`no "// Imports:" line in the package comment: update internal/x/doc.go`}},
		{"Imports in a code block is no Imports line", with(pkg{Rel: "internal/x", DocFiles: []string{"doc.go"}, Doc: "// Package x.\n//\n//\tImports: none"}), []string{`no "// Imports:" line`}},
		{"none with others", with(p("internal/x", "none, internal/storage")), []string{"none stands alone"}},
		{"empty entry", with(p("internal/x", "internal/storage,, internal/etcd")), []string{"malformed"}},
		{"unlisted internal import", with(p("internal/x", "internal/etcd", "internal/etcd", "internal/storage")),
			[]string{"internal/x: imports internal/storage, which the // Imports: line of internal/x/doc.go does not list"}},
		{"unlisted restricted import", with(p("internal/x", "none", "go.etcd.io/etcd/client/v3/concurrency")),
			[]string{"imports go.etcd.io/etcd/client/v3/concurrency (restricted module go.etcd.io/etcd/client/v3), which the // Imports: line of internal/x/doc.go does not list"}},
		{"unlisted prometheus", with(p("internal/x", "internal/etcd", "internal/etcd", "github.com/prometheus/client_golang/prometheus/promhttp")),
			[]string{"restricted module github.com/prometheus/client_golang"}},
		{"listed typo", with(p("internal/x", "internal/storag")), []string{"lists internal/storag, which is no package of this module (a typo?): update internal/x/doc.go"}},
		{"listed unrestricted external", with(p("internal/x", "github.com/spf13/cobra", "github.com/spf13/cobra")), []string{"lists github.com/spf13/cobra, which is not one of the restricted external modules"}},
		{"internal imports cmd", with(p("internal/x", "cmd/tool", "cmd/tool")), []string{"internal/x: imports cmd/tool: nothing under internal/ imports cmd/"}},
		{"backend imports more than storage", with(p("internal/storage/s3", "internal/storage, internal/format", "internal/storage", "internal/format")),
			[]string{"internal/storage/s3: imports internal/format: a storage backend imports no package of this module but internal/storage (internal/storage/s3/doc.go)"}},
		{"backend imported outside backends", with(p("internal/repo", "internal/storage/local", "internal/storage/local")),
			[]string{"internal/repo: imports internal/storage/local: only internal/storage/backends imports concrete storage backends"}},
		{"format imports storage", with(p("internal/format", "internal/storage", "internal/storage")), []string{"internal/format knows no storage and no etcd"}},
		{"format imports etcd", with(p("internal/format", "none", "go.etcd.io/etcd/api/v3/mvccpb")), []string{"internal/format knows no storage and no etcd"}},
		{"test helper in a non-test import", with(p("internal/repo", "internal/testenv", "internal/testenv")), []string{"internal/testenv is imported from _test.go files only"}},
		{"etcd server outside its importers", with(p("internal/x", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3/storage/mvcc")), []string{"import etcd's server packages"}},
		{"etcdutl outside datadir", with(p("internal/journal/replay", "go.etcd.io/etcd/etcdutl/v3", "go.etcd.io/etcd/etcdutl/v3/snapshot")), []string{"only internal/datadir imports etcdutl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := check(mod, tt.pkgs)
			if tt.want == nil && len(got) > 0 {
				t.Fatalf("problems in a clean module:\n%s", strings.Join(got, "\n"))
			}
			if tt.want != nil && len(got) == 0 {
				t.Fatal("no problem found")
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
					t.Errorf("no problem contains %q; got:\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, g := range got {
				if !strings.Contains(g, "doc.go") {
					t.Errorf("problem does not say which doc.go to update: %s", g)
				}
			}
		})
	}
}
