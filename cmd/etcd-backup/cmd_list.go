package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
)

type listOptions struct {
	JSON   bool
	Member string
}

func (o *listOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.JSON, "json", false, "print a JSON array of backups")
	fs.StringVar(&o.Member, "from-member", "", "only backups taken from this member name")
}

func newListCommand(g *Globals) *cobra.Command {
	var o listOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the backups in the repository, newest first",
		Long: `List the backups of --cluster in --repo, newest first: ID, time, revision,
member, raw and stored size, etcd version, and, for backups with a journal
('agent --continuous'), the last revision and time the journal reaches without
a break: 'restore --to-revision' and '--to-time' can reach any point between
the backup and there. A manifest that fails its checksum is listed as DAMAGED
and never used by 'restore latest'.`,
		Example: `  etcd-backup list --repo /var/backups/etcd
  etcd-backup list --repo s3://backups/etcd --cluster prod --json | jq -r '.[0].id'`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return runList(cmd.Context(), g, &o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// listEntry is the JSON shape of one backup (a contract for scripts).
type listEntry struct {
	ID          string    `json:"id"`
	Time        time.Time `json:"time"`
	Revision    int64     `json:"revision"`
	Member      string    `json:"member"`
	MemberID    string    `json:"member_id"`
	ClusterID   string    `json:"cluster_id"`
	EtcdVersion string    `json:"etcd_version"`
	Size        int64     `json:"size"`
	StoredSize  int64     `json:"stored_size"`
	Encrypted   bool      `json:"encrypted"`
	Error       string    `json:"error,omitempty"`
	// Journal is what the backup's journal (agent --continuous) lets
	// restore reach: revisions start..end, received first..last.
	Journal *listJournal `json:"journal,omitempty"`
}

type listJournal struct {
	Start     int64     `json:"start_revision"`
	End       int64     `json:"end_revision"`
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	Segments  int       `json:"segments"`
	Error     string    `json:"error,omitempty"` // a gap, an overlap or damage after End
}

func runList(ctx context.Context, g *Globals, o *listOptions) error {
	r, err := g.openRepo(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo(r)
	entries, err := r.List(ctx)
	if err != nil {
		return err
	}
	// One LIST of the journal tells every chain's coverage: names say each
	// object's range (chain.Cover); only segments written before framing 2
	// cost a GET of their manifest each.
	chains, err := store.New(r).ListAll(ctx, true)
	if err != nil {
		return err
	}
	out := []listEntry{}
	for _, e := range entries {
		if e.Err != nil {
			if o.Member == "" {
				t, _ := format.IDTime(e.ID)
				out = append(out, listEntry{ID: e.ID, Time: t, Error: e.Err.Error()})
			}
			continue
		}
		m := e.M
		if o.Member != "" && m.MemberName != o.Member {
			continue
		}
		le := listEntry{ID: m.ID, Time: m.Created, Revision: m.Revision, Member: m.MemberName,
			MemberID: m.MemberID, ClusterID: m.ClusterID, EtcdVersion: m.EtcdVersion, Size: m.RawSize,
			StoredSize: m.StoredSize, Encrypted: m.Encrypted()}
		if l := chains[m.ID]; l != nil {
			cov := chain.Cover(m.Revision, l.Objects)
			lj := &listJournal{Start: m.Revision + 1, End: cov.End, FirstTime: cov.FirstTime, LastTime: cov.LastTime, Segments: len(cov.Objects)}
			if cov.Break != nil {
				lj.Error = cov.Break.Error()
			}
			le.Journal = lj
		}
		out = append(out, le)
	}
	if o.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(g.stderr, "no backups of cluster %q in %s\n", r.Cluster(), r.Backend().Location())
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tREVISION\tMEMBER\tSIZE\tSTORED\tETCD\tENCRYPTED\tJOURNAL (restorable to)")
	for _, e := range out {
		if e.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tDAMAGED\t%s\t\t\t\t\n", e.ID, e.Time.UTC().Format(time.RFC3339), e.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%v\t%s\n", e.ID, e.Time.UTC().Format(time.RFC3339), e.Revision,
			e.Member, humanize.IBytes(uint64(e.Size)), humanize.IBytes(uint64(e.StoredSize)), e.EtcdVersion, e.Encrypted, journalCell(e.Journal))
	}
	return tw.Flush()
}

func journalCell(j *listJournal) string {
	if j == nil {
		return "-"
	}
	if j.Segments == 0 {
		if j.Error != "" {
			return "BROKEN: " + j.Error
		}
		return "-"
	}
	s := fmt.Sprintf("revision %d, %s (%d objects)", j.End, j.LastTime.UTC().Format(time.RFC3339), j.Segments)
	if j.Error != "" {
		s += "; then BROKEN: " + j.Error
	}
	return s
}
