package progress

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// Defaults.
const (
	DefaultInterval = 10 * time.Second       // between log lines when not a terminal
	DefaultRedraw   = 200 * time.Millisecond // between redraws of the status line
	DefaultWidth    = 80
	rateWindow      = 5 * time.Second
)

// Options for a Meter.
type Options struct {
	Label    string // what is moving: "snapshot", "restore", ...
	Total    int64  // bytes expected; 0 when unknown
	Estimate bool   // Total is an estimate (shown as ~)
	// TTY: redraw one status line in place (\r) on the writer. Otherwise the
	// Meter logs a line every Interval to Log (or writes plain lines to the
	// writer when Log is nil), never carriage returns.
	TTY      bool
	Width    int // terminal columns (TTY); 0 means DefaultWidth
	Interval time.Duration
	Log      *slog.Logger
	Now      func() time.Time // tests
}

// Meter follows one stream. A nil *Meter does nothing, so callers can keep
// one unconditionally and pass nil when progress is off (--quiet).
type Meter struct {
	mu       sync.Mutex
	out      io.Writer
	opt      Options
	now      func() time.Time
	start    time.Time
	done     int64
	samples  []sample // recent (time, bytes) pairs for the rate
	lastDraw time.Time
	lastLog  time.Time
	shown    bool // a status line is on screen (TTY)
	closed   bool
}

type sample struct {
	t time.Time
	n int64
}

