package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"

	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// Target says how far a restore goes.
type Target struct {
	Revision  int64     // --to-revision: exactly this revision
	Time      time.Time // --to-time: the last revision the agent received at or before it
	NoJournal bool      // --no-journal: the snapshot only
}

func (t Target) set() bool { return t.Revision > 0 || !t.Time.IsZero() }

// JournalPlan is the replay part of a restore: the segments of one chain,
// replayed on top of its snapshot up to a revision or a time.
type JournalPlan struct {
	Chain      string
	Segments   []*format.Manifest
	ToRevision int64     // 0: to the end of Segments (or ToTime)
	ToTime     time.Time // zero: no time limit
	// End and EndTime are where the unbroken journal ends.
	End     int64
	EndTime time.Time
	// Note, when set, is something the operator must be told about the
	// point reached.
	Note string
	// ClusterID is the snapshot's cluster: every segment must be of it.
	ClusterID string
}

// Resolve picks the snapshot, and the journal to replay on it, for ref
// ("latest", "" or an ID) and t:
//   - an explicit ID without a target restores that snapshot alone;
//   - "latest" without a target restores the newest snapshot and replays its
//     whole journal; a chain with a gap is refused rather than cut short;
//   - --to-revision N: the newest snapshot that surely holds no revision past
//     N (its manifest's stream_revision <= N) whose journal reaches N;
//   - --to-time T: the newest snapshot finished at or before T, and its
//     journal up to the last revision received at or before T.
//
// Errors wrap repo.ErrNoBackup (nothing covers the target) or
// format.ErrIntegrity (a gap, an overlap or a damaged segment in the way).
func Resolve(ctx context.Context, r *repo.Repo, ref string, sel repo.Selector, t Target) (*format.Manifest, *JournalPlan, error) {
	if t.NoJournal && t.set() {
		return nil, nil, specErr("--no-journal cannot be combined with --to-revision or --to-time")
	}
	if t.Revision > 0 && !t.Time.IsZero() {
		return nil, nil, specErr("give --to-revision or --to-time, not both")
	}
	if ref != "" && ref != "latest" {
		m, err := r.Find(ctx, ref, sel)
		if err != nil || !t.set() {
			return m, nil, err
		}
		// The next newer snapshot tells --to-time whether the end of m's
		// journal is the state at T.
		var newer *format.Manifest
		if ids, err := r.IDs(ctx); err == nil {
			for i := len(ids) - 1; i >= 0; i-- {
				if ids[i] > m.ID {
					if nm, err := r.ReadManifest(ctx, ids[i]); err == nil {
						newer = nm
						break
					}
				}
			}
		}
		return planFor(ctx, r, m, newer, t)
	}
	if t.NoJournal {
		m, err := r.Find(ctx, ref, sel)
		return m, nil, err
	}
	entries, err := r.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	var cands []*format.Manifest // intact snapshots, newest first
	for _, e := range entries {
		if e.Err != nil {
			if sel.OnSkip != nil {
				sel.OnSkip(e.ID, e.Err)
			}
			continue
		}
		if sel.Member == "" || e.M.MemberName == sel.Member {
			cands = append(cands, e.M)
		}
	}
	if len(cands) == 0 {
		m, err := r.Find(ctx, ref, sel) // for its error message
		if err == nil {
			return m, nil, nil
		}
		return nil, nil, err
	}
	switch {
	case t.Revision > 0:
		var firstErr error
		for i, m := range cands {
			if upper(m) > t.Revision {
				continue
			}
			var newer *format.Manifest
			if i > 0 {
				newer = cands[i-1]
			}
			m, p, err := planFor(ctx, r, m, newer, t)
			if err == nil {
				return m, p, nil
			}
			if firstErr == nil {
				firstErr = err
			}
			if !errors.Is(err, repo.ErrNoBackup) {
				return nil, nil, err
			}
		}
		if firstErr != nil {
			return nil, nil, firstErr
		}
		oldest := cands[len(cands)-1]
		return nil, nil, fmt.Errorf("%w: revision %d is older than every backup (the oldest, %s, holds revision %d or later)", repo.ErrNoBackup, t.Revision, oldest.ID, oldest.Revision)
	case !t.Time.IsZero():
		for i, m := range cands {
			if m.Finished.After(t.Time) {
				continue
			}
			var newer *format.Manifest
			if i > 0 {
				newer = cands[i-1]
			}
			// A chain starts by catching up from its snapshot's revision,
			// and those records carry the time they were caught up, not
			// when they happened. When this chain's first record is after
			// T, the previous chain, which saw those revisions as they
			// happened, is the one to use if it reaches T.
			if i+1 < len(cands) {
				if cov, err := r.Coverage(ctx, m); err == nil && cov.FirstTime.After(t.Time) {
					prev := cands[i+1]
					if pcov, err := r.Coverage(ctx, prev); err == nil && !pcov.LastTime.Before(t.Time) {
						return prev, journalPlan(prev, pcov, 0, t.Time), nil
					}
				}
			}
			return planFor(ctx, r, m, newer, t)
		}
		oldest := cands[len(cands)-1]
		return nil, nil, fmt.Errorf("%w: %s is before every backup (the oldest, %s, finished at %s)", repo.ErrNoBackup,
			t.Time.UTC().Format(time.RFC3339), oldest.ID, oldest.Finished.UTC().Format(time.RFC3339))
	}
	// Latest: the newest snapshot and its whole journal. Right after a new
	// snapshot its chain may still be empty while the previous chain already
	// reaches further: then the previous one is taken.
	newest := cands[0]
	cov, err := r.Coverage(ctx, newest)
	if err != nil {
		return nil, nil, err
	}
	if len(cands) > 1 && len(cov.Segments) == 0 {
		prev := cands[1]
		pcov, err := r.Coverage(ctx, prev)
		if err == nil && pcov.Break == nil && pcov.End > upper(newest) {
			return prev, journalPlan(prev, pcov, 0, time.Time{}), nil
		}
	}
	if cov.Break != nil {
		return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to revision %d: restore --to-revision %d, or the snapshot alone with --no-journal",
			cov.Break, newest.ID, cov.End, cov.End)
	}
	if len(cov.Segments) == 0 {
		return newest, nil, nil
	}
	return newest, journalPlan(newest, cov, 0, time.Time{}), nil
}

