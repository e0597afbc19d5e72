package rollup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

const base = 100 // the snapshot's revision

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// record is revision rev as etcd would send it: one put of a key.
func record(rev int64, at time.Time) *codec.Record {
	kv := &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/registry/leases/kube-node-lease/node-%d", rev%7), Value: fmt.Appendf(nil, "renewed at revision %d", rev),
		CreateRevision: 5, ModRevision: rev, Version: rev - 4}
	return &codec.Record{Revision: rev, Time: at, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv}}}
}

type fixture struct {
	st   *store.Store
	base *format.Manifest
	puts int
}

// newChain writes segs one-second segments of per revisions each, in a
// real local repository; writer two (if dup) writes every third segment
// again, as an old leader's agent would.
func newChain(t *testing.T, segs, per int, dup bool) *fixture {
	t.Helper()
	ctx := context.Background()
	b, err := backends.Open(ctx, "file://"+t.TempDir(), backends.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, b, "default")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: store.New(r), base: &format.Manifest{ID: "20261203T100000.000Z-0000000a", Revision: base, ClusterID: "00000000000000aa"}}
	rev := int64(base + 1)
	for i := 0; i < segs; i++ {
		var recs []*codec.Record
		for j := 0; j < per; j++ {
			recs = append(recs, record(rev, t0.Add(time.Duration(i)*time.Second+time.Duration(j)*time.Millisecond)))
			rev++
		}
		for copies := 0; copies < 1+btoi(dup && i%3 == 0); copies++ {
			o, data, err := store.Build(recs, f.base.ID, f.base.ClusterID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.st.Put(ctx, f.base.ID, o, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			f.puts++
		}
	}
	return f
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readAll restores the whole chain as a reader would and checks every
// revision is there once, in order, with its content.
func (f *fixture) readAll(ctx context.Context) (int64, error) {
	cov, err := f.st.Coverage(ctx, f.base)
	if err != nil {
		return 0, err
	}
	if cov.Break != nil {
		return 0, cov.Break
	}
	next := int64(base + 1)
	err = f.st.Read(ctx, store.NewPlan(f.base, cov, 0, time.Time{}), nil, store.Prefetch{Requests: 4}, func(r *codec.Record) error {
		if r.Revision != next {
			return fmt.Errorf("revision %d, want %d", r.Revision, next)
		}
		want := fmt.Sprintf("renewed at revision %d", r.Revision)
		if got := string(r.Events[0].Kv.Value); got != want {
			return fmt.Errorf("revision %d holds %q", r.Revision, got)
		}
		next++
		return nil
	})
	return next - 1, err
}

func (f *fixture) objects(t *testing.T) []chain.Object {
	t.Helper()
	l, err := f.st.List(context.Background(), f.base.ID)
	if err != nil {
		t.Fatal(err)
	}
	return l.Objects
}

func TestOpenChainTiers(t *testing.T) {
	ctx := context.Background()
	f := newChain(t, 300, 5, false)
	end := int64(base + 300*5)
	now := func() time.Time { return t0.Add(300 * time.Second) } // the last 120 s are young
	opt := rollup.Options{Fanout: 8, MinAge: 2 * time.Minute, Now: now, Settle: -1}
	res, err := rollup.Run(ctx, f.st, f.base, opt)
	if err != nil {
		t.Fatal(err)
	}
	objs := f.objects(t)
	t.Logf("300 segments -> %d objects (%d roll-ups of %d segments)", len(objs), res.Written, res.Merged)
	if res.Written == 0 || res.Merged < 160 || len(objs) > 300-160+res.Written {
		t.Fatalf("roll-up merged %d objects into %d; %d objects left", res.Merged, res.Written, len(objs))
	}
	// Young segments stay as they are.
	young := 0
	for _, o := range objs {
		if o.LastTime.After(now().Add(-2 * time.Minute)) {
			young++
			if o.End-o.Start+1 != 5 {
				t.Fatalf("young object %d..%d was rolled up", o.Start, o.End)
			}
		}
	}
	if young < 100 {
		t.Fatalf("%d young segments left, want about 120", young)
	}
	if got, err := f.readAll(ctx); err != nil || got != end {
		t.Fatalf("after roll-up: read to %d, %v; want %d", got, err, end)
	}
	// Repeated passes converge: tiers go on merging, nothing is lost.
	for i := 0; i < 5; i++ {
		if _, err := rollup.Run(ctx, f.st, f.base, opt); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := f.readAll(ctx); err != nil || got != end {
		t.Fatalf("after more passes: read to %d, %v", got, err)
	}
}

func TestClosedChainPacks(t *testing.T) {
	ctx := context.Background()
	f := newChain(t, 200, 5, true) // with duplicates of a second writer
	res, err := rollup.Run(ctx, f.st, f.base, rollup.Options{Closed: true, MaxBytes: 32 << 10, Settle: -1, Now: func() time.Time { return t0.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	objs := f.objects(t)
	var stored int64
	for _, o := range objs {
		stored += o.Size
	}
	t.Logf("%d objects (%d PUTs) -> %d objects, %d bytes; %+v", 200+67, f.puts, len(objs), stored, res)
	if max := int(res.BytesRead/(32<<10)) + 1; len(objs) > max {
		t.Fatalf("a closed chain of %d bytes (%d stored after packing) kept %d objects, want at most %d", res.BytesRead, stored, len(objs), max)
	}
	if len(chain.Redundant(objs)) != 0 {
		t.Fatalf("redundant objects left: %v", chain.Redundant(objs))
	}
	if got, err := f.readAll(ctx); err != nil || got != base+1000 {
		t.Fatalf("read to %d, %v", got, err)
	}
}

// TestReadersRaceRollup: restores running while roll-ups merge and remove
// the objects they planned with never fail and never see a gap.
func TestReadersRaceRollup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newChain(t, 400, 3, true)
	end := int64(base + 1200)
	var reads, replans atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := f.readAll(ctx)
				if err != nil || got != end {
					errs <- fmt.Errorf("reader: read to %d, %v", got, err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	// Roll up in small steps so that many passes race the readers.
	for fan := 2; fan <= 6; fan++ {
		if _, err := rollup.Run(ctx, f.st, f.base, rollup.Options{Fanout: fan, MinAge: time.Nanosecond, Settle: -1, Now: func() time.Time { return t0.Add(time.Hour) }}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rollup.Run(ctx, f.st, f.base, rollup.Options{Closed: true, Settle: -1, Now: func() time.Time { return t0.Add(time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	// Let the readers finish a read of the final state too.
	for n := reads.Load(); reads.Load() < n+3; {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("readers stalled")
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d whole-chain reads raced the roll-ups (%d re-plans); %d objects left", reads.Load(), replans.Load(), len(f.objects(t)))
	if n := len(f.objects(t)); n != 1 {
		t.Fatalf("closed chain packed into %d objects, want 1", n)
	}
}

// TestEncrypted: an encrypted chain is left exactly as it is when neither
// a spool holds its records nor an identity opens it; it is rolled up
// (still encrypted, readable with the key only) from the writer's spool
// without a key, and from the repository with one.
func TestEncrypted(t *testing.T) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rcpt := []format.Recipient{{Recipient: id.Recipient(), Fingerprint: format.Fingerprint(id.Recipient().String())}}
	spool, err := rollup.NewSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	f := newChain(t, 0, 0, false)
	rev := int64(base + 1)
	write := func(n int, spooled bool) {
		for i := 0; i < n; i++ {
			recs := []*codec.Record{record(rev, t0.Add(time.Duration(rev)*time.Second))}
			o, data, err := store.Build(recs, f.base.ID, f.base.ClusterID, rcpt)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.st.Put(ctx, f.base.ID, o, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if spooled {
				spool.Add(recs)
			}
			rev++
		}
	}
	write(10, false)
	before := f.objects(t)
	opt := rollup.Options{Closed: true, Recipients: rcpt, Settle: -1, Local: spool, Now: func() time.Time { return t0.Add(time.Hour) }}
	res, err := rollup.Run(ctx, f.st, f.base, opt)
	if err != nil || res.Skipped != 1 || res.Written != 0 {
		t.Fatalf("without an identity or spool: %+v, %v; want the run skipped", res, err)
	}
	if after := f.objects(t); len(after) != len(before) {
		t.Fatalf("without an identity the chain changed: %d objects, was %d", len(after), len(before))
	}
	readBack := func(want int) {
		t.Helper()
		cov, _ := f.st.Coverage(ctx, f.base)
		n := 0
		if err := f.st.Read(ctx, store.NewPlan(f.base, cov, 0, time.Time{}), []age.Identity{id}, store.Prefetch{}, func(*codec.Record) error { n++; return nil }); err != nil || n != want {
			t.Fatalf("read %d records, %v; want %d", n, err, want)
		}
		if err := f.st.Read(ctx, store.NewPlan(f.base, cov, 0, time.Time{}), nil, store.Prefetch{}, func(*codec.Record) error { return nil }); !errors.Is(err, format.ErrKey) {
			t.Fatalf("the chain is readable without the key: %v", err)
		}
	}
	// With the key: from the repository.
	opt.Identities = []age.Identity{id}
	if _, err := rollup.Run(ctx, f.st, f.base, opt); err != nil {
		t.Fatal(err)
	}
	after := f.objects(t)
	if len(after) != 1 || !after[0].Encrypted || after[0].Start != base+1 || after[0].End != base+10 {
		t.Fatalf("after roll-up: %+v", after)
	}
	readBack(10)
	// Without the key: 20 more segments the writer spooled. The plan's run
	// 101..130 is only partly in the spool: skipped.
	opt.Identities = nil
	write(20, true)
	res, err = rollup.Run(ctx, f.st, f.base, opt)
	if err != nil || res.Skipped != 1 || res.Written != 0 {
		t.Fatalf("a run only partly spooled: %+v, %v; want it skipped", res, err)
	}
	// A chain the writer spooled whole is rolled up without the key.
	f = newChain(t, 0, 0, false)
	spool2, err := rollup.NewSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer spool2.Close()
	spool, rev = spool2, base+1
	write(20, true)
	opt.Local = spool2
	res, err = rollup.Run(ctx, f.st, f.base, opt)
	if err != nil || res.Written != 1 || res.Skipped != 0 {
		t.Fatalf("from the spool: %+v, %v; want one roll-up", res, err)
	}
	after = f.objects(t)
	if len(after) != 1 || after[0].Start != base+1 || after[0].End != base+20 || !after[0].Encrypted {
		t.Fatalf("after the spool's roll-up: %+v", after)
	}
	readBack(20)
}
