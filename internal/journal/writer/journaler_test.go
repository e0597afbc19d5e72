package writer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/journal/writer"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestJournalContents: one writer journals a workload of every kind of
// write; the sealed chain reaches the last revision without a break and
// holds exactly the events etcd reports, with each lease's TTL where it is
// first attached.
func TestJournalContents(t *testing.T) {
	start := time.Now()
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	r := openRepo(t, root, nil)

	// Before the snapshot: keys and a lease with keys, which the journal
	// first sees when a later put attaches it again.
	w := newWorkload(t, cli.Client, 1, "/c/")
	for i := 0; i < 30; i++ {
		w.step()
	}
	base := takeBase(t, cli, r)
	t.Logf("base %s at revision %d", base.ID, base.Revision)
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)

	wr := startWriter(t, "w1", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r, Flush: 100 * time.Millisecond}, base)
	for i := 0; i < 400; i++ {
		w.step()
		if i%50 == 0 {
			time.Sleep(120 * time.Millisecond) // let some segments seal mid-workload
		}
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the writer to seal the last revision", func() bool { return wr.sealed.Load() >= last })
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}

	c := readChain(t, r, base)
	if c.cov.End != last {
		t.Fatalf("chain reaches revision %d, want %d", c.cov.End, last)
	}
	if len(c.objs) < 3 {
		t.Errorf("%d objects for a %s workload with a 100ms flush", len(c.objs), time.Since(start))
	}
	if int(wr.segments.Load()) != len(c.objs) {
		t.Errorf("OnSealed told of %d objects, the repository has %d", wr.segments.Load(), len(c.objs))
	}
	checkReported(t, c, wr)
	if n := c.overlapping(); n != 0 {
		t.Errorf("one writer sealed %d overlapping objects", n)
	}
	compareEvents(t, c.recs, hist.upTo(t, last))
	checkLeases(t, c.recs, w.granted, w.revoked, true)
	if n := wr.events.Load(); n != int64(len(hist.upTo(t, last))) {
		t.Errorf("OnEvents counted %d events, etcd emitted %d", n, len(hist.upTo(t, last)))
	}
	if len(c.other) != 0 {
		t.Errorf("names in the chain's directory that are no journal object: %v", c.other)
	}
	t.Logf("%d revisions, %d events in %d objects (%s)", last-base.Revision, len(hist.upTo(t, last)), len(c.objs), time.Since(start).Round(time.Millisecond))
}

