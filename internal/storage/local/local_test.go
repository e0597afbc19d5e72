package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		d, err := local.New(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "a", "b")
	_, err := local.New(missing, false)
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("New(missing, create=false) = %v, want ErrNotFound naming the path", err)
	}
	d, err := local.New(missing, true)
	if err != nil {
		t.Fatalf("New(missing, create=true): %v", err)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Fatalf("New(create=true) did not create %s: %v", missing, err)
	}
	if d.Location() != missing {
		t.Errorf("Location() = %q, want %q", d.Location(), missing)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(file, true); err == nil {
		t.Error("New(regular file) succeeded")
	}
	if _, err := local.New("", true); err == nil {
		t.Error("New(\"\") succeeded")
	}
}

// TestNoLeftovers checks the on-disk effects the conformance suite cannot
// see: failed Puts leave no temporary files, and Remove prunes directories it
// empties.
func TestNoLeftovers(t *testing.T) {
	root := t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	boom := errors.New("boom")
	err = d.Put(ctx, "x/y/obj", storagetest.NewGen(1, 10<<20).FailAfter(3<<20, boom))
	if !errors.Is(err, boom) {
		t.Fatalf("Put with failing reader: %v", err)
	}
	if err := d.Put(ctx, "x/y/obj", strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, "x/y/obj"); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if p != root {
			left = append(left, p)
		}
		return err
	})
	if len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}

	// Temporary files of a Put in progress (or of a crashed process) are
	// invisible, and object names cannot collide with them.
	if err := os.WriteFile(filepath.Join(root, ".tmp-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := d.List(ctx, "", func(i storage.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Errorf("List shows temporary files: %q", names)
	}
	if err := storage.Wrap(d, storage.Policy{}).Put(ctx, "a/.tmp-x", strings.NewReader("x")); err == nil {
		t.Error("Put of a reserved temporary name succeeded")
	}
}

func TestFilePermissions(t *testing.T) {
	root := t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(context.Background(), "p/q", strings.NewReader("secret")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"p": 0o700, "p/q": 0o600} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm() &^ 0o077; got != want&^0o077 || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want %v (backups hold secrets)", p, fi.Mode().Perm(), want)
		}
	}
}
