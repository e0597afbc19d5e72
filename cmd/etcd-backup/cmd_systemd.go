package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
	"github.com/etcd-backup/etcd-backup/internal/systemd"
)

type systemdOptions struct {
	Binary   string
	Interval time.Duration
	Watchdog time.Duration
	EtcdUnit string
	Env      []string
	Force    bool
	// Package renders the units of the .deb (systemd.Config.Package); a
	// flag of 'etcd-backup systemd' only, not of install.
	Package bool

	// mirrored are the flags of snapshot, restore, join and agent that the
	// systemd command accepts too and writes into the units.
	mirrored []string
}

// systemdGlobalSettings are the global flags written into the units.
// -v and -q only affect the systemd command itself.
var systemdGlobalSettings = []string{"repo", "cluster", "log-format"}

// systemdNotSettings are flags of other commands that make no sense in a
// unit: the units set them themselves, or they are one-off.
var systemdNotSettings = map[string]bool{"dry-run": true, "env-file": true}

// systemdPathFlags hold file paths: they must be absolute (services run in
// /), and they decide how much of the file system the sandbox hides.
var systemdPathFlags = map[string]bool{"cacert": true, "cert": true, "key": true, "identity": true, "encrypt-to-file": true, "data-dir": true}

func (o *systemdOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Binary, "binary", systemd.DefaultBinary, "absolute path of etcd-backup on the target machine (ExecStart=)")
	fs.DurationVar(&o.Interval, "interval", systemd.DefaultInterval, "time between snapshots of etcd-backup.timer; when given, also ETCD_BACKUP_INTERVAL for the agent")
	fs.DurationVar(&o.Watchdog, "watchdog", systemd.DefaultWatchdog, "WatchdogSec= of etcd-backup-agent.service (0: no watchdog)")
	fs.StringVar(&o.EtcdUnit, "etcd-unit", systemd.DefaultEtcdUnit, "etcd's service, for ordering and its drop-in")
	fs.StringArrayVar(&o.Env, "env", nil, "KEY=VALUE, or KEY to copy it from this environment: a variable for the services, kept in the 0600 secrets file (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...); repeatable")
	fs.BoolVar(&o.Force, "force", false, "replace existing files that differ (without it nothing is written when one differs)")

	// The settings: the flags of the commands the units run, same names.
	var sn snapshotOptions
	var re restoreOptions
	var jo joinOptions
	var ag agentOptions
	usedBy := map[string][]string{}
	flags := map[string]*pflag.Flag{}
	for _, c := range []struct {
		name string
		add  func(*pflag.FlagSet)
	}{{"snapshot", sn.AddFlags}, {"restore", re.AddFlags}, {"join", jo.AddFlags}, {"agent", ag.AddFlags}} {
		scratch := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		c.add(scratch)
		scratch.VisitAll(func(f *pflag.Flag) {
			if systemdNotSettings[f.Name] || fs.Lookup(f.Name) != nil {
				return
			}
			if flags[f.Name] == nil {
				flags[f.Name] = f
				o.mirrored = append(o.mirrored, f.Name)
			}
			usedBy[f.Name] = append(usedBy[f.Name], c.name)
		})
	}
	for _, name := range o.mirrored {
		f := flags[name]
		f.Usage = fmt.Sprintf("%s [%s]", f.Usage, strings.Join(usedBy[name], ", "))
		fs.AddFlag(f)
	}
}

