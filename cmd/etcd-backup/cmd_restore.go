package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

type ageIdentity = age.Identity

type restoreOptions struct {
	spec     restore.Spec
	Identity []string
	Member   string
	DryRun   bool
}

func (o *restoreOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.spec.DataDir, "data-dir", "", "this member's etcd data dir to build (an existing one is moved aside, never deleted)")
	fs.StringVar(&o.spec.Name, "name", "", "this member's etcd --name")
	fs.StringVar(&o.spec.InitialCluster, "initial-cluster", "", "every member of the restored cluster: name=peer-url,... (same on every member)")
	fs.StringVar(&o.spec.PeerURLs, "initial-advertise-peer-urls", "", "this member's peer URLs (default: its entry in --initial-cluster)")
	fs.StringVar(&o.spec.Token, "initial-cluster-token", restore.DefaultToken, "initial cluster token (same on every member)")
	fs.BoolVar(&o.spec.Founding, "founding", false, "make a one-member cluster; other nodes then 'join'")
	fs.Uint64Var(&o.spec.RevisionBump, "bump-revision", 0, "raise the restored revision by N (Kubernetes: watchers never see revisions go back)")
	fs.BoolVar(&o.spec.MarkCompacted, "mark-compacted", false, "mark the restored revision compacted (with --bump-revision; Kubernetes)")
	fs.StringArrayVar(&o.Identity, "identity", nil, "age identity file (or SSH private key) for encrypted backups; repeatable")
	fs.StringVar(&o.Member, "from-member", "", "use the newest backup taken from this member")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the plan and check the backup exists; change nothing")
}

func newRestoreCommand(g *Globals) *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore [ID|latest]",
		Short: "Build this member's data dir from a backup",
		Long: `Build this member's etcd data dir from a backup (default: latest).

Whole cluster (etcd's own disaster recovery): run restore on every member
with the same backup, the same --initial-cluster and the same token, then
start etcd everywhere. New machines with new addresses are just another
--initial-cluster.

Founding member: 'restore --founding' makes a one-member cluster on this node;
other nodes then 'join'.

Safety: refuses while an etcd holds --data-dir; downloads and checks the whole
backup (every checksum and etcd's hash) before touching anything; builds the
new data dir beside the old one and swaps it in only when complete; an
existing non-empty data dir is moved to <data-dir>.pre-restore-<time>.`,
		Example: `  # on each of the three members, same backup, same cluster description:
  etcd-backup restore latest --repo s3://backups/etcd --data-dir /var/lib/etcd \
      --name m1 --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380

  # one node only, from a chosen member's newest backup, encrypted:
  etcd-backup restore --founding --from-member m2 --identity /root/key.txt --repo /mnt/backups \
      --data-dir /var/lib/etcd --name m1 --initial-advertise-peer-urls https://10.0.0.1:2380

  # Kubernetes: revisions never go backwards for watchers
  etcd-backup restore latest --bump-revision 1000000000 --mark-compacted ...`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRestore(cmd.Context(), g, &o, refArg(args))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// ancestorFoundingEnv is the old kit's setting: the founding member's
// advertised peer URL, on the node that restores a one-member cluster.
const ancestorFoundingEnv = "ETCD_RESTORE_MASTER_ADV_PEER_URLS"

func runRestore(ctx context.Context, g *Globals, o *restoreOptions, ref string) error {
	if v := os.Getenv(ancestorFoundingEnv); v != "" && o.spec.PeerURLs == "" && o.spec.InitialCluster == "" {
		o.spec.PeerURLs, o.spec.Founding = v, true
		g.log.Info("founding member from the environment", "variable", ancestorFoundingEnv, "peer_urls", v)
	}
	plan, err := restore.MakePlan(o.spec)
	if err != nil {
		return err
	}
	if st, err := os.Stat(filepath.Dir(filepath.Clean(plan.DataDir))); err != nil || !st.IsDir() {
		return usagef("the parent directory of --data-dir %s does not exist: create it first (mkdir -p %s)", plan.DataDir, filepath.Dir(filepath.Clean(plan.DataDir)))
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
	m, err := r.Find(ctx, ref, repo.Selector{Member: o.Member, OnSkip: warnSkipped(g)})
	if err != nil {
		return err
	}
	if o.DryRun {
		fmt.Fprintf(g.stdout, "would restore backup %s (revision %d, member %s, taken %s)\ninto %s as member %s of %s\n",
			m.ID, m.Revision, m.MemberName, m.Created.Format("2006-01-02 15:04:05Z07:00"), plan.DataDir, plan.Name, plan.InitialCluster)
		return nil
	}
	meter, log := g.startProgress("restore", m.RawSize, false)
	res, err := restore.Execute(ctx, r, m, plan, restore.Options{Identities: ids, Logger: log, Progress: meter.Func()})
	meter.Close()
	if err != nil {
		return err
	}
	if res.MovedAside != "" {
		fmt.Fprintf(g.stdout, "previous data dir moved to %s\n", res.MovedAside)
	}
	fmt.Fprintf(g.stdout, "restored backup %s (revision %d, %d keys) into %s as member %s\n",
		m.ID, res.Revision, res.Keys, res.DataDir, plan.Name)
	fmt.Fprintf(g.stdout, "start etcd with: etcd %s\n", strings.Join(plan.EtcdFlags(), " "))
	return nil
}

// warnSkipped logs each damaged backup that "latest" passed over.
func warnSkipped(g *Globals) func(id string, err error) {
	return func(id string, err error) {
		g.log.Warn("skipping damaged backup, using an older one", "id", id, "error", err)
	}
}
