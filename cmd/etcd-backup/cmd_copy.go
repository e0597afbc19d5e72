package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/transfer"
)

type copyOptions struct {
	ToRepo    string
	ToCluster string
	Identity  []string
	Member    string
}

func (o *copyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ToRepo, "to-repo", "", "destination repository URL (default: --repo)")
	fs.StringVar(&o.ToCluster, "to-cluster", "", "destination cluster name (default: --cluster)")
	fs.StringArrayVar(&o.Identity, "identity", nil, "age identity: also check the decrypted snapshot of encrypted backups while copying")
	fs.StringVar(&o.Member, "from-member", "", "only backups taken from this member")
}

func newCopyCommand(g *Globals) *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "copy [ID|latest|all]",
		Short: "Copy backups to another repository or cluster name, verifying as it goes",
		Long: `Copy one backup, the latest (default), or all of them from --repo/--cluster to
--to-repo/--to-cluster: a second site, a move to new storage, or a rename.

Payloads are copied byte for byte (encrypted ones stay encrypted; no key is
needed) while their size and sha256 are checked against the manifest; for
unencrypted backups, or with --identity, the snapshot's checksums and etcd's
hash are checked too. The destination manifest is written last and only if
every check passed, so the destination never lists a half-copied backup.
Backups already in the destination are skipped: 'copy all' is safe to re-run
(it copies what is missing). A backup's journal ('agent --continuous') is
copied with it, segment by segment, each checked the same way; a re-run copies
the segments added since, so a periodic 'copy all' keeps a second site able
to restore to any point in time too.`,
		Example: `  # second site: everything missing in the other bucket
  etcd-backup copy all --repo s3://backups-eu/etcd --to-repo 's3://backups-us/etcd?region=us-east-1'
  # move the newest backup to another cluster name in the same repository
  etcd-backup copy latest --repo /var/backups/etcd --cluster old --to-cluster prod`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd.Context(), g, &o, refArg(args))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runCopy(ctx context.Context, g *Globals, o *copyOptions, ref string) error {
	if o.ToRepo == "" && o.ToCluster == "" {
		return usagef("give --to-repo and/or --to-cluster")
	}
	ids, err := readIdentities(o.Identity)
	if err != nil {
		return err
	}
	src, err := g.openRepo(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo(src)
	dg := *g
	if o.ToRepo != "" {
		dg.Repo = o.ToRepo
	}
	if o.ToCluster != "" {
		dg.Cluster = o.ToCluster
	}
	if dg.Repo == g.Repo && dg.Cluster == g.Cluster {
		return usagef("source and destination are the same")
	}
	dst, err := dg.openRepo(ctx, true)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer closeRepo(dst)
	if err := dst.EnsureMarker(ctx, versionString()); err != nil {
		return err
	}

	var todo []*format.Manifest
	if ref == "all" {
		entries, err := src.List(ctx)
		if err != nil {
			return err
		}
		for i := len(entries) - 1; i >= 0; i-- { // oldest first
			e := entries[i]
			if e.Err != nil {
				g.log.Warn("skipping damaged backup", "id", e.ID, "error", e.Err)
				continue
			}
			if o.Member == "" || e.M.MemberName == o.Member {
				todo = append(todo, e.M)
			}
		}
	} else {
		m, err := src.Find(ctx, ref, repo.Selector{Member: o.Member})
		if err != nil {
			return err
		}
		todo = append(todo, m)
	}
	// Count the payload bytes read from the source for the progress meter.
	counted := &countingBackend{Backend: src.Backend()}
	csrc, err := repo.Open(ctx, counted, src.Cluster())
	if err != nil {
		return err
	}
	copied := 0
	for i, m := range todo {
		label := "copy"
		if len(todo) > 1 {
			label = fmt.Sprintf("copy %d/%d", i+1, len(todo))
		}
		meter, _ := g.startProgress(label, m.StoredSize, false)
		counted.meter.Store(meter)
		res, err := transfer.Copy(ctx, csrc, dst, m, ids)
		counted.meter.Store(nil)
		meter.Close()
		if err != nil {
			return err
		}
		if res.Skipped {
			fmt.Fprintf(g.stdout, "%s already in destination\n", m.ID)
		} else {
			copied++
			fmt.Fprintf(g.stdout, "%s copied (%d bytes; checked %s)\n", m.ID, m.StoredSize, res.Verified)
		}
		// Its journal: the segments the destination lacks (a chain grows,
		// so a re-run copies what was added since).
		jr, err := transfer.CopyJournal(ctx, src, dst, m, ids)
		if err != nil {
			return err
		}
		if jr.Copied > 0 {
			fmt.Fprintf(g.stdout, "%s journal: %d segments copied (%d bytes), %d already in destination\n", m.ID, jr.Copied, jr.Bytes, jr.Skipped)
		}
		if jr.Break != nil {
			g.log.Warn("the source journal breaks; copied up to the break", "id", m.ID, "error", jr.Break)
		}
	}
	g.log.Info("copy done", "copied", copied, "skipped", len(todo)-copied, "to", dst.Backend().Location(), "cluster", dst.Cluster())
	return nil
}
