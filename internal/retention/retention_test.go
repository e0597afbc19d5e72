package retention

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// at parses "2006-01-02 15:04[:05]" in UTC, or in zone when given.
func at(t *testing.T, s string, zone ...*time.Location) time.Time {
	t.Helper()
	loc := time.UTC
	if len(zone) > 0 {
		loc = zone[0]
	}
	for _, layout := range []string{"2006-01-02 15:04:05.000", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
		if tm, err := time.ParseInLocation(layout, s, loc); err == nil {
			return tm
		}
	}
	t.Fatalf("bad time %q", s)
	return time.Time{}
}

// backups names times b01, b02, ... in the order given (oldest first by
// convention, so names read chronologically).
func backups(times ...time.Time) []Backup {
	out := make([]Backup, len(times))
	for i, tm := range times {
		out[i] = Backup{ID: fmt.Sprintf("b%02d", i+1), Time: tm}
	}
	return out
}

func every(t *testing.T, from string, step time.Duration, n int) []time.Time {
	start := at(t, from)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = start.Add(time.Duration(i) * step)
	}
	return out
}

type goldenCase struct {
	name    string
	comment string
	in      []Backup
	policy  Policy
	now     time.Time
}

func goldenCases(t *testing.T) []goldenCase {
	plus0530 := time.FixedZone("+05:30", 5*3600+1800)
	minus0800 := time.FixedZone("-08:00", -8*3600)
	hours := []time.Time{
		at(t, "2026-11-22 10:05"), at(t, "2026-11-22 10:20"), at(t, "2026-11-22 10:55"),
		at(t, "2026-11-22 11:10"), at(t, "2026-11-22 11:40"),
		// no backup at 12:xx
		at(t, "2026-11-22 13:00"), at(t, "2026-11-22 14:30"),
	}
	now := at(t, "2026-12-01 00:00")
	return []goldenCase{
		{
			name:    "last",
			comment: "keep-last 3: the three newest, whatever their times",
			in:      backups(every(t, "2026-11-22 00:00", 7*time.Hour, 6)...),
			policy:  Policy{Last: 3}, now: now,
		},
		{
			name:    "last_unlimited",
			comment: "keep-last unlimited keeps every backup",
			in:      backups(every(t, "2026-11-22 00:00", 7*time.Hour, 4)...),
			policy:  Policy{Last: Unlimited}, now: now,
		},
		{
			name:    "hourly_same_hour",
			comment: "several backups in one hour: the newest of the hour counts; 12:xx has no backup and costs nothing; budget spent before the oldest",
			in:      backups(hours...),
			policy:  Policy{Hourly: 3}, now: now,
		},
		{
			name:    "hourly_oldest",
			comment: "budget left at the oldest backup: it is kept too although 10:xx already has its newest kept (restic's 'oldest' rule)",
			in:      backups(hours...),
			policy:  Policy{Hourly: 10}, now: now,
		},
		{
			name:    "daily_gaps",
			comment: "days without backups are skipped, not counted: keep-daily 3 reaches back 8 days",
			in: backups(at(t, "2026-11-01 09:00"), at(t, "2026-11-02 03:00"), at(t, "2026-11-02 21:00"),
				at(t, "2026-11-05 12:00"), at(t, "2026-11-09 06:00")),
			policy: Policy{Daily: 3}, now: now,
		},
		{
			name:    "daily_oldest",
			comment: "keep-daily 5 but only two days: the newest of each day, plus the oldest backup",
			in: backups(at(t, "2026-11-21 01:00"), at(t, "2026-11-21 09:00"), at(t, "2026-11-21 17:00"),
				at(t, "2026-11-22 01:00"), at(t, "2026-11-22 09:00")),
			policy: Policy{Daily: 5}, now: now,
		},
		{
			name:    "weekly_iso_year",
			comment: "ISO weeks run Monday to Sunday and cross years: 2026-12-28 to 2027-01-03 is 2026-W53",
			in: backups(at(t, "2026-12-27 12:00"), at(t, "2026-12-28 12:00"), at(t, "2026-12-31 12:00"),
				at(t, "2027-01-01 12:00"), at(t, "2027-01-03 23:59"), at(t, "2027-01-04 00:00")),
			policy: Policy{Weekly: 2}, now: at(t, "2027-02-01 00:00"),
		},
		{
			name:    "monthly_yearly",
			comment: "rules overlap: one backup can be kept by several",
			in: backups(at(t, "2024-03-10 00:00"), at(t, "2024-12-31 23:00"), at(t, "2025-06-01 00:00"),
				at(t, "2025-12-01 00:00"), at(t, "2026-01-15 00:00"), at(t, "2026-01-31 00:00"),
				at(t, "2026-02-01 00:00")),
			policy: Policy{Monthly: 3, Yearly: 2}, now: at(t, "2026-03-01 00:00"),
		},
		{
			name:    "within_newest",
			comment: "keep-within counts back from the newest backup, not from now (a month later here); the one exactly 3d before the newest is out",
			in: backups(at(t, "2026-11-10 12:00"), at(t, "2026-11-12 12:00"), at(t, "2026-11-12 12:00:00.001"),
				at(t, "2026-11-14 00:00"), at(t, "2026-11-15 12:00")),
			policy: Policy{Within: 72 * time.Hour}, now: at(t, "2026-12-15 00:00"),
		},
		{
			name:    "within_future",
			comment: "a backup dated after now (clock skew) is not the reference for keep-within; it is kept since it is inside the window",
			in:      backups(at(t, "2026-11-20 00:00"), at(t, "2026-11-21 00:00"), at(t, "2026-11-22 00:00"), at(t, "2027-06-01 00:00")),
			policy:  Policy{Within: 36 * time.Hour}, now: at(t, "2026-11-22 06:00"),
		},
		{
			name:    "timezone_utc_buckets",
			comment: "buckets are UTC days: b03 is 2026-11-22 local (-08:00) but 2026-11-23 UTC; b02 is 2026-11-23 local (+05:30) but 2026-11-22 UTC",
			in: backups(at(t, "2026-11-22 10:00"), at(t, "2026-11-23 02:00", plus0530),
				at(t, "2026-11-22 22:00", minus0800)),
			policy: Policy{Daily: 2}, now: now,
		},
		{
			name:    "same_time",
			comment: "identical times: the larger ID counts as newer",
			in:      []Backup{{ID: "x-a", Time: at(t, "2026-11-22 10:00")}, {ID: "x-b", Time: at(t, "2026-11-22 10:00")}, {ID: "x-0", Time: at(t, "2026-11-21 10:00")}},
			policy:  Policy{Last: 1}, now: now,
		},
		{
			name:    "empty_policy",
			comment: "no rule: everything is kept (prune refuses such a policy)",
			in:      backups(every(t, "2026-11-22 00:00", 24*time.Hour, 3)...),
			policy:  Policy{}, now: now,
		},
		{
			name:    "daily_unlimited",
			comment: "keep-daily unlimited: the newest backup of every day, and the oldest backup",
			in:      backups(every(t, "2026-11-20 02:00", 10*time.Hour, 8)...),
			policy:  Policy{Daily: Unlimited}, now: now,
		},
		{
			name:    "combined",
			comment: "a backup every 8 hours for 40 days; typical policy",
			in:      backups(every(t, "2026-10-01 01:00", 8*time.Hour, 120)...),
			policy:  Policy{Last: 2, Hourly: 4, Daily: 7, Weekly: 4, Monthly: 2, Within: 24 * time.Hour},
			now:     at(t, "2026-11-10 00:00"),
		},
	}
}

