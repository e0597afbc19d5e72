package drill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/drill/drilltest"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

// TestDrill backs up a 3-member cluster whose history has overwrites,
// deletions, a lease and a compaction, then drills: the good backup; one
// whose hash was taken after a later compaction; one without hash_kv; and
// one whose snapshot was altered inside the bbolt file with every checksum
// recomputed, which only etcd's hash catches.
func TestDrill(t *testing.T) {
	ctx := context.Background()
	specs, err := embedded.NewSpecs(t.TempDir(), "m", 3)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeLeaderLast(cl) })
	cli, err := etcd.Connect(etcd.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	live := map[string]string{}
	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		resp, err := cli.Put(ctx, k, v, opts...)
		if err != nil {
			t.Fatal(err)
		}
		live[k] = v
		return resp.Header.Revision
	}
	// batch writes 64 operations per transaction (one revision each batch),
	// to keep the test fast on a 3-member cluster.
	batch := func(ops []clientv3.Op) {
		for len(ops) > 0 {
			n := min(len(ops), 64)
			if _, err := cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[n:]
		}
	}
	puts := func(from, step int, value string) {
		var ops []clientv3.Op
		for i := from; i < 300; i += step {
			k, v := fmt.Sprintf("/k/%05d", i), fmt.Sprintf("%s%d-%s", value, i, strings.Repeat("x", i%50))
			ops = append(ops, clientv3.OpPut(k, v))
			live[k] = v
		}
		batch(ops)
	}
	puts(0, 1, "v")
	puts(0, 3, "w") // overwrite a third
	var dels []clientv3.Op
	for i := 1; i < 300; i += 10 {
		k := fmt.Sprintf("/k/%05d", i)
		dels = append(dels, clientv3.OpDelete(k))
		delete(live, k)
	}
	batch(dels)
	compactAt := put("/k/compact-mark", "x")
	if _, err := cli.Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	put("/leased", "l", clientv3.WithLease(lease.ID))
	for i := 0; i < 20; i++ { // history after the compaction: overwrites
		puts(i, 20, "z")
		puts(i, 20, "y")
	}
	var wantBytes int64
	for k, v := range live {
		wantBytes += int64(len(k) + len(v))
	}

	b, err := local.New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, b, "default")
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.Run(ctx, cli, r, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.HashKV == nil || m.HashKV.Revision != m.Revision || m.HashKV.CompactRevision != compactAt {
		t.Fatalf("manifest hash_kv = %+v, want revision %d compacted at %d", m.HashKV, m.Revision, compactAt)
	}
	got, err := r.ReadManifest(ctx, m.ID)
	if err != nil || got.HashKV == nil || *got.HashKV != *m.HashKV {
		t.Fatalf("hash_kv did not survive the repository: %+v, %v", got, err)
	}

	t.Run("good", func(t *testing.T) {
		tmp := t.TempDir()
		stale := filepath.Join(tmp, TempPrefix+"dead")
		os.MkdirAll(stale, 0o700)
		os.WriteFile(filepath.Join(stale, ".lock"), nil, 0o600) // nobody holds it
		var fetched int64
		rep, err := RunWith(ctx, r, m, Options{TempDir: tmp, Progress: func(n int64) { fetched = n }})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Keys != int64(len(live)) || rep.SnapshotKeys != rep.Keys || rep.Bytes != wantBytes {
			t.Errorf("keys %d (snapshot %d) bytes %d, want %d keys, %d bytes", rep.Keys, rep.SnapshotKeys, rep.Bytes, len(live), wantBytes)
		}
		if !rep.HashRecorded || !rep.HashMatched || rep.Compacted || rep.Hash != m.HashKV.Hash || rep.Revision < m.Revision || !rep.OK() {
			t.Errorf("report %+v", rep)
		}
		if fetched != m.RawSize || rep.Duration <= 0 || rep.Fetched <= 0 {
			t.Errorf("progress %d of %d, durations %v %v", fetched, m.RawSize, rep.Fetched, rep.Duration)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("left in the temporary directory: %v", left)
		}
		t.Logf("drill: %d keys, %d bytes, revision %d, %s, fetch %v, total %v", rep.Keys, rep.Bytes, rep.Revision, rep.HashStatus(), rep.Fetched, rep.Duration)
	})

	t.Run("compacted after the snapshot", func(t *testing.T) {
		// The source compacts between the stream and its HashKV: the drill
		// compacts the restored member likewise before it compares.
		later := m.Revision - 2 // overwritten values in (compactAt, later]
		if _, err := cli.Compact(ctx, later); err != nil {
			t.Fatal(err)
		}
		h, err := cli.HashKV(ctx, m.Endpoint, m.Revision)
		if err != nil {
			t.Fatal(err)
		}
		if h.CompactRevision != later || h.Hash == m.HashKV.Hash {
			t.Fatalf("compaction did not change the hash: %+v vs %+v", h, m.HashKV)
		}
		m2 := *m
		m2.ID = format.NewID(time.Now())
		m2.HashKV = &format.HashKV{Revision: h.Revision, Hash: h.Hash, CompactRevision: h.CompactRevision}
		if err := r.PutManifest(ctx, &m2); err != nil { // same payload
			t.Fatal(err)
		}
		rep, err := Run(ctx, r, &m2, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.HashMatched || !rep.Compacted || rep.CompactRevision != later {
			t.Errorf("report %+v", rep)
		}
	})

	t.Run("hash not recorded", func(t *testing.T) {
		m3 := *m
		m3.ID = format.NewID(time.Now())
		m3.HashKV = nil
		rep, err := Run(ctx, r, &m3, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.HashRecorded || rep.HashMatched || rep.Keys != int64(len(live)) || !strings.Contains(rep.HashStatus(), "not recorded") {
			t.Errorf("report %+v", rep)
		}
	})

	t.Run("altered inside with checksums recomputed", func(t *testing.T) {
		bad := drilltest.Tamper(t, r, m, "/k/00042")
		// Every streaming check passes: only etcd's hash can tell.
		if err := restore.Fetch(ctx, r, bad, nil, &bytes.Buffer{}, nil); err != nil {
			t.Fatalf("the altered backup fails the streaming checks, so this test proves nothing: %v", err)
		}
		rep, err := Run(ctx, r, bad, nil, nil)
		if !errors.Is(err, format.ErrIntegrity) {
			t.Fatalf("drill of an altered backup: %v, want an integrity error", err)
		}
		if rep.HashMatched || rep.Keys != int64(len(live)) || len(rep.Problems) != 1 || !strings.Contains(err.Error(), "etcd's hash of the restored key space") {
			t.Errorf("report %+v, error %v", rep, err)
		}
		t.Logf("drill of the altered backup: %v", err)
	})
}

// closeLeaderLast stops the followers, then the leader: Cluster.Close stops
// all at once, and the leader then waits ~5 s for a leadership transfer.
func closeLeaderLast(cl *embedded.Cluster) {
	var last []*embed.Etcd
	var others embedded.Cluster
	for _, e := range cl.Members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			last = append(last, e)
		} else {
			others.Members = append(others.Members, e)
		}
	}
	others.Close()
	(&embedded.Cluster{Members: last}).Close()
}

