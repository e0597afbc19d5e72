package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/drill/drilltest"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestVerifyDrill: snapshot of a live member records etcd's hash; verify
// --drill passes on it, exits 4 on a copy altered inside the snapshot with
// every checksum recomputed (which plain verify passes), and stderr, not a
// terminal here, carries no carriage return.
func TestVerifyDrill(t *testing.T) {
	ctx := context.Background()
	specs, err := embedded.NewSpecs(t.TempDir(), "m", 1)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	cli, err := etcd.Connect(etcd.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := 0; i < 50; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%03d", i), strings.Repeat("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := t.TempDir()
	out, errs, code := runCLI("snapshot", "--endpoints", cl.Endpoints()[0], "--repo", repoDir)
	if code != 0 {
		t.Fatalf("snapshot: exit %d\n%s", code, errs)
	}
	id := strings.TrimSpace(out)

	out, errs, code = runCLI("verify", id, "--drill", "--repo", repoDir)
	if code != 0 || !strings.Contains(out, id+" ok:") || !strings.Contains(out, id+" drill ok: a one-member etcd restored from it serves 50 keys") ||
		!strings.Contains(out, "etcd's snapshot reader counts 50; etcd hash at revision 51 matches") {
		t.Fatalf("verify --drill: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if strings.Contains(errs, "\r") {
		t.Errorf("carriage return on a stderr that is not a terminal: %q", errs)
	}

	b, err := local.New(repoDir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, b, "default")
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.ReadManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	bad := drilltest.Tamper(t, r, m, "/k/007")
	if _, errs, code := runCLI("verify", bad.ID, "--repo", repoDir, "--quiet"); code != 0 {
		t.Fatalf("plain verify of the altered backup: exit %d (it should pass: only the drill can tell)\n%s", code, errs)
	}
	out, errs, code = runCLI("verify", bad.ID, "--drill", "--repo", repoDir, "--quiet")
	if code != exitIntegrity || !strings.Contains(out, bad.ID+" drill FAILED") || !strings.Contains(out, "  - etcd's hash of the restored key space at revision 51 is") ||
		!strings.Contains(errs, "etcd-backup: error: integrity check failed: restore drill of backup "+bad.ID) {
		t.Fatalf("verify --drill of an altered backup: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitIntegrity, out, errs)
	}
	t.Logf("stdout:\n%sstderr:\n%s", out, errs)
}
