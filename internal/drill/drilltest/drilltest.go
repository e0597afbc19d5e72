package drilltest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
)

// Tamper publishes, under a new ID, a copy of backup m (unencrypted) in which
// the newest value of key is changed inside the bbolt file, with etcd's
// sha256 trailer, the raw and stored sizes and sha256 all recomputed.
func Tamper(t testing.TB, r *repo.Repo, m *format.Manifest, key string) *format.Manifest {
	t.Helper()
	ctx := context.Background()
	var raw bytes.Buffer
	if err := restore.Fetch(ctx, r, m, nil, &raw, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(path, raw.Bytes()[:raw.Len()-format.EtcdTrailerSize], 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("key"))
		var revKey, val []byte
		bk.ForEach(func(k, v []byte) error {
			var kv mvccpb.KeyValue
			if len(k) == 17 && kv.Unmarshal(v) == nil && string(kv.Key) == key { // 17: not a tombstone
				revKey, val = append([]byte(nil), k...), append([]byte(nil), v...)
			}
			return nil
		})
		if revKey == nil {
			return fmt.Errorf("key %s not in the snapshot", key)
		}
		var kv mvccpb.KeyValue
		kv.Unmarshal(val)
		kv.Value = append([]byte("tampered-"), kv.Value...)
		nv, err := kv.Marshal()
		if err != nil {
			return err
		}
		return bk.Put(revKey, nv)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var stored bytes.Buffer
	enc, err := format.NewEncoder(&stored, format.EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(data)
	enc.Write(sum[:])
	sums, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	bad := *m
	bad.ID = format.NewID(time.Now())
	bad.Payload = repo.PayloadBase(bad.ID, false)
	bad.RawSize, bad.RawSHA256, bad.StoredSize, bad.StoredSHA256 = sums.RawSize, sums.RawSHA256, sums.StoredSize, sums.StoredSHA256
	if err := r.PutPayload(ctx, bad.ID, false, &stored); err != nil {
		t.Fatal(err)
	}
	if err := r.PutManifest(ctx, &bad); err != nil {
		t.Fatal(err)
	}
	return &bad
}