// TestTwoWritersNoGap: two writers (as an old and a new leader's agents)
// journal the same chain at once, one starting a second after the other
// from what the repository holds. Each publishes its own objects, which
// overlap (made certain once, and by the jitter of their writes): the
// chain readers follow (chain.Cover of the listing) has no gap and holds
// exactly etcd's history, every copy of a revision holds the same events,
// and the objects chain.Redundant names are covered by the others.
func TestTwoWritersNoGap(t *testing.T) {
	start := time.Now()
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)

	// Each writer has its own backend on the same directory, which counts
	// the objects it published and jitters their writes so that the two
	// interleave in every order.
	var puts [2]atomic.Int64
	var forced atomic.Bool
	wrap := func(i int, seed int64) func(storage.Backend) storage.Backend {
		var mu sync.Mutex
		rng := rand.New(rand.NewSource(seed))
		return func(inner storage.Backend) storage.Backend {
			return &hooked{Backend: inner, put: func(ctx context.Context, name string, rd io.Reader, put func(io.Reader) error) error {
				o, ok := chain.ParseName(path.Base(name))
				if !ok {
					return put(rd)
				}
				if i == 1 && forced.CompareAndSwap(false, true) {
					// The race, made certain once: writer 2's first
					// object waits until writer 1 has published one
					// over some of the same revisions.
					deadline := time.Now().Add(5 * time.Second)
					for time.Now().Before(deadline) && !overlapIn(ctx, inner, path.Dir(name), o) {
						time.Sleep(5 * time.Millisecond)
					}
				}
				mu.Lock()
				d := time.Duration(rng.Intn(30)) * time.Millisecond
				mu.Unlock()
				time.Sleep(d)
				err := put(rd)
				if err == nil {
					puts[i].Add(1)
				}
				return err
			}}
		}
	}
	r1, r2 := openRepo(t, root, wrap(0, 1)), openRepo(t, root, wrap(1, 2))

	w := newWorkload(t, cli.Client, 2, "/two/")
	w1 := startWriter(t, "w1", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r1, Flush: 70 * time.Millisecond}, base)
	var w2 *runner
	stopAt := time.Now().Add(5 * time.Second)
	for time.Now().Before(stopAt) {
		if w2 == nil && time.Since(start) > time.Second {
			// The second writer starts from what the repository holds, and
			// seals small objects: they overlap the first's at many places.
			w2 = startWriter(t, "w2", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r2, Flush: 130 * time.Millisecond, MaxSegment: 2 << 10}, base)
		}
		w.step()
		time.Sleep(time.Millisecond)
	}
	last := w.current()
	waitFor(t, 15*time.Second, "the chain to reach the last revision", func() bool { return chainEnd(t, r1, base) >= last })
	waitFor(t, 15*time.Second, "both writers to seal the last revision", func() bool { return w1.sealed.Load() >= last && w2.sealed.Load() >= last })
	for _, wr := range []*runner{w1, w2} {
		if err := wr.stop(t, 5*time.Second); err != nil {
			t.Fatalf("writer %s: Run: %v", wr.name, err)
		}
	}

	c := readChain(t, r1, base)
	if c.cov.End != last {
		t.Fatalf("chain reaches revision %d, want %d", c.cov.End, last)
	}
	// Every object in the repository is one a writer reported, and every
	// object a writer reported is in the repository.
	n1, n2 := w1.names(), w2.names()
	by := map[string]int{}
	for _, o := range c.objs {
		switch {
		case n1[o.Name] && n2[o.Name]:
			t.Errorf("object %s reported by both writers", o.Name)
		case n1[o.Name]:
			by["w1"]++
		case n2[o.Name]:
			by["w2"]++
		default:
			t.Errorf("object %s in the repository, reported by no writer", o.Name)
		}
	}
	if len(n1)+len(n2) != len(c.objs) {
		t.Errorf("the writers reported %d + %d objects, the repository holds %d", len(n1), len(n2), len(c.objs))
	}
	if int64(by["w1"]) != puts[0].Load() || int64(by["w2"]) != puts[1].Load() {
		t.Errorf("objects written w1 %d, w2 %d; the chain has %v", puts[0].Load(), puts[1].Load(), by)
	}
	if int64(by["w1"]) != w1.segments.Load() || int64(by["w2"]) != w2.segments.Load() {
		t.Errorf("OnSealed told w1 %d, w2 %d; the chain has %v", w1.segments.Load(), w2.segments.Load(), by)
	}
	// The two writers' objects overlap: both journaled the same revisions.
	overlaps := 0
	for _, a := range w1.sealedObjects() {
		for _, b := range w2.sealedObjects() {
			if a.Start <= b.End && b.Start <= a.End {
				overlaps++
			}
		}
	}
	used := map[string]int{}
	for _, o := range c.cov.Objects {
		if n1[o.Name] {
			used["w1"]++
		} else {
			used["w2"]++
		}
	}
	t.Logf("%d revisions in %d objects %v (%d overlapping pairs, %d redundant); the chain reads %d of them %v (%s)",
		last-base.Revision, len(c.objs), by, overlaps, len(chain.Redundant(c.objs)), len(c.cov.Objects), used,
		time.Since(start).Round(time.Millisecond))
	if by["w1"] == 0 || by["w2"] == 0 || len(by) != 2 {
		t.Errorf("objects by writer %v: want both writers to have sealed some", by)
	}
	if overlaps == 0 {
		t.Errorf("no object of writer 2 overlaps one of writer 1: the race did not happen")
	}
	if len(chain.Redundant(c.objs)) == 0 && c.overlapping() == 0 {
		t.Errorf("the chain's objects do not overlap though the writers' did")
	}
	compareEvents(t, c.recs, hist.upTo(t, last))
	checkLeases(t, c.recs, w.granted, w.revoked, false)
	if len(c.other) != 0 {
		t.Errorf("names in the chain's directory that are no journal object: %v", c.other)
	}
}

