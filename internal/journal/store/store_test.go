package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

// counting is a real backend whose Gets are counted: how many are open at
// once (a Get is open until its body is closed) and the most ever.
type counting struct {
	storage.Backend
	open, peak, gets atomic.Int64
	delay            time.Duration
}

func (c *counting) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	n := c.open.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	c.gets.Add(1)
	time.Sleep(c.delay) // a round trip
	rc, err := c.Backend.Get(ctx, name)
	if err != nil {
		c.open.Add(-1)
		return nil, err
	}
	return &closer{ReadCloser: rc, c: c}, nil
}

type closer struct {
	io.ReadCloser
	c    *counting
	done atomic.Bool
}

func (x *closer) Close() error {
	if x.done.CompareAndSwap(false, true) {
		x.c.open.Add(-1)
	}
	return x.ReadCloser.Close()
}

var base = &format.Manifest{ID: "20261203T100000.000Z-0000000b", Revision: 10, ClusterID: "00000000000000bb"}

func record(rev int64) *codec.Record {
	kv := &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/k/%d", rev%3), Value: []byte(strings.Repeat("v", 200)), CreateRevision: 1, ModRevision: rev, Version: rev}
	return &codec.Record{Revision: rev, Time: time.Unix(1700000000+rev, 0).UTC(), Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv}}}
}

// newStore writes n objects of per revisions each into a real local
// repository read through a counting backend.
func newStore(t *testing.T, n, per int) (*store.Store, *counting) {
	t.Helper()
	ctx := context.Background()
	b, err := backends.Open(ctx, "file://"+t.TempDir(), backends.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{Backend: b}
	r, err := repo.Open(ctx, c, "default")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(r)
	rev := base.Revision + 1
	for i := 0; i < n; i++ {
		var recs []*codec.Record
		for j := 0; j < per; j++ {
			recs = append(recs, record(rev))
			rev++
		}
		o, data, err := store.Build(recs, base.ID, base.ClusterID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, base.ID, o, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	return st, c
}

func readAll(st *store.Store, pf store.Prefetch) (int64, error) {
	ctx := context.Background()
	cov, err := st.Coverage(ctx, base)
	if err != nil {
		return 0, err
	}
	last := base.Revision
	err = st.Read(ctx, store.NewPlan(base, cov, 0, time.Time{}), nil, pf, func(r *codec.Record) error {
		if r.Revision != last+1 {
			return fmt.Errorf("revision %d after %d", r.Revision, last)
		}
		last = r.Revision
		return nil
	})
	return last, err
}

// TestPrefetchBounds: reading a chain fetches objects concurrently, never
// more at once than Requests, each object exactly once.
func TestPrefetchBounds(t *testing.T) {
	st, c := newStore(t, 60, 4)
	c.delay = 5 * time.Millisecond
	c.gets.Store(0)
	last, err := readAll(st, store.Prefetch{Requests: 4})
	if err != nil || last != base.Revision+240 {
		t.Fatalf("read to %d, %v", last, err)
	}
	if c.peak.Load() > 4 || c.peak.Load() < 2 {
		t.Fatalf("%d GETs open at once, want 2..4 (Requests 4)", c.peak.Load())
	}
	if g := c.gets.Load(); g != 60 {
		t.Fatalf("%d GETs for 60 objects", g)
	}
	// A byte budget of two objects holds at most two fetched ahead, with
	// the one being read: never more than three open.
	l, _ := st.List(context.Background(), base.ID)
	c.peak.Store(0)
	if _, err := readAll(st, store.Prefetch{Requests: 8, Bytes: 2 * l.Objects[0].Size}); err != nil {
		t.Fatal(err)
	}
	if c.peak.Load() > 3 {
		t.Fatalf("%d GETs open at once with a budget of two objects", c.peak.Load())
	}
}

// TestReadGap: an object removed with nothing to replace it is an
// integrity error naming the missing revisions, not a hang or a short
// read.
func TestReadGap(t *testing.T) {
	st, _ := newStore(t, 10, 3)
	ctx := context.Background()
	cov, err := st.Coverage(ctx, base)
	if err != nil || cov.Break != nil {
		t.Fatal(cov.Break, err)
	}
	if err := st.Remove(ctx, base.ID, cov.Objects[5]); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = st.Read(ctx, store.NewPlan(base, cov, 0, time.Time{}), nil, store.Prefetch{}, func(*codec.Record) error { n++; return nil })
	if !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "no longer in the repository") {
		t.Fatalf("after %d records: %v", n, err)
	}
	if n != 15 {
		t.Fatalf("%d records delivered before the gap, want 15", n)
	}
	if c := chain.Cover(base.Revision, mustList(t, st).Objects); c.Break == nil || c.End != base.Revision+15 {
		t.Fatalf("cover %d, break %v", c.End, c.Break)
	}
}

func mustList(t *testing.T, st *store.Store) *store.Listing {
	t.Helper()
	l, err := st.List(context.Background(), base.ID)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
