package systemd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// typical: S3 repository, TLS, encryption, a member that can restore and
// join, and secrets.
func typicalConfig() Config {
	return Config{
		Binary:   DefaultBinary,
		Interval: DefaultInterval,
		Watchdog: DefaultWatchdog,
		EtcdUnit: DefaultEtcdUnit,
		Settings: []Var{
			{"ETCD_BACKUP_CACERT", "/etc/etcd/pki/ca.pem"},
			{"ETCD_BACKUP_CERT", "/etc/etcd/pki/backup.pem"},
			{"ETCD_BACKUP_CLUSTER", "prod"},
			{"ETCD_BACKUP_DATA_DIR", "/var/lib/etcd"},
			{"ETCD_BACKUP_ENCRYPT_TO_FILE", "/etc/etcd-backup/recipients.txt"},
			{"ETCD_BACKUP_ENDPOINTS", "https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379"},
			{"ETCD_BACKUP_IDENTITY", "/etc/etcd-backup/identity.txt"},
			{"ETCD_BACKUP_INITIAL_ADVERTISE_PEER_URLS", "https://10.0.0.1:2380"},
			{"ETCD_BACKUP_INITIAL_CLUSTER", "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"},
			{"ETCD_BACKUP_KEY", "/etc/etcd/pki/backup-key.pem"},
			{"ETCD_BACKUP_NAME", "m1"},
			{"ETCD_BACKUP_REPO", "s3://backups/etcd?region=eu-west-1"},
			{"ETCD_BACKUP_USER", "backup"},
		},
		Secrets: []Var{
			{"AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"},
			{"AWS_SECRET_ACCESS_KEY", `wJal/rXU"tn$FEMI` + "`K7MDENG\\bPxRfi%CY"},
			{"ETCD_BACKUP_PASSWORD", "p@ss word"},
		},
		DataDir: "/var/lib/etcd",
		Paths: []string{"/etc/etcd/pki/ca.pem", "/etc/etcd/pki/backup.pem", "/etc/etcd/pki/backup-key.pem",
			"/etc/etcd-backup/recipients.txt", "/etc/etcd-backup/identity.txt"},
	}
}

// minimal: a local repository and nothing else.
func minimalConfig() Config {
	return Config{
		Binary:   DefaultBinary,
		Interval: DefaultInterval,
		Watchdog: DefaultWatchdog,
		EtcdUnit: DefaultEtcdUnit,
		Settings: []Var{{"ETCD_BACKUP_REPO", "/var/backups/etcd"}},
		RepoDir:  "/var/backups/etcd",
	}
}

// packaged: the units of the .deb, which read their settings from
// PackageEnvFile.
func packageConfig() Config {
	return Config{
		Binary:   PackageBinary,
		Interval: DefaultInterval,
		Watchdog: DefaultWatchdog,
		EtcdUnit: DefaultEtcdUnit,
		Package:  true,
	}
}

var configs = []struct {
	name string
	cfg  func() Config
}{
	{"typical", typicalConfig},
	{"minimal", minimalConfig},
	{"package", packageConfig},
}

func renderTo(t *testing.T, c Config) string {
	t.Helper()
	files, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if _, err := Write(root, files, false); err != nil {
		t.Fatal(err)
	}
	return root
}

// tree is the golden form of a rendered root: every file with its mode.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "-- %s (%04o) --\n%s", filepath.ToSlash(rel), st.Mode().Perm(), data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			got := tree(t, renderTo(t, tc.cfg()))
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/systemd -update)", err)
			}
			if got != string(want) {
				t.Errorf("rendered files differ from %s (go test ./internal/systemd -update rewrites it):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, a, c)
			if b.Len() > 2000 {
				break
			}
		}
	}
	return b.String()
}

