package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// localBackupFiles returns the paths of a backup's payload and manifest in a
// local repository (cluster "default").
func localBackupFiles(repoDir, id string, encrypted bool) (payload, manifest string) {
	dir := filepath.Join(repoDir, "clusters", "default", "snapshots")
	payload = filepath.Join(dir, id+".db.zst")
	if encrypted {
		payload += ".age"
	}
	return payload, filepath.Join(dir, id+".manifest.json")
}

// flipMiddleByte inverts the byte in the middle of file.
func flipMiddleByte(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// restoreFilesOnCleanup saves files and puts them back, byte for byte, when the test
// ends (a deleted one is recreated).
func restoreFilesOnCleanup(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Error(err)
			}
		})
	}
}

// listBackupsJSON runs list --json and returns its entries by ID.
func listBackupsJSON(t *testing.T, env []string, repo string) (ids []string, byID map[string]listedBackup) {
	t.Helper()
	var entries []listedBackup
	out := mustCLI(t, env, "list", "--repo", repo, "--json").stdout
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	byID = map[string]listedBackup{}
	for _, e := range entries {
		ids = append(ids, e.ID)
		byID[e.ID] = e
	}
	return ids, byID
}

// listedBackup is the part of list --json these tests read.
type listedBackup struct {
	ID        string `json:"id"`
	Revision  int64  `json:"revision"`
	Encrypted bool   `json:"encrypted"`
	Error     string `json:"error"`
}

