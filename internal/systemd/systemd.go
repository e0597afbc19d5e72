package systemd

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Fixed locations, as absolute paths on the target system.
const (
	UnitDir     = "/etc/systemd/system"
	SecretsFile = "/etc/etcd-backup/secrets.env"
	JoinEnvFile = "/run/etcd-backup/etcd-join.env"
	DropInName  = "30-etcd-backup.conf"

	DefaultBinary   = "/usr/local/bin/etcd-backup"
	DefaultInterval = 30 * time.Second
	DefaultWatchdog = time.Minute
	DefaultEtcdUnit = "etcd.service"
)

// The files of the etcd-backup package (Config.Package): its units, its
// binary, and the one file the administrator edits.
const (
	PackageUnitDir = "/lib/systemd/system"
	PackageBinary  = "/usr/bin/etcd-backup"
	PackageEnvFile = "/etc/etcd-backup/etcd-backup.env"
	// PackageStateDir is the services' StateDirectory=: the only place a
	// packaged unit may write a local repository.
	PackageStateDir = "/var/lib/etcd-backup"
	// PackageDataDirParent is writable for restore and join: it holds the
	// usual data dirs (/var/lib/etcd, Debian's /var/lib/etcd/default).
	PackageDataDirParent = "/var/lib"
)

// Unit names.
const (
	SnapshotService = "etcd-backup.service"
	SnapshotTimer   = "etcd-backup.timer"
	AgentService    = "etcd-backup-agent.service"
	RestoreService  = "etcd-restore.service"
	JoinService     = "etcd-join.service"
)

// Services are the units that run etcd-backup and get the settings drop-in.
var Services = []string{SnapshotService, AgentService, RestoreService, JoinService}

// ErrConfig: the configuration cannot be rendered into valid units.
var ErrConfig = errors.New("bad systemd configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

// Var is one environment variable.
type Var struct {
	Name, Value string
}

// Config is everything the units depend on.
type Config struct {
	// Binary is the absolute path of etcd-backup on the target system.
	Binary string
	// Interval between snapshots started by the timer.
	Interval time.Duration
	// Watchdog is the agent's WatchdogSec=; 0 leaves it out.
	Watchdog time.Duration
	// EtcdUnit is etcd's service name, for ordering and its drop-in.
	EtcdUnit string
	// Settings become Environment= lines of every etcd-backup service:
	// ETCD_BACKUP_* variables. Readable by any local user.
	Settings []Var
	// Secrets go to SecretsFile (0600), loaded with EnvironmentFile=.
	Secrets []Var
	// RepoDir is the local repository directory; "" for remote ones.
	RepoDir string
	// DataDir is etcd's data dir on this member; "" when not configured.
	DataDir string
	// Paths are all other files the services read (certificates,
	// identities, recipient files): they decide ProtectHome= and PrivateTmp=.
	Paths []string

	// Package renders the units of a distribution package, built before
	// any setting is known: they go to PackageUnitDir, every service reads
	// its settings from PackageEnvFile (EnvironmentFile=-, so a missing
	// file is no error), which is written as a commented template (0600),
	// a local repository must be under PackageStateDir (StateDirectory=),
	// restore and join may write under PackageDataDirParent, and join does
	// nothing once $ETCD_BACKUP_DATA_DIR/member exists. Settings, Secrets,
	// RepoDir, DataDir and Paths must be empty.
	Package bool
}

// File is one rendered file.
type File struct {
	Path   string      // relative to the root, '/' separated: etc/systemd/system/etcd-backup.service
	Mode   fs.FileMode // 0600 when Secret, else 0644
	Data   []byte
	Secret bool // holds credentials
}

//go:embed templates/*.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"word":  unitWord,
	"path":  unitPath,
	"named": func(d *unitData, name string) named { return named{name, d} },
}).ParseFS(templateFS, "templates/*.tmpl"))

// unitData is what the templates see.
type unitData struct {
	Binary        string
	Interval      string
	Watchdog      string
	EtcdUnit      string
	Environment   []string // quoted "NAME=value" words
	SecretsFile   string   // "" when there are no secrets
	JoinEnvFile   string
	RepoDir       string
	DataDir       string
	DataDirParent string
	ProtectHome   string
	PrivateTmp    bool
	Services      []string
	Package       bool
	EnvFile       string // PackageEnvFile when Package
	StateDir      string // StateDirectory= (under /var/lib) when Package
}

