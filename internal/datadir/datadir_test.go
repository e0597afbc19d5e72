package datadir

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestMoveAsideKeepsDataAndRemovesOnlyEmptyDirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	if p, err := MoveAside(dir, "pre-join", time.Now()); err != nil || p != "" {
		t.Fatalf("missing dir: %q %v", p, err)
	}
	os.Mkdir(dir, 0o700)
	if p, err := MoveAside(dir, "pre-join", time.Now()); err != nil || p != "" || exists(dir) {
		t.Fatalf("empty dir: %q %v", p, err)
	}
	now := time.Now()
	for i := 0; i < 2; i++ { // the same second twice: distinct names
		os.MkdirAll(filepath.Join(dir, "member"), 0o700)
		os.WriteFile(filepath.Join(dir, "member", "x"), []byte{byte(i)}, 0o600)
		p, err := MoveAside(dir, "pre-join", now)
		if err != nil || p == "" {
			t.Fatalf("non-empty dir: %q %v", p, err)
		}
		if b, _ := os.ReadFile(filepath.Join(p, "member", "x")); len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("moved data changed: %v", b)
		}
	}
}

// TestInstallGivesDataDirToParentOwner: a restore run as root produces a
// data dir owned by the etcd user when the parent belongs to it.
func TestInstallGivesDataDirToParentOwner(t *testing.T) {
	parent := t.TempDir()
	wantUID := os.Geteuid() // not root: ownership is left alone
	if wantUID == 0 {
		wantUID = 4242
		if err := os.Chown(parent, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	built := filepath.Join(t.TempDir(), "built")
	os.MkdirAll(filepath.Join(built, "member", "snap"), 0o700)
	os.WriteFile(filepath.Join(built, "member", "snap", "db"), []byte("db"), 0o600)
	dataDir := filepath.Join(parent, "default")
	if _, err := Install(built, dataDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(dataDir, func(p string, info os.FileInfo, err error) error {
		if st := info.Sys().(*syscall.Stat_t); int(st.Uid) != wantUID {
			t.Errorf("%s owned by %d, want %d", p, st.Uid, wantUID)
		}
		return nil
	})
}