func newSystemdCommand(g *Globals) *cobra.Command {
	var o systemdOptions
	var out string
	cmd := &cobra.Command{
		Use:   "systemd",
		Short: "Write systemd units that back up on a timer, restore, and join",
		Long: `Render the systemd units that run etcd-backup on this node, with the settings
given here, and write them to --out DIR, or to this machine with
'etcd-backup systemd install'. Without --out it prints them (secrets hidden).

Files, as under / (--out DIR holds the same tree: DIR/etc/systemd/system/...):
  /etc/systemd/system/etcd-backup.service        oneshot 'etcd-backup snapshot'
  /etc/systemd/system/etcd-backup.timer          starts it every --interval (30s)
  /etc/systemd/system/etcd-backup-agent.service  'etcd-backup agent' (Type=notify, watchdog):
                                                 the long-running alternative to the timer
  /etc/systemd/system/etcd-restore.service       'etcd-backup restore latest', by hand only
  /etc/systemd/system/etcd-join.service          'etcd-backup join' before etcd starts
  /etc/systemd/system/<service>.d/30-etcd-backup.conf
        the settings, as Environment=ETCD_BACKUP_<FLAG>=..., one identical copy for
        each of the four services (each command reads its own flags' variables)
  /etc/systemd/system/etcd.service.d/30-etcd-backup.conf
        EnvironmentFile=-/run/etcd-backup/etcd-join.env: etcd starts with what join wrote
  /etc/etcd-backup/secrets.env                   mode 0600, only with secrets

Settings: every flag of snapshot, restore and join below (same names; the
bracket says which command reads it), plus --repo, --cluster and --log-format,
is written to the units when given, here or as ETCD_BACKUP_<FLAG>. Defaults
are not written. Repeatable flags can be given once: a unit variable holds one
value (list several recipients in one --encrypt-to-file).

Secrets never go into a unit (any user can read Environment= with 'systemctl
show'): --password, a --user name:password and every --env go to
/etc/etcd-backup/secrets.env (0600), loaded with EnvironmentFile=. To keep a
secret off this command line too, give it as ETCD_BACKUP_PASSWORD=... in the
environment, or '--env AWS_SECRET_ACCESS_KEY' to copy the variable from it.

How the units start:
  etcd-backup.timer        systemctl enable --now etcd-backup.timer
  etcd-backup-agent        systemctl enable --now etcd-backup-agent (Conflicts= with the timer: one or the other)
  etcd-restore             never by itself: systemctl stop etcd; systemctl start etcd-restore; systemctl start etcd
  etcd-join                systemctl enable etcd-join on a node that should join: etcd then requires it, so
                           etcd does not start if join fails; skipped once <data-dir>/member exists

The services run as root in a sandbox (ProtectSystem=strict, ProtectHome,
PrivateTmp, NoNewPrivileges, ...): only the local repository and the parent
of --data-dir are writable.

--package renders the units the .deb installs: /lib/systemd/system/..., with
EnvironmentFile=-/etc/etcd-backup/etcd-backup.env in each 30-etcd-backup.conf
and that file as a commented template (0600). No setting is given then: the
administrator writes them into that file. A local repository must be under
/var/lib/etcd-backup (StateDirectory=) and the data dir under /var/lib.
'install' writes to /etc/systemd/system, which takes precedence over the
package's files of the same names.

Existing files that differ are never replaced without --force, and nothing
is written then. 'install' runs 'systemctl daemon-reload' when systemd runs
this machine (/run/systemd/system exists) and something changed.`,
		Example: `  # look at the units for a local repository
  etcd-backup systemd --repo /var/backups/etcd

  # S3, TLS, encryption; credentials copied from this shell's environment
  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
  etcd-backup systemd install --repo 's3://backups/etcd?region=eu-west-1' --cluster prod \
      --endpoints https://10.0.0.1:2379 --cacert /etc/etcd/pki/ca.pem \
      --cert /etc/etcd/pki/backup.pem --key /etc/etcd/pki/backup-key.pem \
      --encrypt-to-file /etc/etcd-backup/recipients.txt --identity /etc/etcd-backup/identity.txt \
      --data-dir /var/lib/etcd --name m1 --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380 \
      --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY
  systemctl enable --now etcd-backup.timer

  # the units of the .deb (make release)
  etcd-backup systemd --package --out ./pkgroot

  # render for another machine, ship it like a tarball
  etcd-backup systemd --out ./units --repo /var/backups/etcd --interval 1m
  tar -C ./units -cf - . | ssh root@m2 'tar -C / -xpf - && systemctl daemon-reload'`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSystemd(cmd, g, &o, out, false) // out "": preview
		},
	}
	o.AddFlags(cmd.PersistentFlags())
	cmd.Flags().StringVar(&out, "out", "", "write the files under this directory, laid out as under / (DIR/etc/systemd/system/...)")
	cmd.Flags().BoolVar(&o.Package, "package", false, "render the units of the etcd-backup package instead: in /lib/systemd/system, running "+systemd.PackageBinary+" (unless --binary), every setting read from "+systemd.PackageEnvFile+" (rendered as a commented template); takes no settings")

	var root string
	install := &cobra.Command{
		Use:   "install",
		Short: "Write the units to /etc/systemd/system and reload systemd",
		Long: `Write the files of 'etcd-backup systemd' (same flags) to this machine:
/etc/systemd/system and /etc/etcd-backup, or under --root. Existing files that
differ are left alone, and nothing is written, unless --force; the ones that
differ are listed. Then 'systemctl daemon-reload' runs when systemd runs this
machine (/run/systemd/system exists), --root is /, and something changed.
Nothing is enabled or started: the next steps are printed.`,
		Example: `  etcd-backup systemd install --repo /var/backups/etcd --endpoints http://127.0.0.1:2379
  systemctl enable --now etcd-backup.timer

  # change a setting later: same command, other flags, --force
  etcd-backup systemd install --repo /var/backups/etcd --endpoints http://10.0.0.1:2379 --force

  # into an image or a test directory
  etcd-backup systemd install --root /mnt/image --repo s3://backups/etcd`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if root == "" {
				return usagef("--root is empty (default: /)")
			}
			return runSystemd(cmd, g, &o, root, true)
		},
	}
	install.Flags().StringVar(&root, "root", "/", "file system root to install under")
	cmd.AddCommand(install)
	return cmd
}