// overlapIn reports whether dir holds a journal object other than o over
// some of o's revisions.
func overlapIn(ctx context.Context, b storage.Backend, dir string, o chain.Object) bool {
	found := false
	b.List(ctx, dir+"/", func(i storage.Info) error {
		if p, ok := chain.ParseName(path.Base(i.Name)); ok && p.Name != o.Name && p.Start <= o.End && o.Start <= p.End {
			found = true
		}
		return nil
	})
	return found
}

// checkReported: the objects of the chain are exactly those wr reported
// (OnSealed), with the same ranges, times and sizes.
func checkReported(t *testing.T, c readBack, wr *runner) {
	t.Helper()
	listed := map[string]chain.Object{}
	for _, o := range c.objs {
		listed[o.Name] = o
	}
	seals := wr.sealedObjects()
	for _, s := range seals {
		o, ok := listed[s.Name]
		switch {
		case !ok:
			t.Errorf("writer %s reported object %s, which is not in the repository", wr.name, s.Name)
		case o.Start != s.Start || o.End != s.End || !o.FirstTime.Equal(s.FirstTime) || !o.LastTime.Equal(s.LastTime) || o.Size != s.Size:
			t.Errorf("writer %s reported %+v, the repository lists %+v", wr.name, s.Object, o)
		case s.Records != len(c.byObj[s.Name]) || s.Records != int(s.End-s.Start+1):
			t.Errorf("writer %s reported %d records in %s, it holds %d", wr.name, s.Records, s.Name, len(c.byObj[s.Name]))
		}
		events := 0
		for _, rec := range c.byObj[s.Name] {
			events += len(rec.Events)
		}
		if ok && events != s.Events {
			t.Errorf("writer %s reported %d events in %s, it holds %d", wr.name, s.Events, s.Name, events)
		}
	}
	if len(seals) != len(c.objs) {
		t.Errorf("writer %s reported %d objects, the repository holds %d", wr.name, len(seals), len(c.objs))
	}
}

