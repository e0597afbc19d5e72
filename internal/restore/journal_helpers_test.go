package restore

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// records makes one put per revision start..end, received from a to b
// (evenly spread).
func records(start, end int64, a, b time.Time) []*codec.Record {
	var out []*codec.Record
	for rev := start; rev <= end; rev++ {
		at := a
		if end > start {
			at = a.Add(time.Duration(float64(b.Sub(a)) * float64(rev-start) / float64(end-start)))
		}
		out = append(out, &codec.Record{Revision: rev, Time: at, Events: []*mvccpb.Event{{
			Type: mvccpb.PUT,
			Kv:   &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/k/%d", rev)), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1},
		}}})
	}
	return out
}

// putObject publishes recs as one framing-2 journal object of chainID, as
// the writer does.
func putObject(t *testing.T, r *repo.Repo, chainID string, recs []*codec.Record) chain.Object {
	t.Helper()
	o, data, err := store.Build(recs, chainID, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.New(r).Put(context.Background(), chainID, o, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return o
}

// putLegacySegment publishes recs as one framing-1 segment of chainID, the
// way releases before framing 2 did: the payload (a framing-1 stream,
// zstd), then its manifest <start>.manifest.json naming it. It returns the
// manifest's object name.
func putLegacySegment(t *testing.T, r *repo.Repo, chainID string, recs []*codec.Record) string {
	t.Helper()
	ctx := context.Background()
	var stored bytes.Buffer
	enc, err := format.NewEncoder(&stored, format.EncoderOptions{Concurrency: 1, NoTrailer: true})
	if err != nil {
		t.Fatal(err)
	}
	w := codec.NewWriterV1(enc)
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, rec := range recs {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		events += len(rec.Events)
	}
	sums, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	start, end := recs[0].Revision, recs[len(recs)-1].Revision
	dir := store.New(r).Dir(chainID)
	payload := fmt.Sprintf("%019d-%019d-%s.jrnl.zst", start, end, "0badcafe")
	if err := r.Backend().Put(ctx, path.Join(dir, payload), &stored); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	m := &format.Manifest{FormatVersion: format.Version, Kind: format.KindJournal, ID: fmt.Sprintf("%s/%019d", chainID, start),
		Cluster: r.Cluster(), Revision: end, Created: now, Finished: now, Payload: payload,
		RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize, StoredSHA256: sums.StoredSHA256,
		Compression: format.CompressionZstd, Encryption: format.EncryptionNone,
		Journal: &format.JournalRange{Chain: chainID, Start: start, End: end, Records: len(recs), Events: events,
			FirstTime: recs[0].Time, LastTime: recs[len(recs)-1].Time}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	name := path.Join(dir, fmt.Sprintf("%019d.manifest.json", start))
	if err := r.Backend().Put(ctx, name, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return name
}
