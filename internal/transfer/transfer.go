package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
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
	Copied, Skipped int   // segments
	Bytes           int64 // stored bytes copied
	// Break is where the source chain cannot be followed (a gap or a
	// damaged segment): nothing after it was copied.
	Break error
}

// CopyJournal copies the journal segments of backup m's chain that dst
// lacks, oldest first, each payload checked against its manifest (and
// decoded, when unencrypted or ids open it) before the destination manifest
// is written. It stops at a break in the source chain; segments are small,
// so each is held in memory while checked.
func CopyJournal(ctx context.Context, src, dst *repo.Repo, m *format.Manifest, ids []age.Identity) (JournalResult, error) {
	var res JournalResult
	cov, err := src.Coverage(ctx, m)
	if err != nil {
		return res, err
	}
	res.Break = cov.Break
	have := map[int64]bool{}
	starts, err := dst.SegmentStarts(ctx, m.ID)
	if err != nil {
		return res, fmt.Errorf("destination: %w", err)
	}
	for _, s := range starts {
		have[s] = true
	}
	for _, s := range cov.Segments {
		if have[s.Journal.Start] {
			res.Skipped++
			continue
		}
		rc, err := src.OpenSegmentPayload(ctx, s)
		if err != nil {
			return res, err
		}
		body, err := io.ReadAll(io.LimitReader(rc, s.StoredSize+1))
		rc.Close()
		if err != nil {
			return res, fmt.Errorf("read journal segment %s: %w", s.ID, err)
		}
		sum := sha256.Sum256(body)
		if int64(len(body)) != s.StoredSize || hex.EncodeToString(sum[:]) != s.StoredSHA256 {
			return res, fmt.Errorf("%w: journal segment %s: source payload does not match its manifest", format.ErrIntegrity, s.ID)
		}
		if !s.Encrypted() || len(ids) > 0 {
			d, err := format.NewDecoder(bytes.NewReader(body), s, ids)
			if err == nil {
				_, err = io.Copy(io.Discard, d)
				d.Close()
			}
			if err != nil {
				return res, fmt.Errorf("journal segment %s: %w", s.ID, err)
			}
		}
		err = dst.PutSegmentPayload(ctx, m.ID, s.Payload, bytes.NewReader(body))
		if err != nil && !errors.Is(err, storage.ErrExists) { // exists: an interrupted copy of the same bytes
			return res, fmt.Errorf("copy journal segment %s: %w", s.ID, err)
		}
		cs := *s
		cs.Cluster = dst.Cluster()
		if err := dst.PutSegmentManifest(ctx, &cs); err != nil && !errors.Is(err, storage.ErrExists) {
			return res, err
		}
		res.Copied++
		res.Bytes += s.StoredSize
	}
	return res, nil
}