func TestFileModes(t *testing.T) {
	root := renderTo(t, typicalConfig())
	secrets := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			return nil
		}
		st, _ := os.Stat(p)
		data, _ := os.ReadFile(p)
		secret := strings.Contains(string(data), "wJal/") || strings.Contains(string(data), "p@ss")
		want := fs.FileMode(0o644)
		if secret {
			want = 0o600
			secrets++
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, st.Mode().Perm(), want)
		}
		if strings.HasSuffix(p, ".service") || strings.HasSuffix(p, ".conf") || strings.HasSuffix(p, ".timer") {
			if secret {
				t.Errorf("%s: a secret is in a unit file", p)
			}
		}
		return nil
	})
	if secrets != 1 {
		t.Errorf("%d files hold secrets, want 1 (%s)", secrets, SecretsFile)
	}
	if st, err := os.Stat(filepath.Join(root, SecretsFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v", SecretsFile, st, err)
	}
	// No secrets: no secrets file, and no reference to one.
	root = renderTo(t, minimalConfig())
	if _, err := os.Stat(filepath.Join(root, SecretsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("minimal config wrote %s: %v", SecretsFile, err)
	}
	if strings.Contains(tree(t, root), "EnvironmentFile="+SecretsFile) {
		t.Error("minimal config references the secrets file")
	}
}

// ---- systemd-analyze verify ----

// verifyUnits runs systemd-analyze verify on every unit rendered under root,
// plus etcd.service (a stub, so that its drop-in is checked too). systemd
// only warns about unknown keys and bad values, with exit status 0, so any
// output counts as a failure. It returns the output and whether it was clean.
func verifyUnits(t *testing.T, root string, extraEnv ...string) (string, bool) {
	t.Helper()
	// Required, never skipped: without it nothing checks the units.
	systemdAnalyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is required for this test (install systemd): %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unitDir := filepath.Join(root, UnitDir)
	if _, err := os.Stat(filepath.Join(root, PackageUnitDir)); err == nil {
		unitDir = filepath.Join(root, PackageUnitDir)
	}
	stubDir := t.TempDir()
	stub := "[Unit]\nDescription=stub etcd\n\n[Service]\nExecStart=" + exe + "\n"
	if err := os.WriteFile(filepath.Join(stubDir, DefaultEtcdUnit), []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "--man=no", "--generators=no", "--recursive-errors=no"}
	for _, u := range []string{SnapshotService, SnapshotTimer, AgentService, RestoreService, JoinService} {
		args = append(args, filepath.Join(unitDir, u))
	}
	args = append(args, DefaultEtcdUnit)
	cmd := exec.Command(systemdAnalyze, args...)
	// The rendered units first, then the stub, then (trailing ':') the
	// default search path, for the targets the units use.
	cmd.Env = append(os.Environ(),
		"SYSTEMD_UNIT_PATH="+unitDir+":"+stubDir+":",
		"SYSTEMD_LOG_LEVEL=info", "SYSTEMD_LOG_COLOR=0", "SYSTEMD_LOG_TARGET=console")
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run systemd-analyze: %v", err)
		}
	}
	return string(out), err == nil && len(bytes.TrimSpace(out)) == 0
}

// runnable returns c with the binary set to one that exists here, as
// systemd-analyze verify requires.
func runnable(t *testing.T, c Config) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c.Binary = exe
	return c
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			root := renderTo(t, runnable(t, tc.cfg()))
			if out, ok := verifyUnits(t, root); !ok {
				t.Errorf("systemd-analyze verify:\n%s", out)
			}
		})
	}
	t.Run("tmp-and-home-paths", func(t *testing.T) {
		c := runnable(t, typicalConfig())
		c.RepoDir = "/tmp/etcd-backups-%n" // % is a specifier: escaped
		c.Paths = append(c.Paths, "/root/key.txt")
		root := renderTo(t, c)
		all := tree(t, root)
		if strings.Contains(all, "PrivateTmp=yes") || !strings.Contains(all, "ProtectHome=read-only") {
			t.Errorf("hardening hides configured paths:\n%s", all)
		}
		if out, ok := verifyUnits(t, root); !ok {
			t.Errorf("systemd-analyze verify:\n%s", out)
		}
	})
}

