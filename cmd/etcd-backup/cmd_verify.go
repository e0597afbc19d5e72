package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

type verifyOptions struct {
	Identity []string
	Member   string
}

func (o *verifyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.Identity, "identity", nil, "age identity file (or SSH private key) for encrypted backups; repeatable")
	fs.StringVar(&o.Member, "from-member", "", "with latest: the newest backup taken from this member")
}

func newVerifyCommand(g *Globals) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify [ID|latest]",
		Short: "Read a backup back and check every checksum and etcd's hash",
		Long: `Read a backup back from the repository and check, while streaming: the
manifest's checksum, the stored object's size and sha256, age and zstd
integrity, the snapshot's size and sha256, and etcd's own sha256 trailer.
Nothing is written to disk. The default is the latest backup.`,
		Example: `  etcd-backup verify latest --repo /var/backups/etcd
  etcd-backup verify 20261122T044847.123Z-3f9a1c0b --repo s3://backups/etcd --identity /root/etcd-backup.key`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.Context(), g, &o, refArg(args))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func refArg(args []string) string {
	if len(args) == 0 {
		return "latest"
	}
	return args[0]
}

func readIdentities(files []string) ([]ageIdentity, error) {
	var out []ageIdentity
	for _, f := range files {
		ids, err := format.ReadIdentityFile(f)
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		out = append(out, ids...)
	}
	return out, nil
}

func runVerify(ctx context.Context, g *Globals, o *verifyOptions, ref string) error {
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
	start := time.Now()
	if err := restore.Fetch(ctx, r, m, ids, io.Discard, nil); err != nil {
		return err
	}
	g.log.Info("backup verified", "id", m.ID, "bytes", m.RawSize, "seconds", time.Since(start).Seconds())
	fmt.Fprintf(g.stdout, "%s ok: %d bytes, revision %d, member %s, every checksum and etcd's hash match\n",
		m.ID, m.RawSize, m.Revision, m.MemberName)
	return nil
}
