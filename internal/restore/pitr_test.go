package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

var t0 = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

func testRepo(t *testing.T) *repo.Repo {
	t.Helper()
	d, err := local.New(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), d, "default")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// snap publishes a snapshot manifest (Resolve reads manifests only) taken at
// minute min, holding a revision in [rev, streamRev].
func snap(t *testing.T, r *repo.Repo, min int, rev, streamRev int64) *format.Manifest {
	t.Helper()
	at := t0.Add(time.Duration(min) * time.Minute)
	id := format.NewID(at)
	m := &format.Manifest{FormatVersion: format.Version, Kind: format.KindSnapshot, ID: id, Cluster: "default",
		Revision: rev, StreamRevision: streamRev, Created: at, Finished: at.Add(time.Second),
		Payload: repo.PayloadBase(id, false), Compression: format.CompressionZstd, Encryption: format.EncryptionNone}
	if err := r.PutManifest(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// segFunc publishes a journal segment of chain covering start..end,
// received from minute a to minute b.
type segFunc func(t *testing.T, r *repo.Repo, chain *format.Manifest, start, end int64, a, b float64)

func minutes(m float64) time.Time { return t0.Add(time.Duration(m * float64(time.Minute))) }

// segV1 writes a framing-1 segment (manifest and payload), as releases
// before framing 2 did.
func segV1(t *testing.T, r *repo.Repo, chain *format.Manifest, start, end int64, a, b float64) {
	t.Helper()
	putLegacySegment(t, r, chain.ID, records(start, end, minutes(a), minutes(b)))
}

// segV2 writes a framing-2 object, as the writer does.
func segV2(t *testing.T, r *repo.Repo, chain *format.Manifest, start, end int64, a, b float64) {
	t.Helper()
	putObject(t, r, chain.ID, records(start, end, minutes(a), minutes(b)))
}

// forFramings runs fn on repositories whose journals are of framing 1
// (written before framing 2: still read), of framing 2, and of both (a
// chain begun by an older release and continued by this one).
func forFramings(t *testing.T, fn func(t *testing.T, seg segFunc)) {
	for _, f := range []struct {
		name string
		seg  func() segFunc
	}{
		{"framing1", func() segFunc { return segV1 }},
		{"framing2", func() segFunc { return segV2 }},
		{"mixed", func() segFunc {
			n := 0
			return func(t *testing.T, r *repo.Repo, chain *format.Manifest, start, end int64, a, b float64) {
				t.Helper()
				n++
				if n%2 == 1 {
					segV1(t, r, chain, start, end, a, b)
				} else {
					segV2(t, r, chain, start, end, a, b)
				}
			}
		}},
	} {
		t.Run(f.name, func(t *testing.T) { fn(t, f.seg()) })
	}
}

func TestResolve(t *testing.T) {
	forFramings(t, func(t *testing.T, seg segFunc) {
		ctx := context.Background()
		r := testRepo(t)
		s1 := snap(t, r, 0, 100, 105) // chain 101..300, minutes 1..20
		seg(t, r, s1, 101, 200, 1, 10)
		seg(t, r, s1, 201, 300, 10, 20)
		s2 := snap(t, r, 19, 280, 290) // chain 281..400 with a gap at 351..360
		seg(t, r, s2, 281, 350, 19.5, 25)
		seg(t, r, s2, 361, 400, 26, 30)

		type want struct {
			snap    *format.Manifest
			to      int64
			noPlan  bool
			errIs   error
			errText string
		}
		at := func(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }
		for _, tc := range []struct {
			name string
			ref  string
			t    Target
			want want
		}{
			{"latest refuses the gap", "latest", Target{}, want{errIs: format.ErrIntegrity, errText: "--to-revision 350"}},
			{"revision in the newest chain", "", Target{Revision: 340}, want{snap: s2, to: 340}},
			{"revision past the gap", "", Target{Revision: 370}, want{errIs: format.ErrIntegrity, errText: "unbroken up to revision 350"}},
			{"revision between the snapshots' bounds uses the older", "", Target{Revision: 285}, want{snap: s1, to: 285}},
			{"revision inside the older chain", "", Target{Revision: 150}, want{snap: s1, to: 150}},
			{"revision the snapshot may exceed", "", Target{Revision: 103}, want{errIs: repo.ErrNoBackup, errText: "older than every backup"}},
			{"revision past every journal", "", Target{Revision: 9999}, want{errIs: format.ErrIntegrity}},
			{"time in the older chain", "", Target{Time: at(5)}, want{snap: s1, to: 0}},
			{"time in the newest chain", "", Target{Time: at(22)}, want{snap: s2}},
			{"time before every backup", "", Target{Time: at(-5)}, want{errIs: repo.ErrNoBackup, errText: "before every backup"}},
			{"explicit ID alone: no journal", s1.ID, Target{}, want{snap: s1, noPlan: true}},
			{"explicit ID with a revision", s1.ID, Target{Revision: 250}, want{snap: s1, to: 250}},
			{"explicit ID whose snapshot may be past the revision", s2.ID, Target{Revision: 285}, want{errIs: repo.ErrNoBackup, errText: "may hold revisions up to 290"}},
			{"no journal", "latest", Target{NoJournal: true}, want{snap: s2, noPlan: true}},
			{"both targets", "", Target{Revision: 5, Time: at(1)}, want{errIs: ErrBadSpec}},
			{"no journal with a target", "", Target{Revision: 5, NoJournal: true}, want{errIs: ErrBadSpec}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m, p, err := Resolve(ctx, r, tc.ref, repo.Selector{}, tc.t)
				if tc.want.errIs != nil {
					if !errors.Is(err, tc.want.errIs) || !strings.Contains(errString(err), tc.want.errText) {
						t.Fatalf("error %v, want one wrapping %v containing %q", err, tc.want.errIs, tc.want.errText)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if m.ID != tc.want.snap.ID {
					t.Fatalf("snapshot %s, want %s", m.ID, tc.want.snap.ID)
				}
				if tc.want.noPlan {
					if p != nil {
						t.Fatalf("unexpected journal plan %+v", p)
					}
					return
				}
				if p == nil || p.ToRevision != tc.want.to || p.Chain != m.ID {
					t.Fatalf("plan %+v, want chain %s to %d", p, m.ID, tc.want.to)
				}
				if !tc.t.Time.IsZero() && !p.ToTime.Equal(tc.t.Time) {
					t.Fatalf("plan time %v, want %v", p.ToTime, tc.t.Time)
				}
				// The plan reads back: every revision after the snapshot's,
				// once, in order, up to the target.
				next := p.Base + 1
				var lastTime time.Time
				err = ReadJournal(ctx, r, p, nil, func(rec *codec.Record) error {
					if rec.Revision != next {
						return fmt.Errorf("revision %d, want %d", rec.Revision, next)
					}
					next++
					lastTime = rec.Time
					return nil
				})
				if err != nil {
					t.Fatalf("read the plan: %v", err)
				}
				switch {
				case tc.want.to > 0 && next-1 != tc.want.to:
					t.Fatalf("the plan read up to revision %d, want %d", next-1, tc.want.to)
				case !tc.t.Time.IsZero() && (next-1 <= p.Base || lastTime.After(tc.t.Time)):
					t.Fatalf("the plan read up to revision %d received at %s, want the last one at or before %s", next-1, lastTime, tc.t.Time)
				}
			})
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestResolveLatestPrefersLongerPreviousChain: right after a new snapshot,
// its chain is empty while the previous chain already reaches past it.
func TestResolveLatestPrefersLongerPreviousChain(t *testing.T) {
	forFramings(t, func(t *testing.T, seg segFunc) {
		r := testRepo(t)
		s1 := snap(t, r, 0, 100, 100)
		seg(t, r, s1, 101, 500, 1, 10)
		snap(t, r, 9, 450, 460)
		m, p, err := Resolve(context.Background(), r, "latest", repo.Selector{}, Target{})
		if err != nil || m.ID != s1.ID || p == nil || p.End != 500 {
			t.Fatalf("got %v %+v %v, want the previous chain to 500", m, p, err)
		}
	})
}

// TestResolveTimeAfterJournalEnd: a journal that ends before T is the state
// at T only when nothing newer says otherwise.
func TestResolveTimeAfterJournalEnd(t *testing.T) {
	forFramings(t, func(t *testing.T, seg segFunc) {
		ctx := context.Background()
		r := testRepo(t)
		s1 := snap(t, r, 0, 100, 100)
		seg(t, r, s1, 101, 200, 1, 5)
		// No newer snapshot: the end of the journal is the newest state known.
		if m, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Time: t0.Add(30 * time.Minute)}); err != nil || m.ID != s1.ID || p == nil {
			t.Fatalf("got %v %+v %v", m, p, err)
		}
		// A newer snapshot whose revision is past the journal's end: the agent
		// stopped journaling while etcd changed; the state at T is unknown.
		snap(t, r, 40, 300, 300)
		_, _, err := Resolve(ctx, r, "", repo.Selector{}, Target{Time: t0.Add(30 * time.Minute)})
		if !errors.Is(err, repo.ErrNoBackup) || !strings.Contains(err.Error(), "no journal covers") {
			t.Fatalf("error %v", err)
		}
		// The same when the backup is named.
		_, _, err = Resolve(ctx, r, s1.ID, repo.Selector{}, Target{Time: t0.Add(30 * time.Minute)})
		if !errors.Is(err, repo.ErrNoBackup) || !strings.Contains(err.Error(), "no journal covers") {
			t.Fatalf("named backup: error %v", err)
		}
	})
}

// TestResolveDamagedSegment: a damaged framing-1 segment manifest breaks
// the chain where it is; latest refuses, a revision before it still
// restores. A framing-2 object over the same revisions (a roll-up, or a
// newer writer) mends the chain.
func TestResolveDamagedSegment(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, d, "default")
	if err != nil {
		t.Fatal(err)
	}
	s1 := snap(t, r, 0, 100, 100)
	segV1(t, r, s1, 101, 200, 1, 5)
	damaged := putLegacySegment(t, r, s1.ID, records(201, 300, minutes(5), minutes(9)))
	segV1(t, r, s1, 301, 400, 9, 12)
	if err := os.WriteFile(filepath.Join(root, damaged), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Resolve(ctx, r, "latest", repo.Selector{}, Target{}); !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "--to-revision 200") {
		t.Fatalf("latest: %v", err)
	}
	if m, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Revision: 150}); err != nil || m.ID != s1.ID || p.ToRevision != 150 || len(p.Objects) != 1 {
		t.Fatalf("to 150: %v %+v %v", m, p, err)
	}
	// A framing-2 object covering the damaged segment's revisions.
	segV2(t, r, s1, 151, 320, 3, 10)
	m, p, err := Resolve(ctx, r, "latest", repo.Selector{}, Target{})
	if err != nil || m.ID != s1.ID || p == nil || p.End != 400 || len(p.Objects) != 3 || p.Objects[1].Legacy != nil || p.Objects[1].End != 320 {
		t.Fatalf("latest with the damaged segment covered: %v %+v %v", m, p, err)
	}
}

// TestResolveMissingObject: a framing-2 object removed from the middle of a
// chain is a gap: latest refuses, a revision before it still restores.
func TestResolveMissingObject(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	s1 := snap(t, r, 0, 100, 100)
	segV2(t, r, s1, 101, 200, 1, 5)
	o := putObject(t, r, s1.ID, records(201, 300, minutes(5), minutes(9)))
	segV2(t, r, s1, 301, 400, 9, 12)
	if err := store.New(r).Remove(ctx, s1.ID, o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Resolve(ctx, r, "latest", repo.Selector{}, Target{}); !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "--to-revision 200") || !strings.Contains(err.Error(), "201..300") {
		t.Fatalf("latest: %v", err)
	}
	if _, _, err := Resolve(ctx, r, "", repo.Selector{}, Target{Revision: 350}); !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "unbroken up to revision 200") {
		t.Fatalf("to 350: %v", err)
	}
	if m, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Revision: 150}); err != nil || m.ID != s1.ID || p.ToRevision != 150 || len(p.Objects) != 1 {
		t.Fatalf("to 150: %v %+v %v", m, p, err)
	}
}

