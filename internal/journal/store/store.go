package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Store is the journal of one repository cluster.
type Store struct {
	r *repo.Repo
	b storage.Backend
}

// New returns the journal store of r.
func New(r *repo.Repo) *Store { return &Store{r: r, b: r.Backend()} }

// Repo is the repository the store is part of.
func (s *Store) Repo() *repo.Repo { return s.r }

func (s *Store) root() string { return path.Join("clusters", s.r.Cluster(), "journal") }

// Dir is the directory of one chain's objects.
func (s *Store) Dir(chainID string) string { return path.Join(s.root(), chainID) }

// legacyDigits is the width of revisions in framing-1 names.
const legacyDigits = 19

// Listing is what one chain directory holds.
type Listing struct {
	Chain string
	// Objects are the chain's framing-2 objects and framing-1 segments
	// (those with a manifest; a damaged manifest gives an Object with Err).
	Objects []chain.Object
	// Other are names that are none of those: framing-1 payloads without a
	// manifest, leftovers of interrupted writes. prune judges them.
	Other []storage.Info
	// payloads of framing-1 segments by name, for Other
	legacyPayloads map[string]storage.Info
}

// Chains lists the chains (snapshot IDs) that have at least one object.
func (s *Store) Chains(ctx context.Context) ([]string, error) {
	all, err := s.ListAll(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for id := range all {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// List lists one chain (one LIST request, and a GET per framing-1 manifest).
func (s *Store) List(ctx context.Context, chainID string) (*Listing, error) {
	l := &Listing{Chain: chainID}
	var manifests []string
	prefix := s.Dir(chainID) + "/"
	err := s.b.List(ctx, prefix, func(i storage.Info) error {
		l.add(strings.TrimPrefix(i.Name, prefix), i, &manifests)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal of %s: %w", chainID, err)
	}
	if err := s.readLegacy(ctx, l, manifests); err != nil {
		return nil, err
	}
	return l, nil
}

// ListAll lists every chain with one LIST of the journal root. With
// legacy false, framing-1 manifests are not read (their segments are then
// missing from Objects; use it only to learn the chains' names).
func (s *Store) ListAll(ctx context.Context, legacy bool) (map[string]*Listing, error) {
	out := map[string]*Listing{}
	manifests := map[string][]string{}
	prefix := s.root() + "/"
	err := s.b.List(ctx, prefix, func(i storage.Info) error {
		id, base, ok := strings.Cut(strings.TrimPrefix(i.Name, prefix), "/")
		if !ok || !format.ValidID(id) || strings.Contains(base, "/") {
			return nil
		}
		l := out[id]
		if l == nil {
			l = &Listing{Chain: id}
			out[id] = l
		}
		ms := manifests[id]
		l.add(base, i, &ms)
		manifests[id] = ms
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journals: %w", err)
	}
	if legacy {
		for id, l := range out {
			if err := s.readLegacy(ctx, l, manifests[id]); err != nil {
				return nil, err
			}
		}
	} else {
		for _, l := range out {
			l.finish()
		}
	}
	return out, nil
}

func (l *Listing) add(base string, i storage.Info, manifests *[]string) {
	if o, ok := chain.ParseName(base); ok {
		o.Size, o.ModTime = i.Size, i.ModTime
		l.Objects = append(l.Objects, o)
		return
	}
	if st, ok := strings.CutSuffix(base, ".manifest.json"); ok && len(st) == legacyDigits {
		if n, err := strconv.ParseInt(st, 10, 64); err == nil && n > 0 {
			*manifests = append(*manifests, base)
			return
		}
	}
	if l.legacyPayloads == nil {
		l.legacyPayloads = map[string]storage.Info{}
	}
	l.legacyPayloads[base] = i
}

// finish moves the names no object claims into Other.
func (l *Listing) finish() {
	named := map[string]bool{}
	for _, o := range l.Objects {
		if o.Legacy != nil {
			named[o.Legacy.Payload] = true
		}
	}
	for base, i := range l.legacyPayloads {
		if !named[base] {
			l.Other = append(l.Other, i)
		}
	}
	sort.Slice(l.Other, func(a, b int) bool { return l.Other[a].Name < l.Other[b].Name })
	sort.Slice(l.Objects, func(a, b int) bool {
		x, y := l.Objects[a], l.Objects[b]
		if x.Start != y.Start {
			return x.Start < y.Start
		}
		return x.Name < y.Name
	})
	l.legacyPayloads = nil
}

// readLegacy reads the framing-1 manifests of l (concurrently: a chain
// written before framing 2 holds one per flush interval).
func (s *Store) readLegacy(ctx context.Context, l *Listing, names []string) error {
	objs := make([]chain.Object, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, base := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			objs[i], errs[i] = s.readManifest(ctx, l.Chain, base)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return err
		}
		l.Objects = append(l.Objects, objs[i])
	}
	l.finish()
	return nil
}

// readManifest reads and checks a framing-1 segment manifest. A damaged
// one gives an Object with Err; the error is for a failure to read.
func (s *Store) readManifest(ctx context.Context, chainID, base string) (chain.Object, error) {
	start, _ := strconv.ParseInt(strings.TrimSuffix(base, ".manifest.json"), 10, 64)
	id := fmt.Sprintf("%s/%0*d", chainID, legacyDigits, start)
	rc, err := s.b.Get(ctx, path.Join(s.Dir(chainID), base))
	if errors.Is(err, storage.ErrNotFound) {
		// Removed since the listing (prune, or a roll-up that took it in).
		return chain.Object{Name: base, Start: start, Err: fmt.Errorf("manifest %s is gone", id)}, nil
	}
	if err != nil {
		return chain.Object{}, fmt.Errorf("read journal manifest %s: %w", id, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return chain.Object{}, fmt.Errorf("read journal manifest %s: %w", id, err)
	}
	m, err := format.ParseManifest(data)
	if err == nil && (m.Kind != format.KindJournal || m.Journal == nil || m.ID != id ||
		m.Journal.Chain != chainID || m.Journal.Start != start || m.Journal.End < start ||
		m.Payload == "" || strings.Contains(m.Payload, "/")) {
		err = fmt.Errorf("%w: journal manifest %s does not describe that segment", format.ErrIntegrity, id)
	}
	if err != nil {
		return chain.Object{Name: base, Start: start, Err: err}, nil
	}
	return chain.FromManifest(base, m), nil
}

// Coverage lists the chain of snapshot m and follows it (chain.Cover).
// The error is for failures to read the repository at all.
// A listing is not a snapshot: one made while a roll-up publishes may miss
// the roll-up and pieces already removed, so a break is listed again before
// it is believed.
func (s *Store) Coverage(ctx context.Context, m *format.Manifest) (chain.Coverage, error) {
	var cov chain.Coverage
	for try := 0; try < 3; try++ {
		if try > 0 {
			select {
			case <-time.After(time.Duration(try) * 200 * time.Millisecond):
			case <-ctx.Done():
				return cov, ctx.Err()
			}
		}
		l, err := s.List(ctx, m.ID)
		if err != nil {
			return chain.Coverage{}, err
		}
		cov = chain.Cover(m.Revision, l.Objects)
		if cov.Break == nil {
			break
		}
	}
	return cov, nil
}

// Remove removes an object: for a framing-1 segment its manifest first,
// then its payload, so that a removal cut short leaves an orphan payload,
// never a manifest without its payload.
func (s *Store) Remove(ctx context.Context, chainID string, o chain.Object) error {
	dir := s.Dir(chainID)
	if o.Legacy != nil || o.Err != nil {
		if err := s.b.Remove(ctx, path.Join(dir, o.Name)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("remove journal manifest %s: %w", o.Label(chainID), err)
		}
		if o.Legacy == nil {
			return nil
		}
		if err := s.b.Remove(ctx, path.Join(dir, o.Legacy.Payload)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("remove journal payload %s: %w", o.Label(chainID), err)
		}
		return nil
	}
	if err := s.b.Remove(ctx, path.Join(dir, o.Name)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("remove journal object %s: %w", o.Label(chainID), err)
	}
	return nil
}

// Nonce returns 8 random hex digits for an object name.
func Nonce() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Encode writes the framing-2 object of the records fill writes (through
// w) to dst, zstd-compressed and, with recipients, age-encrypted, and
// returns its seal.
func Encode(dst io.Writer, chainID, clusterID string, recipients []format.Recipient, fill func(w *codec.Writer) error) (codec.Seal, error) {
	enc, err := format.NewEncoder(dst, format.EncoderOptions{Recipients: recipients, Concurrency: 1, NoTrailer: true})
	if err != nil {
		return codec.Seal{}, err
	}
	cw := codec.NewWriter(enc)
	if err := fill(cw); err != nil {
		return codec.Seal{}, err
	}
	seal, err := cw.Seal(chainID, clusterID)
	if err != nil {
		return codec.Seal{}, err
	}
	if _, err := enc.Close(); err != nil {
		return codec.Seal{}, err
	}
	return seal, nil
}

// Build encodes recs as one framing-2 object in memory and returns it with
// its name (a sealed segment of the writer: small).
func Build(recs []*codec.Record, chainID, clusterID string, recipients []format.Recipient) (chain.Object, []byte, error) {
	var buf bytes.Buffer
	seal, err := Encode(&buf, chainID, clusterID, recipients, func(w *codec.Writer) error {
		for _, r := range recs {
			if err := w.Write(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return chain.Object{}, nil, err
	}
	name := chain.Name(seal.Start, seal.End, seal.FirstTime, seal.LastTime, Nonce(), len(recipients) > 0)
	o, _ := chain.ParseName(name)
	o.Size = int64(buf.Len())
	return o, buf.Bytes(), nil
}

// Put stores object o of chainID with its bytes (create-only).
func (s *Store) Put(ctx context.Context, chainID string, o chain.Object, src io.Reader) error {
	if err := s.b.Put(ctx, path.Join(s.Dir(chainID), o.Name), src); err != nil {
		return fmt.Errorf("write journal object %s: %w", o.Label(chainID), err)
	}
	return nil
}

// PutCopy writes object o, read from another repository, into chainID:
// a framing-2 object under its name, a framing-1 segment as its payload and
// then its manifest (naming this repository's cluster). An object already
// there with the same bytes (an interrupted copy) is fine.
func (s *Store) PutCopy(ctx context.Context, chainID string, o chain.Object, stored []byte) error {
	if o.Legacy == nil {
		err := s.Put(ctx, chainID, o, bytes.NewReader(stored))
		if errors.Is(err, storage.ErrExists) {
			return nil // the name holds a random nonce: the same object
		}
		return err
	}
	m := *o.Legacy
	m.Cluster = s.r.Cluster()
	err := s.b.Put(ctx, path.Join(s.Dir(chainID), m.Payload), bytes.NewReader(stored))
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	err = s.b.Put(ctx, path.Join(s.Dir(chainID), o.Name), bytes.NewReader(b))
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return err
	}
	return nil
}
