package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// expectCleanFailure asserts that r is a clean failure with exit code code: stderr
// holds exactly one "etcd-backup: error: " line (containing every string of
// wantInError), at most one "etcd-backup: hint: " line after it, and
// otherwise only log lines; no panic or goroutine dump anywhere.
func expectCleanFailure(t *testing.T, r result, code int, wantInError ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") || strings.Contains(out, ".go:") {
			t.Fatalf("output looks like a Go panic or stack trace:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
		}
	}
	var errLines, hintLines []string
	for _, line := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "etcd-backup: error: "):
			errLines = append(errLines, line)
		case strings.HasPrefix(line, "etcd-backup: hint: "):
			if len(errLines) == 0 {
				t.Errorf("hint before the error line:\n%s", r.stderr)
			}
			hintLines = append(hintLines, line)
		case strings.HasPrefix(line, "time=") && strings.Contains(line, " level="):
			// a log line (slog text handler)
		default:
			t.Errorf("unexpected stderr line %q\nstderr: %s", line, r.stderr)
		}
	}
	if len(errLines) != 1 || len(hintLines) > 1 {
		t.Fatalf("stderr has %d error and %d hint lines, want 1 and at most 1:\n%s", len(errLines), len(hintLines), r.stderr)
	}
	for _, w := range wantInError {
		if !strings.Contains(errLines[0], w) {
			t.Errorf("error line %q does not mention %q", errLines[0], w)
		}
	}
}

// digestPaths returns the treeDigest of every path (a missing path digestPaths as
// empty), to assert afterwards with assertUnchanged that a command changed nothing.
func digestPaths(t *testing.T, paths ...string) []string {
	t.Helper()
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = treeDigest(t, p)
	}
	return out
}

func assertUnchanged(t *testing.T, before []string, paths ...string) {
	t.Helper()
	after := digestPaths(t, paths...)
	for i, p := range paths {
		if before[i] != after[i] {
			t.Errorf("%s changed:\nbefore:\n%s\nafter:\n%s", p, before[i], after[i])
		}
	}
}

// writeAgeIdentity generates an age X25519 identity and writes it to a file in
// dir as age-keygen does; it returns the file and the public recipient.
func writeAgeIdentity(t *testing.T, dir string) (identityFile, recipient string, id *age.X25519Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	identityFile = filepath.Join(dir, fmt.Sprintf("key-%s.txt", id.Recipient().String()[4:12]))
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().Format(time.RFC3339), id.Recipient(), id)
	if err := os.WriteFile(identityFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return identityFile, id.Recipient().String(), id
}

