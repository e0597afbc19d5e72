package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Journal layout (docs/format.md, "Journal segments"):
//
//	clusters/<cluster>/journal/<chain>/<start>.manifest.json
//	clusters/<cluster>/journal/<chain>/<start>-<end>-<nonce>.jrnl.zst[.age]
//
// <chain> is the ID of the full snapshot the chain starts from; <start> and
// <end> are revisions written as 19 decimal digits so that names sort in
// revision order. The manifest is the commit point and is create-only: of
// two writers sealing a segment at the same start revision, exactly one
// wins; the other learns the winner's end revision and goes on after it.

// RevDigits is the width of revisions in journal object names.
const RevDigits = 19

func (r *Repo) journalRoot() string { return path.Join("clusters", r.cluster, "journal") }

// JournalDir is the directory of one chain's segments.
func (r *Repo) JournalDir(chain string) string { return path.Join(r.journalRoot(), chain) }

// SegmentID names a segment in messages and in its manifest's id field.
func SegmentID(chain string, start int64) string {
	return fmt.Sprintf("%s/%0*d", chain, RevDigits, start)
}

// SegmentManifestName is the object name of a segment's manifest.
func (r *Repo) SegmentManifestName(chain string, start int64) string {
	return path.Join(r.JournalDir(chain), fmt.Sprintf("%0*d.manifest.json", RevDigits, start))
}

// SegmentPayloadBase is a segment payload's name relative to its chain's
// directory. nonce makes payloads of competing writers distinct.
func SegmentPayloadBase(start, end int64, nonce string, encrypted bool) string {
	b := fmt.Sprintf("%0*d-%0*d-%s.jrnl.zst", RevDigits, start, RevDigits, end, nonce)
	if encrypted {
		b += ".age"
	}
	return b
}

// PutSegmentPayload stores a segment payload (create-only).
func (r *Repo) PutSegmentPayload(ctx context.Context, chain, base string, src io.Reader) error {
	return r.b.Put(ctx, path.Join(r.JournalDir(chain), base), src)
}

// RemoveSegmentPayload removes a payload no manifest will reference.
func (r *Repo) RemoveSegmentPayload(ctx context.Context, chain, base string) error {
	return r.b.Remove(ctx, path.Join(r.JournalDir(chain), base))
}

// PutSegmentManifest publishes a segment. An error wrapping
// storage.ErrExists means another writer sealed a segment at this start
// revision first.
func (r *Repo) PutSegmentManifest(ctx context.Context, m *format.Manifest) error {
	if m.Journal == nil {
		return fmt.Errorf("segment manifest without journal range")
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	name := r.SegmentManifestName(m.Journal.Chain, m.Journal.Start)
	if err := r.b.Put(ctx, name, strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("write journal manifest %s: %w", m.ID, err)
	}
	return nil
}

// ReadSegmentManifest reads and checks the manifest of the segment of chain
// that starts at start.
func (r *Repo) ReadSegmentManifest(ctx context.Context, chain string, start int64) (*format.Manifest, error) {
	id := SegmentID(chain, start)
	rc, err := r.b.Get(ctx, r.SegmentManifestName(chain, start))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: journal segment %s", ErrNoBackup, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read journal manifest %s: %w", id, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read journal manifest %s: %w", id, err)
	}
	m, err := format.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("journal segment %s: %w", id, err)
	}
	if m.Kind != format.KindJournal || m.Journal == nil || m.ID != id ||
		m.Journal.Chain != chain || m.Journal.Start != start || m.Journal.End < start {
		return nil, fmt.Errorf("%w: journal manifest %s does not describe that segment", format.ErrIntegrity, id)
	}
	return m, nil
}

// OpenSegmentPayload opens the stored payload of segment manifest m.
func (r *Repo) OpenSegmentPayload(ctx context.Context, m *format.Manifest) (io.ReadCloser, error) {
	if m.Payload == "" || strings.Contains(m.Payload, "/") {
		return nil, fmt.Errorf("%w: journal segment %s: manifest names a bad payload %q", format.ErrIntegrity, m.ID, m.Payload)
	}
	rc, err := r.b.Get(ctx, path.Join(r.JournalDir(m.Journal.Chain), m.Payload))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: journal segment %s: its payload %s is missing from the repository", format.ErrIntegrity, m.ID, m.Payload)
	}
	return rc, err
}

// SegmentStarts lists the start revisions of the published segments of
// chain, in increasing order.
func (r *Repo) SegmentStarts(ctx context.Context, chain string) ([]int64, error) {
	var starts []int64
	prefix := r.JournalDir(chain) + "/"
	err := r.b.List(ctx, prefix, func(i storage.Info) error {
		base := strings.TrimPrefix(i.Name, prefix)
		if s, ok := strings.CutSuffix(base, ".manifest.json"); ok && len(s) == RevDigits {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
				starts = append(starts, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal of %s: %w", chain, err)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	return starts, nil
}

// Segments reads every segment manifest of chain, in revision order. A
// damaged manifest is an error: a chain with a damaged segment cannot be
// replayed past it.
func (r *Repo) Segments(ctx context.Context, chain string) ([]*format.Manifest, error) {
	starts, err := r.SegmentStarts(ctx, chain)
	if err != nil {
		return nil, err
	}
	// Manifests are small and a chain holds up to one per flush interval:
	// read them concurrently.
	ms := make([]*format.Manifest, len(starts))
	errs := make([]error, len(starts))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, s := range starts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ms[i], errs[i] = r.ReadSegmentManifest(ctx, chain, s)
		}()
	}
	wg.Wait()
	for i := range ms {
		if errs[i] != nil {
			return ms[:i], errs[i]
		}
	}
	return ms, nil
}

// Chains lists the chains (snapshot IDs) that have a journal directory
// with at least one object.
func (r *Repo) Chains(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	prefix := r.journalRoot() + "/"
	err := r.b.List(ctx, prefix, func(i storage.Info) error {
		rest := strings.TrimPrefix(i.Name, prefix)
		chain, _, ok := strings.Cut(rest, "/")
		if ok && format.ValidID(chain) && !seen[chain] {
			seen[chain] = true
			out = append(out, chain)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journals: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// Coverage reads the segments of snapshot m's chain and follows them
// (chain.Check). A damaged segment manifest ends the coverage like a gap:
// it is reported in Coverage.Break. The error is for failures to read the
// repository at all.
func (r *Repo) Coverage(ctx context.Context, m *format.Manifest) (chain.Coverage, error) {
	segs, err := r.Segments(ctx, m.ID)
	if err != nil && !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
		return chain.Coverage{}, err
	}
	cov := chain.Check(m.Revision, segs)
	if err != nil && cov.Break == nil {
		cov.Break = err // the segment after the readable ones is damaged
	}
	return cov, nil
}
