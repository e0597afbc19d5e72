package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

// Globals are the flags every command shares.
type Globals struct {
	Repo      string
	Cluster   string
	LogFormat string
	Verbose   bool
	Quiet     bool
	// RcloneConfig is passed to rclone as --config for rclone: repositories.
	RcloneConfig string
	// StorageTimeout and StorageStall are the storage retry policy
	// (storage.Policy's Timeout and Stall).
	StorageTimeout time.Duration
	StorageStall   time.Duration
	// storageHooks count retries and give-ups (the agent's metrics).
	onRetry  func(op string, err error)
	onGiveUp func(op string)

	stdout, stderr io.Writer
	log            *slog.Logger
}

func (g *Globals) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&g.Repo, "repo", "", "repository URL: /path, file:///path, s3://bucket/prefix?region=R&endpoint=http://host:port, gs://bucket/prefix[?endpoint=http://host:port], rclone:remote:path")
	fs.StringVar(&g.RcloneConfig, "rclone-config", "", "rclone.conf for rclone: repositories (default: rclone's own lookup, $RCLONE_CONFIG)")
	fs.DurationVar(&g.StorageTimeout, "storage-timeout", storage.DefaultTimeout, "how long one storage operation keeps retrying once it fails (503s, dropped connections, stalls) before the command gives up with a storage error (exit 1)")
	fs.DurationVar(&g.StorageStall, "storage-stall-timeout", storage.DefaultStall, "abandon and retry a storage request that moves no byte for this long")
	fs.StringVar(&g.Cluster, "cluster", "default", "cluster name inside the repository (many clusters can share one repository)")
	fs.StringVar(&g.LogFormat, "log-format", "text", "log format on stderr: text or json")
	fs.BoolVarP(&g.Verbose, "verbose", "v", false, "log debug details")
	fs.BoolVarP(&g.Quiet, "quiet", "q", false, "log only errors")
}

// openRepo opens the repository named by --repo. create: make a missing
// local directory (backups do; readers must not).
func (g *Globals) openRepo(ctx context.Context, create bool) (*repo.Repo, error) {
	if g.Repo == "" {
		return nil, usagef("--repo is required (or ETCD_BACKUP_REPO), e.g. --repo /var/backups/etcd or --repo s3://bucket/etcd")
	}
	b, err := backends.Open(ctx, g.Repo, g.backendOptions(create))
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	r, err := repo.Open(ctx, b, g.Cluster)
	if err != nil {
		b.Close()
		return nil, err
	}
	return r, nil
}

// backendOptions are the options every command opens its repositories
// with: the storage retry policy comes from the global flags.
func (g *Globals) backendOptions(create bool) backends.Options {
	return backends.Options{
		Create:       create,
		RcloneConfig: g.RcloneConfig,
		Retry: storage.Policy{Timeout: g.StorageTimeout, Stall: g.StorageStall, Logger: g.log,
			OnRetry: g.onRetry, OnGiveUp: g.onGiveUp},
	}
}

func closeRepo(r *repo.Repo) {
	if r != nil {
		r.Backend().Close()
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &Globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "etcd-backup",
		Short: "Back up etcd v3 clusters and restore them after a disaster",
		Long: `etcd-backup takes consistent snapshots of an etcd v3 cluster, streams them
(compressed, optionally encrypted with age) to a repository that outlives the
cluster, and rebuilds a healthy multi-member cluster from them: on the same
machines or on new ones.

Every flag can also be set in the environment as ETCD_BACKUP_<FLAG>, upper
snake case: ETCD_BACKUP_REPO, ETCD_BACKUP_ENDPOINTS, ETCD_BACKUP_DIAL_TIMEOUT.

` + exitCodesHelp,
		Example: `  # back up now, to a local directory and to S3
  etcd-backup snapshot --endpoints https://10.0.0.1:2379 --cacert ca.pem --cert c.pem --key c-key.pem --repo /var/backups/etcd
  etcd-backup snapshot --endpoints http://127.0.0.1:2379 --repo 's3://backups/etcd?region=eu-west-1'

  # see what is there, check the newest one
  etcd-backup list --repo /var/backups/etcd
  etcd-backup verify latest --repo /var/backups/etcd

  # the whole story on an in-process cluster
  etcd-backup demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			// The old kit's setting: an rclone remote:path for the repository.
			if ep := os.Getenv("RCLONE_ENDPOINT"); ep != "" && g.Repo == "" {
				g.Repo = "rclone:" + ep
			}
			g.log = newLogger(g, stderr)
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newSnapshotCommand(g),
		newAgentCommand(g),
		newListCommand(g),
		newVerifyCommand(g),
		newRestoreCommand(g),
		newRestoreClusterCommand(g),
		newHistoryCommand(g),
		newJoinCommand(g),
		newPromoteCommand(g),
		newCopyCommand(g),
		newPruneCommand(g),
		newDemoCommand(g),
		newSystemdCommand(g),
		newVersionCommand(g),
		newGenDocsCommand(g),
	)
	return root
}

func newLogger(g *Globals, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch {
	case g.Quiet:
		level = slog.LevelError
	case g.Verbose:
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// EnvName is the environment variable that can set flag name.
func EnvName(flag string) string {
	return "ETCD_BACKUP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv fills every flag not given on the command line from its
// ETCD_BACKUP_* variable.
func applyEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(EnvName(f.Name))
		if !ok {
			return
		}
		if serr := cmd.Flags().Set(f.Name, v); serr != nil {
			err = usagef("environment %s: %v", EnvName(f.Name), serr)
		}
	})
	return err
}

// exactArgs is cobra.MaximumNArgs with a usage error.
func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("%s takes at most %d argument(s), got %q", cmd.CommandPath(), n, args)
		}
		return nil
	}
}
