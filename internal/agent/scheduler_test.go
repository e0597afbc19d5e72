package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// simClock is simulated time for the scheduler, which runs in one
// goroutine: SleepUntil jumps to the target at once, an attempt "takes"
// time by calling Advance. Deterministic, and no test sleeps.
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) SleepUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	return nil
}

func (c *simClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// attemptLog records the attempts a scheduler makes.
type attemptLog struct {
	starts []time.Time
	slots  []Slot
	ns     []int
}

// newSim returns a scheduler on simulated time starting at start, whose
// attempts are done by fn; it stops after maxAttempts attempts.
func newSim(t *testing.T, sched Schedule, start time.Time, maxAttempts int,
	fn func(c *simClock, slot Slot, n int) attemptResult) (*scheduler, *simClock, *attemptLog, *[]runResult, func()) {
	t.Helper()
	c := &simClock{now: start}
	log := &attemptLog{}
	var runs []runResult
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &scheduler{
		sched:    sched,
		clock:    c,
		retryMax: 3,
		backoff:  time.Second,
		log:      slog.New(slog.DiscardHandler),
		sem:      make(chan struct{}, 1),
		finished: func(r runResult) { runs = append(runs, r) },
	}
	s.attempt = func(_ context.Context, slot Slot, n int) attemptResult {
		log.starts = append(log.starts, c.Now())
		log.slots = append(log.slots, slot)
		log.ns = append(log.ns, n)
		res := fn(c, slot, n)
		if len(log.starts) >= maxAttempts {
			cancel()
		}
		return res
	}
	run := func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.run(ctx, context.Background())
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("scheduler did not stop")
		}
	}
	return s, c, log, &runs, run
}

func ok(c *simClock, d time.Duration) attemptResult {
	c.Advance(d)
	return attemptResult{}
}

func times(ts []time.Time) string {
	var b []string
	for _, t := range ts {
		b = append(b, t.Format("15:04:05.000"))
	}
	return strings.Join(b, " ")
}

func TestEveryAlignsToWallClock(t *testing.T) {
	// Agents started at different moments agree on the slots.
	for _, start := range []string{"2026-01-01T10:00:00Z", "2026-01-01T10:00:07.3Z", "2026-01-01T10:00:29.999Z"} {
		got := Every(30 * time.Second).Next(at(start))
		if want := at("2026-01-01T10:00:30Z"); !got.Equal(want) {
			t.Errorf("Next(%s) = %s, want %s", start, got, want)
		}
	}
	// Next is strictly after: at a boundary, the next boundary.
	if got := Every(30 * time.Second).Next(at("2026-01-01T10:00:30Z")); !got.Equal(at("2026-01-01T10:01:00Z")) {
		t.Errorf("Next at a boundary = %s", got)
	}
	// The same instant in another time zone gives the same slot.
	paris := time.FixedZone("CET", 3600+1800)
	a := Every(time.Hour).Next(at("2026-01-01T10:20:00Z"))
	b := Every(time.Hour).Next(at("2026-01-01T10:20:00Z").In(paris))
	if !a.Equal(b) {
		t.Errorf("slots differ by time zone: %s vs %s", a, b)
	}
	s := SlotAt(Every(30*time.Second), at("2026-01-01T10:00:30Z"))
	if !s.Contains(at("2026-01-01T10:00:30Z")) || !s.Contains(at("2026-01-01T10:00:59.999Z")) || s.Contains(at("2026-01-01T10:01:00Z")) {
		t.Errorf("slot %+v bounds", s)
	}
}

func TestParseCron(t *testing.T) {
	for _, c := range []struct{ spec, from, want string }{
		{"CRON_TZ=UTC */5 * * * *", "2026-01-01T10:03:10Z", "2026-01-01T10:05:00Z"},
		{"CRON_TZ=UTC */10 * * * * *", "2026-01-01T10:03:10Z", "2026-01-01T10:03:20Z"}, // with seconds
		{"CRON_TZ=UTC @hourly", "2026-01-01T10:03:10Z", "2026-01-01T11:00:00Z"},
		{"CRON_TZ=UTC 17 3 * * *", "2026-01-01T10:03:10Z", "2026-01-02T03:17:00Z"},
	} {
		s, err := ParseCron(c.spec)
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		if got := s.Next(at(c.from)); !got.Equal(at(c.want)) {
			t.Errorf("%s: Next(%s) = %s, want %s", c.spec, c.from, got, c.want)
		}
	}
	s, _ := ParseCron("CRON_TZ=UTC */5 * * * *")
	if p := Period(s, at("2026-01-01T10:03:10Z")); p != 5*time.Minute {
		t.Errorf("period %s", p)
	}
	for _, bad := range []string{"", "* * *", "61 * * * *", "0 0 30 2 *"} {
		if _, err := ParseCron(bad); err == nil {
			t.Errorf("ParseCron(%q) accepted", bad)
		}
	}
}

