package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func runSystemdCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func readSystemdFile(t *testing.T, root, rel string) (string, os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), st.Mode().Perm()
}

func TestSystemdOut(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("ETCD_BACKUP_CLUSTER", "prod") // flags can come from the environment
	args := []string{"systemd", "--out", dir,
		"--repo", "s3://backups/etcd?region=eu-west-1",
		"--endpoints", "https://10.0.0.1:2379,https://10.0.0.2:2379",
		"--cacert", "/etc/etcd/ca.pem", "--cert", "/etc/etcd/c.pem", "--key", "/etc/etcd/c-key.pem",
		"--encrypt-to", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
		"--data-dir", "/var/lib/etcd", "--name", "m1", "--initial-advertise-peer-urls", "https://10.0.0.1:2380",
		"--dial-timeout", "3s", "--interval", "1m",
		"--user", "backup:hunter2", "--password", "pw-secret",
		"--env", "AWS_SECRET_ACCESS_KEY=sk/se\"cret$x", "--env", "AWS_ACCESS_KEY_ID",
	}
	code, stdout, stderr := runSystemdCLI(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	unit := "etc/systemd/system/"
	for _, s := range []string{"etcd-backup.service", "etcd-restore.service", "etcd-join.service", "etcd-backup-agent.service"} {
		if !strings.Contains(stdout, "created    "+filepath.Join(dir, unit, s)+"\n") {
			t.Errorf("stdout does not report %s:\n%s", s, stdout)
		}
	}
	dropIn, mode := readSystemdFile(t, dir, unit+"etcd-restore.service.d/30-etcd-backup.conf")
	if mode != 0o644 {
		t.Errorf("drop-in mode %04o", mode)
	}
	for _, want := range []string{
		"Environment=ETCD_BACKUP_REPO=s3://backups/etcd?region=eu-west-1\n",
		"Environment=ETCD_BACKUP_CLUSTER=prod\n",
		"Environment=ETCD_BACKUP_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379\n",
		"Environment=ETCD_BACKUP_CACERT=/etc/etcd/ca.pem\n",
		"Environment=ETCD_BACKUP_ENCRYPT_TO=age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
		"Environment=ETCD_BACKUP_DATA_DIR=/var/lib/etcd\n",
		"Environment=ETCD_BACKUP_DIAL_TIMEOUT=3s\n",
		"Environment=ETCD_BACKUP_INTERVAL=1m0s\n",
		"EnvironmentFile=/etc/etcd-backup/secrets.env\n",
	} {
		if !strings.Contains(dropIn, want) {
			t.Errorf("drop-in lacks %q:\n%s", want, dropIn)
		}
	}
	// Defaults and one-off flags are not written.
	for _, not := range []string{"ETCD_BACKUP_COMMAND_TIMEOUT", "ETCD_BACKUP_INITIAL_CLUSTER_TOKEN", "ETCD_BACKUP_DRY_RUN", "ETCD_BACKUP_BINARY", "ETCD_BACKUP_OUT", "ETCD_BACKUP_FORCE"} {
		if strings.Contains(dropIn, not) {
			t.Errorf("drop-in has %s:\n%s", not, dropIn)
		}
	}
	secrets, mode := readSystemdFile(t, dir, "etc/etcd-backup/secrets.env")
	if mode != 0o600 {
		t.Errorf("secrets mode %04o, want 0600", mode)
	}
	for _, want := range []string{`AWS_ACCESS_KEY_ID="AKIDFROMENV"`, `AWS_SECRET_ACCESS_KEY="sk/se\"cret\$x"`,
		`ETCD_BACKUP_PASSWORD="pw-secret"`, `ETCD_BACKUP_USER="backup:hunter2"`} {
		if !strings.Contains(secrets, want+"\n") {
			t.Errorf("secrets file lacks %s:\n%s", want, secrets)
		}
	}
	// No secret anywhere else.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "secrets.env") {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, s := range []string{"hunter2", "pw-secret", "AKIDFROMENV", "sk/se"} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a secret (%s)", p, s)
			}
		}
		return nil
	})
	timer, _ := readSystemdFile(t, dir, unit+"etcd-backup.timer")
	if !strings.Contains(timer, "OnUnitActiveSec=1min\n") {
		t.Errorf("timer:\n%s", timer)
	}
	join, _ := readSystemdFile(t, dir, unit+"etcd-join.service")
	if !strings.Contains(join, "ConditionPathExists=!/var/lib/etcd/member\n") || !strings.Contains(join, "ReadWritePaths=-/var/lib\n") {
		t.Errorf("join unit:\n%s", join)
	}

	// Same again: unchanged. Other settings: refused, file named, nothing written.
	if code, stdout, stderr = runSystemdCLI(t, args...); code != 0 || strings.Contains(stdout, "created") {
		t.Fatalf("second run: exit %d\n%s%s", code, stdout, stderr)
	}
	changed := append(append([]string(nil), args...), "--cluster", "staging")
	code, stdout, stderr = runSystemdCLI(t, changed...)
	if code != exitError || !strings.Contains(stdout, "differs    "+filepath.Join(dir, unit, "etcd-backup.service.d/30-etcd-backup.conf")) ||
		!strings.Contains(stderr, "--force") {
		t.Fatalf("changed settings without --force: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if b, _ := readSystemdFile(t, dir, unit+"etcd-backup.service.d/30-etcd-backup.conf"); strings.Contains(b, "staging") {
		t.Fatal("a differing file was replaced without --force")
	}
	if code, stdout, stderr = runSystemdCLI(t, append(changed, "--force")...); code != 0 || !strings.Contains(stdout, "replaced ") {
		t.Fatalf("--force: exit %d\n%s%s", code, stdout, stderr)
	}
	if b, _ := readSystemdFile(t, dir, unit+"etcd-backup.service.d/30-etcd-backup.conf"); !strings.Contains(b, "ETCD_BACKUP_CLUSTER=staging") {
		t.Fatalf("--force did not replace:\n%s", b)
	}
}

