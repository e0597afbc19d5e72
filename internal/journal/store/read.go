package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Plan is the replay part of a restore: the objects of one chain, replayed
// on top of its snapshot up to a revision or a time.
type Plan struct {
	Chain string
	// Base is the snapshot's revision; the chain starts at Base+1.
	Base    int64
	Objects []chain.Object
	// ToRevision: 0 to the end of Objects (or ToTime).
	ToRevision int64
	ToTime     time.Time // zero: no time limit
	// End and EndTime are where the unbroken journal ends.
	End     int64
	EndTime time.Time
	// Note, when set, is something the operator must be told about the
	// point reached.
	Note string
	// ClusterID is the snapshot's cluster: every object must be of it.
	ClusterID string
}

// NewPlan plans replaying snapshot m's chain (coverage cov) to rev (0: its
// end) or, when at is not zero, to the last record received at or before at.
func NewPlan(m *format.Manifest, cov chain.Coverage, rev int64, at time.Time) *Plan {
	return &Plan{Chain: m.ID, Base: cov.Base, Objects: cov.Upto(rev, at), ToRevision: rev, ToTime: at,
		End: cov.End, EndTime: cov.LastTime, ClusterID: m.ClusterID}
}

// DefaultRequests is how many objects Read fetches at once by default:
// at a 20 ms round trip, 800 objects a second, more than replay consumes.
const DefaultRequests = 16

// Prefetch bounds the concurrent reading ahead of Read.
type Prefetch struct {
	// Requests is how many objects are fetched at once (default
	// DefaultRequests).
	Requests int
	// Bytes bounds the stored bytes held ahead of the reader (default
	// 64 MiB); an object larger than half of it is streamed instead when
	// its turn comes.
	Bytes int64
}

func (p Prefetch) norm() Prefetch {
	if p.Requests <= 0 {
		p.Requests = DefaultRequests
	}
	if p.Bytes <= 0 {
		p.Bytes = 64 << 20
	}
	return p
}

// Read reads every record of p in order, each record after the snapshot's
// revision exactly once, with every check of docs/format.md, and calls fn
// with it; it stops after p.ToRevision, or before the first record received
// after p.ToTime. Objects are fetched ahead of the reader (see Prefetch). An
// object a roll-up removed meanwhile makes Read list the chain again and go
// on with what covers the rest. An error from fn stops it.
func (s *Store) Read(ctx context.Context, p *Plan, ids []age.Identity, pf Prefetch, fn func(*codec.Record) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cur := p.Base // last revision delivered (or held by the snapshot)
	objs := p.Objects
	for replans := 0; ; replans++ {
		f := s.prefetch(ctx, p.Chain, objs, pf.norm())
		done, err := s.readObjects(ctx, p, f, ids, &cur, fn)
		f.stop()
		if err == nil || done {
			return err
		}
		var gone *goneError
		if !errors.As(err, &gone) || replans >= 20 {
			return err
		}
		// A roll-up replaced an object after the plan was made: plan the
		// rest again from what the chain holds now.
		objs, err = s.replan(ctx, p, cur)
		if err != nil {
			return err
		}
	}
}