func runSystemd(cmd *cobra.Command, g *Globals, o *systemdOptions, root string, install bool) error {
	cfg, err := o.config(cmd.Flags(), g)
	if err != nil {
		return err
	}
	files, err := systemd.Render(cfg)
	if errors.Is(err, systemd.ErrConfig) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if root == "" {
		return systemd.Preview(g.stdout, files)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return err
	}
	live := install && root == "/"
	if live && os.Geteuid() != 0 {
		return fmt.Errorf("install writes to %s: run it as root (or render with --out DIR)", systemd.UnitDir)
	}
	if install {
		if st, err := os.Stat(filepath.Join(root, cfg.Binary)); err != nil || st.Mode()&0o111 == 0 {
			g.log.Warn("the units run a binary that is not there (yet): install etcd-backup there or pass --binary",
				"binary", filepath.Join(root, cfg.Binary))
		}
	}
	changes, err := systemd.Write(root, files, o.Force)
	var conflict *systemd.ConflictError
	if errors.As(err, &conflict) {
		for _, c := range conflict.Conflicts {
			fmt.Fprintf(g.stdout, "%-10s %s (%s)\n", "differs", c.Path, c.Why)
		}
		return fmt.Errorf("%d existing file(s) differ from the rendered ones, so nothing was written: review them (listed above), then run again with --force to replace them", len(conflict.Conflicts))
	}
	changed := false
	for _, c := range changes {
		fmt.Fprintf(g.stdout, "%-10s %s\n", c.Action, c.Path)
		changed = changed || c.Action != systemd.Unchanged
	}
	if err != nil {
		return err
	}
	if stale := filepath.Join(root, systemd.SecretsFile); len(cfg.Secrets) == 0 && isFile(stale) {
		fmt.Fprintf(g.stdout, "%-10s %s: no longer used by the units; remove it\n", "note", stale)
	}
	switch {
	case cfg.Package:
		fmt.Fprintf(g.stdout, "\nthe files of the etcd-backup package; once installed, write the settings into %s\n", systemd.PackageEnvFile)
	case !install:
		fmt.Fprintf(g.stdout, "\nto install: copy the tree onto the target's / (cp -a %s/. / or tar), then systemctl daemon-reload\n", root)
	case !live:
		fmt.Fprintf(g.stdout, "\n--root %s: systemctl daemon-reload skipped\n", root)
	case !changed:
		fmt.Fprintln(g.stdout, "\nnothing changed: systemctl daemon-reload not needed")
	case !isDir(systemdRunDir):
		fmt.Fprintf(g.stdout, "\nsystemd is not running on this machine (no %s): daemon-reload skipped\n", systemdRunDir)
	default:
		if err := daemonReload(g.stdout, g.stderr); err != nil {
			return err
		}
		fmt.Fprintln(g.stdout, "\nsystemctl daemon-reload: done")
	}
	printSystemdNextSteps(g.stdout, cfg)
	return nil
}

const systemdRunDir = "/run/systemd/system"

func daemonReload(stdout, stderr io.Writer) error {
	c := exec.Command("systemctl", "daemon-reload")
	c.Stdout, c.Stderr = stdout, stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w (the files are written; run it by hand)", err)
	}
	return nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func printSystemdNextSteps(w io.Writer, cfg systemd.Config) {
	etcd := strings.TrimSuffix(cfg.EtcdUnit, ".service")
	fmt.Fprintf(w, `
next steps (as root, on the target):
  systemctl enable --now etcd-backup.timer     # a snapshot every %s
    or: systemctl enable --now etcd-backup-agent   (one or the other)
  systemctl enable etcd-join                   # only on a node that should join a running cluster
  disaster recovery: systemctl stop %s; systemctl start etcd-restore; systemctl start %s
`, systemd.Timespan(cfg.Interval), etcd, etcd)
}