// preciousDataDir makes a non-empty directory shaped like an etcd data dir (not
// held by any process) in a parent of its own, so that digesting the parent
// also catches staging or moved-aside directories left beside it.
func preciousDataDir(t *testing.T) (dataDir, parent string) {
	t.Helper()
	parent = t.TempDir()
	dataDir = filepath.Join(parent, "etcd-data")
	for name, body := range map[string]string{
		"member/snap/db": "not really a bbolt file, but precious",
		"member/wal/0000000000000000-0000000000000000.wal": "wal bytes",
		"note.txt": "operator's notes",
	} {
		p := filepath.Join(dataDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dataDir, parent
}

// TestErrors runs the CLI on bad input, one subtest per case, and checks the
// documented exit code, a single-line error (plus hint) without a panic, and
// that nothing on disk changed. No subtest changes the shared repository or
// writes to etcd before data-dir-in-use has digested its data dir, so they
// run in parallel.
func TestErrors(t *testing.T) {
	keyDir := t.TempDir()
	idFile, recipient, _ := writeAgeIdentity(t, keyDir)
	otherIDFile, _, otherID := writeAgeIdentity(t, keyDir)

	specs := newSpecs(t, "m", 1)
	c := startCluster(t, "3.6.16", specs)
	ep := c.endpoints()[0]
	putKeys(t, c.client(), "/errors/", 50, 100)

	repoDir := t.TempDir()
	idPlain := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine()
	idEnc := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir, "--encrypt-to", recipient).lastLine()
	ic := embedded.InitialCluster(specs)
	restoreArgs := func(ref, dataDir string, extra ...string) []string {
		return append([]string{"restore", ref, "--repo", repoDir, "--data-dir", dataDir,
			"--name", "m1", "--initial-cluster", ic}, extra...)
	}

	t.Run("unreachable-endpoint", func(t *testing.T) {
		t.Parallel()
		port := testenv.FreePort(t) // closed: nothing listens there
		before := digestPaths(t, repoDir)
		start := time.Now()
		r := cli(t, nil, "snapshot", "--endpoints", fmt.Sprintf("http://127.0.0.1:%d", port),
			"--dial-timeout", "1s", "--repo", repoDir)
		expectCleanFailure(t, r, 6, fmt.Sprintf("127.0.0.1:%d", port))
		// It takes --command-timeout (10s), not --dial-timeout: clientv3 only
		// applies DialTimeout to blocking dials (see the report). Bound it
		// loosely so that a hang is still caught.
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("took %v with --dial-timeout 1s", d)
		}
		assertUnchanged(t, before, repoDir)
	})

	t.Run("unreachable-endpoint-new-repo", func(t *testing.T) {
		t.Parallel()
		fresh := filepath.Join(t.TempDir(), "repo")
		r := cli(t, nil, "snapshot", "--endpoints", fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
			"--dial-timeout", "1s", "--repo", fresh)
		expectCleanFailure(t, r, 6)
		// The directory is created before etcd is contacted (see the
		// report), but no object may be written into it.
		if d := treeDigest(t, fresh); strings.Count(d, "\n") > 1 {
			t.Errorf("failed snapshot wrote into the new repository:\n%s", d)
		}
	})

	t.Run("unknown-url-scheme", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{
			{"list", "--repo", "ftp://x"},
			{"verify", "latest", "--repo", "ftp://x"},
			{"snapshot", "--endpoints", ep, "--repo", "ftp://x"},
		} {
			expectCleanFailure(t, cli(t, nil, args...), 2, `"ftp"`)
		}
		// Not taken for a relative directory "ftp:" either.
		if _, err := os.Lstat("ftp:"); !os.IsNotExist(err) {
			t.Errorf("snapshot --repo ftp://x created ./ftp: (stat: %v)", err)
		}
	})

	t.Run("missing-repo", func(t *testing.T) {
		t.Parallel()
		before := digestPaths(t, repoDir)
		expectCleanFailure(t, cli(t, nil, "list"), 2, "--repo")
		expectCleanFailure(t, cli(t, nil, "verify", idPlain), 2, "--repo")
		expectCleanFailure(t, cli(t, nil, "snapshot", "--endpoints", ep), 2, "--repo")
		assertUnchanged(t, before, repoDir)

		// ETCD_BACKUP_REPO stands in for --repo.
		env := []string{"ETCD_BACKUP_REPO=" + repoDir}
		out := mustCLI(t, env, "list").stdout
		if !strings.Contains(out, idPlain) || !strings.Contains(out, idEnc) {
			t.Errorf("list with ETCD_BACKUP_REPO does not show %s and %s:\n%s", idPlain, idEnc, out)
		}
		mustCLI(t, env, "verify", idPlain)
		assertUnchanged(t, before, repoDir)
	})

	t.Run("repo-does-not-exist", func(t *testing.T) {
		t.Parallel()
		missing := filepath.Join(t.TempDir(), "nonexistent", "path")
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, parent)
		for _, repo := range []string{"/nonexistent/path", missing} {
			expectCleanFailure(t, cli(t, nil, "list", "--repo", repo), 3, repo)
			expectCleanFailure(t, cli(t, nil, "verify", "--repo", repo), 3, repo)
			expectCleanFailure(t, cli(t, nil, "verify", idPlain, "--repo", repo), 3, repo)
			args := restoreArgs("latest", dataDir)
			args[3] = repo
			expectCleanFailure(t, cli(t, nil, args...), 3, repo)
			if _, err := os.Stat(repo); !os.IsNotExist(err) {
				t.Errorf("a reader created %s (stat: %v)", repo, err)
			}
		}
		assertUnchanged(t, before, parent)
	})

	t.Run("unknown-backup-id", func(t *testing.T) {
		t.Parallel()
		const id = "20990101T000000.000Z-deadbeef"
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		expectCleanFailure(t, cli(t, nil, "verify", id, "--repo", repoDir), 3, id)
		expectCleanFailure(t, cli(t, nil, restoreArgs(id, dataDir)...), 3, id)
		expectCleanFailure(t, cli(t, nil, restoreArgs(id, dataDir, "--identity", idFile)...), 3, id)
		assertUnchanged(t, before, repoDir, parent)
	})

	t.Run("bad-peer-url", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		for _, bad := range []string{"m1=notaurl", "m1=ftp://127.0.0.1:2380", "m1=http://127.0.0.1", "m1"} {
			expectCleanFailure(t, cli(t, nil, "restore", idPlain, "--repo", repoDir, "--data-dir", dataDir,
				"--name", "m1", "--initial-cluster", bad), 2)
		}
		assertUnchanged(t, before, repoDir, parent)
	})

	t.Run("name-not-in-initial-cluster", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		expectCleanFailure(t, cli(t, nil, "restore", idPlain, "--repo", repoDir, "--data-dir", dataDir,
			"--name", "m9", "--initial-cluster", ic), 2, "m9")
		assertUnchanged(t, before, repoDir, parent)
	})

	t.Run("bump-without-mark-compacted", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		// etcd's restore bumps only a revision it marks compacted: a bump
		// alone would be reported and never made.
		expectCleanFailure(t, cli(t, nil, "restore", idPlain, "--repo", repoDir, "--data-dir", dataDir,
			"--name", "m1", "--initial-cluster", ic, "--bump-revision", "1000"), 2, "--mark-compacted")
		expectCleanFailure(t, cli(t, nil, "restore-cluster", idPlain, "--repo", repoDir,
			"--initial-cluster", ic, "--bump-revision", "1000"), 2, "--mark-compacted")
		assertUnchanged(t, before, repoDir, parent)
	})

	t.Run("data-dir-in-use", func(t *testing.T) {
		t.Parallel()
		live := specs[0].DataDir
		parent := filepath.Dir(live)
		before := digestPaths(t, repoDir, parent)
		expectCleanFailure(t, cli(t, nil, restoreArgs(idPlain, live)...), 7, live)
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", live, "--identity", idFile)...), 7, live)
		assertUnchanged(t, before, repoDir, parent)
		// etcd still serves reads and writes.
		cl := c.client()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cl.Put(ctx, "/errors/after-in-use", "x"); err != nil {
			t.Fatalf("etcd no longer takes writes: %v", err)
		}
		checkKeys(t, ep, "/errors/after-in-use", map[string]string{"/errors/after-in-use": "x"})
	})

	t.Run("missing-identity", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		expectCleanFailure(t, cli(t, nil, restoreArgs(idEnc, dataDir, "--identity", "/nonexistent/key.txt")...), 5, "/nonexistent/key.txt")
		expectCleanFailure(t, cli(t, nil, restoreArgs(idEnc, dataDir)...), 5, "--identity")
		expectCleanFailure(t, cli(t, nil, "verify", idEnc, "--repo", repoDir), 5, "--identity")
		expectCleanFailure(t, cli(t, nil, "verify", idEnc, "--repo", repoDir, "--identity", "/nonexistent/key.txt"), 5)
		assertUnchanged(t, before, repoDir, parent)
	})

	t.Run("wrong-identity", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		expectCleanFailure(t, cli(t, nil, restoreArgs(idEnc, dataDir, "--identity", otherIDFile)...), 5, idEnc)
		expectCleanFailure(t, cli(t, nil, "verify", idEnc, "--repo", repoDir, "--identity", otherIDFile), 5, idEnc)
		// A file that is not an identity at all.
		expectCleanFailure(t, cli(t, nil, restoreArgs(idEnc, dataDir, "--identity", filepath.Join(dataDir, "note.txt"))...), 5)
		assertUnchanged(t, before, repoDir, parent)
		// The right key opens it (so the failures above were about the key).
		mustCLI(t, nil, "verify", idEnc, "--repo", repoDir, "--identity", idFile)
	})

	t.Run("bad-recipient", func(t *testing.T) {
		t.Parallel()
		fresh := filepath.Join(t.TempDir(), "repo")
		before := digestPaths(t, repoDir)
		for _, rcpt := range []string{"age1garbage", otherID.String(), "not-a-key"} {
			for _, repo := range []string{repoDir, fresh} {
				r := cli(t, nil, "snapshot", "--endpoints", ep, "--repo", repo, "--encrypt-to", rcpt)
				expectCleanFailure(t, r, 5, "--encrypt-to")
				if strings.HasPrefix(rcpt, "AGE-SECRET-KEY-1") && strings.Contains(r.stdout+r.stderr, rcpt) {
					t.Errorf("the secret key given to --encrypt-to is echoed back:\n%s", r.stderr)
				}
			}
		}
		assertUnchanged(t, before, repoDir)
		if _, err := os.Stat(fresh); !os.IsNotExist(err) {
			t.Errorf("failed snapshot created the repository %s (stat: %v)", fresh, err)
		}
	})

	t.Run("point-in-time-inputs", func(t *testing.T) {
		t.Parallel()
		dataDir, parent := preciousDataDir(t)
		before := digestPaths(t, repoDir, parent)
		// Usage mistakes: exit 2 before anything is read or written.
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", dataDir, "--to-time", "yesterday")...), 2, "--to-time", "RFC 3339")
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", dataDir, "--to-revision", "-5")...), 2, "--to-revision")
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", dataDir, "--to-revision", "5", "--to-time", "1m")...), 2, "not both")
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", dataDir, "--to-revision", "5", "--no-journal")...), 2, "--no-journal")
		expectCleanFailure(t, cli(t, nil, "history", "--repo", repoDir, "--since", "soon"), 2, "--since")
		expectCleanFailure(t, cli(t, nil, "agent", "--continuous", "--journal-flush", "1ms", "--repo", repoDir, "--endpoints", ep), 2, "--journal-flush")
		// Nothing journaled: no backup covers a revision or a history.
		expectCleanFailure(t, cli(t, nil, restoreArgs("latest", dataDir, "--to-revision", "999999")...), 3, "999999")
		expectCleanFailure(t, cli(t, nil, "history", "--repo", repoDir), 3, "no journal")
		if after := digestPaths(t, repoDir, parent); !slices.Equal(before, after) {
			t.Errorf("a refused point-in-time command changed the repository or the data dir")
		}
	})

	t.Run("unknown-flag", func(t *testing.T) {
		t.Parallel()
		before := digestPaths(t, repoDir)
		expectCleanFailure(t, cli(t, nil, "list", "--repo", repoDir, "--no-such-flag"), 2, "--no-such-flag")
		expectCleanFailure(t, cli(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir, "--bogus=1"), 2, "--bogus")
		expectCleanFailure(t, cli(t, nil, "restore", idPlain, "--repo", repoDir, "-Z"), 2)
		expectCleanFailure(t, cli(t, nil, "verify", idPlain, "extra-arg", "--repo", repoDir), 2)
		assertUnchanged(t, before, repoDir)
	})

	t.Run("data-dir-parent-missing", func(t *testing.T) {
		t.Parallel()
		top := t.TempDir()
		dataDir := filepath.Join(top, "no", "such", "parent", "etcd-data")
		before := digestPaths(t, repoDir, top)
		r := cli(t, nil, restoreArgs(idPlain, dataDir)...)
		expectCleanFailure(t, r, 2, filepath.Dir(dataDir), "does not exist")
		assertUnchanged(t, before, repoDir, top)
	})
}
