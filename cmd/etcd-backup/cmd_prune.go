package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/retention"
)

type pruneOptions struct {
	KeepLast    keepCount
	KeepHourly  keepCount
	KeepDaily   keepCount
	KeepWeekly  keepCount
	KeepMonthly keepCount
	KeepYearly  keepCount
	KeepWithin  durationFlag
	DryRun      bool
	ReadBack    bool
	Identity    []string
	OrphanAge   durationFlag
}

func (o *pruneOptions) AddFlags(fs *pflag.FlagSet) {
	o.addPolicyFlags(fs)
	fs.BoolVar(&o.DryRun, "dry-run", false, "verify and print what would be removed and why; change nothing")
	fs.BoolVar(&o.ReadBack, "read-back", false, "verify by reading backups back in full, with every check of 'verify' (downloads at least the newest backup), instead of checking that their payloads are present with the recorded size")
	fs.StringArrayVar(&o.Identity, "identity", nil, "with --read-back: age identity file (or SSH private key) to verify encrypted backups completely; repeatable")
}

// addPolicyFlags adds the retention flags, which the agent shares.
func (o *pruneOptions) addPolicyFlags(fs *pflag.FlagSet) {
	fs.Var(&o.KeepLast, "keep-last", "keep the n newest backups ('unlimited': all)")
	fs.Var(&o.KeepHourly, "keep-hourly", "keep the newest backup of each of the n newest hours (UTC) that have backups")
	fs.Var(&o.KeepDaily, "keep-daily", "keep the newest backup of each of the n newest days (UTC) that have backups")
	fs.Var(&o.KeepWeekly, "keep-weekly", "keep the newest backup of each of the n newest ISO weeks (Monday-Sunday, UTC) that have backups")
	fs.Var(&o.KeepMonthly, "keep-monthly", "keep the newest backup of each of the n newest months (UTC) that have backups")
	fs.Var(&o.KeepYearly, "keep-yearly", "keep the newest backup of each of the n newest years (UTC) that have backups")
	fs.Var(&o.KeepWithin, "keep-within", "keep every backup taken within this duration before the newest backup, e.g. 36h, 7d, 2w, 1d12h")
	o.OrphanAge = durationFlag(prune.DefaultOrphanAge)
	fs.Var(&o.OrphanAge, "orphan-age", "remove payloads without manifest, and leftovers of interrupted uploads, once older than this")
}

func (o *pruneOptions) policy() retention.Policy {
	return retention.Policy{
		Last: int(o.KeepLast), Hourly: int(o.KeepHourly), Daily: int(o.KeepDaily),
		Weekly: int(o.KeepWeekly), Monthly: int(o.KeepMonthly), Yearly: int(o.KeepYearly),
		Within: time.Duration(o.KeepWithin),
	}
}