// replan lists p's chain again and covers it from cur to where p was to
// reach. A listing is not a snapshot: one made while a roll-up publishes
// may miss both the roll-up and pieces already removed, so a short cover is
// listed again a few times before it is believed.
func (s *Store) replan(ctx context.Context, p *Plan, cur int64) ([]chain.Object, error) {
	target := p.End
	if p.ToRevision > 0 {
		target = min(target, p.ToRevision)
	}
	var cov chain.Coverage
	for try := 0; try < 4; try++ {
		if try > 0 {
			select {
			case <-time.After(time.Duration(try) * 200 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		l, err := s.List(ctx, p.Chain)
		if err != nil {
			return nil, err
		}
		cov = chain.Cover(cur, l.Objects)
		if cov.End >= target {
			return cov.Upto(p.ToRevision, p.ToTime), nil
		}
	}
	return nil, fmt.Errorf("%w: journal of %s: revisions %d..%d are no longer in the repository (the chain now ends at %d)", format.ErrIntegrity, p.Chain, cov.End+1, target, cov.End)
}

type goneError struct{ label string }

func (g *goneError) Error() string { return fmt.Sprintf("journal object %s is gone", g.label) }

// readObjects reads objects in order from f. done reports that the target
// was reached (or fn stopped it) and err is final.
func (s *Store) readObjects(ctx context.Context, p *Plan, f *fetcher, ids []age.Identity, cur *int64, fn func(*codec.Record) error) (done bool, err error) {
	for i := range f.objs {
		if p.ToRevision > 0 && *cur >= p.ToRevision {
			return true, nil
		}
		o := f.objs[i]
		rc, err := f.take(ctx, i)
		if err != nil {
			return false, err
		}
		stop, err := s.readObject(p, o, rc, ids, cur, fn)
		rc.Close()
		if err != nil || stop {
			return true, err
		}
	}
	return true, nil
}

// readObject reads one object's records, checking them against the
// object's name (or framing-1 manifest), and delivers those after cur.
func (s *Store) readObject(p *Plan, o chain.Object, rc io.Reader, ids []age.Identity, cur *int64, fn func(*codec.Record) error) (stop bool, err error) {
	label := o.Label(p.Chain)
	var dec *format.Decoder
	if m := o.Legacy; m != nil {
		if p.ClusterID != "" && m.ClusterID != "" && m.ClusterID != p.ClusterID {
			return true, fmt.Errorf("%w: journal segment %s was written for cluster %s, its snapshot is of cluster %s", format.ErrIntegrity, m.ID, m.ClusterID, p.ClusterID)
		}
		dec, err = format.NewDecoder(rc, m, ids)
	} else {
		dec, err = format.NewSealedDecoder(rc, label, o.Encrypted, ids)
	}
	if err != nil {
		return true, fmt.Errorf("journal object %s: %w", label, err)
	}
	defer dec.Close()
	rd := codec.NewReader(dec)
	last := int64(0)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return true, fmt.Errorf("journal object %s: %w", label, err)
		}
		if rec.Revision < o.Start || rec.Revision > o.End {
			return true, fmt.Errorf("%w: journal object %s covers revisions %d..%d but holds revision %d", format.ErrIntegrity, label, o.Start, o.End, rec.Revision)
		}
		// etcd gives every revision at least one event, so an object holds
		// each revision of its range, in order.
		if want := max(last+1, o.Start); rec.Revision != want {
			return true, fmt.Errorf("%w: journal object %s is missing revisions %d..%d", format.ErrIntegrity, label, want, rec.Revision-1)
		}
		last = rec.Revision
		if rec.Revision <= *cur {
			continue // held by the snapshot or by the object before
		}
		if !p.ToTime.IsZero() && rec.Time.After(p.ToTime) {
			return true, nil
		}
		if rec.Revision != *cur+1 {
			return true, fmt.Errorf("%w: journal: revision %d follows %d", format.ErrIntegrity, rec.Revision, *cur)
		}
		if err := fn(rec); err != nil {
			return true, err
		}
		*cur = rec.Revision
		if p.ToRevision > 0 && *cur >= p.ToRevision {
			return true, nil
		}
	}
	if last != o.End {
		return true, fmt.Errorf("%w: journal object %s should end at revision %d, its last record is %d", format.ErrIntegrity, label, o.End, last)
	}
	if o.Legacy == nil {
		seal := rd.Sealed()
		switch {
		case seal == nil:
			return true, fmt.Errorf("%w: journal object %s has no seal", format.ErrIntegrity, label)
		case seal.Chain != p.Chain:
			return true, fmt.Errorf("%w: journal object %s belongs to chain %s", format.ErrIntegrity, label, seal.Chain)
		case p.ClusterID != "" && seal.ClusterID != "" && seal.ClusterID != p.ClusterID:
			return true, fmt.Errorf("%w: journal object %s was written for cluster %s, its snapshot is of cluster %s", format.ErrIntegrity, label, seal.ClusterID, p.ClusterID)
		case !sameNanos(seal.FirstTime, o.FirstTime) || !sameNanos(seal.LastTime, o.LastTime):
			return true, fmt.Errorf("%w: journal object %s: the times in its name are not those of its records", format.ErrIntegrity, label)
		}
	}
	return false, nil
}

func sameNanos(a, b time.Time) bool {
	an, bn := int64(0), int64(0)
	if !a.IsZero() && a.UnixNano() > 0 {
		an = a.UnixNano()
	}
	if !b.IsZero() && b.UnixNano() > 0 {
		bn = b.UnixNano()
	}
	return an == bn
}

// fetcher fetches objects ahead of the reader, in order, within a budget.
type fetcher struct {
	s     *Store
	chain string
	objs  []chain.Object
	slots []chan fetched
	pf    Prefetch
	// release gives the budget back the size of an object the reader took
	release chan int64
	cancel  context.CancelFunc
	done    chan struct{}
}

type fetched struct {
	size   int64 // counted against the budget
	data   []byte
	stream bool // too large to hold: open it when its turn comes
	err    error
}

func (s *Store) prefetch(ctx context.Context, chainID string, objs []chain.Object, pf Prefetch) *fetcher {
	ctx, cancel := context.WithCancel(ctx)
	f := &fetcher{s: s, chain: chainID, objs: objs, pf: pf, cancel: cancel, done: make(chan struct{}), release: make(chan int64, len(objs)+1)}
	f.slots = make([]chan fetched, len(objs))
	for i := range f.slots {
		f.slots[i] = make(chan fetched, 1)
	}
	go f.run(ctx)
	return f
}

// run starts fetches in order: at most pf.Requests at once and pf.Bytes
// held (fetched or being fetched) and not yet taken by the reader.
func (f *fetcher) run(ctx context.Context) {
	defer close(f.done)
	reqs := make(chan struct{}, f.pf.Requests)
	var held int64
	for i, o := range f.objs {
		size := o.Size
		if size <= 0 {
			size = 1 << 20
		}
		if size > f.pf.Bytes/2 {
			f.slots[i] <- fetched{stream: true}
			continue
		}
		// Wait for room in the budget.
		for held+size > f.pf.Bytes && held > 0 {
			select {
			case n := <-f.release:
				held -= n
			case <-ctx.Done():
				return
			}
		}
		select {
		case reqs <- struct{}{}:
		case <-ctx.Done():
			return
		}
		held += size
		go func() {
			data, err := f.get(ctx, o)
			<-reqs
			f.slots[i] <- fetched{size: size, data: data, err: err}
		}()
	}
	<-ctx.Done()
}

func (f *fetcher) get(ctx context.Context, o chain.Object) ([]byte, error) {
	rc, err := f.s.open(ctx, f.chain, o)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// ReadFrom wants MinRead bytes free before it sees the end: with room
	// for the object only, it would double the buffer at the end.
	buf := bytes.NewBuffer(getBuffer(int(max(o.Size, 0)) + bytes.MinRead))
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, fmt.Errorf("read journal object %s: %w", o.Label(f.chain), err)
	}
	return buf.Bytes(), nil
}