// config turns the flags into a systemd.Config.
func (o *systemdOptions) config(flags *pflag.FlagSet, g *Globals) (systemd.Config, error) {
	cfg := systemd.Config{
		Binary:   o.Binary,
		Interval: o.Interval,
		Watchdog: o.Watchdog,
		EtcdUnit: o.EtcdUnit,
	}
	if o.Package {
		return o.packageConfig(flags, cfg)
	}
	if g.Repo == "" {
		return cfg, usagef("--repo is required (or ETCD_BACKUP_REPO), e.g. --repo /var/backups/etcd or --repo s3://bucket/etcd")
	}
	dir, err := systemdRepoDir(g.Repo)
	if err != nil {
		return cfg, err
	}
	cfg.RepoDir = dir

	names := append(append([]string(nil), systemdGlobalSettings...), o.mirrored...)
	names = append(names, "interval")
	for _, name := range names {
		f := flags.Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		values := []string{f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			values = sv.GetSlice()
			if f.Value.Type() == "stringSlice" {
				values = []string{strings.Join(values, ",")}
			}
		}
		if len(values) != 1 {
			hint := "combine them into one file"
			if name == "encrypt-to" {
				hint = "list the recipients in one file and give --encrypt-to-file FILE"
			}
			return cfg, usagef("--%s is given %d times, but %s holds one value in a unit: %s", name, len(values), EnvName(name), hint)
		}
		value := values[0]
		if systemdPathFlags[name] && value != "" {
			if !filepath.IsAbs(value) {
				return cfg, usagef("--%s %q: give an absolute path (the services run in /)", name, value)
			}
			if name == "data-dir" {
				cfg.DataDir = filepath.Clean(value)
			} else {
				cfg.Paths = append(cfg.Paths, value)
			}
		}
		v := systemd.Var{Name: EnvName(name), Value: value}
		if name == "password" || (name == "user" && strings.Contains(value, ":")) {
			cfg.Secrets = append(cfg.Secrets, v)
		} else {
			cfg.Settings = append(cfg.Settings, v)
		}
	}
	for _, e := range o.Env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			if v, ok = os.LookupEnv(k); !ok {
				return cfg, usagef("--env %s: %s is not set in this environment (give --env %s=VALUE)", k, k, k)
			}
		}
		cfg.Secrets = append(cfg.Secrets, systemd.Var{Name: k, Value: v})
	}
	byName := func(a, b systemd.Var) int { return strings.Compare(a.Name, b.Name) }
	slices.SortStableFunc(cfg.Settings, byName)
	slices.SortStableFunc(cfg.Secrets, byName)
	sort.Strings(cfg.Paths)
	return cfg, nil
}

// packageConfig is config for --package: the units take no setting (they
// read them from systemd.PackageEnvFile), so a setting given as a flag or in
// the environment is refused rather than silently left out.
func (o *systemdOptions) packageConfig(flags *pflag.FlagSet, cfg systemd.Config) (systemd.Config, error) {
	cfg.Package = true
	if !flags.Changed("binary") {
		cfg.Binary = systemd.PackageBinary
	}
	names := append(append([]string(nil), systemdGlobalSettings...), o.mirrored...)
	for _, name := range names {
		if f := flags.Lookup(name); f != nil && f.Changed {
			return cfg, usagef("--package: the package's units read every setting from %s, so --%s (or %s) is not taken here", systemd.PackageEnvFile, name, EnvName(name))
		}
	}
	if len(o.Env) > 0 {
		return cfg, usagef("--package: secrets go into %s on the target, not into the package (--env)", systemd.PackageEnvFile)
	}
	return cfg, nil
}

// systemdRepoDir returns the directory of a local repository ("" for a
// remote one), which the units must be allowed to write.
func systemdRepoDir(raw string) (string, error) {
	dir, err := backends.LocalPath(raw)
	if err != nil {
		return "", err
	}
	if dir != "" && !filepath.IsAbs(dir) {
		return "", usagef("--repo %q: a local repository must be an absolute path in a unit (the services run in /)", raw)
	}
	if dir != "" {
		dir = filepath.Clean(dir)
	}
	return dir, nil
}