func newPruneCommand(g *Globals) *cobra.Command {
	var o pruneOptions
	cmd := &cobra.Command{
		Use:   "prune --keep-... [--dry-run]",
		Short: "Remove the backups a retention policy no longer keeps, and orphans",
		Long: `Apply a retention policy to the backups of --cluster and remove the others.
The --keep-* flags work like restic's 'forget': a backup is kept when any of
them keeps it. --keep-hourly/daily/weekly/monthly/yearly n keep the newest
backup of each of the n newest hours/days/ISO weeks/months/years, counting
only those that have backups, in UTC; when a rule still has count left at
the oldest backup, that one is kept too. --keep-within is relative to the
newest backup, not to now, so a stalled backup schedule does not eat into
it. At least one --keep-* flag is required.

The newest verified backup is always kept, whatever the policy says.
Verified means: every byte was checked when the backup was written (etcd's
sha256 trailer, the sha256 of the snapshot and of the stored bytes, recorded
in the manifest, which is written last), and the backup is still there: its
manifest passes its checksum and its payload exists with the size the
manifest records. That costs one Stat per backup checked, no download.
Backups are checked from the newest down; one whose payload is missing or
has the wrong size is skipped (FAILS VERIFICATION). If none passes, nothing
is removed and prune exits with 4. A storage error while checking stops
prune before it removes anything (exit 1).

--read-back reads backups back in full instead, with every check of
'verify' (stored size and sha256, age and zstd, snapshot size and sha256,
etcd's trailer), so it also catches bytes damaged in place; it downloads
at least the newest backup. Encrypted backups are read back completely with
--identity; without a matching key, by the size and sha256 of the stored
bytes. The agent's --verify-every schedules such a read-back separately.

A backup's manifest is removed before its payload, so it leaves 'list' at
once. Manifests that fail their checksum are listed as DAMAGED and never
removed. Payloads without a manifest (orphans of failed backups) and the
leftovers of interrupted uploads (temporary files, incomplete S3 multipart
uploads) are removed once older than --orphan-age.

See docs/retention.md for an example timeline.`,
		Example: `  # what would a policy remove? (changes nothing)
  etcd-backup prune --repo /var/backups/etcd --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run

  # everything from the last two days, one a day for a month, one a month forever
  etcd-backup prune --repo s3://backups/etcd --keep-within 2d --keep-daily 30 --keep-monthly unlimited

  # read the newest backup back completely before removing anything
  etcd-backup prune --repo s3://backups/etcd --cluster prod --keep-daily 14 --read-back --identity /root/etcd-backup.key`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return runPrune(cmd.Context(), g, &o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runPrune(ctx context.Context, g *Globals, o *pruneOptions) error {
	p := o.policy()
	if p.Empty() {
		return usagef("prune needs a retention policy: at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within (prune never removes every backup)")
	}
	if o.OrphanAge <= 0 {
		return usagef("--orphan-age must be more than 0 (a backup may be uploading its payload)")
	}
	if len(o.Identity) > 0 && !o.ReadBack {
		// Scripts from before --read-back pass --identity expecting a read-back.
		g.log.Warn("--identity is only used with --read-back: prune checks that the newest backup is present with its recorded size and reads no backup; add --read-back to read it back")
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
	rep, err := prune.Run(ctx, r, p, prune.Options{
		DryRun:     o.DryRun,
		ReadBack:   o.ReadBack,
		Identities: ids,
		Logger:     g.log,
		OrphanAge:  time.Duration(o.OrphanAge),
	})
	if rep != nil {
		printPruneReport(g.stdout, rep, time.Duration(o.OrphanAge), err == nil)
	}
	return err
}

// printPruneReport prints the decisions as a table, then orphans, leftovers
// and a summary. done: Run completed (otherwise the summary is left out).
func printPruneReport(w io.Writer, rep *prune.Report, orphanAge time.Duration, done bool) {
	if len(rep.Backups) == 0 && len(rep.Damaged) == 0 {
		fmt.Fprintf(w, "no backups of cluster %q in %s\n", rep.Cluster, rep.Location)
	} else {
		fmt.Fprintf(w, "backups of cluster %q in %s, policy %s:\n", rep.Cluster, rep.Location, rep.Policy)
		failed := map[string]error{}
		for _, f := range rep.VerifyFailed {
			failed[f.ID] = f.Err
		}
		type row struct{ id, line string }
		var rows []row
		for _, b := range rep.Backups {
			action := "keep"
			switch {
			case b.Keep:
			case b.Removed:
				action = "removed"
			case rep.DryRun:
				action = "would remove"
			default:
				action = "remove"
			}
			reasons := strings.Join(b.Reasons, ", ")
			if err, ok := failed[b.ID]; ok {
				reasons = strings.TrimPrefix(reasons+"; FAILS VERIFICATION: "+oneLine(err.Error()), "; ")
			}
			rows = append(rows, row{b.ID, fmt.Sprintf("%s\t%s\t%s\t%s\t%s", b.ID, b.Time.UTC().Format(time.RFC3339),
				humanize.IBytes(uint64(b.Size)), action, reasons)})
		}
		for _, d := range rep.Damaged {
			t, _ := format.IDTime(d.ID)
			rows = append(rows, row{d.ID, fmt.Sprintf("%s\t%s\t\tDAMAGED\t%s (never removed by prune: check it by hand)",
				d.ID, t.UTC().Format(time.RFC3339), oneLine(d.Err.Error()))})
		}
		slices.SortFunc(rows, func(a, b row) int { return strings.Compare(b.id, a.id) })
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTIME\tSIZE\tACTION\tREASONS")
		for _, r := range rows {
			fmt.Fprintln(tw, r.line)
		}
		tw.Flush()
	}
	switch {
	case rep.Verified != "" && rep.VerifiedStoredOnly:
		fmt.Fprintf(w, "newest verified backup: %s (read back; encrypted, no --identity opens it: only the stored size and sha256 were checked)\n", rep.Verified)
	case rep.Verified != "" && rep.ReadBack:
		fmt.Fprintf(w, "newest verified backup: %s (read back: every checksum and etcd's hash match)\n", rep.Verified)
	case rep.Verified != "":
		fmt.Fprintf(w, "newest verified backup: %s (checked when written; manifest intact, payload present with its recorded size; --read-back reads it back)\n", rep.Verified)
	case len(rep.Backups) > 0 || len(rep.Damaged) > 0:
		fmt.Fprintln(w, "no backup passes verification: nothing was removed")
	}
	for _, o := range rep.Orphans {
		state := "removed"
		switch {
		case o.Young:
			state = "kept: younger than --orphan-age " + retention.FormatDuration(orphanAge) + ", a backup may still be writing it"
		case rep.DryRun:
			state = "would remove"
		case !o.Removed:
			state = "not removed"
		}
		fmt.Fprintf(w, "orphan payload %s (%s, modified %s): %s\n", o.Name, humanize.IBytes(uint64(o.Size)),
			o.ModTime.UTC().Format(time.RFC3339), state)
	}
	for _, s := range rep.Stale {
		fmt.Fprintf(w, "stale upload leftover removed: %s\n", s)
	}
	if rep.StaleErr != nil {
		fmt.Fprintf(w, "warning: removing stale upload leftovers failed (backups are unaffected): %s\n", oneLine(rep.StaleErr.Error()))
	}
	if !done {
		return
	}
	fmt.Fprintln(w, rep.Summary())
	if rep.DryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
	}
}

// keepCount is a --keep-* count: a number ≥ 0 or "unlimited".
type keepCount int

func (k *keepCount) String() string {
	if *k == retention.Unlimited {
		return "unlimited"
	}
	return strconv.Itoa(int(*k))
}

func (k *keepCount) Set(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), "unlimited") {
		*k = retention.Unlimited
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return fmt.Errorf("want a count ≥ 0 or 'unlimited', got %q", s)
	}
	*k = keepCount(n)
	return nil
}

func (k *keepCount) Type() string { return "n" }

// durationFlag accepts Go durations plus days and weeks (7d, 2w, 1d12h).
type durationFlag time.Duration

func (d *durationFlag) String() string {
	if *d == 0 {
		return "0"
	}
	return retention.FormatDuration(time.Duration(*d))
}

func (d *durationFlag) Set(s string) error {
	v, err := retention.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationFlag(v)
	return nil
}

func (d *durationFlag) Type() string { return "duration" }
