package prune_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/retention"
)

// writeSegment publishes one journal segment of chain covering start..end,
// with a payload that is a real encoded (empty) journal stream.
func writeSegment(t *testing.T, r *repo.Repo, chain string, start, end int64) *format.Manifest {
	t.Helper()
	var stored bytes.Buffer
	enc, err := format.NewEncoder(&stored, format.EncoderOptions{NoTrailer: true})
	if err != nil {
		t.Fatal(err)
	}
	enc.Write([]byte("EBJRNL\x00\x01"))
	sums, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	base := repo.SegmentPayloadBase(start, end, "0badcafe", false)
	if err := r.PutSegmentPayload(context.Background(), chain, base, &stored); err != nil {
		t.Fatal(err)
	}
	m := &format.Manifest{
		FormatVersion: format.Version, Kind: format.KindJournal, ID: repo.SegmentID(chain, start), Cluster: r.Cluster(),
		Payload: base, RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize, StoredSHA256: sums.StoredSHA256,
		Compression: format.CompressionZstd, Encryption: format.EncryptionNone,
		Journal: &format.JournalRange{Chain: chain, Start: start, End: end},
	}
	if err := r.PutSegmentManifest(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// TestJournals: the chain of a removed backup goes with it; the chain of a
// kept backup stays, except old payloads no manifest names.
func TestJournals(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	b1 := writeBackup(t, r, day(1, 0, 0))
	b2 := writeBackup(t, r, day(2, 0, 0))
	writeSegment(t, r, b1.ID, 43, 50)
	writeSegment(t, r, b1.ID, 51, 60)
	s2 := writeSegment(t, r, b2.ID, 43, 44)
	jdir := func(chain string) string { return filepath.Join(root, "clusters", "default", "journal", chain) }
	// A loser's payload in the kept chain: old, and young.
	old := time.Now().Add(-2 * time.Hour)
	for _, n := range []string{"old", "young"} {
		base := repo.SegmentPayloadBase(43, 44, n+"0000", false)
		if err := r.PutSegmentPayload(t.Context(), b2.ID, base, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		if n == "old" {
			if err := os.Chtimes(filepath.Join(jdir(b2.ID), base), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}

	dry, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Journals) != 1 || dry.Journals[0].Removed || len(listDir(t, jdir(b1.ID))) != 4 {
		t.Fatalf("dry run: journals %+v, chain dir %v", dry.Journals, listDir(t, jdir(b1.ID)))
	}

	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Journals) != 1 || !rep.Journals[0].Removed || !strings.HasSuffix(rep.Journals[0].Name, b1.ID) {
		t.Fatalf("journals removed: %+v", rep.Journals)
	}
	if got := listDir(t, jdir(b1.ID)); len(got) != 0 {
		t.Fatalf("chain of the removed backup still holds %v", got)
	}
	got := listDir(t, jdir(b2.ID))
	want := []string{s2.Payload, filepath.Base(r.SegmentManifestName(b2.ID, 43)), repo.SegmentPayloadBase(43, 44, "young0000", false)}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("kept chain holds %v, want %v", got, want)
	}
	if !strings.Contains(rep.Summary(), "removed 1 journal of removed backups") {
		t.Fatalf("summary %q", rep.Summary())
	}
	// The kept chain is still readable and whole.
	segs, err := r.Segments(t.Context(), b2.ID)
	if err != nil || len(segs) != 1 {
		t.Fatalf("kept chain: %v, %v", segs, err)
	}
}
