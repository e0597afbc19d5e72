package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// attemptResult is the outcome of one attempt at a backup.
type attemptResult struct {
	Manifest *format.Manifest // set on success
	Skip     string           // set when the run was skipped: reasonNotLeader, reasonSlotTaken
	Err      error            // set on failure
	Retry    bool             // Err is worth another attempt within the slot
	hookErr  error            // of AfterBackup, after a success
}

// Skip reasons (label values of etcd_backup_skipped_total).
const (
	reasonNotLeader = "not_leader"
	reasonSlotTaken = "slot_taken"
	reasonOverrun   = "overrun"
)

// runResult is one finished scheduled run: the last attempt's outcome.
type runResult struct {
	Slot              Slot
	Started, Finished time.Time
	Attempts          int
	attemptResult
}

// maxBackoff caps the wait between two attempts.
const maxBackoff = 5 * time.Minute

// scheduler fires runs on a Schedule, one at a time, and retries failed
// ones with exponential backoff within their slot. It knows nothing about
// etcd or repositories: attempt does the work.
type scheduler struct {
	sched    Schedule
	clock    Clock
	jitter   time.Duration
	randN    func(n int64) int64 // uniform in [0, n)
	retryMax int                 // retries after the first attempt
	backoff  time.Duration       // wait before the first retry; doubles each time
	log      *slog.Logger

	// sem serialises backups: the scheduler and on-demand runs take it
	// around each attempt, so backups never overlap.
	sem chan struct{}

	// attempt runs attempt n (from 1) of the run for slot.
	attempt func(ctx context.Context, slot Slot, n int) attemptResult
	// planned is told when the next run will start.
	planned func(t time.Time)
	// finished is told about every run.
	finished func(r runResult)
	// overran is told how many slots passed without a run because the
	// previous run (or one waiting for it) took too long.
	overran func(slots int)
}

// jitterFor returns the random delay of a run in slot: uniform in
// [0, --jitter), never more than half the slot.
func (s *scheduler) jitterFor(slot Slot) time.Duration {
	j := min(s.jitter, slot.Len()/2)
	if j <= 0 || s.randN == nil {
		return 0
	}
	return time.Duration(s.randN(int64(j)))
}

// backoffFor is the wait after failed attempt n (from 1).
func (s *scheduler) backoffFor(n int) time.Duration {
	d := s.backoff
	if d <= 0 {
		d = time.Second
	}
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// nextFire returns the fire time of the run that follows the one of slot,
// when the clock reads now: slot.End normally; when the run overran into
// later slots, the start of the slot that holds now (that slot's run starts
// late, the ones before it are dropped) and how many slots were dropped.
func nextFire(sched Schedule, slot Slot, now time.Time) (time.Time, int) {
	next := slot.End
	dropped := 0
	for !next.IsZero() {
		after := sched.Next(next)
		if after.IsZero() || after.After(now) {
			break
		}
		next = after
		dropped++
		if dropped > 1_000_000 { // a seconds cron and a day-long run: give up counting
			return sched.Next(now), dropped
		}
	}
	return next, dropped
}

// run fires runs until ctx is done. Attempts run with runCtx, which the
// caller cancels later than ctx (the shutdown grace period); waits (for the
// slot, for a backoff, for an on-demand run) end with ctx.
func (s *scheduler) run(ctx, runCtx context.Context) {
	fire := s.sched.Next(s.clock.Now())
	for !fire.IsZero() {
		slot := SlotAt(s.sched, fire)
		at := fire.Add(s.jitterFor(slot))
		if now := s.clock.Now(); at.Before(now) {
			at = now
		}
		if s.planned != nil {
			s.planned(at)
		}
		if s.clock.SleepUntil(ctx, at) != nil {
			return
		}
		s.runSlot(ctx, runCtx, slot)
		if ctx.Err() != nil {
			return
		}
		var dropped int
		fire, dropped = nextFire(s.sched, slot, s.clock.Now())
		if dropped > 0 {
			s.log.Warn("a backup run overran its slot: the current slot's run starts late, earlier slots are dropped",
				"schedule", s.sched.String(), "dropped_slots", dropped)
			if s.overran != nil {
				s.overran(dropped)
			}
		}
	}
	s.log.Error("the schedule fires no more", "schedule", s.sched.String())
}

// runSlot runs the attempts of one slot.
func (s *scheduler) runSlot(ctx, runCtx context.Context, slot Slot) {
	res := runResult{Slot: slot, Started: s.clock.Now()}
	for n := 1; ; n++ {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return // shutting down before the attempt started: no result
		}
		res.attemptResult = s.attempt(runCtx, slot, n)
		<-s.sem
		res.Attempts = n
		if res.Err == nil || !res.Retry || ctx.Err() != nil {
			break
		}
		if n > s.retryMax {
			res.Err = fmt.Errorf("%w (gave up after %d attempts)", res.Err, n)
			break
		}
		wait := s.backoffFor(n)
		retryAt := s.clock.Now().Add(wait)
		if !retryAt.Before(slot.End) {
			res.Err = fmt.Errorf("%w (%v; %d attempts)", res.Err, errNoTime, n)
			break
		}
		s.log.Warn("backup attempt failed, retrying", "attempt", n, "retry_in", wait, "error", res.Err)
		if s.clock.SleepUntil(ctx, retryAt) != nil {
			break
		}
	}
	res.Finished = s.clock.Now()
	if s.finished != nil {
		s.finished(res)
	}
}
