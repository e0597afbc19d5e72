package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule says when scheduled runs fire.
type Schedule interface {
	// Next returns the first fire time strictly after t (zero if none).
	Next(t time.Time) time.Time
	// String describes the schedule for logs and /status.
	String() string
}

// Slot is the span of time one scheduled run is responsible for: from its
// fire time to the next one. At most one scheduled backup per slot is the
// goal of --leader-only.
type Slot struct {
	Start, End time.Time
}

// Contains reports whether t falls in [Start, End).
func (s Slot) Contains(t time.Time) bool { return !t.Before(s.Start) && t.Before(s.End) }

// Len is the slot's length.
func (s Slot) Len() time.Duration { return s.End.Sub(s.Start) }

// SlotAt returns the slot that starts at fire.
func SlotAt(s Schedule, fire time.Time) Slot { return Slot{Start: fire, End: s.Next(fire)} }

// Every fires at the wall-clock multiples of d (t.Truncate(d)), so agents on
// different machines with synchronised clocks agree on the slots whatever
// time they started.
type Every time.Duration

// Next implements Schedule.
func (e Every) Next(t time.Time) time.Time {
	d := time.Duration(e)
	return t.Truncate(d).Add(d)
}

func (e Every) String() string { return "every " + time.Duration(e).String() }

// cronSchedule is a cron expression.
type cronSchedule struct {
	spec string
	s    cron.Schedule
}

func (c cronSchedule) Next(t time.Time) time.Time { return c.s.Next(t) }
func (c cronSchedule) String() string             { return "cron " + c.spec }

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a cron expression: five fields (minute hour day-of-month
// month day-of-week), or six with a leading seconds field, or a descriptor
// (@hourly, @daily, @every 1h30m). It is evaluated in the local time zone
// unless it starts with CRON_TZ=Zone (e.g. "CRON_TZ=UTC 0 3 * * *").
func ParseCron(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("bad cron schedule %q: %w", spec, err)
	}
	c := cronSchedule{spec: spec, s: s}
	if c.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("cron schedule %q never fires", spec)
	}
	return c, nil
}

// Period estimates the length of a slot: the gap between the next two fire
// times after now.
func Period(s Schedule, now time.Time) time.Duration {
	a := s.Next(now)
	b := s.Next(a)
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}

// Clock is the time source of the scheduler; tests replace it.
type Clock interface {
	Now() time.Time
	// SleepUntil returns when the clock reaches t (nil) or ctx is done
	// (ctx.Err()).
	SleepUntil(ctx context.Context, t time.Time) error
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// SleepUntil wakes at least every minute to look at the wall clock again,
// so that a step of the system clock (NTP) delays a run by a minute at most.
func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	for {
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		timer := time.NewTimer(min(d, time.Minute))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// errNoTime: a retry would start after the end of the slot.
var errNoTime = errors.New("no time left in the slot for another attempt")