// TestResolveTimeEdges: a named backup with a time after the next backup;
// a time after the journal's end with nothing newer (a note); a time
// between a new snapshot and its chain's first (caught-up) record.
func TestResolveTimeEdges(t *testing.T) {
	forFramings(t, func(t *testing.T, seg segFunc) {
		ctx := context.Background()
		r := testRepo(t)
		s1 := snap(t, r, 0, 100, 105)
		seg(t, r, s1, 101, 300, 1, 20) // the old chain runs until just after s2 appears
		s2 := snap(t, r, 19, 280, 290)
		seg(t, r, s2, 281, 400, 20, 30) // caught up at minute 20, then 301..400 until minute 30

		at := func(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }
		if _, _, err := Resolve(ctx, r, s1.ID, repo.Selector{}, Target{Time: at(25)}); !errors.Is(err, repo.ErrNoBackup) || !strings.Contains(err.Error(), "after the next backup") {
			t.Errorf("named backup, time after the next one: %v", err)
		}
		// Minute 19.5: s2 finished (19:01) but its chain's records are stamped
		// from minute 20 on; s1's chain saw 19.5 as it happened.
		if m, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Time: at(19.5)}); err != nil || m.ID != s1.ID || p == nil || !p.ToTime.Equal(at(19.5)) {
			t.Errorf("time between a snapshot and its first record: %v %+v %v, want s1's chain", m, p, err)
		}
		// Two days after the newest journal's end: restored, with a note.
		m, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Time: at(48 * 60)})
		if err != nil || m.ID != s2.ID || p == nil || !strings.Contains(p.Note, "last record was received at") {
			t.Errorf("time after the journal's end: %v %+v %v", m, p, err)
		}
		// Within the journal: no note.
		if _, p, err := Resolve(ctx, r, "", repo.Selector{}, Target{Time: at(25)}); err != nil || p == nil || p.Note != "" {
			t.Errorf("time within the journal: %+v %v", p, err)
		}
	})
}