// TestResumeAfterKill: a writer dies while publishing an object: its PUT
// landed, but the writer never learnt it. The next writer resumes after
// the last revision the repository holds (not the last the dead writer
// knew it sealed), and the chain is complete, with nothing left over.
func TestResumeAfterKill(t *testing.T) {
	start := time.Now()
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)

	const survive = 3
	var objects atomic.Int64
	crashing := openRepo(t, root, func(inner storage.Backend) storage.Backend {
		return &hooked{Backend: inner, put: func(ctx context.Context, name string, rd io.Reader, put func(io.Reader) error) error {
			if isObject(name) && objects.Add(1) > survive {
				if objects.Load() == survive+1 {
					if err := put(rd); err != nil {
						return err
					}
				}
				return errCrash
			}
			return put(rd)
		}}
	})
	w := newWorkload(t, cli.Client, 3, "/kill/")
	w1 := startWriter(t, "w1", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: crashing, Flush: 50 * time.Millisecond}, base)
	var err1 error
	for i := 0; ; i++ {
		w.step()
		time.Sleep(2 * time.Millisecond)
		select {
		case <-w1.done:
			err1 = w1.err
		default:
			if i > 5000 {
				t.Fatal("the first writer never died")
			}
			continue
		}
		break
	}
	if err1 == nil || !errors.Is(err1, errCrash) || errors.Is(err1, writer.ErrCompacted) || errors.Is(err1, writer.ErrChainBroken) {
		t.Fatalf("Run of the crashing writer: %v, want the object write's error", err1)
	}
	t.Logf("first writer stopped: %v", err1)
	sealed := w1.sealed.Load()
	if w1.segments.Load() != survive {
		t.Fatalf("the dead writer sealed %d objects, want %d", w1.segments.Load(), survive)
	}
	// The object whose PUT landed unbeknownst to the writer is there.
	landed := chainEnd(t, crashing, base)
	if landed <= sealed {
		t.Fatalf("the chain reaches %d, the dead writer sealed up to %d: its last object did not land", landed, sealed)
	}
	// History goes on while no writer runs.
	for i := 0; i < 100; i++ {
		w.step()
	}

	r := openRepo(t, root, nil)
	w2 := startWriter(t, "w2", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r, Flush: 50 * time.Millisecond}, base)
	for i := 0; i < 100; i++ {
		w.step()
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the second writer to seal the last revision", func() bool { return w2.sealed.Load() >= last })
	if err := w2.stop(t, 5*time.Second); err != nil {
		t.Fatalf("Run of the second writer: %v", err)
	}
	first := w2.sealedObjects()[0]
	if first.Start != landed+1 {
		t.Errorf("the second writer's first object starts at %d, want %d (after the last revision in the repository)", first.Start, landed+1)
	}

	c := readChain(t, r, base)
	if c.cov.End != last {
		t.Fatalf("chain reaches revision %d, want %d", c.cov.End, last)
	}
	if n := c.overlapping(); n != 0 {
		t.Errorf("%d overlapping objects: the second writer did not resume after the chain's end", n)
	}
	if got, want := len(c.objs), survive+1+int(w2.segments.Load()); got != want {
		t.Errorf("%d objects in the repository, want %d (the dead writer's %d and the one that landed, and the second writer's %d)", got, want, survive, w2.segments.Load())
	}
	compareEvents(t, c.recs, hist.upTo(t, last))
	checkLeases(t, c.recs, w.granted, w.revoked, false)
	t.Logf("chain %d..%d in %d objects (dead writer sealed up to %d, its last object to %d); other names %v (%s)",
		base.Revision+1, c.cov.End, len(c.objs), sealed, landed, c.other, time.Since(start).Round(time.Millisecond))
	if len(c.other) != 0 {
		t.Errorf("names in the chain's directory that are no journal object: %v", c.other)
	}
}

