package datadir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.uber.org/zap"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// snapshotOfLiveEtcd starts a one-member etcd, writes a history with
// overwrites, deletes, leases and a compaction, and saves its snapshot
// stream (with etcd's sha256 trailer) to a file.
func snapshotOfLiveEtcd(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	specs, err := embedded.NewSpecs(t.TempDir(), "src", 1)
	if err != nil {
		t.Fatal(err)
	}
	_, cli, stop := start(ctx, t, specs)
	defer stop()
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		var opts []clientv3.OpOption
		if i%7 == 0 {
			opts = append(opts, clientv3.WithLease(lease.ID))
		}
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%03d", i%120), strings.Repeat("v", i), opts...); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cli.Delete(ctx, "/k/01", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, r.Header.Revision-50); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "snapshot.db")
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// dumpDB lists every bucket, key and value of a bbolt file.
func dumpDB(t *testing.T, path string) []string {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out = append(out, fmt.Sprintf("%s %x=%x", name, k, v))
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// filesBesideDB maps every file of a data dir but the database to its bytes.
func filesBesideDB(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == datadir.DBPath(dir) {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFinishBuildsWhatEtcdutlBuilds: the data dir made by CopyDB and Finish
// (what every restore does, with the database streamed in place of the
// copy) holds the same database content, WAL and raft snapshot, byte for
// byte, as `etcdutl snapshot restore` of the same snapshot; and etcd
// started on either serves the same keys, revision, members and HashKV.
func TestFinishBuildsWhatEtcdutlBuilds(t *testing.T) {
	snap := snapshotOfLiveEtcd(t)
	three := "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380"
	for _, tc := range []struct {
		name string
		m    datadir.Member
	}{
		{"three members", datadir.Member{Name: "m2", InitialCluster: three, PeerURLs: []string{"http://10.0.0.2:2380"}, Token: "tok"}},
		{"bump and mark compacted", datadir.Member{Name: "m1", InitialCluster: three, PeerURLs: []string{"http://10.0.0.1:2380"}, Token: "tok",
			RevisionBump: 1000, MarkCompacted: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			theirs, ours := filepath.Join(base, "etcdutl"), filepath.Join(base, "ours")
			restoreWithEtcdutl(t, snap, theirs, tc.m)
			if err := datadir.Build(snap, ours, tc.m); err != nil {
				t.Fatal(err)
			}
			if a, b := dumpDB(t, datadir.DBPath(theirs)), dumpDB(t, datadir.DBPath(ours)); !slices.Equal(a, b) {
				t.Fatalf("databases differ: etcdutl %d entries, ours %d", len(a), len(b))
			}
			a, b := filesBesideDB(t, theirs), filesBesideDB(t, ours)
			if len(a) == 0 || len(a) != len(b) {
				t.Fatalf("files: etcdutl %d, ours %d", len(a), len(b))
			}
			for name, want := range a {
				if strings.HasSuffix(name, ".snap") {
					// etcd writes the members into the raft snapshot's v2
					// store in map order: the same members, other indexes.
					if x, y := raftSnapshot(t, filepath.Join(theirs, name)), raftSnapshot(t, filepath.Join(ours, name)); x != y {
						t.Errorf("%s differs from etcdutl's:\n%s\n%s", name, x, y)
					}
				} else if !bytes.Equal(b[name], want) {
					t.Errorf("%s differs from etcdutl's (%d vs %d bytes)", name, len(b[name]), len(want))
				}
			}
			rev, err := datadir.Revision(datadir.DBPath(ours))
			if err != nil || rev <= 1000 && tc.m.RevisionBump > 0 {
				t.Fatalf("revision %d, %v", rev, err)
			}
		})
	}

	// Started: a one-member cluster on each, compared through etcd's API.
	// The same name and URLs (so the same member ID) for both.
	base := t.TempDir()
	specs, err := embedded.NewSpecs(base, "r", 1)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, who := range []string{"etcdutl", "ours"} {
		specs[0].DataDir = filepath.Join(base, who+".etcd")
		m := datadir.Member{Name: specs[0].Name, InitialCluster: embedded.InitialCluster(specs), PeerURLs: []string{specs[0].PeerURL}, Token: "tok"}
		if who == "etcdutl" {
			restoreWithEtcdutl(t, snap, specs[0].DataDir, m)
		} else if err := datadir.Build(snap, specs[0].DataDir, m); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, served(t, specs))
	}
	if seen[0] != seen[1] {
		t.Fatalf("etcd serves different data:\netcdutl: %s\nours:    %s", seen[0], seen[1])
	}
}

// raftSnapshot describes a raft snapshot file: its metadata and the
// membership in its v2 store, without the store's write indexes and
// event history (both follow the order of a map).
func raftSnapshot(t *testing.T, path string) string {
	t.Helper()
	s, err := snap.Read(zap.NewNop(), path)
	if err != nil {
		t.Fatal(err)
	}
	var store any
	if err := json.Unmarshal(s.Data, &store); err != nil {
		t.Fatal(err)
	}
	var strip func(v any)
	strip = func(v any) {
		if m, ok := v.(map[string]any); ok {
			delete(m, "CreatedIndex")
			delete(m, "ModifiedIndex")
			for _, c := range m {
				strip(c)
			}
		}
	}
	strip(store)
	if m, ok := store.(map[string]any); ok {
		delete(m, "WatcherHub") // the additions, in the same map order
	}
	data, _ := json.Marshal(store) // sorts map keys
	return fmt.Sprintf("%v %s", s.Metadata.String(), data)
}

func restoreWithEtcdutl(t *testing.T, snap, out string, m datadir.Member) {
	t.Helper()
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: snap, Name: m.Name, OutputDataDir: out, PeerURLs: m.PeerURLs,
		InitialCluster: m.InitialCluster, InitialClusterToken: m.Token,
		RevisionBump: m.RevisionBump, MarkCompacted: m.MarkCompacted,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// served starts etcd on the restored data dir and describes what it serves:
// revision, HashKV, members and every key with its revisions and lease.
func served(t *testing.T, specs []embedded.MemberSpec) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, cli, stop := start(ctx, t, specs)
	defer stop()
	get, err := cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := cli.HashKV(ctx, cl.Endpoints()[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "revision %d hash %d compact %d members", get.Header.Revision, hash.Hash, hash.CompactRevision)
	for _, m := range ml.Members {
		fmt.Fprintf(&b, " %x=%s%v", m.ID, m.Name, m.PeerURLs)
	}
	fmt.Fprintf(&b, " keys %d:", len(get.Kvs))
	for _, kv := range get.Kvs {
		fmt.Fprintf(&b, " %s@%d/%d/%d/%x(%d)", kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, len(kv.Value))
	}
	if len(get.Kvs) == 0 {
		t.Fatal("restored etcd serves no keys")
	}
	return b.String()
}

// start starts etcd members on specs and a client of them; stop closes
// both.
func start(ctx context.Context, t *testing.T, specs []embedded.MemberSpec) (cl *embedded.Cluster, cli *clientv3.Client, stop func()) {
	t.Helper()
	cl, err := embedded.Start(ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	cli, err = clientv3.New(clientv3.Config{Endpoints: cl.Endpoints(), DialTimeout: 10 * time.Second})
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	return cl, cli, func() { cli.Close(); cl.Close() }
}
