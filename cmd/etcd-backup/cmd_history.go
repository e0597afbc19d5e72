package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/journal/codec"

	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

type historyOptions struct {
	Identity []string
	Prefix   string
	Since    string
	Until    string
	FromRev  int64
	JSON     bool
	Values   bool
}

func (o *historyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.Identity, "identity", nil, "age identity file (or SSH private key) for encrypted backups; repeatable")
	fs.StringVar(&o.Prefix, "prefix", "", "only events on keys with this prefix (e.g. /registry/deployments/)")
	fs.StringVar(&o.Since, "since", "", "only revisions received at or after this time (RFC 3339, or a duration such as 30m for that long ago)")
	fs.StringVar(&o.Until, "until", "", "only revisions received at or before this time (RFC 3339 or a duration ago)")
	fs.Int64Var(&o.FromRev, "from-revision", 0, "only revisions at or after this one")
	fs.BoolVar(&o.JSON, "json", false, "one JSON object per event")
	fs.BoolVar(&o.Values, "values", false, "print values too (they may hold secrets)")
}

func newHistoryCommand(g *Globals) *cobra.Command {
	var o historyOptions
	cmd := &cobra.Command{
		Use:   "history [ID|latest]",
		Short: "Show the changes a backup's journal recorded: to find the revision to restore to",
		Long: `Print the changes recorded by the journal ('agent --continuous') of a backup
(default: latest), oldest first: revision, the time the agent received it,
PUT or DELETE, the key, its version and lease. Use it to find the revision
just before a bad change, then 'restore --to-revision' that revision minus one.
Nothing is written; every checksum is checked as the journal is read. Values
are not printed unless --values is given.`,
		Example: `  # what changed under /registry/deployments/ in the last half hour
  etcd-backup history --prefix /registry/deployments/ --since 30m --repo s3://backups/etcd

  # the revision that deleted a key
  etcd-backup history --prefix /registry/configmaps/prod/app-config --json | jq 'select(.type=="DELETE")'`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHistory(cmd.Context(), g, &o, refArg(args))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

type historyEvent struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Key      string    `json:"key"`
	Version  int64     `json:"version,omitempty"`
	Created  int64     `json:"create_revision,omitempty"`
	Lease    string    `json:"lease,omitempty"`
	Value    *string   `json:"value,omitempty"`
}

var errHistoryDone = errors.New("done")

func runHistory(ctx context.Context, g *Globals, o *historyOptions, ref string) error {
	now := time.Now()
	var since, until time.Time
	var err error
	if o.Since != "" {
		if since, err = parseToTime(o.Since, now); err != nil {
			return usagef("--since: %v", err)
		}
	}
	if o.Until != "" {
		if until, err = parseToTime(o.Until, now); err != nil {
			return usagef("--until: %v", err)
		}
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
	m, err := r.Find(ctx, ref, repo.Selector{OnSkip: warnSkipped(g)})
	if err != nil {
		return err
	}
	p, brk := restore.Chain(ctx, r, m)
	if p == nil && brk == nil && (ref == "" || ref == "latest") {
		// A snapshot taken moments ago has no journal yet: show the newest
		// backup that has one.
		entries, err := r.List(ctx)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Err != nil {
				continue
			}
			if p, brk = restore.Chain(ctx, r, e.M); p != nil || brk != nil {
				m = e.M
				break
			}
		}
	}
	if p == nil {
		if brk != nil {
			return brk
		}
		return fmt.Errorf("%w: backup %s has no journal (journals come from 'agent --continuous')", repo.ErrNoBackup, m.ID)
	}
	enc := json.NewEncoder(g.stdout)
	n := 0
	err = restore.ReadJournal(ctx, r, p, ids, func(rec *codec.Record) error {
		if rec.Revision < o.FromRev || (!since.IsZero() && rec.Time.Before(since)) {
			return nil
		}
		if !until.IsZero() && rec.Time.After(until) {
			return errHistoryDone
		}
		for _, ev := range rec.Events {
			if !strings.HasPrefix(string(ev.Kv.Key), o.Prefix) {
				continue
			}
			e := historyEvent{Revision: rec.Revision, Time: rec.Time, Type: ev.Type.String(), Key: string(ev.Kv.Key)}
			if ev.Type == mvccpb.PUT {
				e.Version, e.Created = ev.Kv.Version, ev.Kv.CreateRevision
				if ev.Kv.Lease != 0 {
					e.Lease = fmt.Sprintf("%016x", ev.Kv.Lease)
				}
				if o.Values {
					v := string(ev.Kv.Value)
					e.Value = &v
				}
			}
			n++
			if o.JSON {
				if err := enc.Encode(e); err != nil {
					return err
				}
				continue
			}
			line := fmt.Sprintf("%d\t%s\t%-6s\t%s", e.Revision, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Type, strconv.Quote(e.Key)[1:len(strconv.Quote(e.Key))-1])
			if e.Type == "PUT" {
				line += fmt.Sprintf("\tversion=%d", e.Version)
				if e.Lease != "" {
					line += " lease=" + e.Lease
				}
				if e.Value != nil {
					line += " value=" + strconv.Quote(*e.Value)
				}
			}
			fmt.Fprintln(g.stdout, line)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errHistoryDone) {
		return err
	}
	if !o.JSON {
		fmt.Fprintf(g.stderr, "%d events; backup %s (revision %d), journal unbroken to revision %d (%s)\n",
			n, m.ID, m.Revision, p.End, p.EndTime.UTC().Format(time.RFC3339))
	}
	if brk != nil {
		g.log.Warn("the journal breaks after its last shown revision", "error", brk)
	}
	return nil
}