func render(c goldenCase, ds []Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\npolicy: %s\nnow:    %s\n\n", c.comment, c.policy, c.now.UTC().Format(time.RFC3339))
	for _, d := range ds {
		action := "remove"
		if d.Keep {
			action = "keep"
		}
		line := fmt.Sprintf("%-5s %s %s  %-6s %s", d.ID, d.Time.Format("2006-01-02T15:04:05.000Z"), d.Time.Format("Mon"),
			action, strings.Join(d.Reasons, ", "))
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			got := render(c, Apply(c.in, c.policy, c.now))

			// The order of the input does not matter.
			rev := slices.Clone(c.in)
			slices.Reverse(rev)
			if again := render(c, Apply(rev, c.policy, c.now)); again != got {
				t.Errorf("reversed input gives a different result:\n%s\nvs\n%s", again, got)
			}

			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/retention -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (run with -update after checking the change):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// The tests below check the key semantics directly, so that a careless
// -update cannot bless a broken implementation.

func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.ID)
		}
	}
	return out
}

func TestSemantics(t *testing.T) {
	h := []time.Time{
		at(t, "2026-11-22 10:05"), at(t, "2026-11-22 10:20"), at(t, "2026-11-22 10:55"),
		at(t, "2026-11-22 11:10"), at(t, "2026-11-22 11:40"), at(t, "2026-11-22 13:00"), at(t, "2026-11-22 14:30"),
	}
	now := at(t, "2026-12-01 00:00")
	in := backups(h...)
	for _, tc := range []struct {
		name string
		p    Policy
		now  time.Time
		in   []Backup
		want []string
	}{
		{"last", Policy{Last: 2}, now, in, []string{"b07", "b06"}},
		{"hourly newest of hour, gaps free", Policy{Hourly: 3}, now, in, []string{"b07", "b06", "b05"}},
		{"oldest kept while budget left", Policy{Hourly: 5}, now, in, []string{"b07", "b06", "b05", "b03", "b01"}},
		{"within from newest", Policy{Within: 2 * time.Hour}, at(t, "2030-01-01 00:00"), in, []string{"b07", "b06"}},
		{"within strict boundary", Policy{Within: 90 * time.Minute}, now, in, []string{"b07"}},
		{"within ignores future reference", Policy{Within: time.Hour}, at(t, "2026-11-22 14:00"), in, []string{"b07", "b06"}},
		{"utc days", Policy{Daily: 1}, now, backups(at(t, "2026-11-22 23:00"), at(t, "2026-11-23 02:00", time.FixedZone("+05", 5*3600))), []string{"b01"}},
		{"unlimited last", Policy{Last: Unlimited}, now, in, []string{"b07", "b06", "b05", "b04", "b03", "b02", "b01"}},
		{"empty keeps all", Policy{}, now, in, []string{"b07", "b06", "b05", "b04", "b03", "b02", "b01"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := Apply(tc.in, tc.p, tc.now)
			if got := kept(ds); !slices.Equal(got, tc.want) {
				t.Errorf("kept %v, want %v", got, tc.want)
			}
			for _, d := range ds {
				if d.Keep != (len(d.Reasons) > 0) {
					t.Errorf("%s: keep=%v with reasons %q", d.ID, d.Keep, d.Reasons)
				}
			}
		})
	}
}

