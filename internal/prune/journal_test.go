package prune_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/retention"
)

// records makes one put per revision start..end.
func records(start, end int64) []*codec.Record {
	var out []*codec.Record
	at := day(1, 0, 0)
	for rev := start; rev <= end; rev++ {
		out = append(out, &codec.Record{Revision: rev, Time: at.Add(time.Duration(rev) * time.Second), Events: []*mvccpb.Event{{
			Type: mvccpb.PUT,
			Kv:   &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/k/%d", rev)), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1},
		}}})
	}
	return out
}

// writeSegment publishes one framing-1 journal segment of chain covering
// start..end the way releases before framing 2 did: its payload (a real
// framing-1 stream), then its manifest, finished at finished.
func writeSegment(t *testing.T, r *repo.Repo, chain string, start, end int64, finished time.Time) *format.Manifest {
	t.Helper()
	var stored bytes.Buffer
	enc, err := format.NewEncoder(&stored, format.EncoderOptions{NoTrailer: true})
	if err != nil {
		t.Fatal(err)
	}
	w := codec.NewWriterV1(enc)
	for _, rec := range records(start, end) {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	sums, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := store.New(r).Dir(chain)
	base := legacyPayload(start, end, "0badcafe")
	if err := r.Backend().Put(context.Background(), path.Join(dir, base), &stored); err != nil {
		t.Fatal(err)
	}
	m := &format.Manifest{
		FormatVersion: format.Version, Kind: format.KindJournal, ID: fmt.Sprintf("%s/%019d", chain, start), Cluster: r.Cluster(),
		Revision: end, Created: finished.UTC(), Finished: finished.UTC(),
		Payload: base, RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize, StoredSHA256: sums.StoredSHA256,
		Compression: format.CompressionZstd, Encryption: format.EncryptionNone,
		Journal: &format.JournalRange{Chain: chain, Start: start, End: end, Records: int(end - start + 1), Events: int(end - start + 1)},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Backend().Put(context.Background(), path.Join(dir, legacyManifest(start)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return m
}

func legacyPayload(start, end int64, nonce string) string {
	return fmt.Sprintf("%019d-%019d-%s.jrnl.zst", start, end, nonce)
}

func legacyManifest(start int64) string { return fmt.Sprintf("%019d.manifest.json", start) }

// writeObject publishes one framing-2 journal object of chain covering
// start..end, as the writer does, last modified at mod.
func writeObject(t *testing.T, r *repo.Repo, root, chainID string, start, end int64, mod time.Time) chain.Object {
	t.Helper()
	o, data, err := store.Build(records(start, end), chainID, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.New(r).Put(context.Background(), chainID, o, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(root, store.New(r).Dir(chainID), o.Name), mod, mod); err != nil {
		t.Fatal(err)
	}
	return o
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
	writeSegment(t, r, b1.ID, 43, 50, time.Now())
	writeSegment(t, r, b1.ID, 51, 60, time.Now())
	s2 := writeSegment(t, r, b2.ID, 43, 44, time.Now())
	jdir := func(chain string) string { return filepath.Join(root, "clusters", "default", "journal", chain) }
	// A loser's payload in the kept chain: old, and young.
	old := time.Now().Add(-2 * time.Hour)
	for _, n := range []string{"old", "young"} {
		base := legacyPayload(43, 44, n+"0000")
		if err := r.Backend().Put(t.Context(), path.Join(store.New(r).Dir(b2.ID), base), strings.NewReader("x")); err != nil {
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
	want := []string{s2.Payload, legacyManifest(43), legacyPayload(43, 44, "young0000")}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("kept chain holds %v, want %v", got, want)
	}
	if !strings.Contains(rep.Summary(), "removed 1 journal of removed backups") {
		t.Fatalf("summary %q", rep.Summary())
	}
	// The kept chain is still readable and whole.
	l, err := store.New(r).List(t.Context(), b2.ID)
	if err != nil {
		t.Fatal(err)
	}
	cov := chain.Cover(b2.Revision, l.Objects)
	if len(l.Objects) != 1 || l.Objects[0].Legacy == nil || cov.End != 44 || cov.Break != nil || len(l.Other) != 1 {
		t.Fatalf("kept chain: %+v, other %v, coverage to %d, %v", l.Objects, l.Other, cov.End, cov.Break)
	}
	readAll(t, r, b2, 44)
}

// readAll reads the whole chain of m back (every check of a restore) and
// checks it holds every revision after m's up to end.
func readAll(t *testing.T, r *repo.Repo, m *format.Manifest, end int64) {
	t.Helper()
	st := store.New(r)
	cov, err := st.Coverage(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Break != nil || cov.End != end {
		t.Fatalf("chain of %s reaches %d (%v), want %d", m.ID, cov.End, cov.Break, end)
	}
	next := m.Revision + 1
	err = st.Read(t.Context(), store.NewPlan(m, cov, 0, time.Time{}), nil, store.Prefetch{}, func(rec *codec.Record) error {
		if rec.Revision != next {
			return fmt.Errorf("revision %d, want %d", rec.Revision, next)
		}
		next++
		return nil
	})
	if err != nil || next-1 != end {
		t.Fatalf("read the chain of %s up to %d: %v", m.ID, next-1, err)
	}
}

// TestJournalRedundant: in a kept chain, objects another one makes
// redundant (the pieces a roll-up merged, two writers' copies of the same
// revisions, framing-1 segments a framing-2 object holds) are removed once
// older than the orphan age, young ones kept; the chain stays whole.
func TestJournalRedundant(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	b := writeBackup(t, r, day(1, 0, 0))
	id := b.ID
	old, young := time.Now().Add(-2*time.Hour), time.Now()
	// Old pieces and their roll-up: the pieces go.
	p1 := writeObject(t, r, root, id, 43, 50, old)
	p2 := writeObject(t, r, root, id, 51, 60, old)
	r1 := writeObject(t, r, root, id, 43, 60, young)
	// A young piece and its roll-up: the piece stays for now.
	p3 := writeObject(t, r, root, id, 61, 70, young)
	r2 := writeObject(t, r, root, id, 61, 80, old)
	// Two writers' copies of the same revisions, old: one goes.
	c1 := writeObject(t, r, root, id, 81, 90, old)
	c2 := writeObject(t, r, root, id, 81, 90, old)
	// Framing-1 segments under framing-2 objects: the old one goes (its
	// manifest and its payload), the young one stays.
	l1 := writeSegment(t, r, id, 91, 95, old)
	o1 := writeObject(t, r, root, id, 91, 100, young)
	l2 := writeSegment(t, r, id, 101, 105, young)
	o2 := writeObject(t, r, root, id, 101, 110, young)
	// Not redundant: the last object, reaching furthest.
	last := writeObject(t, r, root, id, 106, 120, old)
	jdir := filepath.Join(root, store.New(r).Dir(id))
	all := listDir(t, jdir)

	opts := prune.Options{OrphanAge: time.Hour}
	dry := opts
	dry.DryRun = true
	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, dry)
	if err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, jdir); !slices.Equal(got, all) {
		t.Fatalf("a dry run changed the chain: %v, was %v", got, all)
	}
	report := func(rep *prune.Report) map[string]prune.Orphan {
		out := map[string]prune.Orphan{}
		for _, o := range rep.Orphans {
			out[filepath.Base(o.Name)] = o
		}
		return out
	}
	dup := c2
	if c2.Name < c1.Name {
		dup = c1
	}
	wantOld := []string{p1.Name, p2.Name, dup.Name, legacyManifest(l1.Journal.Start)}
	wantYoung := []string{p3.Name, legacyManifest(l2.Journal.Start)}
	check := func(what string, rep *prune.Report, removed bool) {
		t.Helper()
		got := report(rep)
		if len(got) != len(wantOld)+len(wantYoung) {
			t.Errorf("%s: orphans %+v, want old %v and young %v", what, rep.Orphans, wantOld, wantYoung)
		}
		for _, n := range wantOld {
			if o, ok := got[n]; !ok || o.Young || o.Removed != removed {
				t.Errorf("%s: old redundant %s reported %+v (listed %v)", what, n, o, ok)
			}
		}
		for _, n := range wantYoung {
			if o, ok := got[n]; !ok || !o.Young || o.Removed {
				t.Errorf("%s: young redundant %s reported %+v (listed %v)", what, n, o, ok)
			}
		}
	}
	check("dry run", rep, false)
	freed := rep.BytesFreed
	if want := p1.Size + p2.Size + dup.Size + l1.StoredSize; freed != want {
		t.Errorf("dry run frees %d bytes, want %d", freed, want)
	}

	rep, err = prune.Run(t.Context(), r, retention.Policy{Last: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	check("prune", rep, true)
	if rep.BytesFreed != freed {
		t.Errorf("prune freed %d bytes, the dry run said %d", rep.BytesFreed, freed)
	}
	keep := c1
	if dup == c1 {
		keep = c2
	}
	want := []string{r1.Name, p3.Name, r2.Name, keep.Name, o1.Name,
		legacyManifest(l2.Journal.Start), l2.Payload, o2.Name, last.Name}
	got := listDir(t, jdir)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("chain holds %v, want %v", got, want)
	}
	readAll(t, r, b, 120)

	// Nothing is redundant any more but the young: a second run removes
	// nothing.
	rep, err = prune.Run(t.Context(), r, retention.Policy{Last: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rep.Orphans {
		if o.Removed || !o.Young {
			t.Errorf("second run: %+v", o)
		}
	}
	if got := listDir(t, jdir); !slices.Equal(got, listDir(t, jdir)) || len(got) != len(want) {
		t.Fatalf("second run: chain holds %v", got)
	}
}

// TestJournalDamagedManifest: in a kept chain with a damaged framing-1
// manifest, the payload that manifest names is unknown: prune removes no
// framing-1 payload of that chain, however old.
func TestJournalDamagedManifest(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	b := writeBackup(t, r, day(1, 0, 0))
	writeSegment(t, r, b.ID, 43, 50, time.Now())
	s2 := writeSegment(t, r, b.ID, 51, 60, time.Now())
	jdir := filepath.Join(root, store.New(r).Dir(b.ID))
	if err := os.WriteFile(filepath.Join(jdir, legacyManifest(51)), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(jdir, s2.Payload), old, old); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, jdir)
	if _, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, jdir); !slices.Equal(got, before) {
		t.Fatalf("prune changed a chain with a damaged manifest: %v, was %v", got, before)
	}
}