func TestSchedulerRunsAtSlotStarts(t *testing.T) {
	_, _, log, runs, run := newSim(t, Every(10*time.Second), at("2026-01-01T10:00:07.3Z"), 4,
		func(c *simClock, slot Slot, n int) attemptResult { return ok(c, 2*time.Second) })
	run()
	if got, want := times(log.starts), "10:00:10.000 10:00:20.000 10:00:30.000 10:00:40.000"; got != want {
		t.Fatalf("attempts at %s, want %s", got, want)
	}
	for i, s := range log.slots {
		if !s.Start.Equal(log.starts[i]) || s.Len() != 10*time.Second {
			t.Errorf("attempt %d: slot %+v", i, s)
		}
	}
	if len(*runs) != 4 {
		t.Fatalf("%d runs recorded", len(*runs))
	}
}

func TestSchedulerSlowRunDelaysTheNext(t *testing.T) {
	// Runs take 25s on a 10s schedule: the slot holding "now" runs late,
	// the slots in between are dropped; never two runs at once.
	s, _, log, _, run := newSim(t, Every(10*time.Second), at("2026-01-01T10:00:00Z"), 4,
		func(c *simClock, slot Slot, n int) attemptResult { return ok(c, 25*time.Second) })
	var dropped []int
	s.overran = func(n int) { dropped = append(dropped, n) }
	run()
	// 10 ends at 35 (slot 30 runs late, 20 dropped); 35 ends at 60 (40 and
	// 50 dropped, 60 on time); 60 ends at 85 (slot 80 late, 70 dropped).
	if got, want := times(log.starts), "10:00:10.000 10:00:35.000 10:01:00.000 10:01:25.000"; got != want {
		t.Fatalf("attempts at %s, want %s", got, want)
	}
	if got := log.slots[1].Start; !got.Equal(at("2026-01-01T10:00:30Z")) {
		t.Errorf("late run's slot %s, want 10:00:30", got)
	}
	if len(dropped) != 3 || dropped[0] != 1 || dropped[1] != 2 || dropped[2] != 1 {
		t.Errorf("dropped slots %v, want [1 2 1]", dropped)
	}
	for i := 1; i < len(log.starts); i++ {
		if log.starts[i].Sub(log.starts[i-1]) < 25*time.Second {
			t.Errorf("run %d started before run %d ended", i, i-1)
		}
	}
}

func TestNextFire(t *testing.T) {
	sched := Every(10 * time.Second)
	slot := SlotAt(sched, at("2026-01-01T10:00:10Z"))
	for _, c := range []struct {
		now, want string
		dropped   int
	}{
		{"2026-01-01T10:00:12Z", "2026-01-01T10:00:20Z", 0},
		{"2026-01-01T10:00:20Z", "2026-01-01T10:00:20Z", 0}, // exactly at the next start: on time
		{"2026-01-01T10:00:29Z", "2026-01-01T10:00:20Z", 0}, // late, nothing dropped
		{"2026-01-01T10:00:30Z", "2026-01-01T10:00:30Z", 1},
		{"2026-01-01T10:01:15Z", "2026-01-01T10:01:10Z", 5},
	} {
		got, dropped := nextFire(sched, slot, at(c.now))
		if !got.Equal(at(c.want)) || dropped != c.dropped {
			t.Errorf("now %s: next %s dropped %d, want %s %d", c.now, got.Format("15:04:05"), dropped, c.want, c.dropped)
		}
	}
}

var errFlaky = errors.New("storage unreachable")

func TestSchedulerRetriesWithBackoff(t *testing.T) {
	// Fails twice, then works: attempts at +0, +1s, +3s (waits 1s, 2s).
	_, _, log, runs, run := newSim(t, Every(time.Minute), at("2026-01-01T10:00:00Z"), 3,
		func(c *simClock, slot Slot, n int) attemptResult {
			c.Advance(100 * time.Millisecond)
			if n < 3 {
				return attemptResult{Err: errFlaky, Retry: true}
			}
			return attemptResult{}
		})
	run()
	if got, want := times(log.starts), "10:01:00.000 10:01:01.100 10:01:03.200"; got != want {
		t.Fatalf("attempts at %s, want %s", got, want)
	}
	if len(*runs) != 1 || (*runs)[0].Err != nil || (*runs)[0].Attempts != 3 {
		t.Fatalf("runs %+v, want one success after 3 attempts", *runs)
	}
}

