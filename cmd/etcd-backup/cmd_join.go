package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/fsutil"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

type joinOptions struct {
	etcd     etcdOptions
	Name     string
	PeerURLs string
	DataDir  string
	EnvFile  string
	Timeout  time.Duration
}

func (o *joinOptions) AddFlags(fs *pflag.FlagSet) {
	o.etcd.AddFlags(fs)
	fs.StringVar(&o.Name, "name", "", "this member's etcd --name")
	fs.StringVar(&o.PeerURLs, "initial-advertise-peer-urls", "", "this member's peer URLs, comma separated")
	fs.StringVar(&o.DataDir, "data-dir", "", "this member's etcd data dir: an existing one is moved aside, never deleted")
	fs.StringVar(&o.EnvFile, "env-file", "", "write the environment etcd must start with to this file (for systemd's EnvironmentFile=)")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long while etcd refuses the change")
}

func newJoinCommand(g *Globals) *cobra.Command {
	var o joinOptions
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Add this node to a running cluster as a learner and write etcd's environment",
		Long: `On a node that should become a member of a running cluster (for example one
just founded with 'restore --founding'): move any existing data dir aside
(never deleted), add this member as a learner through --endpoints, and write
--env-file with exactly what etcd must start with:

  ETCD_NAME, ETCD_INITIAL_CLUSTER, ETCD_INITIAL_ADVERTISE_PEER_URLS,
  ETCD_INITIAL_CLUSTER_STATE=existing

Your etcd unit must not also pass these four as flags (etcd refuses a setting
given both ways). Then start etcd, and run 'etcd-backup promote' to make the
learner a voting member once it has caught up.

etcd refuses a membership change right after another one ("unhealthy
cluster"), and etcd 3.4 allows only one learner at a time: join retries with
backoff within --timeout and says what it is waiting for. Running join again
for a member that is already in the cluster changes nothing.`,
		Example: `  etcd-backup join --endpoints https://10.0.0.1:2379 --name m2 \
      --initial-advertise-peer-urls https://10.0.0.2:2380 --data-dir /var/lib/etcd \
      --env-file /run/etcd-backup/etcd-join.env
  systemctl start etcd
  etcd-backup promote --endpoints https://10.0.0.1:2379 --name m2`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return runJoin(cmd.Context(), g, &o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runJoin(ctx context.Context, g *Globals, o *joinOptions) error {
	if o.Name == "" {
		return usagef("--name is required")
	}
	if o.DataDir == "" {
		return usagef("--data-dir is required")
	}
	if o.EnvFile == "" {
		return usagef("--env-file is required (etcd reads its start settings from it)")
	}
	// Reuse restore's peer URL validation.
	plan, err := restore.MakePlan(restore.Spec{DataDir: o.DataDir, Name: o.Name, PeerURLs: o.PeerURLs, Founding: true})
	if err != nil {
		return err
	}
	cli, err := o.etcd.connect()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	members, err := cli.Members(ctx)
	if err != nil {
		return err
	}
	if m, ok := etcd.FindMember(members, o.Name, nil); ok && !sameURLs(m.PeerURLs, plan.PeerURLs) {
		return usagef("a member named %s already exists with peer URLs %v: remove it first (etcdctl member remove %s)",
			o.Name, m.PeerURLs, etcd.HexID(m.ID))
	}
	existing, already := etcd.FindMember(members, "", plan.PeerURLs)
	if already && existing.Name != "" {
		// Already added and started: its data dir is live cluster data
		// (etcd may even be running on it). Leave it; rewrite the env file.
		g.log.Info("already a member; data dir left as is", "member", o.Name, "id", etcd.HexID(existing.ID), "learner", existing.IsLearner)
	} else {
		if err := datadir.CheckNotInUse(o.DataDir); err != nil {
			return err
		}
		aside, err := datadir.MoveAside(o.DataDir, "pre-join", time.Now())
		if err != nil {
			return err
		}
		if aside != "" {
			fmt.Fprintf(g.stdout, "previous data dir moved to %s\n", aside)
		}
	}
	added, all, err := cli.AddLearner(ctx, g.log, plan.PeerURLs)
	if err != nil {
		return err
	}
	ic := etcd.InitialCluster(all, added.ID, o.Name)
	env := fmt.Sprintf("# Written by etcd-backup join at %s. etcd reads it once, on its first start.\n"+
		"ETCD_NAME=%s\nETCD_INITIAL_CLUSTER=%s\nETCD_INITIAL_ADVERTISE_PEER_URLS=%s\nETCD_INITIAL_CLUSTER_STATE=existing\n",
		time.Now().UTC().Format(time.RFC3339), o.Name, ic, strings.Join(plan.PeerURLs, ","))
	if err := fsutil.WriteFileAtomic(o.EnvFile, []byte(env), 0o644); err != nil {
		return fmt.Errorf("write --env-file: %w", err)
	}
	fmt.Fprintf(g.stdout, "member %s (%s) is in the cluster as a learner; etcd environment written to %s\n",
		o.Name, etcd.HexID(added.ID), o.EnvFile)
	fmt.Fprintf(g.stdout, "next: start etcd on this node, then: etcd-backup promote --name %s --endpoints %s\n",
		o.Name, strings.Join(o.etcd.Endpoints, ","))
	return nil
}

func sameURLs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, u := range a {
		seen[u] = true
	}
	for _, u := range b {
		if !seen[u] {
			return false
		}
	}
	return true
}
