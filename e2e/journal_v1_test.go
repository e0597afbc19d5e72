package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// journalV1Dir is a repository written by etcd-backup at commit 62bca9e
// (journal framing version 1): one snapshot of a real etcd 3.6 and the chain
// of journal segments 'agent --continuous' sealed after it, with the key
// space etcd itself gave at chosen revisions (expect.json). See its
// README.md for how it was made.
const journalV1Dir = "testdata/journal-v1"

// journalV1Expect is expect.json: every key (sorted) at each revision, as
// 'etcdctl get "" --prefix --rev=R' gave it, and the granted TTL of every
// lease a key was attached to.
type journalV1Expect struct {
	SnapshotRevision int64            `json:"snapshot_revision"`
	LastRevision     int64            `json:"last_revision"`
	LeaseTTLs        map[string]int64 `json:"lease_ttls"`
	Revisions        map[string][]struct {
		Key            string `json:"key"`
		Value          string `json:"value"`
		CreateRevision int64  `json:"create_revision"`
		ModRevision    int64  `json:"mod_revision"`
		Version        int64  `json:"version"`
		Lease          int64  `json:"lease"`
	} `json:"revisions"`
}

// captures returns expect.json as captures (verifyRestored's input), by
// revision, and the revisions in order.
func (e *journalV1Expect) captures(t *testing.T) (map[int64]*capture, []int64) {
	t.Helper()
	out := map[int64]*capture{}
	var revs []int64
	for rs, kvs := range e.Revisions {
		rev, err := strconv.ParseInt(rs, 10, 64)
		if err != nil {
			t.Fatalf("expect.json: revision %q: %v", rs, err)
		}
		cp := &capture{label: fmt.Sprintf("v1@%d", rev), rev: rev, leases: map[int64]int64{}}
		for _, kv := range kvs {
			cp.kvs = append(cp.kvs, kvState{kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease})
			if kv.Lease != 0 {
				ttl, ok := e.LeaseTTLs[strconv.FormatInt(kv.Lease, 10)]
				if !ok {
					t.Fatalf("expect.json: revision %d: key %s has lease %d without a TTL", rev, kv.Key, kv.Lease)
				}
				cp.leases[kv.Lease] = ttl
			}
		}
		if !slices.IsSortedFunc(cp.kvs, func(a, b kvState) int { return strings.Compare(a.Key, b.Key) }) {
			t.Fatalf("expect.json: revision %d: keys not sorted", rev)
		}
		out[rev] = cp
		revs = append(revs, rev)
	}
	slices.Sort(revs)
	return out, revs
}

// copyJournalV1 copies the test repository to a temporary directory (the
// tests damage their copy, never the committed one).
func copyJournalV1(t *testing.T) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(repo, os.DirFS(filepath.Join(journalV1Dir, "repo"))); err != nil {
		t.Fatal(err)
	}
	return repo
}