// The check must catch broken units: a missing binary (an error), and bad
// keys or values (systemd only warns about those).
func TestSystemdAnalyzeVerifyCatchesBrokenUnits(t *testing.T) {
	breakers := []struct {
		name string
		edit func(t *testing.T, root string)
	}{
		{"missing binary", nil},
		{"unknown key in timer", func(t *testing.T, root string) {
			replaceIn(t, filepath.Join(root, UnitDir, SnapshotTimer), "OnUnitActiveSec=", "OnUnitActiveSecs=")
		}},
		{"bad value in service", func(t *testing.T, root string) {
			replaceIn(t, filepath.Join(root, UnitDir, RestoreService), "Type=oneshot", "Type=oneshoot")
		}},
		{"bad quoting in settings drop-in", func(t *testing.T, root string) {
			replaceIn(t, filepath.Join(root, UnitDir, JoinService+".d", DropInName), "Environment=ETCD_BACKUP_NAME=m1", `Environment="ETCD_BACKUP_NAME=m1`)
		}},
		{"bad etcd drop-in", func(t *testing.T, root string) {
			replaceIn(t, filepath.Join(root, UnitDir, DefaultEtcdUnit+".d", DropInName), "EnvironmentFile=-/run", "EnvironmentFile=-run")
		}},
	}
	for _, b := range breakers {
		t.Run(b.name, func(t *testing.T) {
			c := runnable(t, typicalConfig())
			if b.edit == nil {
				c.Binary = "/nonexistent/etcd-backup"
			}
			root := renderTo(t, c)
			if b.edit != nil {
				b.edit(t, root)
			}
			out, ok := verifyUnits(t, root)
			if ok {
				t.Fatalf("systemd-analyze verify accepted a broken unit (%s)", b.name)
			}
			t.Logf("rejected as expected:\n%s", out)
		})
	}
}

func replaceIn(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s does not contain %q", file, old)
	}
	if err := os.WriteFile(file, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nasty values exercise quoting in Environment= and EnvironmentFile=.
var nasty = []string{
	`plain`,
	`with space`,
	`q"uote`,
	`single'quote`,
	`back\slash\n`,
	`50%n%%`,
	`$HOME ${HOME}`,
	"back`tick`",
	"tab\there",
	`#hash ;semi`,
	``,
	`s3://b/p?region=eu-west-1&endpoint=http://h:9000`,
}

// Environment= values: systemd's own parser (its debug dump of the unit)
// must read back exactly what was given.
func TestEnvironmentQuotingRoundTrip(t *testing.T) {
	c := runnable(t, minimalConfig())
	for i, v := range nasty {
		c.Settings = append(c.Settings, Var{fmt.Sprintf("ETCD_BACKUP_T%02d", i), v})
	}
	root := renderTo(t, c)
	out, _ := verifyUnits(t, root, "SYSTEMD_LOG_LEVEL=debug")
	var got []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "\t-> Unit "):
			in = line == "\t-> Unit "+SnapshotService+":"
		case in && strings.HasPrefix(line, "\t\tEnvironment: ETCD_BACKUP_T"):
			got = append(got, strings.TrimPrefix(line, "\t\tEnvironment: "))
		}
	}
	var want []string
	for i, v := range nasty {
		want = append(want, fmt.Sprintf("ETCD_BACKUP_T%02d=%s", i, v))
	}
	if !slices.Equal(got, want) {
		t.Errorf("systemd parsed\n%q\nwant\n%q", got, want)
	}
	// And it is still clean.
	if out, ok := verifyUnits(t, root); !ok {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
}

// EnvironmentFile= values are parsed like POSIX shell double-quoted strings
// (systemd.exec(5)), so sh reads back exactly what was given.
func TestSecretsFileQuotingRoundTrip(t *testing.T) {
	c := minimalConfig()
	for i, v := range nasty {
		c.Secrets = append(c.Secrets, Var{fmt.Sprintf("T%02d", i), v})
	}
	root := renderTo(t, c)
	cmd := exec.Command("/bin/sh", "-c", `set -a; . "$1"; exec env -0`, "sh", filepath.Join(root, SecretsFile))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for i, v := range nasty {
		if got := env[fmt.Sprintf("T%02d", i)]; got != v {
			t.Errorf("T%02d: sh read %q, want %q", i, got, v)
		}
	}
}