// named is what the "header" template sees: the unit's name and the
// rendering it is part of.
type named struct {
	Name string
	*unitData
}

var (
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+\.service$`)
)

// Render checks c and returns every file, in a fixed order.
func Render(c Config) ([]File, error) {
	d, err := c.data()
	if err != nil {
		return nil, err
	}
	var files []File
	add := func(p, tmpl string, secret bool) error {
		var b bytes.Buffer
		if err := templates.ExecuteTemplate(&b, tmpl, d); err != nil {
			return fmt.Errorf("render %s: %w", p, err)
		}
		mode := fs.FileMode(0o644)
		if secret {
			mode = 0o600
		}
		files = append(files, File{Path: p, Mode: mode, Data: tidy(b.Bytes()), Secret: secret})
		return nil
	}
	unitDir := UnitDir
	if c.Package {
		unitDir = PackageUnitDir
	}
	unit := func(name string) string { return strings.TrimPrefix(path.Join(unitDir, name), "/") }
	steps := []struct{ path, tmpl string }{
		{unit(SnapshotService), "snapshot.service.tmpl"},
		{unit(SnapshotTimer), "snapshot.timer.tmpl"},
		{unit(AgentService), "agent.service.tmpl"},
		{unit(RestoreService), "restore.service.tmpl"},
		{unit(JoinService), "join.service.tmpl"},
	}
	for _, s := range Services {
		steps = append(steps, struct{ path, tmpl string }{unit(s + ".d/" + DropInName), "settings.conf.tmpl"})
	}
	steps = append(steps, struct{ path, tmpl string }{unit(c.EtcdUnit + ".d/" + DropInName), "etcd.conf.tmpl"})
	for _, s := range steps {
		if err := add(s.path, s.tmpl, false); err != nil {
			return nil, err
		}
	}
	if c.Package {
		if err := add(strings.TrimPrefix(PackageEnvFile, "/"), "package.env.tmpl", true); err != nil {
			return nil, err
		}
	}
	if len(c.Secrets) > 0 {
		var b bytes.Buffer
		b.WriteString("# Secrets for the etcd-backup services, written by 'etcd-backup systemd'.\n" +
			"# Keep this file mode 0600. Loaded with EnvironmentFile= by each service's " + DropInName + ".\n")
		for _, v := range c.Secrets {
			fmt.Fprintf(&b, "%s=%s\n", v.Name, EnvFileQuote(v.Value))
		}
		files = append(files, File{Path: strings.TrimPrefix(SecretsFile, "/"), Mode: 0o600, Data: b.Bytes(), Secret: true})
	}
	return files, nil
}

// tidy drops leading and repeated blank lines and ends the text with exactly
// one newline, so templates can be laid out freely.
func tidy(b []byte) []byte {
	var out []string
	blank := true
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, " \t")
		if line == "" {
			if blank {
				continue
			}
			blank = true
		} else {
			blank = false
		}
		out = append(out, line)
	}
	return []byte(strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n")
}

func (c Config) data() (*unitData, error) {
	if err := checkPath("binary", c.Binary); err != nil {
		return nil, err
	}
	if c.Interval < time.Second {
		return nil, configErr("interval %s is too short: at least 1s", c.Interval)
	}
	if c.Watchdog < 0 || (c.Watchdog > 0 && c.Watchdog < time.Second) {
		return nil, configErr("watchdog %s: want 0 (off) or at least 1s", c.Watchdog)
	}
	if !unitNameRE.MatchString(c.EtcdUnit) {
		return nil, configErr("etcd unit %q is not a service name like etcd.service", c.EtcdUnit)
	}
	d := &unitData{
		Binary:      c.Binary,
		Interval:    Timespan(c.Interval),
		EtcdUnit:    c.EtcdUnit,
		JoinEnvFile: JoinEnvFile,
		RepoDir:     c.RepoDir,
		DataDir:     c.DataDir,
		ProtectHome: "yes",
		PrivateTmp:  true,
		Services:    Services,
	}
	if c.Package {
		if len(c.Settings) > 0 || len(c.Secrets) > 0 || c.RepoDir != "" || c.DataDir != "" || len(c.Paths) > 0 {
			return nil, configErr("the package's units read every setting from %s: give none when rendering them", PackageEnvFile)
		}
		d.Package = true
		d.EnvFile = PackageEnvFile
		d.StateDir = strings.TrimPrefix(PackageStateDir, "/var/lib/")
		d.DataDirParent = PackageDataDirParent
	}
	if c.Watchdog > 0 {
		d.Watchdog = Timespan(c.Watchdog)
	}
	seen := map[string]bool{}
	for _, v := range append(append([]Var(nil), c.Settings...), c.Secrets...) {
		if !envNameRE.MatchString(v.Name) {
			return nil, configErr("%q is not a valid environment variable name", v.Name)
		}
		if seen[v.Name] {
			return nil, configErr("%s is set twice", v.Name)
		}
		seen[v.Name] = true
		if strings.ContainsAny(v.Value, "\x00\n\r") {
			return nil, configErr("the value of %s contains a line break or NUL", v.Name)
		}
	}
	for _, v := range c.Settings {
		d.Environment = append(d.Environment, EnvironmentWord(v.Name+"="+v.Value))
	}
	if len(c.Secrets) > 0 {
		d.SecretsFile = SecretsFile
	}
	all := append([]string(nil), c.Paths...)
	if c.RepoDir != "" {
		if err := checkPath("repository directory", c.RepoDir); err != nil {
			return nil, err
		}
		all = append(all, c.RepoDir)
	}
	if c.DataDir != "" {
		if err := checkPath("data dir", c.DataDir); err != nil {
			return nil, err
		}
		if path.Clean(c.DataDir) == "/" {
			return nil, configErr("data dir cannot be /")
		}
		d.DataDir = path.Clean(c.DataDir)
		d.DataDirParent = path.Dir(d.DataDir)
		all = append(all, c.DataDir)
	}
	for _, p := range all {
		if !path.IsAbs(p) {
			return nil, configErr("%q is not an absolute path (services run in /)", p)
		}
		switch {
		case under(p, "/home", "/root", "/run/user"):
			d.ProtectHome = "read-only"
		case under(p, "/tmp", "/var/tmp"):
			d.PrivateTmp = false
		}
	}
	return d, nil
}

func under(p string, dirs ...string) bool {
	p = path.Clean(p)
	return slices.ContainsFunc(dirs, func(d string) bool { return p == d || strings.HasPrefix(p, d+"/") })
}

// checkPath accepts absolute paths that can stand unquoted in any unit
// setting (ExecStart=, ReadWritePaths=, ConditionPathExists=).
func checkPath(what, p string) error {
	if !path.IsAbs(p) {
		return configErr("%s %q must be an absolute path", what, p)
	}
	if strings.ContainsFunc(p, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\;$`, r)
	}) {
		return configErr("%s %q contains a space, quote, backslash, semicolon, $ or control character", what, p)
	}
	return nil
}

