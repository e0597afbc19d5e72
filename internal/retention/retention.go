package retention

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Unlimited as a count keeps one backup in every bucket (every backup, for
// Last), like restic's "unlimited".
const Unlimited = -1

// ErrEmptyPolicy: the policy has no keep rule. Apply keeps everything for
// it; callers that delete refuse it.
var ErrEmptyPolicy = errors.New("empty retention policy: give at least one keep rule (--keep-last, --keep-daily, --keep-within, ...)")

// Policy says which backups to keep. A backup is kept when any rule keeps it.
// Counts are 0 (rule off), a positive number, or Unlimited.
type Policy struct {
	Last    int // the n newest backups
	Hourly  int // the newest backup of each of the n newest hours that have backups
	Daily   int // ... days
	Weekly  int // ... ISO weeks (Monday to Sunday)
	Monthly int // ... months
	Yearly  int // ... years
	// Within keeps every backup taken less than Within before the newest
	// backup (not before now): a stalled backup schedule does not make
	// Within delete history.
	Within time.Duration
}

// Empty reports whether p has no keep rule.
func (p Policy) Empty() bool { return p == Policy{} }

// Validate checks the counts and the duration.
func (p Policy) Validate() error {
	for _, c := range p.counts() {
		if c.n < Unlimited {
			return fmt.Errorf("retention policy: keep-%s %d: want a count ≥ 0 or unlimited", c.name, c.n)
		}
	}
	if p.Within < 0 {
		return fmt.Errorf("retention policy: keep-within %v: want a duration ≥ 0", p.Within)
	}
	return nil
}

type namedCount struct {
	name string
	n    int
}

func (p Policy) counts() []namedCount {
	return []namedCount{
		{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily},
		{"weekly", p.Weekly}, {"monthly", p.Monthly}, {"yearly", p.Yearly},
	}
}

// String renders the rules that are on, e.g. "last=3 daily=7 within=2d".
func (p Policy) String() string {
	var parts []string
	for _, c := range p.counts() {
		switch {
		case c.n == Unlimited:
			parts = append(parts, c.name+"=unlimited")
		case c.n != 0:
			parts = append(parts, fmt.Sprintf("%s=%d", c.name, c.n))
		}
	}
	if p.Within != 0 {
		parts = append(parts, "within="+FormatDuration(p.Within))
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, " ")
}

// Backup is one backup as the policy sees it.
type Backup struct {
	ID   string
	Time time.Time // when it was taken; bucketed in UTC
}

// Decision is the fate of one backup.
type Decision struct {
	ID      string
	Time    time.Time // UTC
	Keep    bool
	Reasons []string // why it is kept, e.g. "last 1/3", "daily 2026-11-22", "within 2d"; empty when removed
}

// Apply returns one decision per backup, newest first (ties by ID,
// descending). It does not modify backups. now only matters for Within:
// like restic, the newest backup taken strictly before now is the reference,
// so that a backup with a clock in the future cannot push every other
// backup out of the window.
//
// The algorithm is restic's (internal/data/snapshot_policy.go, ApplyPolicy):
// walk the backups newest first; for each counting rule with budget left,
// keep the backup when its bucket (hour, day, ISO week, month, year; every
// backup is its own bucket for Last) differs from the bucket of the last
// backup that rule kept, and spend one from the budget. Buckets without
// backups cost nothing. When a rule still has budget at the oldest backup,
// that backup is kept too ("oldest ..."), even if its bucket already has one:
// it maximises the history kept while the budget allows.
func Apply(backups []Backup, p Policy, now time.Time) []Decision {
	list := make([]Decision, len(backups))
	for i, b := range backups {
		list[i] = Decision{ID: b.ID, Time: b.Time.UTC()}
	}
	slices.SortStableFunc(list, func(a, b Decision) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if len(list) == 0 {
		return list
	}
	if p.Empty() {
		for i := range list {
			list[i].Keep = true
			list[i].Reasons = []string{"empty policy keeps everything"}
		}
		return list
	}

	rules := []*rule{
		{name: "last", count: p.Last, bucket: func(_ time.Time, nr int) string { return fmt.Sprint(nr) }},
		{name: "hourly", count: p.Hourly, bucket: func(t time.Time, _ int) string { return t.Format("2006-01-02T15") }},
		{name: "daily", count: p.Daily, bucket: func(t time.Time, _ int) string { return t.Format("2006-01-02") }},
		{name: "weekly", count: p.Weekly, bucket: func(t time.Time, _ int) string {
			y, w := t.ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}},
		{name: "monthly", count: p.Monthly, bucket: func(t time.Time, _ int) string { return t.Format("2006-01") }},
		{name: "yearly", count: p.Yearly, bucket: func(t time.Time, _ int) string { return t.Format("2006") }},
	}
	for _, r := range rules {
		r.limit = r.count
		r.last = "\x00none" // no bucket is named like this
	}

	var cutoff time.Time
	if p.Within > 0 {
		cutoff = latestBefore(list, now).Add(-p.Within)
	}

	for nr := range list {
		d := &list[nr]
		oldest := nr == len(list)-1
		if p.Within > 0 && d.Time.After(cutoff) {
			d.Keep = true
			d.Reasons = append(d.Reasons, "within "+FormatDuration(p.Within))
		}
		for _, r := range rules {
			if r.count <= 0 && r.count != Unlimited {
				continue
			}
			b := r.bucket(d.Time, nr)
			if b == r.last && !oldest {
				continue
			}
			d.Keep = true
			r.kept++
			d.Reasons = append(d.Reasons, r.reason(b, b == r.last))
			r.last = b
			if r.count > 0 {
				r.count--
			}
		}
	}
	return list
}

// rule is one counting rule of a policy while Apply walks the backups.
type rule struct {
	name   string
	count  int // budget left; Unlimited never runs out
	limit  int // the configured count
	bucket func(t time.Time, nr int) string
	last   string // bucket of the last backup this rule kept
	kept   int    // backups kept so far
}

// reason is the text of r keeping a backup in bucket b; oldest marks
// restic's extra keep of the oldest backup in an already used bucket.
func (r *rule) reason(b string, oldest bool) string {
	var s string
	if r.name == "last" {
		limit := fmt.Sprint(r.limit)
		if r.limit == Unlimited {
			limit = "all"
		}
		s = fmt.Sprintf("last %d/%s", r.kept, limit)
	} else {
		s = r.name + " " + b
	}
	if oldest {
		s = "oldest " + s
	}
	return s
}

// latestBefore returns the time of the newest backup taken strictly before
// now, or the zero time when there is none (then Within keeps everything,
// as in restic).
func latestBefore(list []Decision, now time.Time) time.Time {
	var latest time.Time
	for _, d := range list {
		if d.Time.After(latest) && d.Time.Before(now) {
			latest = d.Time
		}
	}
	return latest
}

// FormatDuration renders d compactly, with whole days as "d": "1d12h",
// "7d", "1h30m", "45s". Fractions of a second are kept as Go prints them.
func FormatDuration(d time.Duration) string {
	if d <= 0 || d%time.Second != 0 {
		return d.String()
	}
	var b strings.Builder
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.d
		}
	}
	return b.String()
}

// ParseDuration parses a --keep-within or --orphan-age value: Go's duration
// syntax ("36h", "90m", "1h30m") plus whole days "d" and weeks "w" as
// leading terms ("7d", "2w", "1d12h"). Months and years are not accepted
// ("m" is minutes, as in Go): use days.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var total time.Duration
	for _, u := range []struct {
		suffix byte
		d      time.Duration
	}{{'w', 7 * 24 * time.Hour}, {'d', 24 * time.Hour}} {
		i := strings.IndexByte(s, u.suffix)
		if i < 0 {
			continue
		}
		var n int64
		if _, err := fmt.Sscanf(s[:i], "%d", &n); err != nil || fmt.Sprint(n) != s[:i] || n < 0 {
			return 0, fmt.Errorf("bad duration %q: want e.g. 36h, 7d, 2w, 1d12h", orig)
		}
		total += time.Duration(n) * u.d
		s = s[i+1:]
	}
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("bad duration %q: want e.g. 36h, 7d, 2w, 1d12h", orig)
		}
		total += d
	}
	return total, nil
}
