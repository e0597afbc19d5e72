package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
	"github.com/etcd-backup/etcd-backup/internal/storage/s3"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

func startCluster(t *testing.T, n int) (*embedded.Cluster, *etcd.Client) {
	t.Helper()
	dir := t.TempDir()
	specs, err := embedded.NewSpecs(dir, "m", n)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(context.Background(), specs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	cli, err := etcd.Connect(etcd.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cl, cli
}

func putKeys(t *testing.T, cli *clientv3.Client, prefix string, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("%s%05d", prefix, i), fmt.Sprintf("v%d-%s", i, bytes.Repeat([]byte{'x'}, i%100))
		if _, err := cli.Put(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	return want
}

func checkKeys(t *testing.T, endpoint, prefix string, want map[string]string) {
	t.Helper()
	c, err := etcd.Connect(etcd.Config{Endpoints: []string{endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	if len(resp.Kvs) != len(want) {
		t.Fatalf("%s: %d keys, want %d", endpoint, len(resp.Kvs), len(want))
	}
	for _, kv := range resp.Kvs {
		if want[string(kv.Key)] != string(kv.Value) {
			t.Fatalf("%s: key %s = %q, want %q", endpoint, kv.Key, kv.Value, want[string(kv.Key)])
		}
	}
}

func localRepo(t *testing.T) *repo.Repo {
	b, err := local.New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), b, "default")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func s3Repo(t *testing.T) *repo.Repo {
	srv := testenv.StartS3(t)
	srv.SetEnv(t)
	u, err := url.Parse(srv.URL("etcd"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s3.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r, err := repo.Open(context.Background(), b, "default")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWholeClusterRestoreOnNewURLs is etcd's disaster recovery: every member
// restored from one backup onto new peer URLs, with every key back on every
// member, for each storage backend and with and without encryption.
func TestWholeClusterRestoreOnNewURLs(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	rcp, err := format.ParseRecipient(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		repo    func(*testing.T) *repo.Repo
		encrypt bool
	}{
		{"local", localRepo, false},
		{"s3-encrypted", s3Repo, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, cli := startCluster(t, 3)
			want := putKeys(t, cli.Client, "/k/", 500)
			r := tc.repo(t)
			opt := backup.Options{}
			var ids []age.Identity
			if tc.encrypt {
				opt.Recipients = []format.Recipient{rcp}
				ids = []age.Identity{id}
			}
			m, err := backup.Run(ctx, cli, r, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !m.Leader {
				t.Errorf("snapshot not taken from the leader: %+v", m)
			}
			if m.Revision < 501 {
				t.Errorf("manifest revision %d misses acknowledged writes", m.Revision)
			}
			if tc.encrypt != m.Encrypted() {
				t.Fatalf("encrypted = %v", m.Encrypted())
			}

			dir := t.TempDir()
			specs, err := embedded.NewSpecs(dir, "n", 3)
			if err != nil {
				t.Fatal(err)
			}
			latest, err := r.Find(ctx, "latest", repo.Selector{})
			if err != nil || latest.ID != m.ID {
				t.Fatalf("latest = %v, %v", latest, err)
			}
			for _, s := range specs {
				p, err := restore.MakePlan(restore.Spec{DataDir: s.DataDir, Name: s.Name, InitialCluster: embedded.InitialCluster(specs)})
				if err != nil {
					t.Fatal(err)
				}
				res, err := restore.Execute(ctx, r, latest, p, restore.Options{Identities: ids})
				if err != nil {
					t.Fatal(err)
				}
				if res.Revision < m.Revision || res.SnapshotRevision != res.Revision {
					t.Fatalf("restored revision %d (snapshot %d), backup at %d", res.Revision, res.SnapshotRevision, m.Revision)
				}
			}
			cl, err := embedded.Start(ctx, specs, "")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for _, ep := range cl.Endpoints() {
				checkKeys(t, ep, "/k/", want)
			}
		})
	}
}

// TestAbortedBackupPublishesNothing cancels a backup mid-stream: no manifest
// and no payload may be left in the repository.
func TestAbortedBackupPublishesNothing(t *testing.T) {
	_, cli := startCluster(t, 1)
	putKeys(t, cli.Client, "/big/", 3000)
	r := localRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := backup.Run(ctx, cli, r, backup.Options{Progress: func(n int64) {
		if n > 0 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("cancelled backup succeeded")
	}
	var names []string
	r.Backend().List(context.Background(), "clusters/", func(i storage.Info) error {
		names = append(names, i.Name)
		return nil
	})
	if len(names) != 0 {
		t.Fatalf("aborted backup left objects: %v", names)
	}
}

// TestRestoreRefusesLiveDataDirAndKeepsOldData checks the restore safety
// rules on real data dirs.
func TestRestoreRefusesLiveDataDirAndKeepsOldData(t *testing.T) {
	ctx := context.Background()
	cl, cli := startCluster(t, 1)
	putKeys(t, cli.Client, "/k/", 10)
	r := localRepo(t)
	m, err := backup.Run(ctx, cli, r, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	live := cl.Specs[0].DataDir
	p, _ := restore.MakePlan(restore.Spec{DataDir: live, Name: "x", PeerURLs: "http://127.0.0.1:1"})
	if _, err := restore.Execute(ctx, r, m, p, restore.Options{}); !errors.Is(err, datadir.ErrInUse) {
		t.Fatalf("restore over a live etcd: want ErrInUse, got %v", err)
	}
	if entries, _ := filepath.Glob(live + ".*"); len(entries) != 0 {
		t.Fatalf("refused restore left %v", entries)
	}

	// An existing non-empty data dir is moved aside, intact.
	target := filepath.Join(t.TempDir(), "etcd")
	os.MkdirAll(filepath.Join(target, "member"), 0o700)
	os.WriteFile(filepath.Join(target, "member", "precious"), []byte("old"), 0o600)
	p, _ = restore.MakePlan(restore.Spec{DataDir: target, Name: "x", PeerURLs: "http://127.0.0.1:1"})
	res, err := restore.Execute(ctx, r, m, p, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(res.MovedAside, "member", "precious")); err != nil || string(b) != "old" {
		t.Fatalf("old data not kept at %q: %v", res.MovedAside, err)
	}
	if _, err := os.Stat(filepath.Join(target, "member", "snap", "db")); err != nil {
		t.Fatalf("new data dir incomplete: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(target), ".etcd.restore-*"))
	if len(left) != 0 {
		t.Fatalf("staging dirs left behind: %v", left)
	}
}