// TestCorruption damages stored backups (plain and age-encrypted) in every
// way a disk or a hand can, and checks that verify and restore refuse them
// with exit code 4 without touching the data dir, that list keeps working,
// and that 'restore latest' steps over a damaged newest manifest.
func TestCorruption(t *testing.T) {
	keyDir := t.TempDir()
	idFile, recipient, _ := writeAgeIdentity(t, keyDir)

	specs := newSpecs(t, "m", 1)
	c := startCluster(t, "3.6.16", specs)
	ep := c.endpoints()[0]
	putKeys(t, c.client(), "/corrupt/", 300, 300)
	ic := embedded.InitialCluster(specs)

	repoDir := t.TempDir()
	// Donors: intact backups of other contents, whose payloads are well
	// formed but belong to another backup.
	donors := map[bool]string{
		false: mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine(),
		true:  mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir, "--encrypt-to", recipient).lastLine(),
	}
	putKeys(t, c.client(), "/corrupt/more/", 10, 10)
	ids := map[bool]string{
		false: mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine(),
		true:  mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir, "--encrypt-to", recipient).lastLine(),
	}

	damages := []struct {
		name           string
		damage         func(t *testing.T, encrypted bool, payload, manifest string)
		manifestBroken bool
	}{
		{"flip-payload-byte", func(t *testing.T, _ bool, p, _ string) { flipMiddleByte(t, p) }, false},
		{"flip-manifest-byte", func(t *testing.T, _ bool, _, m string) { flipMiddleByte(t, m) }, true},
		{"truncate-payload", func(t *testing.T, _ bool, p, _ string) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"truncate-payload-by-one", func(t *testing.T, _ bool, p, _ string) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, fi.Size()-1); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"append-to-payload", func(t *testing.T, _ bool, p, _ string) {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("junk")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"payload-of-another-backup", func(t *testing.T, encrypted bool, p, _ string) {
			// Well-formed zstd (and age, to the same key) with a valid etcd
			// trailer: only the manifest's sizes and checksums tell.
			donor, _ := localBackupFiles(repoDir, donors[encrypted], encrypted)
			b, err := os.ReadFile(donor)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"delete-payload", func(t *testing.T, _ bool, p, _ string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, false},
	}

	for _, encrypted := range []bool{false, true} {
		kind := "plain"
		if encrypted {
			kind = "age"
		}
		id := ids[encrypted]
		for _, d := range damages {
			t.Run(kind+"/"+d.name, func(t *testing.T) {
				payload, manifest := localBackupFiles(repoDir, id, encrypted)
				restoreFilesOnCleanup(t, payload, manifest)
				d.damage(t, encrypted, payload, manifest)

				verifyArgs := []string{"verify", id, "--repo", repoDir}
				if encrypted {
					verifyArgs = append(verifyArgs, "--identity", idFile)
				}
				expectCleanFailure(t, cli(t, nil, verifyArgs...), 4, id)

				dataDir, parent := preciousDataDir(t)
				before := digestPaths(t, parent)
				expectCleanFailure(t, cli(t, nil, "restore", id, "--repo", repoDir, "--data-dir", dataDir,
					"--name", "m1", "--initial-cluster", ic, "--identity", idFile), 4, id)
				assertUnchanged(t, before, parent) // catches D.pre-restore-* and .D.restore-* too
				left, _ := filepath.Glob(filepath.Join(parent, "*"))
				hidden, _ := filepath.Glob(filepath.Join(parent, ".*"))
				if len(left) != 1 || len(hidden) != 0 {
					t.Errorf("beside the data dir: %q %q", left, hidden)
				}

				r := mustCLI(t, nil, "list", "--repo", repoDir)
				_, byID := listBackupsJSON(t, nil, repoDir)
				if _, ok := byID[id]; !ok {
					t.Errorf("list --json no longer shows %s", id)
				}
				if d.manifestBroken {
					line := lineContaining(r.stdout, id)
					if !strings.Contains(line, "DAMAGED") {
						t.Errorf("list shows the damaged backup as %q, want DAMAGED\n%s", line, r.stdout)
					}
					if byID[id].Error == "" {
						t.Errorf("list --json gives no error for the damaged manifest of %s", id)
					}
				}
			})
		}
	}

	t.Run("intact-again", func(t *testing.T) {
		// The damage above was all that made them fail.
		mustCLI(t, nil, "verify", ids[false], "--repo", repoDir)
		mustCLI(t, nil, "verify", ids[true], "--repo", repoDir, "--identity", idFile)
	})

	t.Run("latest-skips-damaged-manifest", func(t *testing.T) {
		newest := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine()
		payload, manifest := localBackupFiles(repoDir, newest, false)
		restoreFilesOnCleanup(t, payload, manifest)
		flipMiddleByte(t, manifest)
		previous := ids[true] // the age-encrypted one was taken second

		r := mustCLI(t, nil, "list", "--repo", repoDir)
		if !strings.Contains(lineContaining(r.stdout, newest), "DAMAGED") {
			t.Errorf("list does not show %s as DAMAGED:\n%s", newest, r.stdout)
		}
		r = mustCLI(t, nil, "verify", "latest", "--repo", repoDir, "--identity", idFile)
		if !strings.Contains(r.stdout, previous) {
			t.Errorf("verify latest checked another backup than %s:\n%s", previous, r.stdout)
		}
		dataDir := filepath.Join(t.TempDir(), "etcd-data")
		r = mustCLI(t, nil, "restore", "latest", "--repo", repoDir, "--data-dir", dataDir,
			"--name", "m1", "--initial-cluster", ic, "--identity", idFile)
		if !strings.Contains(r.stdout, "restored backup "+previous) {
			t.Errorf("restore latest did not restore %s:\n%s", previous, r.stdout)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "member", "snap", "db")); err != nil {
			t.Errorf("restored data dir: %v", err)
		}
		// An explicit ID still reports the damage.
		expectCleanFailure(t, cli(t, nil, "verify", newest, "--repo", repoDir), 4, newest)
	})

	t.Run("latest-with-damaged-payload-fails", func(t *testing.T) {
		// The manifest is intact, so latest resolves to this backup, and
		// its damaged payload stops the restore (no silent fallback).
		newest := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine()
		payload, manifest := localBackupFiles(repoDir, newest, false)
		restoreFilesOnCleanup(t, payload, manifest)
		flipMiddleByte(t, payload)
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, parent)
		expectCleanFailure(t, cli(t, nil, "restore", "latest", "--repo", repoDir, "--data-dir", dataDir,
			"--name", "m1", "--initial-cluster", ic, "--identity", idFile), 4, newest)
		assertUnchanged(t, before, parent)
	})
}

// lineContaining returns the first line of s that contains sub.
func lineContaining(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