// New starts a meter writing to out.
func New(out io.Writer, opt Options) *Meter {
	if opt.Width <= 0 {
		opt.Width = DefaultWidth
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	t := now()
	return &Meter{out: out, opt: opt, now: now, start: t, lastLog: t, samples: []sample{{t, 0}}}
}

// Func returns m.Update as a callback, or nil for a nil meter (callers of
// backup, restore and verify skip a nil callback).
func (m *Meter) Func() func(int64) {
	if m == nil {
		return nil
	}
	return m.Update
}

// SetTotal changes the expected total (e.g. when a better estimate arrives).
func (m *Meter) SetTotal(total int64, estimate bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.opt.Total, m.opt.Estimate = total, estimate
	m.mu.Unlock()
}

// Update records that n bytes (cumulative) have passed. Safe for concurrent
// use; cheap enough to call for every buffer.
func (m *Meter) Update(n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	t := m.now()
	m.done = n
	if last := m.samples[len(m.samples)-1]; t.Sub(last.t) >= 250*time.Millisecond {
		m.samples = append(m.samples, sample{t, n})
		// keep one sample older than the window, so the rate spans it
		for len(m.samples) > 2 && t.Sub(m.samples[1].t) >= rateWindow {
			m.samples = m.samples[1:]
		}
	}
	if m.opt.TTY {
		if !m.shown || t.Sub(m.lastDraw) >= DefaultRedraw {
			m.draw(t)
		}
		return
	}
	if t.Sub(m.lastLog) >= m.opt.Interval {
		m.lastLog = t
		m.logLine(t)
	}
}

// Write passes log output through to the terminal: it erases the status
// line first and redraws it after, so log lines and the status line do not
// mix. Use the Meter as the log writer while it is shown.
func (m *Meter) Write(p []byte) (int, error) {
	if m == nil {
		return len(p), nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.opt.TTY {
		return m.out.Write(p)
	}
	if m.shown {
		io.WriteString(m.out, "\r\x1b[K")
		m.shown = false
	}
	n, err := m.out.Write(p)
	if !m.closed && len(p) > 0 && p[len(p)-1] == '\n' {
		m.draw(m.now())
	}
	return n, err
}

// Close erases the status line. Further updates are ignored.
func (m *Meter) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shown {
		io.WriteString(m.out, "\r\x1b[K")
		m.shown = false
	}
	m.closed = true
}

func (m *Meter) stats(t time.Time) Stats {
	s := Stats{Label: m.opt.Label, Done: m.done, Total: m.opt.Total, Estimate: m.opt.Estimate, Elapsed: t.Sub(m.start)}
	first := m.samples[0]
	if d := t.Sub(first.t); d >= time.Second && m.done >= first.n {
		s.Rate = float64(m.done-first.n) / d.Seconds()
	} else if s.Elapsed >= time.Second {
		s.Rate = float64(m.done) / s.Elapsed.Seconds()
	}
	return s
}

func (m *Meter) draw(t time.Time) {
	m.lastDraw = t
	io.WriteString(m.out, "\r"+Line(m.stats(t), m.opt.Width)+"\x1b[K")
	m.shown = true
}

func (m *Meter) logLine(t time.Time) {
	s := m.stats(t)
	if m.opt.Log == nil {
		fmt.Fprintln(m.out, Plain(s))
		return
	}
	attrs := []any{"op", s.Label, "bytes", s.Done}
	if s.Total > 0 {
		attrs = append(attrs, "total", s.Total)
		if p, ok := s.Percent(); ok {
			attrs = append(attrs, "percent", p)
		}
	}
	if s.Rate > 0 {
		attrs = append(attrs, "rate", Bytes(int64(s.Rate))+"/s")
	}
	if eta, ok := s.ETA(); ok {
		attrs = append(attrs, "eta", Duration(eta))
	}
	m.opt.Log.Info("progress", attrs...)
}

// Stats is one observation of a stream.
type Stats struct {
	Label    string
	Done     int64
	Total    int64 // 0: unknown
	Estimate bool
	Rate     float64 // bytes per second; 0: not known yet
	Elapsed  time.Duration
}

// Percent is Done of Total, when Total is known and not exceeded.
func (s Stats) Percent() (int, bool) {
	if s.Total <= 0 || s.Done > s.Total {
		return 0, false
	}
	return int(s.Done * 100 / s.Total), true
}

// ETA is the time left at the current rate, when it can be told.
func (s Stats) ETA() (time.Duration, bool) {
	if s.Total <= 0 || s.Done > s.Total || s.Rate <= 0 {
		return 0, false
	}
	return time.Duration(float64(s.Total-s.Done) / s.Rate * float64(time.Second)), true
}

// Bytes formats a byte count: 1023 B, 1.5 KiB, 12 MiB.
func Bytes(n int64) string {
	if n < 0 {
		n = 0
	}
	return humanize.IBytes(uint64(n))
}

// Duration formats a remaining time coarsely: 9s, 1m05s, 2h03m.
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func (s Stats) amount() string {
	if s.Total <= 0 {
		return Bytes(s.Done)
	}
	tilde := ""
	if s.Estimate {
		tilde = "~"
	}
	return Bytes(s.Done) + " / " + tilde + Bytes(s.Total)
}

func (s Stats) tail() string {
	var parts []string
	if s.Rate > 0 {
		parts = append(parts, Bytes(int64(s.Rate))+"/s")
	}
	if eta, ok := s.ETA(); ok {
		parts = append(parts, "ETA "+Duration(eta))
	}
	return strings.Join(parts, "  ")
}

// Line renders the terminal status line, at most width-1 columns (so the
// cursor never wraps, which would break the redraw):
//
//	snapshot [#########...........]  45%  512 MiB / ~1.1 GiB  85 MiB/s  ETA 7s
//	snapshot  512 MiB  85 MiB/s
func Line(s Stats, width int) string {
	if width <= 0 {
		width = DefaultWidth
	}
	text := s.amount()
	if t := s.tail(); t != "" {
		text += "  " + t
	}
	line := s.Label + "  " + text
	if p, ok := s.Percent(); ok {
		pct := fmt.Sprintf("%3d%%", p)
		line = s.Label + "  " + pct + "  " + text
		if bar := barWidth(s.Label, width); bar > 0 {
			fill := int(int64(bar) * s.Done / s.Total)
			line = s.Label + " [" + strings.Repeat("#", fill) + strings.Repeat(".", bar-fill) + "]  " + pct + "  " + text
		}
	}
	if len(line) > width-1 {
		line = line[:width-1]
	}
	return line
}

// widest is the longest text after the bar: percent, amount, rate, ETA.
const widest = len("100%  1023 MiB / ~1023 MiB  1023 MiB/s  ETA 99h59m")

// barWidth is the widest of 40, 30, 20 or 10 columns that leaves room for the
// longest text, so the bar keeps its width while the numbers change; 0 when
// none fits.
func barWidth(label string, width int) int {
	for _, bar := range []int{40, 30, 20, 10} {
		if len(label)+2+bar+3+widest <= width-1 {
			return bar
		}
	}
	return 0
}

// Plain renders one log line for non-terminals:
//
//	snapshot: 512 MiB of ~1.1 GiB (45%), 85 MiB/s, ETA 7s
func Plain(s Stats) string {
	var b strings.Builder
	b.WriteString(s.Label + ": " + Bytes(s.Done))
	if s.Total > 0 {
		tilde := ""
		if s.Estimate {
			tilde = "~"
		}
		b.WriteString(" of " + tilde + Bytes(s.Total))
		if p, ok := s.Percent(); ok {
			fmt.Fprintf(&b, " (%d%%)", p)
		}
	}
	if s.Rate > 0 {
		b.WriteString(", " + Bytes(int64(s.Rate)) + "/s")
	}
	if eta, ok := s.ETA(); ok {
		b.WriteString(", ETA " + Duration(eta))
	}
	return b.String()
}
