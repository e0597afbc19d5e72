package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	pkgName = "etcd-backup"
	envFile = "/etc/etcd-backup/etcd-backup.env"
	unitDir = "lib/systemd/system" // relative: in the tarball's systemd/ and under /
	// stateDir is where a local repository of the packaged units lives;
	// neither remove nor purge may touch it.
	stateDir = "/var/lib/etcd-backup"
)

// The files of 'etcd-backup systemd --package', relative to its --out.
var systemdFiles = func() []string {
	files := []string{"etc/etcd-backup/etcd-backup.env"}
	for _, u := range []string{"etcd-backup.service", "etcd-backup.timer", "etcd-backup-agent.service", "etcd-restore.service", "etcd-join.service"} {
		files = append(files, unitDir+"/"+u)
	}
	for _, s := range []string{"etcd-backup.service", "etcd-backup-agent.service", "etcd-restore.service", "etcd-join.service", "etcd.service"} {
		files = append(files, unitDir+"/"+s+".d/30-etcd-backup.conf")
	}
	return files
}()

// The units systemd-analyze verifies.
var units = []string{"etcd-backup.service", "etcd-backup.timer", "etcd-backup-agent.service", "etcd-restore.service", "etcd-join.service"}

// Commands that must have a man page (others may: new commands).
var manCommands = []string{"", "snapshot", "agent", "list", "verify", "restore", "history", "join", "promote", "copy", "prune", "demo", "systemd", "systemd-install", "version", "completion"}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "release.sh")); err != nil {
		t.Fatalf("not in the repository: %v", err)
	}
	return root
}

// debVersion runs scripts/release.sh's deb_version.
func debVersion(t *testing.T, root, version string) string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `. "$1" && deb_version "$2"`, "bash", filepath.Join(root, "scripts", "release.sh"), version).Output()
	if err != nil {
		t.Fatalf("deb_version %q: %v", version, err)
	}
	return strings.TrimSpace(string(out))
}

func TestDebVersion(t *testing.T) {
	root := repoRoot(t)
	cases := map[string]string{
		"v1.2.3":                   "1.2.3",
		"v1.2.3-dirty":             "1.2.3+dirty",
		"v1.2.3-rc.1":              "1.2.3~rc.1",
		"v1.2.3-4-gabc1234":        "1.2.3+git4.abc1234",
		"v1.2.3-4-gabc1234-dirty":  "1.2.3+git4.abc1234.dirty",
		"v1.2.3-rc.1-4-gabc1234":   "1.2.3~rc.1+git4.abc1234",
		"176c939":                  "0.0.0~git176c939",
		"176c939-dirty":            "0.0.0~git176c939+dirty",
		"dev":                      "0.0.0~dev",
		"v1.2":                     "1.2",
		"release/2026_01":          "0.0.0~release.2026.01",
		"1.0.0":                    "1.0.0",
		"v10.20.30-beta2-11-g0a1b": "10.20.30~beta2+git11.0a1b",
	}
	for in, want := range cases {
		got := debVersion(t, root, in)
		if got != want {
			t.Errorf("deb_version %q = %q, want %q", in, got, want)
		}
	}
	// The order Debian sees is the order of the git versions.
	order := []string{"176c939", "v1.2.3-rc.1", "v1.2.3-rc.1-4-gabc1234", "v1.2.3", "v1.2.3-4-gabc1234", "v1.2.4"}
	for i := 1; i < len(order); i++ {
		a, b := debVersion(t, root, order[i-1]), debVersion(t, root, order[i])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg --compare-versions %s lt %s: %v (%s, %s)", a, b, err, order[i-1], order[i])
		}
	}
}