func TestSystemdInstallRoot(t *testing.T) {
	root := t.TempDir()
	code, stdout, stderr := runSystemdCLI(t, "systemd", "install", "--root", root, "--repo", "/var/backups/etcd", "--binary", "/opt/eb/etcd-backup")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	svc, mode := readSystemdFile(t, root, "etc/systemd/system/etcd-backup.service")
	if mode != 0o644 || !strings.Contains(svc, "ExecStart=/opt/eb/etcd-backup snapshot\n") ||
		!strings.Contains(svc, "ReadWritePaths=/var/backups/etcd\n") || !strings.Contains(svc, "ExecStartPre=+/bin/mkdir -p -m 0700 /var/backups/etcd\n") {
		t.Errorf("mode %04o\n%s", mode, svc)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/etcd-backup/secrets.env")); err == nil {
		t.Error("secrets file written without secrets")
	}
	if !strings.Contains(stdout, "daemon-reload skipped") || !strings.Contains(stdout, "systemctl enable --now etcd-backup.timer") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if !strings.Contains(stderr, "binary that is not there") {
		t.Errorf("no warning about the missing binary:\n%s", stderr)
	}
}

func TestSystemdPreviewHidesSecrets(t *testing.T) {
	code, stdout, stderr := runSystemdCLI(t, "systemd", "--repo", "file:///srv/backups", "--password", "pw-secret")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if strings.Contains(stdout, "pw-secret") || !strings.Contains(stdout, "ETCD_BACKUP_PASSWORD=(hidden)") ||
		!strings.Contains(stdout, "# ==> /etc/systemd/system/etcd-backup.timer (0644) <==") ||
		!strings.Contains(stdout, "ReadWritePaths=/srv/backups\n") {
		t.Errorf("preview:\n%s", stdout)
	}
}

func TestSystemdUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"systemd"}, // no --repo
		{"systemd", "--repo", "backups"},
		{"systemd", "--repo", "s3://backups:9000/x"},
		{"systemd", "--repo", "/b", "--cacert", "ca.pem"},
		{"systemd", "--repo", "/b", "--encrypt-to", "age1a", "--encrypt-to", "age1b"},
		{"systemd", "--repo", "/b", "--env", "ETCD_BACKUP_TEST_SURELY_UNSET"},
		{"systemd", "--repo", "/b", "--env", "BAD-NAME=x"},
		{"systemd", "--repo", "/b", "--password", "x", "--env", "ETCD_BACKUP_PASSWORD=y"},
		{"systemd", "--repo", "/b", "--interval", "100ms"},
		{"systemd", "--repo", "/b", "--binary", "etcd-backup"},
		{"systemd", "--repo", "/b", "--etcd-unit", "etcd"},
		{"systemd", "install", "--repo", "/b", "--out", "/tmp/x"},
		{"systemd", "install", "--repo", "/b", "--root", ""},
	} {
		if code, _, stderr := runSystemdCLI(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, stderr)
		}
	}
}

func TestSystemdHelp(t *testing.T) {
	code, stdout, _ := runSystemdCLI(t, "systemd", "--help")
	for _, want := range []string{"Examples:", "etcd-backup systemd install", "--out", "--encrypt-to-file", "[restore, join]", "secrets.env"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("systemd --help lacks %q (exit %d)", want, code)
		}
	}
	code, stdout, _ = runSystemdCLI(t, "systemd", "install", "--help")
	if code != 0 || !strings.Contains(stdout, "--root") || !strings.Contains(stdout, "--force") {
		t.Errorf("systemd install --help (exit %d):\n%s", code, stdout)
	}
}

// --package: the units of the .deb. Every variable its settings file names
// is a flag of a command the units run (or a global one), so the template
// cannot drift from the commands.
func TestSystemdPackage(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runSystemdCLI(t, "systemd", "--package", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	svc, _ := readSystemdFile(t, dir, "lib/systemd/system/etcd-backup-agent.service")
	if !strings.Contains(svc, "ExecStart=/usr/bin/etcd-backup agent\n") {
		t.Errorf("agent unit:\n%s", svc)
	}
	dropIn, _ := readSystemdFile(t, dir, "lib/systemd/system/etcd-backup.service.d/30-etcd-backup.conf")
	if !strings.Contains(dropIn, "EnvironmentFile=-/etc/etcd-backup/etcd-backup.env\n") {
		t.Errorf("drop-in:\n%s", dropIn)
	}
	env, mode := readSystemdFile(t, dir, "etc/etcd-backup/etcd-backup.env")
	if mode != 0o600 {
		t.Errorf("env file mode %04o, want 0600", mode)
	}

	root := newRootCommand(io.Discard, io.Discard)
	known := map[string]bool{"AWS_ACCESS_KEY_ID": true, "AWS_SECRET_ACCESS_KEY": true}
	for _, name := range []string{"snapshot", "agent", "restore", "join"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("no %s command: %v", name, err)
		}
		c.Flags().VisitAll(func(f *pflag.Flag) { known[EnvName(f.Name)] = true })
	}
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) { known[EnvName(f.Name)] = true })
	n := 0
	for _, line := range strings.Split(env, "\n") {
		name, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if !ok || !strings.HasPrefix(line, "#") || strings.ContainsAny(name, " \t\"") {
			continue
		}
		n++
		if !known[name] {
			t.Errorf("%s names %s, which no command of the units reads", "etcd-backup.env", name)
		}
	}
	if n < 10 {
		t.Errorf("found only %d example settings in etcd-backup.env:\n%s", n, env)
	}

	for _, args := range [][]string{
		{"systemd", "--package", "--repo", "/b"},
		{"systemd", "--package", "--endpoints", "https://10.0.0.1:2379"},
		{"systemd", "--package", "--env", "AWS_ACCESS_KEY_ID=x"},
		{"systemd", "install", "--package", "--repo", "/b"},
	} {
		if code, _, stderr := runSystemdCLI(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, stderr)
		}
	}
}
