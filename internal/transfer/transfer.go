package transfer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Result of copying one backup.
type Result struct {
	ID       string
	Skipped  bool // already in the destination
	Verified string
}

// Copy copies backup m from src to dst.
func Copy(ctx context.Context, src, dst *repo.Repo, m *format.Manifest, ids []age.Identity) (Result, error) {
	res := Result{ID: m.ID}
	if _, err := dst.ReadManifest(ctx, m.ID); err == nil {
		res.Skipped = true
		return res, nil
	} else if !errors.Is(err, repo.ErrNoBackup) {
		return res, fmt.Errorf("destination: %w", err)
	}
	// A payload without a manifest is the orphan of an interrupted copy or
	// backup: it was never listed, so it can be replaced.
	payload := dst.PayloadName(m.ID, m.Encrypted())
	if err := dst.Backend().Remove(ctx, payload); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return res, fmt.Errorf("destination: remove orphan payload: %w", err)
	}

	rc, err := src.OpenPayload(ctx, m)
	if err != nil {
		return res, err
	}
	defer rc.Close()
	vr := &verifyingReader{r: rc, h: sha256.New(), m: m}
	res.Verified = "stored size and sha256"
	if !m.Encrypted() || len(ids) > 0 {
		pr, pw := io.Pipe()
		vr.tee = pw
		vr.decoded = make(chan error, 1)
		go func() {
			d, err := format.NewDecoder(pr, m, ids)
			if err == nil {
				_, err = io.Copy(io.Discard, d)
				d.Close()
			}
			pr.CloseWithError(err) // a failed decode unblocks the copy's writes
			vr.decoded <- err
		}()
		res.Verified = "every checksum and etcd's hash"
	}
	if err := dst.PutPayload(ctx, m.ID, m.Encrypted(), vr); err != nil {
		vr.abort(err)
		return res, fmt.Errorf("copy %s: %w", m.ID, err)
	}
	cm := *m
	cm.Cluster = dst.Cluster()
	if err := dst.PutManifest(ctx, &cm); err != nil {
		return res, err
	}
	return res, nil
}

// verifyingReader passes the stored bytes through, and at EOF reports an
// integrity error instead of io.EOF unless every check passed, so the
// destination upload is aborted rather than completed.
type verifyingReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64
	m       *format.Manifest
	tee     *io.PipeWriter
	decoded chan error
	done    bool
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.h.Write(p[:n])
		v.n += int64(n)
		if v.tee != nil {
			v.tee.Write(p[:n])
		}
	}
	if err == io.EOF {
		if cerr := v.check(); cerr != nil {
			return n, cerr
		}
		v.done = true
		return n, io.EOF
	}
	if err != nil {
		v.abort(err)
	}
	return n, err
}

func (v *verifyingReader) check() error {
	if v.tee != nil {
		v.tee.Close()
		err := <-v.decoded
		v.tee = nil
		if err != nil {
			return err
		}
	}
	if v.n != v.m.StoredSize || hex.EncodeToString(v.h.Sum(nil)) != v.m.StoredSHA256 {
		return fmt.Errorf("%w: backup %s: source payload does not match its manifest", format.ErrIntegrity, v.m.ID)
	}
	return nil
}

func (v *verifyingReader) abort(err error) {
	if v.tee != nil {
		v.tee.CloseWithError(err)
		<-v.decoded
		v.tee = nil
	}
}

// JournalResult tells what CopyJournal did.
type JournalResult struct {
	Copied, Skipped int   // objects
	Bytes           int64 // stored bytes copied
	// Break is where the source chain cannot be followed (a gap or a
	// damaged segment): nothing after it was copied.
	Break error
}

// CopyJournal copies the journal objects of backup m's chain that dst
// lacks, oldest first, each checked before it is written: decoded with
// every check of a restore when unencrypted or ids open it, else (an
// encrypted object without a key) a framing-1 segment against its
// manifest's checksums and a framing-2 object as it is (its checks need
// the key). An object is copied unless one object at dst already holds all
// its revisions: so a roll-up at the source is copied once, and the pieces
// it replaces at the destination become redundant there (chain.Redundant:
// prune removes them). It stops at a break in the
// source chain; objects are read into memory one at a time (segments are
// small; a roll-up is at most rollup.DefaultMaxBytes by default).
func CopyJournal(ctx context.Context, src, dst *repo.Repo, m *format.Manifest, ids []age.Identity) (JournalResult, error) {
	var res JournalResult
	ss, ds := store.New(src), store.New(dst)
	cov, err := ss.Coverage(ctx, m)
	if err != nil {
		return res, err
	}
	res.Break = cov.Break
	dl, err := ds.List(ctx, m.ID)
	if err != nil {
		return res, fmt.Errorf("destination: %w", err)
	}
	have := newHeld(dl.Objects)
	for _, o := range cov.Objects {
		if have.covers(o) {
			res.Skipped++
			continue
		}
		body, err := ss.ReadAll(ctx, m.ID, o)
		if err != nil {
			return res, err
		}
		label := o.Label(m.ID)
		if l := o.Legacy; l != nil {
			sum := sha256.Sum256(body)
			if int64(len(body)) != l.StoredSize || hex.EncodeToString(sum[:]) != l.StoredSHA256 {
				return res, fmt.Errorf("%w: journal segment %s: source payload does not match its manifest", format.ErrIntegrity, l.ID)
			}
		}
		if !o.Encrypted || len(ids) > 0 {
			if err := ss.Verify(m.ID, m.ClusterID, o, body, ids); err != nil {
				return res, err
			}
		}
		if err := ds.PutCopy(ctx, m.ID, o, body); err != nil {
			return res, fmt.Errorf("copy journal object %s: %w", label, err)
		}
		res.Copied++
		res.Bytes += int64(len(body))
	}
	return res, nil
}

// held answers whether one object of a chain holds a given range.
type held struct {
	starts, maxEnd []int64 // sorted by start; maxEnd[i] = max end of objects 0..i
}

func newHeld(objs []chain.Object) held {
	var h held
	var ok []chain.Object
	for _, o := range objs {
		if o.Err == nil {
			ok = append(ok, o)
		}
	}
	slices.SortFunc(ok, func(a, b chain.Object) int { return cmp.Compare(a.Start, b.Start) })
	end := int64(-1)
	for _, o := range ok {
		end = max(end, o.End)
		h.starts = append(h.starts, o.Start)
		h.maxEnd = append(h.maxEnd, end)
	}
	return h
}

// covers reports whether one object holds every revision of o.
func (h held) covers(o chain.Object) bool {
	i, _ := slices.BinarySearch(h.starts, o.Start+1) // objects before i start at or before o
	return i > 0 && h.maxEnd[i-1] >= o.End
}
