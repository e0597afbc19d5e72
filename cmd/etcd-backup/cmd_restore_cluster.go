package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/clusterrestore"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

type restoreClusterOptions struct {
	InitialCluster string
	Token          string
	ToRev          int64
	ToTime         string
	Bump           uint64
	MarkCompacted  bool
	Identity       []string
	Timeout        time.Duration
	Force          bool
	JSON           bool
	TempDir        string
	Poll           time.Duration
}

func (o *restoreClusterOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.InitialCluster, "initial-cluster", "", "every member of the restored cluster: name=peer-url,... (each name must have an agent running with --name NAME)")
	fs.StringVar(&o.Token, "initial-cluster-token", restore.DefaultToken, "initial cluster token of the restored cluster")
	fs.Int64Var(&o.ToRev, "to-revision", 0, "point in time: restore exactly this etcd revision (needs a journal, 'agent --continuous')")
	fs.StringVar(&o.ToTime, "to-time", "", `point in time: the last revision recorded at or before this time (RFC 3339, or "10m" for ten minutes ago)`)
	fs.Uint64Var(&o.Bump, "bump-revision", 0, "raise the restored revision by N (Kubernetes)")
	fs.BoolVar(&o.MarkCompacted, "mark-compacted", false, "mark the restored revision compacted (with --bump-revision; Kubernetes)")
	fs.StringArrayVar(&o.Identity, "identity", nil, "age identity file for encrypted backups (only this command needs it: the agents get the prepared data encrypted to their own keys)")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "give up (exit 1, naming the members not done) after this long; running the command again resumes")
	fs.BoolVar(&o.Force, "force", false, "restore even if a member still sees the cluster answering with a quorum (its data is moved aside, not deleted)")
	fs.BoolVar(&o.JSON, "json", false, "print each member's progress as JSON lines (one report object per line) instead of text")
	fs.StringVar(&o.TempDir, "temp-dir", "", "where to prepare the database (default $TMPDIR; needs the snapshot's size free)")
	fs.DurationVar(&o.Poll, "poll", time.Second, "how often to read the members' progress from the repository")
}

func newRestoreClusterCommand(g *Globals) *cobra.Command {
	var o restoreClusterOptions
	cmd := &cobra.Command{
		Use:   "restore-cluster [ID|latest]",
		Short: "Restore every member of the cluster with one command (through the agents)",
		Long: `Restore the whole cluster from one backup, from any machine that reaches the
repository: no login on the nodes, no runbook. The agents on the nodes do it.

Each node runs 'etcd-backup agent' with --name (its etcd member name),
--data-dir and a way to stop and start etcd (--etcd-unit, or
--etcd-stop-command and --etcd-start-command). restore-cluster:

  1. resolves the backup (and --to-revision/--to-time), downloads it, checks
     every byte and replays the journal here, once, so that every member
     gets exactly the same database;
  2. encrypts that database to the agents' own keys (each agent publishes a
     public key in the repository; --identity stays on this machine) and
     writes a restore order into the repository;
  3. waits until every member's agent has checked in. If a member still sees
     the cluster answering with a quorum, the order is cancelled and nothing
     is touched, unless --force;
  4. lets the agents go: each stops etcd, builds its data dir with etcd's own
     restore beside the old one, moves the old one aside (never deletes it),
     and starts etcd;
  5. returns when every member serves the same revision with the same HashKV
     (exit 0), or after --timeout naming the members that are not done
     (exit 1; run the same command again to resume).

New machines: give the new names and peer URLs in --initial-cluster and run
agents with those names there. The order, every member's reports and the
result stay in the repository (clusters/<cluster>/orders/) for audit.`,
		Example: `  etcd-backup restore-cluster latest --repo s3://backups/etcd --cluster prod \
      --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380

  # point in time, encrypted backups, Kubernetes:
  etcd-backup restore-cluster --to-time 2026-11-22T09:40:59Z --identity /root/etcd-backup.key \
      --bump-revision 1000000000 --mark-compacted --repo s3://backups/etcd --cluster prod \
      --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			liftMemoryLimit() // a journal replay holds etcd's key index
			return runRestoreCluster(cmd.Context(), g, &o, refArg(args))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runRestoreCluster(ctx context.Context, g *Globals, o *restoreClusterOptions, ref string) error {
	if o.InitialCluster == "" {
		return usagef("--initial-cluster is required: every member of the restored cluster, name=peer-url,...")
	}
	if o.MarkCompacted && o.Bump == 0 {
		return usagef("--mark-compacted needs --bump-revision N")
	}
	if o.Bump > 0 && !o.MarkCompacted {
		return usagef("--bump-revision needs --mark-compacted (etcd bumps only a revision it marks compacted, so watchers re-list)")
	}
	if o.ToRev < 0 {
		return usagef("--to-revision must be a positive revision")
	}
	target := restore.Target{Revision: o.ToRev}
	if o.ToTime != "" {
		t, err := parseToTime(o.ToTime, time.Now())
		if err != nil {
			return err
		}
		target.Time = t
	}
	ids, err := readIdentities(o.Identity)
	if err != nil {
		return err
	}
	r, err := g.openRepo(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo(r)
	host, _ := os.Hostname()
	enc := json.NewEncoder(g.stdout)
	progress := func(rep clusterrestore.Report) {
		if o.JSON {
			_ = enc.Encode(rep)
			return
		}
		line := fmt.Sprintf("%s  %-8s %s", rep.Time.Local().Format("15:04:05"), rep.Member, rep.State)
		switch {
		case rep.Error != "":
			line += ": " + rep.Error
		case rep.State == clusterrestore.StateChecked && rep.ClusterHealthy:
			line += ": its etcd still answers with a quorum"
		case rep.State == clusterrestore.StateHealthy:
			line += fmt.Sprintf(": revision %d, HashKV %08x, member %s", rep.Revision, rep.HashKV, rep.MemberID)
		case rep.MovedAside != "" && rep.State == clusterrestore.StateBuilt:
			line += ": previous data dir moved to " + rep.MovedAside
		}
		fmt.Fprintln(g.stdout, line)
	}
	out, err := clusterrestore.Run(ctx, r, clusterrestore.Request{
		Ref: ref, Target: target, InitialCluster: o.InitialCluster, Token: o.Token,
		RevisionBump: o.Bump, MarkCompacted: o.MarkCompacted, Force: o.Force, Identities: ids,
		Timeout: o.Timeout, Poll: o.Poll, TempDir: o.TempDir, By: host, Logger: g.log, Progress: progress,
	})
	if err == nil && !o.JSON {
		fmt.Fprintf(g.stdout, "cluster restored: %d members healthy at revision %d (backup %s, order %s)\n",
			len(out.Order.Members), out.Order.Revision, out.Order.BackupID, out.Order.ID)
	}
	return err
}