// The release ships deploy/prometheus and deploy/grafana when they are
// there, and refuses to go on without their main files.
func TestDeployDirs(t *testing.T) {
	root := repoRoot(t)
	dirs := func(tree string) (string, error) {
		out, err := exec.Command("bash", "-c", `. "$1" && deploy_dirs "$2"`, "bash", filepath.Join(root, "scripts", "release.sh"), tree).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	tree := t.TempDir()
	if got, err := dirs(tree); err != nil || got != "" {
		t.Errorf("no deploy/: %q, %v", got, err)
	}
	for _, f := range []string{"deploy/prometheus/etcd-backup-rules.yml", "deploy/grafana/etcd-backup.json"} {
		if err := os.MkdirAll(filepath.Join(tree, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := dirs(tree)
		if err == nil || !strings.Contains(got, filepath.Dir(f)+"/ exists but "+f+" does not") {
			t.Errorf("%s missing: %q, %v", f, got, err)
		}
		if err := os.WriteFile(filepath.Join(tree, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := dirs(tree); err != nil || got != "deploy/prometheus deploy/grafana" {
		t.Errorf("both there: %q, %v", got, err)
	}
}

// requireTools fails (never skips) when the test cannot run here.
func requireTools(t *testing.T, root string) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"bash", "tar", "gzip", "sha256sum", "dpkg", "dpkg-deb", "dpkg-query", "man", "systemd-analyze", "systemctl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("this test builds the release and installs the .deb on this machine: it needs %s on PATH (a Debian or Ubuntu machine with dpkg, man-db and systemd)", strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		t.Fatalf("this test installs the .deb on this machine with dpkg -i and purges it afterwards: run it as root (CI and 'make test' do)")
	}
	if _, err := os.Stat(filepath.Join(root, ".cache", "tools", "nfpm")); err != nil {
		t.Fatalf("nfpm is not installed (%v): run scripts/install-release-tools.sh ('make test' does, through scripts/install-test-deps.sh)", err)
	}
}

// requireClean fails when the machine has the package, or its files, already.
func requireClean(t *testing.T) {
	t.Helper()
	if st := pkgStatus(t); st != "" {
		t.Fatalf("the %s package is on this machine (%s): this test installs and purges it; remove it first (dpkg -P %s)", pkgName, st, pkgName)
	}
	for _, p := range []string{"/usr/bin/etcd-backup", envFile, "/" + unitDir + "/etcd-backup.service"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists, though no %s package is installed: this test would replace it and then remove it; move it away first", p, pkgName)
		}
	}
}

// pkgStatus is dpkg's status of the package ("" when dpkg does not know it).
func pkgStatus(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", pkgName).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 { // no such package
			return ""
		}
		t.Fatalf("dpkg-query: %v", err)
	}
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "un") && !strings.Contains(s, " ") {
		return "" // known but not installed, no config files
	}
	return s
}