// upper is a revision the snapshot of m surely does not exceed.
func upper(m *format.Manifest) int64 {
	if m.StreamRevision > 0 {
		return m.StreamRevision
	}
	return m.Revision
}

func journalPlan(m *format.Manifest, cov chain.Coverage, to int64, at time.Time) *JournalPlan {
	return &JournalPlan{Chain: m.ID, Segments: cov.Segments, ToRevision: to, ToTime: at, End: cov.End, EndTime: cov.LastTime, ClusterID: m.ClusterID}
}

// planFor plans replaying m's chain to t. newer is the next newer snapshot,
// if any (for --to-time: whether the chain's end means "nothing changed").
func planFor(ctx context.Context, r *repo.Repo, m, newer *format.Manifest, t Target) (*format.Manifest, *JournalPlan, error) {
	cov, err := r.Coverage(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	if t.Revision > 0 {
		if upper(m) > t.Revision {
			return nil, nil, fmt.Errorf("%w: backup %s may hold revisions up to %d, after %d: choose an older backup or 'latest'", repo.ErrNoBackup, m.ID, upper(m), t.Revision)
		}
		if cov.End >= t.Revision {
			return m, journalPlan(m, cov, t.Revision, time.Time{}), nil
		}
		if cov.Break != nil {
			return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to revision %d, so revision %d cannot be restored exactly",
				cov.Break, m.ID, cov.End, t.Revision)
		}
		return nil, nil, fmt.Errorf("%w: the journal of backup %s ends at revision %d, before %d (see 'etcd-backup list' for what each chain covers)",
			repo.ErrNoBackup, m.ID, cov.End, t.Revision)
	}
	// --to-time.
	if !cov.LastTime.IsZero() && !cov.LastTime.Before(t.Time) {
		return m, journalPlan(m, cov, 0, t.Time), nil
	}
	// The journal ends before T. That is the state at T when nothing changed
	// after its end: no newer snapshot exists (the agent saw no change since),
	// or the newer snapshot starts at or before the journal's end.
	if cov.Break != nil {
		return nil, nil, fmt.Errorf("%w (chain of backup %s); the journal is unbroken up to %s (revision %d): restore --to-time %s or earlier",
			cov.Break, m.ID, fmtTime(cov.LastTime), cov.End, fmtTime(cov.LastTime))
	}
	if newer != nil && !newer.Finished.After(t.Time) {
		return nil, nil, fmt.Errorf("%w: %s is after the next backup %s (finished at %s): restore it, or give no backup ID, to reach that time",
			repo.ErrNoBackup, fmtTime(t.Time), newer.ID, fmtTime(newer.Finished))
	}
	if newer == nil {
		p := journalPlan(m, cov, 0, t.Time)
		p.Note = fmt.Sprintf("the journal's last record was received at %s (revision %d); this is the state then. If the agent was not journaling after that, later changes are not in the repository",
			fmtTime(cov.LastTime), cov.End)
		return m, p, nil
	}
	if newer.Revision <= cov.End {
		return m, journalPlan(m, cov, 0, t.Time), nil
	}
	return nil, nil, fmt.Errorf("%w: no journal covers %s: the journal of backup %s ends at %s (revision %d) and the next backup %s finished at %s; restore --to-time %s, or that backup",
		repo.ErrNoBackup, fmtTime(t.Time), m.ID, fmtTime(cov.LastTime), cov.End, newer.ID, fmtTime(newer.Finished), fmtTime(cov.LastTime))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "its start"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// segmentSource reads the records of a plan's segments in order, checking
// each segment's payload against its manifest and its records against its
// revision range.
type segmentSource struct {
	ctx  context.Context
	r    *repo.Repo
	ids  []age.Identity
	plan *JournalPlan

	i   int // next segment
	cur *format.Manifest
	rc  io.ReadCloser
	dec *format.Decoder
	rd  *codec.Reader
	// last revision returned from cur
	last int64
	done bool
}

func newSegmentSource(ctx context.Context, r *repo.Repo, p *JournalPlan, ids []age.Identity) *segmentSource {
	return &segmentSource{ctx: ctx, r: r, ids: ids, plan: p}
}

func (s *segmentSource) closeCur() {
	if s.dec != nil {
		s.dec.Close()
	}
	if s.rc != nil {
		s.rc.Close()
	}
	s.cur, s.rc, s.dec, s.rd = nil, nil, nil, nil
}

func (s *segmentSource) Close() { s.closeCur() }

// Next implements replay.Source.
func (s *segmentSource) Next() (*codec.Record, error) {
	for {
		if s.done {
			return nil, io.EOF
		}
		if s.rd == nil {
			if s.i >= len(s.plan.Segments) {
				s.done = true
				return nil, io.EOF
			}
			m := s.plan.Segments[s.i]
			s.i++
			if s.plan.ClusterID != "" && m.ClusterID != "" && m.ClusterID != s.plan.ClusterID {
				return nil, fmt.Errorf("%w: journal segment %s was written for cluster %s, its snapshot is of cluster %s", format.ErrIntegrity, m.ID, m.ClusterID, s.plan.ClusterID)
			}
			rc, err := s.r.OpenSegmentPayload(s.ctx, m)
			if err != nil {
				return nil, err
			}
			dec, err := format.NewDecoder(rc, m, s.ids)
			if err != nil {
				rc.Close()
				return nil, fmt.Errorf("journal segment %s: %w", m.ID, err)
			}
			s.cur, s.rc, s.dec, s.rd, s.last = m, rc, dec, codec.NewReader(dec), 0
		}
		rec, err := s.rd.Next()
		if err == io.EOF {
			if s.last != s.cur.Journal.End {
				return nil, fmt.Errorf("%w: journal segment %s should end at revision %d, its last record is %d", format.ErrIntegrity, s.cur.ID, s.cur.Journal.End, s.last)
			}
			s.closeCur()
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("journal segment %s: %w", s.cur.ID, err)
		}
		if rec.Revision < s.cur.Journal.Start || rec.Revision > s.cur.Journal.End {
			return nil, fmt.Errorf("%w: journal segment %s covers revisions %d..%d but holds revision %d", format.ErrIntegrity, s.cur.ID, s.cur.Journal.Start, s.cur.Journal.End, rec.Revision)
		}
		// etcd gives every revision at least one event, so a segment holds
		// each revision of its range, in order.
		if want := max(s.last+1, s.cur.Journal.Start); rec.Revision != want {
			return nil, fmt.Errorf("%w: journal segment %s is missing revisions %d..%d", format.ErrIntegrity, s.cur.ID, want, rec.Revision-1)
		}
		s.last = rec.Revision
		if !s.plan.ToTime.IsZero() && rec.Time.After(s.plan.ToTime) {
			s.done = true
			return nil, io.EOF
		}
		return rec, nil
	}
}

// Chain returns the plan that replays all of m's unbroken journal (nil when
// m has none) and the break after it, if any.
func Chain(ctx context.Context, r *repo.Repo, m *format.Manifest) (*JournalPlan, error) {
	cov, err := r.Coverage(ctx, m)
	if err != nil {
		return nil, err
	}
	var p *JournalPlan
	if len(cov.Segments) > 0 {
		p = journalPlan(m, cov, 0, time.Time{})
	}
	return p, cov.Break
}

// ReadJournal reads every record of p's segments in order, with every check
// of docs/format.md, and calls fn with each. An error from fn stops it.
func ReadJournal(ctx context.Context, r *repo.Repo, p *JournalPlan, ids []age.Identity, fn func(*codec.Record) error) error {
	src := newSegmentSource(ctx, r, p, ids)
	defer src.Close()
	for {
		rec, err := src.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}
