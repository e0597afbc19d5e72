package format

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleManifest() *Manifest {
	t0 := time.Date(2026, 11, 22, 4, 48, 47, 123e6, time.UTC)
	return &Manifest{
		FormatVersion: Version, Kind: KindSnapshot, ID: "20261122T044847.123Z-3f9a1c0b", Cluster: "default",
		ClusterID: "cdf818194e3a8c32", MemberID: "8e9e05c52164694d", MemberName: "m1", Endpoint: "http://127.0.0.1:2379",
		EtcdVersion: "3.6.16", StorageVersion: "3.6.0", Revision: 2001, StreamRevision: 2001, RaftIndex: 2010, RaftTerm: 2,
		Leader: true, Created: t0, Finished: t0.Add(time.Second), Payload: "20261122T044847.123Z-3f9a1c0b.db.zst",
		RawSize: 454688, RawSHA256: strings.Repeat("a", 64), StoredSize: 49217, StoredSHA256: strings.Repeat("b", 64),
		Compression: CompressionZstd, Encryption: EncryptionNone, ToolVersion: "0.1.0",
	}
}

// TestManifestHashKVRoundTrip: hash_kv is optional; with it, every field
// survives; without it, the JSON has no hash_kv key at all.
func TestManifestHashKVRoundTrip(t *testing.T) {
	without := sampleManifest()
	with := sampleManifest()
	with.HashKV = &HashKV{Revision: 2001, Hash: 4294967295, CompactRevision: 1500}
	for _, m := range []*Manifest{without, with} {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), `"hash_kv"`); got != (m.HashKV != nil) {
			t.Errorf("hash_kv in JSON = %v, field set = %v:\n%s", got, m.HashKV != nil, b)
		}
		back, err := ParseManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("round trip changed the manifest:\n got %+v\nwant %+v", back, m)
		}
	}
	b, _ := with.Marshal()
	if !strings.Contains(string(b), "\"hash_kv\": {\n    \"revision\": 2001,\n    \"hash\": 4294967295,\n    \"compact_revision\": 1500\n  }") {
		t.Errorf("hash_kv not as docs/format.md shows it:\n%s", b)
	}
}

// TestManifestWithoutHashKVFromBefore: a manifest written before hash_kv
// existed (byte for byte as version 1 wrote it) still parses.
func TestManifestWithoutHashKVFromBefore(t *testing.T) {
	body := `{
  "format_version": 1,
  "kind": "snapshot",
  "id": "20261122T044847.123Z-3f9a1c0b",
  "cluster": "default",
  "cluster_id": "cdf818194e3a8c32",
  "member_id": "8e9e05c52164694d",
  "member_name": "m1",
  "endpoint": "http://127.0.0.1:2379",
  "etcd_version": "3.4.23",
  "revision": 2001,
  "stream_revision": 2001,
  "raft_index": 2010,
  "raft_term": 2,
  "leader": true,
  "created": "2026-11-22T04:48:47.123Z",
  "finished": "2026-11-22T04:48:48.123Z",
  "payload": "20261122T044847.123Z-3f9a1c0b.db.zst",
  "raw_size": 454688,
  "raw_sha256": "` + strings.Repeat("a", 64) + `",
  "stored_size": 49217,
  "stored_sha256": "` + strings.Repeat("b", 64) + `",
  "compression": "zstd",
  "encryption": "none",
  "tool_version": "0.1.0"
}
`
	sum := sha256.Sum256([]byte(body))
	m, err := ParseManifest([]byte(body + "sha256:" + hex.EncodeToString(sum[:]) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.HashKV != nil || m.Revision != 2001 || m.EtcdVersion != "3.4.23" {
		t.Errorf("parsed %+v", m)
	}
}