func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestRelease(t *testing.T) {
	root := repoRoot(t)
	requireTools(t, root)
	requireClean(t)

	version := strings.TrimSpace(runOK(exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty")))
	if version == "" {
		version = "dev"
	}
	debv := debVersion(t, root, version)
	arch := runtime.GOARCH
	dist := t.TempDir()
	start := time.Now()
	run(t, 10*time.Minute, []string{"VERSION=" + version, "ARCHES=" + arch, "DIST=" + dist, "TMPDIR=" + t.TempDir()},
		"bash", filepath.Join(root, "scripts", "release.sh"))
	t.Logf("scripts/release.sh for linux/%s: %s", arch, time.Since(start).Round(100*time.Millisecond))

	tarball := fmt.Sprintf("etcd-backup_%s_linux_%s.tar.gz", strings.TrimPrefix(version, "v"), arch)
	deb := fmt.Sprintf("etcd-backup_%s_%s.deb", debv, arch)
	checkDist(t, dist, tarball, deb)
	tarDir := checkTarball(t, root, filepath.Join(dist, tarball), version)
	checkDeb(t, filepath.Join(dist, deb), debv, arch)
	installed(t, filepath.Join(dist, deb), version, debv, tarDir)
}

func runOK(cmd *exec.Cmd) string {
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// checkDist: the release holds the tarball, the .deb and SHA256SUMS, which
// matches them.
func checkDist(t *testing.T, dist string, artifacts ...string) {
	t.Helper()
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := append(slices.Clone(artifacts), "SHA256SUMS")
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("dist holds %q, want %q", names, want)
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, a := range artifacts {
		b, err := os.ReadFile(filepath.Join(dist, a))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		lines = append(lines, hex.EncodeToString(h[:])+"  "+a)
	}
	if got := strings.Split(strings.TrimSpace(string(sums)), "\n"); !slices.Equal(got, lines) {
		t.Errorf("SHA256SUMS:\n%s\nwant:\n%s", sums, strings.Join(lines, "\n"))
	}
}

// checkTarball compares the tarball's contents with what it must hold and
// returns the directory it was unpacked into.
func checkTarball(t *testing.T, root, path, version string) string {
	t.Helper()
	top := strings.TrimSuffix(filepath.Base(path), ".tar.gz") + "/"
	want := map[string]fs.FileMode{ // path below top -> mode
		"etcd-backup": 0o755, "README.md": 0o644, "LICENSE": 0o644,
		"completions/etcd-backup.bash": 0o644, "completions/_etcd-backup": 0o644, "completions/etcd-backup.fish": 0o644,
	}
	for _, f := range systemdFiles {
		want["systemd/"+f] = 0o644
	}
	want["systemd/etc/etcd-backup/etcd-backup.env"] = 0o600
	// docs/ and, when the repository has them, deploy/prometheus and
	// deploy/grafana, as they are (no Go files).
	for _, dir := range []string{"docs", "deploy/prometheus", "deploy/grafana"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			want[filepath.ToSlash(rel)] = 0o644
			return nil
		})
	}
	for _, main := range []string{"deploy/prometheus/etcd-backup-rules.yml", "deploy/grafana/etcd-backup.json"} {
		if _, err := os.Stat(filepath.Join(root, filepath.Dir(main))); err == nil {
			if _, ok := want[main]; !ok {
				t.Errorf("%s exists but %s does not (the release should have refused)", filepath.Dir(main), main)
			}
		}
	}
	for _, c := range manCommands {
		page := "man/man1/etcd-backup.1"
		if c != "" {
			page = "man/man1/etcd-backup-" + c + ".1"
		}
		want[page] = 0o644
	}

	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]fs.FileMode{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, top) {
			t.Errorf("tarball entry %s is not under %s", h.Name, top)
			continue
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		rel := strings.TrimPrefix(h.Name, top)
		switch h.Typeflag {
		case tar.TypeDir:
			if h.FileInfo().Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %04o, want 0755", h.Name, h.FileInfo().Mode().Perm())
			}
			continue
		case tar.TypeReg:
		default:
			t.Errorf("%s: type %c, want files and directories only", h.Name, h.Typeflag)
			continue
		}
		got[rel] = h.FileInfo().Mode().Perm()
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, h.FileInfo().Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	for rel, mode := range got {
		w, ok := want[rel]
		if !ok && strings.HasPrefix(rel, "man/man1/etcd-backup-") && strings.HasSuffix(rel, ".1") && !strings.Contains(rel, "gen-docs") {
			w, ok = 0o644, true // a command added since
		}
		switch {
		case !ok:
			t.Errorf("tarball holds %s, which it should not", rel)
		case mode != w:
			t.Errorf("tarball: %s mode %04o, want %04o", rel, mode, w)
		}
	}
	for rel := range want {
		if _, ok := got[rel]; !ok {
			t.Errorf("tarball lacks %s", rel)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The binary: static, trimmed, this version, and its own rendering of
	// the units is what the tarball holds.
	bin := filepath.Join(dir, "etcd-backup")
	if bi := runOK(exec.Command("go", "version", "-m", bin)); !strings.Contains(bi, "CGO_ENABLED=0") || !strings.Contains(bi, "-trimpath=true") {
		t.Errorf("the binary is not built with CGO_ENABLED=0 -trimpath:\n%s", bi)
	}
	out := run(t, time.Minute, nil, bin, "version")
	if first, _, _ := strings.Cut(out, "\n"); first != "etcd-backup "+version {
		t.Errorf("etcd-backup version: %q, want %q", first, "etcd-backup "+version)
	}
	units := t.TempDir()
	cmd := exec.Command(bin, "systemd", "--package", "--out", units)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcd-backup systemd --package: %v\n%s", err, out)
	}
	for _, f := range systemdFiles {
		a, _ := os.ReadFile(filepath.Join(units, f))
		b, _ := os.ReadFile(filepath.Join(dir, "systemd", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("systemd/%s in the tarball differs from what 'etcd-backup systemd --package' renders", f)
		}
	}
	// cobra's own completion command still works beside the shipped files.
	if out := run(t, time.Minute, nil, bin, "completion", "bash"); !strings.Contains(out, "bash completion V2 for etcd-backup") {
		t.Errorf("etcd-backup completion bash:\n%.300s", out)
	}
	return dir
}

// checkDeb reads the control fields.
func checkDeb(t *testing.T, deb, debv, arch string) {
	t.Helper()
	out := run(t, time.Minute, nil, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
	want := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\n", pkgName, debv, arch)
	if out != want {
		t.Errorf("dpkg-deb -f:\n%s\nwant:\n%s", out, want)
	}
}

// debPaths lists the absolute paths the .deb installs (directories too).
func debPaths(t *testing.T, deb string) []string {
	t.Helper()
	var paths []string
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if p != "/" {
			paths = append(paths, p)
		}
	}
	return paths
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// checkFile: a regular file, owned by root, with this mode.
func checkFile(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	sys := st.Sys().(*syscall.Stat_t)
	if !st.Mode().IsRegular() || st.Mode().Perm() != mode || sys.Uid != 0 || sys.Gid != 0 || st.Size() == 0 {
		t.Errorf("%s: %v, owner %d:%d, %d bytes; want a regular file, mode %04o, root:root, not empty", p, st.Mode(), sys.Uid, sys.Gid, st.Size(), mode)
	}
}

// links are enablement symlinks in /etc/systemd/system of one unit.
func links(unit string) []string {
	var all []string
	for _, kind := range []string{"wants", "requires"} {
		m, _ := filepath.Glob("/etc/systemd/system/*." + kind + "/" + unit)
		all = append(all, m...)
	}
	return all
}

// installed installs the .deb on this machine, checks it, removes it and
// purges it. Cleanup purges it whatever happens.
func installed(t *testing.T, deb, version, debv, tarDir string) {
	paths := debPaths(t, deb)
	before := map[string]bool{}
	for _, p := range paths {
		before[p] = exists(p)
	}
	// A stand-in for a local repository: neither remove nor purge touch it.
	marker := filepath.Join(stateDir, "repo", "marker")
	ownState := !exists(stateDir)
	enabled := []string{"etcd-backup.timer", "etcd-join.service"}
	t.Cleanup(func() {
		if st := pkgStatus(t); st != "" {
			out, err := exec.Command("dpkg", "-P", pkgName).CombinedOutput()
			t.Logf("cleanup: dpkg -P %s (was %s): %v\n%s", pkgName, st, err, out)
		}
		for _, u := range enabled {
			for _, l := range links(u) {
				if dest, _ := os.Readlink(l); strings.HasSuffix(dest, "/"+unitDir+"/"+u) {
					os.Remove(l)
				}
			}
		}
		if ownState {
			os.RemoveAll(stateDir)
		}
	})
	dpkgEnv := []string{"DEBIAN_FRONTEND=noninteractive"}
	start := time.Now()
	run(t, 2*time.Minute, dpkgEnv, "dpkg", "-i", deb)
	t.Logf("dpkg -i: %s", time.Since(start).Round(100*time.Millisecond))
	if st := pkgStatus(t); st != "ii "+debv {
		t.Fatalf("after dpkg -i: status %q, want %q", st, "ii "+debv)
	}

	// The files, their modes, and what they say.
	checkFile(t, "/usr/bin/etcd-backup", 0o755)
	out := run(t, time.Minute, nil, "/usr/bin/etcd-backup", "version")
	if first, _, _ := strings.Cut(out, "\n"); first != "etcd-backup "+version {
		t.Errorf("/usr/bin/etcd-backup version: %q, want %q", first, "etcd-backup "+version)
	}
	checkFile(t, envFile, 0o600)
	if st, err := os.Stat(filepath.Dir(envFile)); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v %v", filepath.Dir(envFile), st, err)
	}
	conffiles := run(t, time.Minute, nil, "dpkg-query", "-W", "-f=${Conffiles}", pkgName)
	if !strings.Contains(conffiles, " "+envFile+" ") {
		t.Errorf("%s is not a conffile: %q", envFile, conffiles)
	}
	for _, f := range systemdFiles {
		mode := fs.FileMode(0o644)
		if f == strings.TrimPrefix(envFile, "/") {
			mode = 0o600
		}
		checkFile(t, "/"+f, mode)
		a, _ := os.ReadFile("/" + f)
		b, _ := os.ReadFile(filepath.Join(tarDir, "systemd", f))
		if !bytes.Equal(a, b) {
			t.Errorf("/%s differs from the tarball's systemd/%s", f, f)
		}
	}
	for _, f := range []string{"/usr/share/bash-completion/completions/etcd-backup", "/usr/share/zsh/vendor-completions/_etcd-backup",
		"/usr/share/fish/vendor_completions.d/etcd-backup.fish", "/usr/share/doc/etcd-backup/copyright", "/usr/share/doc/etcd-backup/README.md",
		"/usr/share/doc/etcd-backup/docs/design.md", "/usr/share/man/man1/etcd-backup.1.gz", "/usr/share/man/man1/etcd-backup-snapshot.1.gz"} {
		checkFile(t, f, 0o644)
	}
	// bash loads the completion and registers it.
	if out := run(t, time.Minute, nil, "bash", "-c", ". /usr/share/bash-completion/completions/etcd-backup && complete -p etcd-backup"); !strings.Contains(out, "etcd-backup") {
		t.Errorf("bash completion not registered: %q", out)
	}
	// man finds and renders the pages.
	for _, page := range []string{"etcd-backup", "etcd-backup-snapshot", "etcd-backup-systemd"} {
		if got := strings.TrimSpace(run(t, time.Minute, nil, "man", "-w", page)); got != "/usr/share/man/man1/"+page+".1.gz" {
			t.Errorf("man -w %s: %q", page, got)
		}
	}
	if out := run(t, time.Minute, []string{"MANWIDTH=100"}, "man", "-P", "cat", "etcd-backup"); !strings.Contains(out, "Exit codes:") || !strings.Contains(out, "SEE ALSO") {
		t.Errorf("man etcd-backup:\n%s", out)
	}

	// systemd accepts the installed units, etcd's drop-in included.
	start = time.Now()
	verifyInstalled(t)
	t.Logf("systemd-analyze verify: %s", time.Since(start).Round(100*time.Millisecond))

	// Nothing enabled by the package. Then enable the timer and join, as an
	// administrator would, to see remove and purge clean up after them.
	for _, u := range []string{"etcd-backup.timer", "etcd-backup-agent.service", "etcd-join.service"} {
		if out, _ := exec.Command("systemctl", "is-enabled", u).Output(); strings.TrimSpace(string(out)) != "disabled" {
			t.Errorf("systemctl is-enabled %s: %q, want disabled", u, out)
		}
	}
	run(t, time.Minute, nil, "systemctl", "enable", "etcd-backup.timer", "etcd-join.service")
	for _, u := range enabled {
		if len(links(u)) == 0 {
			t.Fatalf("systemctl enable %s made no link", u)
		}
	}
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, []byte("backups\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The administrator's settings.
	edited := append(must(os.ReadFile(envFile)), "ETCD_BACKUP_REPO=s3://backups/etcd?region=eu-west-1\n"...)
	if err := os.WriteFile(envFile, edited, 0o600); err != nil {
		t.Fatal(err)
	}

	// Remove: the configuration stays, and the repository.
	start = time.Now()
	run(t, 2*time.Minute, dpkgEnv, "dpkg", "-r", pkgName)
	t.Logf("dpkg -r: %s", time.Since(start).Round(100*time.Millisecond))
	if st := pkgStatus(t); st != "rc "+debv {
		t.Errorf("after dpkg -r: status %q, want %q", st, "rc "+debv)
	}
	if b, err := os.ReadFile(envFile); err != nil || !bytes.Equal(b, edited) {
		t.Errorf("after dpkg -r, %s is gone or changed: %v", envFile, err)
	}
	checkFile(t, envFile, 0o600)
	for _, p := range []string{"/usr/bin/etcd-backup", "/" + unitDir + "/etcd-backup.service", "/usr/share/man/man1/etcd-backup.1.gz"} {
		if exists(p) {
			t.Errorf("after dpkg -r, %s is still there", p)
		}
	}
	if l := links("etcd-join.service"); len(l) > 0 {
		t.Errorf("after dpkg -r, etcd-join.service is still enabled (etcd would not start): %q", l)
	}
	if len(links("etcd-backup.timer")) == 0 {
		t.Errorf("dpkg -r dropped the timer's enablement (only purge does)")
	}
	if !exists(marker) {
		t.Errorf("dpkg -r removed %s", marker)
	}

	// Purge: nothing of the package stays; the repository does.
	start = time.Now()
	run(t, 2*time.Minute, dpkgEnv, "dpkg", "-P", pkgName)
	t.Logf("dpkg -P: %s", time.Since(start).Round(100*time.Millisecond))
	if st := pkgStatus(t); st != "" {
		t.Errorf("after dpkg -P: status %q, want unknown", st)
	}
	for _, p := range paths {
		if !before[p] && exists(p) {
			t.Errorf("after dpkg -P, %s is still there", p)
		}
	}
	if exists(filepath.Dir(envFile)) {
		t.Errorf("after dpkg -P, %s is still there", filepath.Dir(envFile))
	}
	for _, u := range enabled {
		if l := links(u); len(l) > 0 {
			t.Errorf("after dpkg -P, %s is still enabled: %q", u, l)
		}
	}
	if !exists(marker) {
		t.Errorf("dpkg -P removed %s (backups)", marker)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// verifyInstalled runs systemd-analyze verify on the installed units and
// on etcd.service (Debian's, or a stub when etcd is not installed), whose
// drop-in the package ships. systemd only warns about unknown keys and bad
// values, with exit status 0, so any output is a failure.
func verifyInstalled(t *testing.T) {
	t.Helper()
	args := []string{"verify", "--man=no", "--generators=no", "--recursive-errors=no"}
	for _, u := range units {
		args = append(args, "/"+unitDir+"/"+u)
	}
	env := []string{"SYSTEMD_LOG_LEVEL=info", "SYSTEMD_LOG_COLOR=0", "SYSTEMD_LOG_TARGET=console"}
	if exists("/" + unitDir + "/etcd.service") {
		args = append(args, "/"+unitDir+"/etcd.service")
	} else {
		stub := t.TempDir()
		if err := os.WriteFile(filepath.Join(stub, "etcd.service"), []byte("[Unit]\nDescription=stub etcd\n\n[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "etcd.service")
		env = append(env, "SYSTEMD_UNIT_PATH="+stub+":") // then the default path, which holds the drop-in
	}
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// And the drop-ins were read: the settings file is the units' environment.
	cmd = exec.Command("systemd-analyze", "verify", "--man=no", "--generators=no", "/"+unitDir+"/etcd-backup.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug", "SYSTEMD_LOG_COLOR=0", "SYSTEMD_LOG_TARGET=console")
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "EnvironmentFile: -"+envFile) && !strings.Contains(string(out), "EnvironmentFile: "+envFile) {
		t.Errorf("systemd does not read %s for etcd-backup.service:\n%.3000s", envFile, out)
	}
}
