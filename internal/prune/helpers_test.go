package prune_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

// writeBackup publishes a real backup taken "at": a payload encoded by
// internal/format from bytes shaped like etcd's snapshot stream (data ‖
// sha256(data)), then its manifest, like internal/backup does.
func writeBackup(t *testing.T, r *repo.Repo, at time.Time, recipients ...format.Recipient) *format.Manifest {
	t.Helper()
	return writeBackupWith(t, r, at, recipients, nil)
}

// writeBackupWith is writeBackup with a hook that may change the manifest
// before it is written.
func writeBackupWith(t *testing.T, r *repo.Repo, at time.Time, recipients []format.Recipient, mutate func(*format.Manifest)) *format.Manifest {
	t.Helper()
	ctx := context.Background()
	data := make([]byte, 16<<10)
	rand.Read(data)
	sum := sha256.Sum256(data)
	raw := append(data, sum[:]...)
	var stored bytes.Buffer
	enc, err := format.NewEncoder(&stored, format.EncoderOptions{Recipients: recipients})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(raw); err != nil {
		t.Fatal(err)
	}
	sums, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := format.NewID(at)
	encrypted := len(recipients) > 0
	if err := r.PutPayload(ctx, id, encrypted, &stored); err != nil {
		t.Fatal(err)
	}
	m := &format.Manifest{
		FormatVersion: format.Version, Kind: format.KindSnapshot, ID: id, Cluster: r.Cluster(),
		ClusterID: "cdf818194e3a8c32", MemberID: "8e9e05c52164694d", MemberName: "m1",
		Endpoint: "http://127.0.0.1:2379", EtcdVersion: "3.6.16", Revision: 42, StreamRevision: 42,
		Created: at.UTC(), Finished: at.UTC().Add(time.Second), Payload: repo.PayloadBase(id, encrypted),
		RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize, StoredSHA256: sums.StoredSHA256,
		Compression: format.CompressionZstd, Encryption: format.EncryptionNone, ToolVersion: "test",
	}
	if encrypted {
		m.Encryption = format.EncryptionAge
		for _, rc := range recipients {
			m.Recipients = append(m.Recipients, rc.Fingerprint)
		}
	}
	if mutate != nil {
		mutate(m)
	}
	if err := r.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// day returns 2026-01-<d> at hh:mm UTC.
func day(d, hh, mm int) time.Time { return time.Date(2026, 1, d, hh, mm, 0, 0, time.UTC) }

// fixedNow is the clock of tests that do not care about real ages.
func fixedNow() time.Time { return time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC) }

// localRepo is a repository in a fresh directory.
func localRepo(t *testing.T) (*repo.Repo, string) {
	t.Helper()
	root := t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), d, "default")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureMarker(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	return r, root
}

func wrapRepo(t *testing.T, b storage.Backend) *repo.Repo {
	t.Helper()
	r, err := repo.Open(context.Background(), b, "default")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ids returns the IDs with a manifest, newest first.
func ids(t *testing.T, r *repo.Repo) []string {
	t.Helper()
	got, err := r.IDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// objects returns every object name under the cluster's snapshots.
func objects(t *testing.T, r *repo.Repo) []string {
	t.Helper()
	var out []string
	err := r.Backend().List(context.Background(), "clusters/"+r.Cluster()+"/snapshots/", func(i storage.Info) error {
		out = append(out, strings.TrimPrefix(i.Name, "clusters/"+r.Cluster()+"/snapshots/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// objectsOf lists the objects of the backups given: manifest and payload.
func objectsOf(ms ...*format.Manifest) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID+".manifest.json", m.Payload)
	}
	slices.Sort(out)
	return out
}

// digest hashes every file and directory below root: names, modes,
// modification times and contents.
func digest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		h.Write([]byte(rel + "\x00" + fi.Mode().String() + "\x00" + fi.ModTime().String() + "\x00"))
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// corruptFile flips one byte in the middle of a file.
func corruptFile(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func snapPath(root string, name string) string {
	return filepath.Join(root, "clusters", "default", "snapshots", name)
}

// recorder is a real backend that records Remove calls and can make
// payload removals fail.
type recorder struct {
	storage.Backend
	mu          sync.Mutex
	removes     []string
	failPayload bool
}

var errInjected = &storage.RetryableError{Err: os.ErrDeadlineExceeded}

func (r *recorder) Remove(ctx context.Context, name string) error {
	r.mu.Lock()
	r.removes = append(r.removes, name)
	fail := r.failPayload && strings.Contains(name, ".db.zst")
	r.mu.Unlock()
	if fail {
		return errInjected
	}
	return r.Backend.Remove(ctx, name)
}

// getCounter is a real backend that counts the payloads read (Get of a
// snapshot payload object).
type getCounter struct {
	storage.Backend
	mu   sync.Mutex
	gets int
}

func (g *getCounter) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if strings.Contains(name, ".db.zst") {
		g.mu.Lock()
		g.gets++
		g.mu.Unlock()
	}
	return g.Backend.Get(ctx, name)
}

func (g *getCounter) payloadGets() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gets
}

// statFailer is a real backend whose Stat of snapshot payloads fails with
// err, as storage that is down does once its retries are spent.
type statFailer struct {
	storage.Backend
	err error
}

func (s *statFailer) Stat(ctx context.Context, name string) (storage.Info, error) {
	if strings.Contains(name, ".db.zst") {
		return storage.Info{}, s.err
	}
	return s.Backend.Stat(ctx, name)
}