// TestCompacted: etcd compacted revisions the chain needs before the writer
// started: Run fails at once with ErrCompacted.
func TestCompacted(t *testing.T) {
	_, cli := testenv.StartEtcd(t, 1)
	r := openRepo(t, t.TempDir(), nil)
	base := takeBase(t, cli, r)
	w := newWorkload(t, cli.Client, 4, "/cmp/")
	for i := 0; i < 20; i++ {
		w.step()
	}
	rev := w.current()
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	err := writer.Run(ctx, writer.Config{Client: cli.Client, Repo: r, Flush: 100 * time.Millisecond}, base)
	took := time.Since(began)
	if !errors.Is(err, writer.ErrCompacted) {
		t.Fatalf("Run after compaction to %d (base %d): %v, want ErrCompacted", rev, base.Revision, err)
	}
	if took > 3*time.Second {
		t.Errorf("Run took %s to see the compaction", took)
	}
	t.Logf("Run: %v (%s)", err, took.Round(time.Millisecond))
	if l := listChain(t, r, base); len(l.Objects) != 0 || len(l.Other) != 0 {
		t.Errorf("objects after a compacted start: %v, %v", l.Objects, l.Other)
	}

	// Compaction while the writer runs: it stops with ErrCompacted only if
	// it still needs a compacted revision; a compaction of what it has
	// already received changes nothing.
	base2 := takeBase(t, cli, r)
	wr := startWriter(t, "w", writer.Config{Client: cli.Client, Repo: r, Flush: 50 * time.Millisecond}, base2)
	for i := 0; i < 20; i++ {
		w.step()
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the writer to seal the last revision", func() bool { return wr.sealed.Load() >= last })
	if _, err := cli.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		w.step()
	}
	last = w.current()
	waitFor(t, 10*time.Second, "the writer to seal past the compaction", func() bool { return wr.sealed.Load() >= last })
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestChainBroken: a chain with a gap cannot be continued.
func TestChainBroken(t *testing.T) {
	_, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	r := openRepo(t, root, nil)
	base := takeBase(t, cli, r)
	w := newWorkload(t, cli.Client, 5, "/gap/")
	wr := startWriter(t, "w", writer.Config{Client: cli.Client, Repo: r, Flush: 50 * time.Millisecond}, base)
	for i := 0; i < 50; i++ {
		w.step()
		if i%10 == 0 {
			time.Sleep(80 * time.Millisecond)
		}
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the writer to seal the last revision", func() bool { return wr.sealed.Load() >= last })
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	objs := chain.Cover(base.Revision, listChain(t, r, base).Objects).Objects
	if len(objs) < 2 {
		t.Fatalf("%d objects; want at least 2", len(objs))
	}
	// Remove the first object: a gap from base+1.
	if err := store.New(r).Remove(context.Background(), base.ID, objs[0]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := writer.Run(ctx, writer.Config{Client: cli.Client, Repo: r}, base)
	if !errors.Is(err, writer.ErrChainBroken) {
		t.Fatalf("Run on a chain with a gap: %v, want ErrChainBroken", err)
	}
}

// TestSealOnStop: what the writer holds when its context is done is sealed
// before Run returns.
func TestSealOnStop(t *testing.T) {
	cl, cli := testenv.StartEtcd(t, 1)
	r := openRepo(t, t.TempDir(), nil)
	base := takeBase(t, cli, r)
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)
	// A flush interval longer than the test: only the final seal on stop
	// publishes anything.
	wr := startWriter(t, "w", writer.Config{Client: cli.Client, Repo: r, Flush: time.Hour}, base)
	w := newWorkload(t, cli.Client, 6, "/stop/")
	for i := 0; i < 100; i++ {
		w.step()
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the writer to receive every event", func() bool {
		return wr.events.Load() >= int64(len(hist.upTo(t, last)))
	})
	if wr.segments.Load() != 0 {
		t.Fatalf("%d segments sealed before the flush interval", wr.segments.Load())
	}
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := readChain(t, r, base)
	if len(c.objs) != 1 || c.cov.End != last {
		t.Fatalf("after stop: %d objects up to %d, want 1 up to %d", len(c.objs), c.cov.End, last)
	}
	checkReported(t, c, wr)
	compareEvents(t, c.recs, hist.upTo(t, last))
	checkLeases(t, c.recs, w.granted, w.revoked, true)
}

// watchStats counts, on a client connection, the watch responses the etcd
// client library has received from etcd (whether or not its user has read
// them yet).
type watchStats struct {
	events, bytes atomic.Int64
	maxEvents     atomic.Int64 // most events in one response
}

type methodKey struct{}

func (s *watchStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

func (s *watchStats) HandleRPC(ctx context.Context, st stats.RPCStats) {
	in, ok := st.(*stats.InPayload)
	if !ok || ctx.Value(methodKey{}) != "/etcdserverpb.Watch/Watch" {
		return
	}
	s.bytes.Add(int64(in.Length))
	if resp, ok := in.Payload.(*etcdserverpb.WatchResponse); ok {
		n := int64(len(resp.Events))
		s.events.Add(n)
		for old := s.maxEvents.Load(); n > old && !s.maxEvents.CompareAndSwap(old, n); old = s.maxEvents.Load() {
		}
	}
}

func (s *watchStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (s *watchStats) HandleConn(context.Context, stats.ConnStats)                       {}

// TestBackpressureBoundedMemory: while the repository does not accept
// uploads, a burst of writes does not pile up in the writer: it holds at
// most the segment being uploaded and one full segment, each no larger than
// MaxSegment and one watch response. Once uploads work again, every event
// is journaled.
func TestBackpressureBoundedMemory(t *testing.T) {
	start := time.Now()
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)

	var blocked atomic.Pointer[chan struct{}]
	var waiting atomic.Int64
	r := openRepo(t, root, func(inner storage.Backend) storage.Backend {
		return &hooked{Backend: inner, put: func(ctx context.Context, name string, rd io.Reader, put func(io.Reader) error) error {
			if ch := blocked.Load(); ch != nil && isObject(name) {
				waiting.Add(1)
				select {
				case <-*ch:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return put(rd)
		}}
	})
	const maxSeg, valueSize = 16 << 10, 1 << 10
	var ws watchStats
	wcli := newClient(t, cl.Endpoints(), grpc.WithStatsHandler(&ws))
	wr := startWriter(t, "w", writer.Config{Client: wcli, Repo: r, Flush: 50 * time.Millisecond, MaxSegment: maxSeg}, base)
	w := newWorkload(t, cli.Client, 7, "/bp/")
	for i := 0; i < 10; i++ {
		w.step()
	}
	warm := w.current()
	waitFor(t, 10*time.Second, "the first segments", func() bool { return wr.sealed.Load() >= warm })

	release := make(chan struct{})
	blocked.Store(&release)
	t.Cleanup(func() {
		if blocked.Load() != nil {
			close(release)
		}
	})
	// The burst: 8 clients putting 1 KiB values, one key per revision.
	const burst = 2000
	value := strings.Repeat("v", valueSize)
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > burst {
					return
				}
				if _, err := cli.Put(context.Background(), fmt.Sprintf("/bp/burst/%05d", i), value); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	burstEnd := w.current()
	// Let the writer read all it wants, then look at what it holds.
	var held int64
	for stable := 0; stable < 30; {
		before := wr.events.Load()
		time.Sleep(10 * time.Millisecond)
		if wr.events.Load() == before {
			stable++
		} else {
			stable = 0
		}
	}
	if waiting.Load() == 0 {
		t.Fatal("no upload was blocked")
	}
	held = wr.events.Load() - wr.sealedEv.Load()
	// Each of the two segments is sealed once it reaches MaxSegment, so it
	// holds less than MaxSegment and one watch response.
	perResp := ws.maxEvents.Load()
	limit := 2 * (maxSeg/valueSize + perResp)
	inClient := ws.events.Load() - wr.events.Load()
	t.Logf("uploads blocked for %s: the writer holds %d events (limit %d, at most %d events per watch response); the etcd client library holds %d more events (%d KiB) it received and the writer has not read",
		time.Since(start).Round(time.Millisecond), held, limit, perResp, inClient, inClient*valueSize>>10)
	if held > limit {
		t.Errorf("with uploads blocked the writer holds %d events of %d bytes, more than two segments of %d bytes", held, valueSize, maxSeg)
	}
	if inClient*valueSize > 4*maxSeg {
		// The etcd client library (clientv3 watchGrpcStream) reads the
		// gRPC stream eagerly and buffers without bound what the watch
		// channel's reader has not taken: backpressure must cancel the
		// watch, not just stop reading it.
		t.Errorf("while the writer applies backpressure, the etcd client buffers %d events (%d KiB) it received from etcd: memory is not bounded by MaxSegment (%d bytes)",
			inClient, inClient*valueSize>>10, maxSeg)
	}

	blocked.Store(nil)
	close(release)
	waitFor(t, 20*time.Second, "the writer to seal the burst", func() bool { return wr.sealed.Load() >= burstEnd })
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := readChain(t, r, base)
	if c.cov.End != burstEnd {
		t.Fatalf("chain reaches %d, want %d", c.cov.End, burstEnd)
	}
	compareEvents(t, c.recs, hist.upTo(t, burstEnd))
	var maxFrame, maxRaw int64
	for _, rec := range c.recs {
		b, err := codec.AppendFrame(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		maxFrame = max(maxFrame, int64(len(b)))
	}
	// After a pause etcd may send up to 1000 revisions in one response.
	perResp = ws.maxEvents.Load()
	for _, o := range c.objs {
		raw := c.raw[o.Name]
		maxRaw = max(maxRaw, raw)
		if raw > maxSeg+int64(len(codec.Magic))+perResp*maxFrame {
			t.Errorf("object %s holds %d raw bytes (%d records): more than MaxSegment %d and one watch response of at most %d records of at most %d bytes",
				o.Label(base.ID), raw, len(c.byObj[o.Name]), maxSeg, perResp, maxFrame)
		}
	}
	t.Logf("%d objects, largest %d raw bytes (MaxSegment %d, largest record %d, at most %d events per watch response) (%s)",
		len(c.objs), maxRaw, maxSeg, maxFrame, perResp, time.Since(start).Round(time.Millisecond))
}

// TestLeaderChange: a writer per member of a 3-member cluster, each on its
// own member, restarted on error like the agent does, while the leader
// moves twice: the chain is still exactly etcd's history.
func TestLeaderChange(t *testing.T) {
	start := time.Now()
	cl, cli := testenv.StartEtcd(t, 3)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sealed atomic.Int64
	var runErrs sync.Map
	var byName sync.Map // object name -> writer
	for i, ep := range cl.Endpoints() {
		wg.Add(1)
		name := fmt.Sprintf("w%d", i+1)
		r := openRepo(t, root, nil)
		c := newClient(t, []string{ep})
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := writer.Run(ctx, writer.Config{Client: c, Repo: r, Writer: name, Flush: 60 * time.Millisecond, Logger: testLogger(t, name),
					OnSealed: func(s writer.Sealed) {
						byName.Store(s.Name, name)
						for old := sealed.Load(); s.End > old && !sealed.CompareAndSwap(old, s.End); old = sealed.Load() {
						}
					}}, base)
				if err != nil {
					runErrs.Store(name+": "+err.Error(), true)
					if errors.Is(err, writer.ErrCompacted) || errors.Is(err, writer.ErrChainBroken) {
						t.Errorf("writer %s: %v", name, err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	w := newWorkload(t, cli.Client, 8, "/lc/")
	moved := 0
	for i := 0; i < 600; i++ {
		w.step()
		if i == 200 || i == 400 {
			moveLeader(t, cl.Endpoints())
			moved++
		}
	}
	last := w.current()
	waitFor(t, 15*time.Second, "the chain to reach the last revision", func() bool { return sealed.Load() >= last })
	cancel()
	wg.Wait()
	runErrs.Range(func(k, _ any) bool { t.Logf("Run returned %v", k); return true })

	r := openRepo(t, root, nil)
	c := readChain(t, r, base)
	if c.cov.End < last {
		t.Fatalf("chain reaches %d, want %d", c.cov.End, last)
	}
	by := map[string]int{}
	for _, o := range c.objs {
		name, ok := byName.Load(o.Name)
		if !ok {
			t.Errorf("object %s in the repository, reported by no writer", o.Name)
			continue
		}
		by[name.(string)]++
	}
	compareEvents(t, c.recs, hist.upTo(t, c.cov.End))
	checkLeases(t, c.recs, w.granted, w.revoked, false)
	t.Logf("leader moved %d times; %d revisions in %d objects %v, %d redundant (%s)", moved, c.cov.End-base.Revision, len(c.objs), by, len(chain.Redundant(c.objs)), time.Since(start).Round(time.Millisecond))
}

// moveLeader hands leadership to another member and waits until it leads.
func moveLeader(t *testing.T, endpoints []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var leaderEP string
	var leader, target uint64
	for _, ep := range endpoints {
		c := newClient(t, []string{ep})
		st, err := c.Status(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			leaderEP, leader = ep, st.Leader
		} else if target == 0 {
			target = st.Header.MemberId
		}
	}
	if leaderEP == "" || target == 0 {
		t.Fatal("no leader or no follower")
	}
	if _, err := newClient(t, []string{leaderEP}).MoveLeader(ctx, target); err != nil {
		t.Fatalf("move leader %x -> %x: %v", leader, target, err)
	}
}