func TestApplyDoesNotModifyInput(t *testing.T) {
	in := backups(at(t, "2026-11-22 10:00"), at(t, "2026-11-23 10:00", time.FixedZone("x", 3600)))
	orig := slices.Clone(in)
	Apply(in, Policy{Last: 1}, time.Now())
	if !slices.Equal(in, orig) {
		t.Errorf("Apply modified its input: %v, was %v", in, orig)
	}
	if ds := Apply(nil, Policy{Last: 1}, time.Now()); len(ds) != 0 {
		t.Errorf("Apply(nil) = %v", ds)
	}
}

func TestReasons(t *testing.T) {
	ds := Apply(backups(at(t, "2026-11-21 10:00"), at(t, "2026-11-22 10:00")),
		Policy{Last: 3, Daily: 1, Within: 48 * time.Hour}, at(t, "2026-12-01 00:00"))
	want := "within 2d, last 1/3, daily 2026-11-22"
	if got := strings.Join(ds[0].Reasons, ", "); got != want {
		t.Errorf("reasons %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Policy{{Last: -2}, {Daily: -7}, {Within: -time.Hour}} {
		if p.Validate() == nil {
			t.Errorf("%+v: Validate() = nil", p)
		}
	}
	for _, p := range []Policy{{}, {Last: Unlimited}, {Yearly: 3, Within: time.Hour}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	if !(Policy{}).Empty() || (Policy{Within: 1}).Empty() {
		t.Error("Empty is wrong")
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"36h": 36 * time.Hour, "7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "1w1d": 8 * 24 * time.Hour, "90m": 90 * time.Minute, "0": 0, "1h30m": 90 * time.Minute,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "-1d", "3d2w", "1m2d", "1y", "-1h", "7 days"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
	for d, want := range map[time.Duration]string{
		36 * time.Hour: "1d12h", 7 * 24 * time.Hour: "7d", 90 * time.Minute: "1h30m", 30 * time.Second: "30s",
		time.Hour: "1h", 1500 * time.Millisecond: "1.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
