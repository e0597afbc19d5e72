package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// readManifest reads and checks the manifest of a backup in a local repository.
func readManifest(t *testing.T, repoDir, id string) *format.Manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoDir, "clusters", "default", "snapshots", id+".manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// history writes a key space with overwrites, deletions, a deletion at the
// compaction revision, a compaction and writes after it, in few transactions.
func history(t *testing.T, cl *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	txn := func(ops ...clientv3.Op) int64 {
		r, err := cl.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	for round := 0; round < 3; round++ {
		var ops []clientv3.Op
		for i := round; i < 120; i += 1 + round {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/h/%04d", i), fmt.Sprintf("r%d-%s", round, strings.Repeat("x", i))))
		}
		for len(ops) > 0 {
			n := min(len(ops), 100)
			txn(ops[:n]...)
			ops = ops[n:]
		}
	}
	txn(clientv3.OpDelete("/h/0001"), clientv3.OpDelete("/h/0002"))
	at := txn(clientv3.OpDelete("/h/0003")) // a tombstone at the compaction revision
	if _, err := cl.Compact(ctx, at, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	txn(clientv3.OpPut("/h/0003", "back"), clientv3.OpPut("/h/0004", "again"))
	txn(clientv3.OpPut("/h/0004", "and again"))
}

// TestDrillAcrossVersions: backups of etcd 3.4, 3.5 and 3.7 servers record
// their HashKV, and a drill on the in-process etcd (3.6) computes the same
// hash from the restored snapshot (a 3.7 one after lowering the versions in
// its throwaway copy: same storage schema). On 3.4, a backup at the compaction
// revision (which 3.4 refuses to hash) is written without hash_kv, with a
// warning, and drills as "not recorded".
func TestDrillAcrossVersions(t *testing.T) {
	for _, version := range []string{"3.4", "3.5.35", "3.7.3"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, version, newSpecs(t, "m", 1))
			cl := c.client()
			history(t, cl)
			repoDir := t.TempDir()
			ep := c.endpoints()[0]
			id := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir).lastLine()
			m := readManifest(t, repoDir, id)
			if m.HashKV == nil || m.HashKV.Revision != m.Revision || m.HashKV.CompactRevision <= 0 {
				t.Fatalf("etcd %s: hash_kv = %+v (revision %d)", version, m.HashKV, m.Revision)
			}
			out := mustCLI(t, nil, "verify", id, "--drill", "--repo", repoDir)
			if !strings.Contains(out.stdout, "drill ok") || !strings.Contains(out.stdout, fmt.Sprintf("etcd hash at revision %d matches (%08x)", m.Revision, m.HashKV.Hash)) {
				t.Fatalf("etcd %s: verify --drill:\n%s\n%s", version, out.stdout, out.stderr)
			}
			if newer := strings.Contains(out.stdout, "note: written by etcd 3.7, drilled on etcd 3.6"); newer != (version == "3.7.3") {
				t.Errorf("etcd %s: note about the newer etcd: %v\n%s", version, newer, out.stdout)
			}
			if version != "3.4" {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := cl.Get(ctx, "/h/0004")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cl.Compact(ctx, resp.Header.Revision); err != nil {
				t.Fatal(err)
			}
			r := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--repo", repoDir)
			if m := readManifest(t, repoDir, r.lastLine()); m.HashKV != nil {
				t.Fatalf("etcd 3.4 hashed its compaction revision: %+v", m.HashKV)
			}
			if !strings.Contains(r.stderr, "HashKV not recorded in the manifest") {
				t.Errorf("no warning for the missing hash:\n%s", r.stderr)
			}
			out = mustCLI(t, nil, "verify", r.lastLine(), "--drill", "--repo", repoDir)
			if !strings.Contains(out.stdout, "drill ok") || !strings.Contains(out.stdout, "etcd hash not recorded in this backup") {
				t.Fatalf("verify --drill without hash_kv:\n%s", out.stdout)
			}
		})
	}
}