func TestSchedulerRetryMax(t *testing.T) {
	// --retry-max 3: four attempts (1s, 2s, 4s apart), then the run fails;
	// the next slot starts afresh.
	_, _, log, runs, run := newSim(t, Every(time.Minute), at("2026-01-01T10:00:00Z"), 5,
		func(c *simClock, slot Slot, n int) attemptResult { return attemptResult{Err: errFlaky, Retry: true} })
	run()
	if got, want := times(log.starts), "10:01:00.000 10:01:01.000 10:01:03.000 10:01:07.000 10:02:00.000"; got != want {
		t.Fatalf("attempts at %s, want %s", got, want)
	}
	r := (*runs)[0]
	if !errors.Is(r.Err, errFlaky) || r.Attempts != 4 || !strings.Contains(r.Err.Error(), "gave up after 4 attempts") {
		t.Fatalf("first run: %+v", r)
	}
}

func TestSchedulerRetriesStayInTheSlot(t *testing.T) {
	// A 5s slot: attempts at +0, +1s, +3s; the next wait (4s) would end
	// after the slot, so the run fails there although retries remain.
	s, _, log, runs, run := newSim(t, Every(5*time.Second), at("2026-01-01T10:00:00Z"), 4,
		func(c *simClock, slot Slot, n int) attemptResult { return attemptResult{Err: errFlaky, Retry: true} })
	s.retryMax = 10
	run()
	if got, want := times(log.starts), "10:00:05.000 10:00:06.000 10:00:08.000 10:00:10.000"; got != want {
		t.Fatalf("attempts at %s, want %s", got, want)
	}
	r := (*runs)[0]
	if r.Attempts != 3 || !errors.Is(r.Err, errFlaky) || !strings.Contains(r.Err.Error(), errNoTime.Error()) {
		t.Fatalf("first run: %+v", r)
	}
	for i, st := range log.starts {
		if !log.slots[i].Contains(st) {
			t.Errorf("attempt %d at %s outside its slot %+v", i, st, log.slots[i])
		}
	}
}

func TestSchedulerNoRetry(t *testing.T) {
	// Skips and permanent errors are not retried.
	for _, res := range []attemptResult{{Skip: reasonNotLeader}, {Skip: reasonSlotTaken}, {Err: errFlaky}} {
		_, _, log, runs, run := newSim(t, Every(time.Minute), at("2026-01-01T10:00:00Z"), 2,
			func(c *simClock, slot Slot, n int) attemptResult { return res })
		run()
		if got, want := times(log.starts), "10:01:00.000 10:02:00.000"; got != want {
			t.Errorf("%+v: attempts at %s, want %s", res, got, want)
		}
		if (*runs)[0].Attempts != 1 || (*runs)[0].Skip != res.Skip {
			t.Errorf("%+v: run %+v", res, (*runs)[0])
		}
	}
}

func TestSchedulerJitter(t *testing.T) {
	for _, c := range []struct {
		jitter, want time.Duration
	}{
		{3 * time.Second, 3*time.Second - 1},
		{time.Minute, 5*time.Second - 1}, // capped at half the 10s slot
	} {
		s, _, log, _, run := newSim(t, Every(10*time.Second), at("2026-01-01T10:00:00Z"), 2,
			func(c *simClock, slot Slot, n int) attemptResult { return ok(c, time.Second) })
		s.jitter = c.jitter
		s.randN = func(n int64) int64 { return n - 1 } // the largest delay
		run()
		for i, st := range log.starts {
			if got := st.Sub(log.slots[i].Start); got != c.want {
				t.Errorf("--jitter %s: run %d delayed %s, want %s", c.jitter, i, got, c.want)
			}
		}
	}
}

func TestSchedulerWaitsForOtherRuns(t *testing.T) {
	// An on-demand backup holds the semaphore: the scheduled attempt waits
	// for it, and shutdown ends the wait without an attempt.
	c := &simClock{now: at("2026-01-01T10:00:00Z")}
	s := &scheduler{sched: Every(time.Second), clock: c, log: slog.New(slog.DiscardHandler), sem: make(chan struct{}, 1)}
	attempted := make(chan struct{}, 10)
	s.attempt = func(context.Context, Slot, int) attemptResult {
		select {
		case attempted <- struct{}{}:
		default:
		}
		return attemptResult{}
	}
	s.sem <- struct{}{} // a run in flight
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx, context.Background())
	}()
	select {
	case <-attempted:
		t.Fatal("scheduled attempt ran while another held the semaphore")
	case <-done:
		t.Fatal("scheduler stopped")
	case <-time.After(100 * time.Millisecond): // nothing may happen: this bounds how long we look
	}
	<-s.sem // the run ends
	select {
	case <-attempted:
	case <-time.After(10 * time.Second):
		t.Fatal("scheduled attempt did not run after the semaphore was released")
	}
	cancel()
	<-done
}