// TestJournalV1Repository: a repository of today's format (journal framing
// version 1, segments named <start>.manifest.json and
// <start>-<end>-<nonce>.jrnl.zst) stays readable: list shows its chain,
// restore --to-revision gives back exactly the key space etcd had at every
// recorded revision (every field, and the leases' granted TTLs), restore
// latest reaches the chain's end, and a flipped byte in a segment is an
// integrity error (exit 4).
func TestJournalV1Repository(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(journalV1Dir, "expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp journalV1Expect
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatalf("expect.json: %v", err)
	}
	caps, revs := exp.captures(t)
	if len(revs) < 5 || revs[0] != exp.SnapshotRevision || revs[len(revs)-1] != exp.LastRevision {
		t.Fatalf("expect.json: revisions %v; want several from the snapshot's %d to the last %d", revs, exp.SnapshotRevision, exp.LastRevision)
	}
	repo := copyJournalV1(t)

	t.Run("list", func(t *testing.T) {
		entries := listJournal(t, repo)
		if len(entries) != 1 {
			t.Fatalf("list --json shows %d backups, want 1: %+v", len(entries), entries)
		}
		e := entries[0]
		if e.Error != "" || e.Revision != exp.SnapshotRevision {
			t.Errorf("list --json: snapshot %s at revision %d (error %q), want revision %d", e.ID, e.Revision, e.Error, exp.SnapshotRevision)
		}
		segs := journalSegments(t, repo)[e.ID]
		checkContiguous(t, segs, exp.SnapshotRevision+1)
		if len(segs) < 5 || segs[len(segs)-1].end != exp.LastRevision {
			t.Errorf("chain of %s: %d segments ending at %d; want at least 5 ending at %d", e.ID, len(segs), segs[len(segs)-1].end, exp.LastRevision)
		}
		j := e.Journal
		if j == nil {
			t.Fatalf("list --json: no journal on %s", e.ID)
		}
		t.Logf("journal of %s: %d..%d, %d segments, %s .. %s", e.ID, j.Start, j.End, j.Segments, j.FirstTime, j.LastTime)
		if j.Error != "" || j.Start != exp.SnapshotRevision+1 || j.End != exp.LastRevision || j.Segments != len(segs) {
			t.Errorf("list --json journal %+v; want %d..%d, %d segments, no error", *j, exp.SnapshotRevision+1, exp.LastRevision, len(segs))
		}
		if j.FirstTime.IsZero() || j.LastTime.Before(j.FirstTime) {
			t.Errorf("list --json journal times %s .. %s", j.FirstTime, j.LastTime)
		}
		// The human listing names the chain's end.
		if out := mustCLI(t, nil, "list", "--repo", repo).stdout; !saysRevision(out, exp.LastRevision) {
			t.Errorf("list does not name the journal's end %d:\n%s", exp.LastRevision, out)
		}
	})

	for _, rev := range revs {
		t.Run(fmt.Sprintf("to-revision=%d", rev), func(t *testing.T) {
			rc, outs := restoreMembers(t, repo, 1, "--to-revision", strconv.FormatInt(rev, 10))
			if !saysRevision(outs[0].stdout, rev) {
				t.Errorf("restore output does not name revision %d:\n%s", rev, outs[0].stdout)
			}
			verifyRestored(t, rc.client(), caps[rev], 0, false)
			rc.killAll()
		})
	}

	t.Run("latest", func(t *testing.T) {
		rc, outs := restoreMembers(t, repo, 1)
		if !saysRevision(outs[0].stdout, exp.LastRevision) {
			t.Errorf("restore latest output does not name revision %d (the journal's end):\n%s", exp.LastRevision, outs[0].stdout)
		}
		verifyRestored(t, rc.client(), caps[exp.LastRevision], 0, false)
		rc.killAll()
	})

	t.Run("flipped-byte", func(t *testing.T) {
		damaged := copyJournalV1(t)
		id := listJournal(t, damaged)[0].ID
		segs := journalSegments(t, damaged)[id]
		seg := segs[len(segs)/2]
		payloads, err := filepath.Glob(filepath.Join(filepath.Dir(seg.file), fmt.Sprintf("%019d-%019d-*.jrnl.zst", seg.start, seg.end)))
		if err != nil || len(payloads) != 1 {
			t.Fatalf("payload of segment %d..%d: %v %v", seg.start, seg.end, payloads, err)
		}
		flipMiddleByte(t, payloads[0])
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, parent)
		r := cli(t, nil, "restore", "latest", "--repo", damaged, "--data-dir", dataDir, "--name", "v1",
			"--initial-cluster", "v1=http://127.0.0.1:2380", "--to-revision", strconv.FormatInt(exp.LastRevision, 10))
		expectCleanFailure(t, r, 4)
		assertUnchanged(t, before, parent)
		t.Logf("flipped a byte of %s: %s", filepath.Base(payloads[0]), lineContaining(r.stderr, "etcd-backup: error: "))
	})
}