func TestPackageFiles(t *testing.T) {
	root := renderTo(t, packageConfig())
	var got []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return err
	})
	want := []string{"etc/etcd-backup/etcd-backup.env"}
	for _, u := range []string{AgentService, SnapshotService, SnapshotTimer, JoinService, RestoreService} {
		want = append(want, "lib/systemd/system/"+u)
	}
	for _, s := range Services {
		want = append(want, "lib/systemd/system/"+s+".d/"+DropInName)
	}
	want = append(want, "lib/systemd/system/"+DefaultEtcdUnit+".d/"+DropInName)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("files\n%q\nwant\n%q", got, want)
	}
	env := filepath.Join(root, PackageEnvFile)
	if st, err := os.Stat(env); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", PackageEnvFile, st, err)
	}
	data, _ := os.ReadFile(env)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			t.Errorf("%s sets something: %q (the template is all comments)", PackageEnvFile, line)
		}
	}
	for _, s := range Services {
		b, _ := os.ReadFile(filepath.Join(root, PackageUnitDir, s+".d", DropInName))
		if !strings.Contains(string(b), "\nEnvironmentFile=-"+PackageEnvFile+"\n") || strings.Contains(string(b), "Environment=") {
			t.Errorf("%s drop-in:\n%s", s, b)
		}
		u, _ := os.ReadFile(filepath.Join(root, PackageUnitDir, s))
		if !strings.Contains(string(u), PackageBinary+" ") {
			t.Errorf("%s does not run %s:\n%s", s, PackageBinary, u)
		}
	}
	for _, s := range []string{SnapshotService, AgentService} {
		u, _ := os.ReadFile(filepath.Join(root, PackageUnitDir, s))
		if !strings.Contains(string(u), "\nStateDirectory=etcd-backup\n") {
			t.Errorf("%s has no StateDirectory=:\n%s", s, u)
		}
	}
	for _, s := range []string{RestoreService, JoinService} {
		u, _ := os.ReadFile(filepath.Join(root, PackageUnitDir, s))
		if !strings.Contains(string(u), "\nReadWritePaths=-/var/lib\n") {
			t.Errorf("%s cannot write the data dir's parent:\n%s", s, u)
		}
	}
}

// The packaged etcd-join.service skips join once the data dir has a
// member, reading the data dir from the environment: run its ExecStart=
// line (after systemd's $$ unescaping) with sh.
func TestPackageJoinSkipsWithData(t *testing.T) {
	root := renderTo(t, packageConfig())
	u, err := os.ReadFile(filepath.Join(root, PackageUnitDir, JoinService))
	if err != nil {
		t.Fatal(err)
	}
	var script string
	for _, line := range strings.Split(string(u), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart=/bin/sh -c '"); ok {
			script = strings.ReplaceAll(strings.TrimSuffix(rest, "'"), "$$", "$")
		}
	}
	if script == "" {
		t.Fatalf("no ExecStart=/bin/sh -c '...' in\n%s", u)
	}
	// A fake binary that records that join ran.
	bin := filepath.Join(t.TempDir(), "etcd-backup")
	script = strings.Replace(script, PackageBinary+" ", bin+" ", 1)
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho JOIN \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "etcd")
	run := func(env ...string) string {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return string(out)
	}
	if out := run("ETCD_BACKUP_DATA_DIR=" + dataDir); !strings.Contains(out, "JOIN join --env-file "+JoinEnvFile) {
		t.Errorf("no data yet: join did not run: %q", out)
	}
	if out := run(); !strings.Contains(out, "JOIN join") {
		t.Errorf("no data dir set: join did not run: %q", out)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out := run("ETCD_BACKUP_DATA_DIR=" + dataDir); strings.Contains(out, "JOIN") || !strings.Contains(out, "nothing to join") {
		t.Errorf("member data present: join ran: %q", out)
	}
}

func TestRenderRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"relative binary", func(c *Config) { c.Binary = "bin/etcd-backup" }},
		{"binary with space", func(c *Config) { c.Binary = "/opt/etcd backup/etcd-backup" }},
		{"binary with $", func(c *Config) { c.Binary = "/opt/$X/etcd-backup" }},
		{"short interval", func(c *Config) { c.Interval = 500 * time.Millisecond }},
		{"short watchdog", func(c *Config) { c.Watchdog = time.Millisecond }},
		{"etcd unit", func(c *Config) { c.EtcdUnit = "etcd" }},
		{"bad name", func(c *Config) { c.Settings = append(c.Settings, Var{"1X", "v"}) }},
		{"duplicate", func(c *Config) { c.Secrets = append(c.Secrets, Var{"ETCD_BACKUP_REPO", "v"}) }},
		{"newline", func(c *Config) { c.Secrets = append(c.Secrets, Var{"PW", "a\nb"}) }},
		{"relative repo dir", func(c *Config) { c.RepoDir = "backups" }},
		{"data dir /", func(c *Config) { c.DataDir = "/" }},
		{"relative path", func(c *Config) { c.Paths = []string{"ca.pem"} }},
		{"package with settings", func(c *Config) { c.Package = true }}, // minimal has a repo
	}
	for _, tc := range cases {
		c := minimalConfig()
		tc.edit(&c)
		if _, err := Render(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tc.name, err)
		}
	}
}

func TestTimespan(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second:                     "30s",
		90 * time.Second:                     "1min 30s",
		time.Hour:                            "1h",
		26*time.Hour + 1500*time.Millisecond: "1d 2h 1s 500ms",
	} {
		if got := Timespan(d); got != want {
			t.Errorf("Timespan(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestWriteNeverReplacesWithoutForce(t *testing.T) {
	files, err := Render(typicalConfig())
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	ch, err := Write(root, files, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) != len(files) || ch[0].Action != Created {
		t.Fatalf("first write: %v", ch)
	}
	// Again: nothing to do.
	ch, err = Write(root, files, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ch {
		if c.Action != Unchanged {
			t.Errorf("second write: %s %s", c.Path, c.Action)
		}
	}
	// A secret left world-readable gets its mode fixed, content untouched.
	secrets := filepath.Join(root, SecretsFile)
	os.Chmod(secrets, 0o644)
	// An edited unit and a masked one are conflicts.
	svc := filepath.Join(root, UnitDir, SnapshotService)
	os.WriteFile(svc, []byte("# mine\n"), 0o644)
	agent := filepath.Join(root, UnitDir, AgentService)
	os.Remove(agent)
	os.Symlink("/dev/null", agent)

	_, err = Write(root, files, false)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) || len(ce.Conflicts) != 2 ||
		!strings.Contains(err.Error(), svc+": content differs") || !strings.Contains(err.Error(), agent+": masked") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(svc); string(b) != "# mine\n" {
		t.Error("a conflicting file was replaced without force")
	}
	if st, _ := os.Stat(secrets); st.Mode().Perm() != 0o644 {
		t.Error("a refused Write still changed something")
	}

	ch, err = Write(root, files, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Action{}
	for _, c := range ch {
		got[c.Path] = c.Action
	}
	if got[svc] != Replaced || got[agent] != Replaced || got[secrets] != ModeFixed {
		t.Errorf("forced write: %v", got)
	}
	if st, _ := os.Lstat(agent); !st.Mode().IsRegular() {
		t.Error("masked unit still a symlink")
	}
	if st, _ := os.Stat(secrets); st.Mode().Perm() != 0o600 {
		t.Errorf("secrets mode %04o", st.Mode().Perm())
	}
	if diff := tree(t, root); !strings.Contains(diff, "ExecStart="+DefaultBinary+" snapshot") {
		t.Error("forced write did not restore the unit")
	}
}

func TestPreviewHidesSecrets(t *testing.T) {
	files, err := Render(typicalConfig())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Preview(&b, files); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "wJal") || strings.Contains(out, "p@ss") || strings.Contains(out, "AKIAEXAMPLE") {
		t.Errorf("preview shows a secret:\n%s", out)
	}
	for _, want := range []string{"# ==> /etc/systemd/system/etcd-backup.timer (0644) <==", "AWS_SECRET_ACCESS_KEY=(hidden)",
		"# ==> /etc/etcd-backup/secrets.env (0600, values hidden here) <=="} {
		if !strings.Contains(out, want) {
			t.Errorf("preview lacks %q", want)
		}
	}
}