func TestFitVersions(t *testing.T) {
	mk := func(storage, cluster string) string {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "member", "snap"), 0o700)
		db, err := bolt.Open(filepath.Join(dir, "member", "snap", "db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.Update(func(tx *bolt.Tx) error {
			m, _ := tx.CreateBucket([]byte("meta"))
			c, _ := tx.CreateBucket([]byte("cluster"))
			if storage != "" {
				m.Put([]byte("storageVersion"), []byte(storage))
			}
			return c.Put([]byte("clusterVersion"), []byte(cluster))
		})
		return dir
	}
	read := func(dir string) (storage, cluster string) {
		db, err := bolt.Open(filepath.Join(dir, "member", "snap", "db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.View(func(tx *bolt.Tx) error {
			storage = string(tx.Bucket([]byte("meta")).Get([]byte("storageVersion")))
			cluster = string(tx.Bucket([]byte("cluster")).Get([]byte("clusterVersion")))
			return nil
		})
		return
	}
	for _, tc := range []struct {
		storage, cluster         string
		wantStorage, wantCluster string
		note                     bool
		err                      error
	}{
		{"", "3.5.0", "", "3.5.0", false, nil},
		{"3.6.0", "3.6.0", "3.6.0", "3.6.0", false, nil},
		{"3.7.0", "3.7.0", "3.6.0", "3.6.0", true, nil},
		{"3.6.0", "3.7.0", "3.6.0", "3.6.0", true, nil},
		{"3.8.0", "3.8.0", "3.8.0", "3.8.0", false, ErrTooNew},
		{"4.0.0", "3.6.0", "4.0.0", "3.6.0", false, ErrTooNew},
	} {
		dir := mk(tc.storage, tc.cluster)
		note, err := fitVersions(dir)
		s, c := read(dir)
		if !errors.Is(err, tc.err) || (note != "") != tc.note || s != tc.wantStorage || c != tc.wantCluster {
			t.Errorf("%s/%s: note %q, err %v, now %s/%s", tc.storage, tc.cluster, note, err, s, c)
		}
	}
}
