package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

// pruneFixture writes real backups (payload encoded by internal/format,
// then manifest) at the given times into a new local repository.
func pruneFixture(t *testing.T, times ...time.Time) (root string, ms []*format.Manifest) {
	t.Helper()
	ctx := context.Background()
	root = t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, d, "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range times {
		data := make([]byte, 4096)
		rand.Read(data)
		sum := sha256.Sum256(data)
		var stored bytes.Buffer
		enc, err := format.NewEncoder(&stored, format.EncoderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		enc.Write(append(data, sum[:]...))
		sums, err := enc.Close()
		if err != nil {
			t.Fatal(err)
		}
		id := format.NewID(at)
		if err := r.PutPayload(ctx, id, false, &stored); err != nil {
			t.Fatal(err)
		}
		m := &format.Manifest{FormatVersion: format.Version, Kind: format.KindSnapshot, ID: id, Cluster: "default",
			MemberName: "m1", Created: at.UTC(), Finished: at.UTC(), Payload: repo.PayloadBase(id, false),
			RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize, StoredSHA256: sums.StoredSHA256,
			Compression: format.CompressionZstd, Encryption: format.EncryptionNone}
		if err := r.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return root, ms
}

func snapFiles(t *testing.T, root string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(root, "clusters", "default", "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestPruneCommand(t *testing.T) {
	days := []time.Time{
		time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 20, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 3, 10, 0, 0, 0, time.UTC),
	}

	t.Run("no keep flag is a usage error", func(t *testing.T) {
		root, _ := pruneFixture(t, days...)
		for _, args := range [][]string{
			{"prune", "--repo", root},
			{"prune", "--repo", root, "--keep-last", "0", "--dry-run"},
		} {
			code, _, stderr := runSystemdCLI(t, args...)
			if code != exitUsage || !strings.Contains(stderr, "--keep-last") {
				t.Errorf("%q: exit %d, stderr %q; want %d naming the keep flags", args, code, stderr, exitUsage)
			}
		}
		if n := len(snapFiles(t, root)); n != 8 {
			t.Errorf("%d files left, want 8", n)
		}
	})

	t.Run("bad values are usage errors", func(t *testing.T) {
		root, _ := pruneFixture(t, days[0])
		for _, args := range [][]string{
			{"--keep-last", "-1"}, {"--keep-daily", "many"}, {"--keep-within", "1y"}, {"--keep-last", "1", "--orphan-age", "0"},
		} {
			code, _, stderr := runSystemdCLI(t, append([]string{"prune", "--repo", root}, args...)...)
			if code != exitUsage {
				t.Errorf("%q: exit %d (%s), want %d", args, code, stderr, exitUsage)
			}
		}
	})

	t.Run("dry run then real run", func(t *testing.T) {
		root, ms := pruneFixture(t, days...)
		before := snapFiles(t, root)
		code, stdout, stderr := runSystemdCLI(t, "prune", "--repo", root, "--keep-daily", "2", "--dry-run")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			ms[3].ID + "  2026-01-03T10:00:00Z",
			"keep          daily 2026-01-03, newest verified",
			ms[2].ID, "daily 2026-01-02",
			ms[1].ID, ms[0].ID, "would remove",
			"newest verified backup: " + ms[3].ID,
			"would remove 2 backups and 0 orphan payloads",
			"dry run: nothing was changed",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, stdout)
			}
		}
		if after := snapFiles(t, root); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Fatalf("dry run changed the repository: %v -> %v", before, after)
		}

		code, stdout, stderr = runSystemdCLI(t, "prune", "--repo", root, "--keep-daily", "2")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, "removed 2 backups") || strings.Contains(stdout, "would remove") {
			t.Errorf("output:\n%s", stdout)
		}
		want := []string{ms[2].ID + ".db.zst", ms[2].ID + ".manifest.json", ms[3].ID + ".db.zst", ms[3].ID + ".manifest.json"}
		if got := snapFiles(t, root); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("left %v, want %v", got, want)
		}
	})

	// Bytes damaged in place, size intact: the presence check keeps the
	// backup as the newest verified (it was checked when written and is
	// there with its size); --read-back reads it and skips it.
	t.Run("newest damaged in place", func(t *testing.T) {
		root, ms := pruneFixture(t, days...)
		p := filepath.Join(root, "clusters", "default", "snapshots", ms[3].Payload)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		os.WriteFile(p, b, 0o600)
		t.Setenv("ETCD_BACKUP_KEEP_LAST", "1") // flags come from the environment too
		code, stdout, stderr := runSystemdCLI(t, "prune", "--repo", root, "--dry-run")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"newest verified backup: " + ms[3].ID + " (checked when written; manifest intact, payload present with its recorded size",
			"would remove 3 backups"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "FAILS VERIFICATION") {
			t.Errorf("the presence check read the payload:\n%s", stdout)
		}

		code, stdout, stderr = runSystemdCLI(t, "prune", "--repo", root, "--read-back")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"FAILS VERIFICATION", "newest verified backup: " + ms[2].ID + " (read back: every checksum", "removed 2 backups"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("--read-back output lacks %q:\n%s", want, stdout)
			}
		}
		if n := len(snapFiles(t, root)); n != 4 {
			t.Errorf("%d files left, want the 2 newest backups", n)
		}
	})

	// A payload of the wrong size, or missing, fails the presence check:
	// the next older backup is the newest verified.
	for _, damage := range []string{"truncated", "missing"} {
		t.Run("newest "+damage, func(t *testing.T) {
			root, ms := pruneFixture(t, days...)
			p := filepath.Join(root, "clusters", "default", "snapshots", ms[3].Payload)
			if damage == "missing" {
				os.Remove(p)
			} else {
				os.Truncate(p, 10)
			}
			code, stdout, stderr := runSystemdCLI(t, "prune", "--repo", root, "--keep-last", "1")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			want := []string{"FAILS VERIFICATION", "newest verified backup: " + ms[2].ID, "removed 2 backups"}
			if damage == "missing" {
				want = append(want, "is missing from the repository")
			} else {
				want = append(want, "stored payload is 10 bytes")
			}
			for _, w := range want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
			var left []string
			for _, f := range snapFiles(t, root) {
				if strings.HasSuffix(f, ".manifest.json") {
					left = append(left, strings.TrimSuffix(f, ".manifest.json"))
				}
			}
			if strings.Join(left, ",") != ms[2].ID+","+ms[3].ID {
				t.Errorf("backups left %v, want %s and %s", left, ms[2].ID, ms[3].ID)
			}
		})
	}

	t.Run("nothing verifies exits 4", func(t *testing.T) {
		root, ms := pruneFixture(t, days...)
		for _, m := range ms {
			p := filepath.Join(root, "clusters", "default", "snapshots", m.Payload)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-1], 0o600)
		}
		code, stdout, stderr := runSystemdCLI(t, "prune", "--repo", root, "--keep-last", "1")
		if code != exitIntegrity {
			t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitIntegrity, stdout, stderr)
		}
		if !strings.Contains(stdout, "no backup passes verification") || !strings.Contains(stderr, "nothing removed") {
			t.Errorf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
		if n := len(snapFiles(t, root)); n != 8 {
			t.Errorf("%d files left, want all 8", n)
		}
	})

	t.Run("help explains verification and --read-back", func(t *testing.T) {
		code, stdout, _ := runSystemdCLI(t, "prune", "--help")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, want := range []string{"--read-back", "payload exists with the size", "no download", "downloads"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("prune --help lacks %q:\n%s", want, stdout)
			}
		}
	})

	t.Run("unlimited and within", func(t *testing.T) {
		root, _ := pruneFixture(t, days...)
		code, stdout, stderr := runSystemdCLI(t, "prune", "--repo", root, "--keep-daily", "unlimited", "--keep-within", "1d", "--dry-run")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"policy daily=unlimited within=1d", "within 1d, daily 2026-01-03", "within 1d, daily 2026-01-02", "would remove 1 backup and"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
}
