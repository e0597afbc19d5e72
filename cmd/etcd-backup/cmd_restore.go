package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
	ToRev    int64
	ToTime   string
	NoJourn  bool
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
	fs.Int64Var(&o.ToRev, "to-revision", 0, "point in time: restore exactly this etcd revision (a snapshot plus its journal, from 'agent --continuous')")
	fs.StringVar(&o.ToTime, "to-time", "", `point in time: restore the last revision recorded at or before this time (RFC 3339, e.g. 2026-11-22T09:41:00Z or with an offset, or "10m" for ten minutes ago)`)
	fs.BoolVar(&o.NoJourn, "no-journal", false, "restore the snapshot alone, without replaying its journal")
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

Point in time: with a journal ('agent --continuous'), 'restore latest' replays
the newest snapshot's journal to its end; --to-revision N or --to-time T stop
earlier. Replay runs offline, in this process, on the downloaded snapshot: one
transaction per revision, so keys keep their create/mod revisions and
versions, and leases their IDs. It never talks to a cluster. Give every
member the same --to-revision (pick it once: 'list --json' shows where each
journal ends) so that all get the same data. A gap in the journal is refused
with the revision it is unbroken to. --bump-revision and --mark-compacted apply
on top.

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

  # just before the bad deploy at 09:41 UTC (see 'etcd-backup list' for the journal's range):
  etcd-backup restore --to-time 2026-11-22T09:40:59Z --repo s3://backups/etcd --data-dir /var/lib/etcd \
      --name m1 --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380

  # Kubernetes: revisions never go backwards for watchers
  etcd-backup restore latest --bump-revision 1000000000 --mark-compacted ...`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			liftMemoryLimit() // a journal replay holds etcd's key index
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
	target := restore.Target{Revision: o.ToRev, NoJournal: o.NoJourn}
	if o.ToRev < 0 {
		return usagef("--to-revision must be a positive revision")
	}
	if o.ToTime != "" {
		if target.Time, err = parseToTime(o.ToTime, time.Now()); err != nil {
			return err
		}
	}
	m, jp, err := restore.Resolve(ctx, r, ref, repo.Selector{Member: o.Member, OnSkip: warnSkipped(g)}, target)
	if err != nil {
		return err
	}
	if o.DryRun {
		fmt.Fprintf(g.stdout, "would restore backup %s (revision %d, member %s, taken %s)\n",
			m.ID, m.Revision, m.MemberName, m.Created.Format("2006-01-02 15:04:05Z07:00"))
		if jp != nil {
			fmt.Fprintf(g.stdout, "and replay its journal (%d objects, unbroken to revision %d at %s) %s\n",
				len(jp.Objects), jp.End, jp.EndTime.UTC().Format(time.RFC3339), journalTo(jp))
			if jp.Note != "" {
				fmt.Fprintf(g.stdout, "note: %s\n", jp.Note)
			}
		}
		fmt.Fprintf(g.stdout, "into %s as member %s of %s\n", plan.DataDir, plan.Name, plan.InitialCluster)
		return nil
	}
	meter, log := g.startProgress("restore", m.RawSize, false)
	res, err := restore.Execute(ctx, r, m, plan, restore.Options{Identities: ids, Logger: log, Progress: meter.Func(), Journal: jp})
	meter.Close()
	if err != nil {
		return err
	}
	if res.MovedAside != "" {
		fmt.Fprintf(g.stdout, "previous data dir moved to %s\n", res.MovedAside)
	}
	if jp != nil {
		fmt.Fprintf(g.stdout, "replayed %d revisions (%d events) of the journal on snapshot revision %d\n",
			res.Replayed.Records, res.Replayed.Events, res.SnapshotRevision)
		if jp.Note != "" {
			fmt.Fprintf(g.stdout, "note: %s\n", jp.Note)
		}
	}
	fmt.Fprintf(g.stdout, "restored backup %s (revision %d) into %s as member %s\n",
		m.ID, res.Revision, res.DataDir, plan.Name)
	fmt.Fprintf(g.stdout, "start etcd with: etcd %s\n", strings.Join(plan.EtcdFlags(), " "))
	return nil
}

// warnSkipped logs each damaged backup that "latest" passed over.
func warnSkipped(g *Globals) func(id string, err error) {
	return func(id string, err error) {
		g.log.Warn("skipping damaged backup, using an older one", "id", id, "error", err)
	}
}

// journalTo says where a replay stops, for messages.
func journalTo(jp *restore.JournalPlan) string {
	switch {
	case jp.ToRevision > 0:
		return fmt.Sprintf("to revision %d", jp.ToRevision)
	case !jp.ToTime.IsZero():
		return "to the last revision received at or before " + jp.ToTime.UTC().Format(time.RFC3339Nano)
	}
	return "to its end"
}

// parseToTime reads --to-time: RFC 3339 (with or without fractional
// seconds, Z or an offset), or a duration meaning that long before now.
func parseToTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--to-time %q: want an RFC 3339 time such as 2026-11-22T09:41:00Z (or +01:00 for an offset), or a duration such as 10m for that long ago", s)
}
