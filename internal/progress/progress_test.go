package progress

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

const MiB = 1 << 20

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     Stats
		width int
		want  string
	}{
		{"unknown total, no rate yet", Stats{Label: "snapshot", Done: 512 * MiB}, 80,
			"snapshot  512 MiB"},
		{"unknown total", Stats{Label: "snapshot", Done: 512 * MiB, Rate: 85 * MiB}, 80,
			"snapshot  512 MiB  85 MiB/s"},
		{"estimated total", Stats{Label: "snapshot", Done: 50 * MiB, Total: 100 * MiB, Estimate: true, Rate: 10 * MiB}, 80,
			"snapshot [#####.....]   50%  50 MiB / ~100 MiB  10 MiB/s  ETA 5s"},
		{"wide terminal", Stats{Label: "snapshot", Done: 50 * MiB, Total: 100 * MiB, Estimate: true, Rate: 10 * MiB}, 120,
			"snapshot [####################....................]   50%  50 MiB / ~100 MiB  10 MiB/s  ETA 5s"},
		{"known total, too narrow for a bar", Stats{Label: "restore", Done: 25 * MiB, Total: 100 * MiB, Rate: 1 * MiB}, 70,
			"restore   25%  25 MiB / 100 MiB  1.0 MiB/s  ETA 1m15s"},
		{"no room for a bar", Stats{Label: "verify", Done: 1, Total: 2 * MiB, Rate: 1}, 50,
			"verify    0%  1 B / 2.0 MiB  1 B/s  ETA 582h32m"},
		{"estimate exceeded: no percent, no ETA", Stats{Label: "snapshot", Done: 120 * MiB, Total: 100 * MiB, Estimate: true, Rate: 10 * MiB}, 80,
			"snapshot  120 MiB / ~100 MiB  10 MiB/s"},
		{"done", Stats{Label: "copy", Done: 100 * MiB, Total: 100 * MiB, Rate: 10 * MiB}, 80,
			"copy [####################]  100%  100 MiB / 100 MiB  10 MiB/s  ETA 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Line(tc.s, tc.width)
			if got != tc.want {
				t.Errorf("Line:\n got %q\nwant %q", got, tc.want)
			}
			if len(got) > tc.width-1 {
				t.Errorf("line of %d columns for width %d", len(got), tc.width)
			}
		})
	}
}

// TestBarKeepsItsWidth: the bar does not jump when the rate and ETA appear
// or the numbers grow.
func TestBarKeepsItsWidth(t *testing.T) {
	bar := func(l string) int { return strings.Index(l, "]") - strings.Index(l, "[") }
	first := Line(Stats{Label: "snapshot", Done: 0, Total: 900 * MiB}, 100)
	for _, s := range []Stats{
		{Label: "snapshot", Done: 1, Total: 900 * MiB, Rate: 1},
		{Label: "snapshot", Done: 512 * MiB, Total: 900 * MiB, Estimate: true, Rate: 900 * MiB},
		{Label: "snapshot", Done: 899 * MiB, Total: 900 * MiB, Rate: 1},
	} {
		if l := Line(s, 100); bar(l) != bar(first) || len(l) > 99 {
			t.Errorf("bar width changed:\n%s\n%s", first, l)
		}
	}
}

func TestPlainAndDuration(t *testing.T) {
	s := Stats{Label: "snapshot", Done: 512 * MiB, Total: 1024 * MiB, Estimate: true, Rate: 64 * MiB}
	if got, want := Plain(s), "snapshot: 512 MiB of ~1.0 GiB (50%), 64 MiB/s, ETA 8s"; got != want {
		t.Errorf("Plain = %q, want %q", got, want)
	}
	if got, want := Plain(Stats{Label: "restore", Done: 3}), "restore: 3 B"; got != want {
		t.Errorf("Plain = %q, want %q", got, want)
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 9400 * time.Millisecond: "9s", 65 * time.Second: "1m05s", 2*time.Hour + 3*time.Minute: "2h03m",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

// TestNotATerminal: log lines only, every Interval, never a carriage return
// or an escape sequence, whatever the log format.
func TestNotATerminal(t *testing.T) {
	for _, format := range []string{"plain", "text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			clock := &fakeClock{t: time.Unix(0, 0), step: 100 * time.Millisecond}
			opt := Options{Label: "restore", Total: 1000 * MiB, Now: clock.now}
			switch format {
			case "text":
				opt.Log = slog.New(slog.NewTextHandler(&out, nil))
			case "json":
				opt.Log = slog.New(slog.NewJSONHandler(&out, nil))
			}
			m := New(&out, opt)
			for i := int64(1); i <= 1000; i++ { // 100 s at 10 MiB/s
				m.Update(i * MiB)
			}
			m.Close()
			s := out.String()
			if strings.ContainsAny(s, "\r\x1b") {
				t.Fatalf("carriage return or escape in non-terminal output:\n%q", s)
			}
			lines := strings.Split(strings.TrimSpace(s), "\n")
			if len(lines) < 9 || len(lines) > 10 {
				t.Fatalf("%d lines in 100 s, want one per 10 s:\n%s", len(lines), s)
			}
			if !strings.Contains(lines[0], "restore") || !strings.Contains(s, "10 MiB/s") {
				t.Errorf("lines lack the label or the rate:\n%s", s)
			}
			if format == "json" && !strings.Contains(lines[0], `"msg":"progress"`) {
				t.Errorf("not a JSON log line: %s", lines[0])
			}
		})
	}
}

// TestTerminal: the status line is redrawn in place, log lines written
// through the meter erase it first, and Close leaves a clean line.
func TestTerminal(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0), step: 50 * time.Millisecond}
	m := New(&out, Options{Label: "snapshot", Total: 100 * MiB, Estimate: true, TTY: true, Width: 100, Now: clock.now})
	log := slog.New(slog.NewTextHandler(m, nil))
	for i := int64(1); i <= 100; i++ {
		m.Update(i * MiB)
		if i == 50 {
			log.Info("halfway")
		}
	}
	m.Close()
	s := out.String()
	if n := strings.Count(s, "\r"); n < 20 || n > 40 {
		t.Errorf("%d redraws for 100 updates 50 ms apart, want about one per 200 ms", n)
	}
	if !strings.Contains(s, "\r\x1b[Ktime=") || !strings.Contains(s, "msg=halfway") {
		t.Errorf("log line not written on an erased status line:\n%q", s)
	}
	if !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("Close did not erase the status line: %q", s[len(s)-40:])
	}
	if !strings.Contains(s, "~100 MiB") || !strings.Contains(s, "ETA") {
		t.Errorf("no estimate or ETA in %q", s)
	}
	for _, l := range strings.Split(s, "\r") {
		if len(strings.TrimSuffix(strings.TrimPrefix(l, "\x1b[K"), "\x1b[K")) > 99 && !strings.Contains(l, "\n") {
			t.Errorf("status line wider than the terminal: %q", l)
		}
	}
}

func TestNilMeter(t *testing.T) {
	var m *Meter
	if m.Func() != nil {
		t.Fatal("nil meter gave a callback")
	}
	m.Update(1)
	m.SetTotal(1, false)
	m.Close()
	if n, err := m.Write([]byte("x")); n != 1 || err != nil {
		t.Fatal(n, err)
	}
}