// unitPath writes a checked path in a unit file: only % needs escaping.
func unitPath(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// unitWord is unitPath for a plain word.
func unitWord(s string) string { return unitPath(s) }

// EnvironmentWord quotes one NAME=value assignment for Environment=:
// specifiers (%) are escaped always; the word is double-quoted, with \ and "
// escaped, when it holds anything but plain characters.
func EnvironmentWord(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\`, r)
	}) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// EnvFileQuote quotes a value for an EnvironmentFile= (and for sh): double
// quotes, with \ " ` $ escaped.
func EnvFileQuote(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", `$`, `\$`)
	return `"` + r.Replace(v) + `"`
}

// Timespan formats d the way systemd prints time spans: 30s, 1min 30s, 2h.
func Timespan(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	var parts []string
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "min"}, {time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "us"}} {
		if n := d / u.d; n > 0 {
			parts = append(parts, fmt.Sprintf("%d%s", n, u.name))
			d -= n * u.d
		}
	}
	if len(parts) == 0 {
		return "1us"
	}
	return strings.Join(parts, " ")
}

// Preview writes every file to w, each under a header with its absolute
// path and mode, for review. Values in secret files are hidden.
func Preview(w io.Writer, files []File) error {
	for i, f := range files {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
		data := f.Data
		note := ""
		if f.Secret {
			data = redact(f.Data)
			note = ", values hidden here"
		}
		if _, err := fmt.Fprintf(w, "# ==> /%s (%04o%s) <==\n%s", f.Path, f.Mode.Perm(), note, data); err != nil {
			return err
		}
	}
	return nil
}

func redact(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if name, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out.WriteString(name + "=(hidden)\n")
			continue
		}
		out.WriteString(line)
	}
	return out.Bytes()
}