// take waits for object i and returns a reader of its stored bytes.
func (f *fetcher) take(ctx context.Context, i int) (io.ReadCloser, error) {
	select {
	case r := <-f.slots[i]:
		f.release <- r.size
		if r.err != nil {
			return nil, r.err
		}
		if r.stream {
			return f.s.open(ctx, f.chain, f.objs[i])
		}
		return &bufferReader{Reader: bytes.NewReader(r.data), data: r.data}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// buffers holds the buffers of objects the reader is done with, for the
// next fetches (*[]byte, length 0).
var buffers sync.Pool

// getBuffer returns an empty buffer of at least n bytes of capacity. It
// takes no pooled buffer more than twice as large: the prefetch budget
// counts objects by their size, not by their buffer's.
func getBuffer(n int) []byte {
	if p, ok := buffers.Get().(*[]byte); ok && cap(*p) >= n && cap(*p) <= 2*n {
		return (*p)[:0]
	}
	return make([]byte, 0, n)
}

// bufferReader reads a fetched object; Close gives its buffer back.
type bufferReader struct {
	*bytes.Reader
	data []byte
}

func (b *bufferReader) Close() error {
	if b.data != nil {
		d := b.data[:0]
		buffers.Put(&d)
		b.data = nil
		b.Reader = bytes.NewReader(nil)
	}
	return nil
}

func (f *fetcher) stop() { f.cancel(); <-f.done }

// open opens the stored bytes of o.
func (s *Store) open(ctx context.Context, chainID string, o chain.Object) (io.ReadCloser, error) {
	name := o.Name
	if o.Legacy != nil {
		name = o.Legacy.Payload
	}
	rc, err := s.b.Get(ctx, path.Join(s.Dir(chainID), name))
	if errors.Is(err, storage.ErrNotFound) {
		if o.Legacy != nil {
			// A framing-1 payload is removed after its manifest: check
			// whether the manifest went too (a roll-up took it in).
			if _, serr := s.b.Stat(ctx, path.Join(s.Dir(chainID), o.Name)); errors.Is(serr, storage.ErrNotFound) {
				return nil, &goneError{o.Label(chainID)}
			}
			return nil, fmt.Errorf("%w: journal segment %s: its payload %s is missing from the repository", format.ErrIntegrity, o.Legacy.ID, o.Legacy.Payload)
		}
		return nil, &goneError{o.Label(chainID)}
	}
	if err != nil {
		return nil, fmt.Errorf("read journal object %s: %w", o.Label(chainID), err)
	}
	return rc, nil
}

// Verify decodes the stored bytes of object o of chainID with every check
// a restore makes. An encrypted object needs a matching identity in ids;
// without one the error wraps format.ErrKey.
func (s *Store) Verify(chainID, clusterID string, o chain.Object, stored []byte, ids []age.Identity) error {
	cur := o.Start - 1
	_, err := s.readObject(&Plan{Chain: chainID, ClusterID: clusterID}, o, bytes.NewReader(stored), ids, &cur, func(*codec.Record) error { return nil })
	return err
}

// ReadAll returns the stored bytes of object o of chainID.
func (s *Store) ReadAll(ctx context.Context, chainID string, o chain.Object) ([]byte, error) {
	f := &fetcher{s: s, chain: chainID}
	return f.get(ctx, o)
}
