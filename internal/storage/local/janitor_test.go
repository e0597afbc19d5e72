package local_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
)

func TestRemoveStale(t *testing.T) {
	root := t.TempDir()
	d, err := local.New(root, false)
	if err != nil {
		t.Fatal(err)
	}
	var j storage.Janitor = d // local implements the optional interface
	ctx := t.Context()

	// Objects, some old: never touched, whatever their age or name.
	for _, name := range []string{"a/obj", "a/b/x.tmp-not-a-temp", "top"} {
		if err := d.Put(ctx, name, strings.NewReader(name)); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	write := func(rel string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(filepath.Join(root, "a", "obj"), old, old); err != nil {
		t.Fatal(err)
	}
	write("a/.tmp-111", old)          // killed Put, next to an object
	write("c/d/.tmp-222", old)        // killed Put alone in new directories
	write(".tmp-333", old)            // at the root
	write("a/.tmp-young", time.Now()) // a Put that may still be running
	write("e/.tmp-edge", time.Now().Add(-50*time.Minute))

	// A Put in progress right now, blocked on its reader.
	pr, pw := io.Pipe()
	putDone := make(chan error, 1)
	go func() { putDone <- d.Put(context.Background(), "f/inflight", pr) }()
	if _, err := pw.Write([]byte("first bytes")); err != nil {
		t.Fatal(err)
	}

	removed, err := j.RemoveStale(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{".tmp-333", "a/.tmp-111", "c/d/.tmp-222"}; !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	for _, gone := range []string{"a/.tmp-111", "c", ".tmp-333"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still exists (err %v)", gone, err)
		}
	}
	for _, kept := range []string{"a/.tmp-young", "e/.tmp-edge", "a/obj", "a/b/x.tmp-not-a-temp", "top"} {
		if _, err := os.Lstat(filepath.Join(root, kept)); err != nil {
			t.Errorf("%s was removed: %v", kept, err)
		}
	}

	// The running Put is unaffected and completes.
	pw.Close()
	if err := <-putDone; err != nil {
		t.Fatalf("Put running during RemoveStale: %v", err)
	}
	if _, err := d.Stat(ctx, "f/inflight"); err != nil {
		t.Fatal(err)
	}

	// A shorter age takes the younger ones too; nothing left then.
	removed, err = j.RemoveStale(ctx, 10*time.Minute)
	if err != nil || !slices.Equal(removed, []string{"e/.tmp-edge"}) {
		t.Errorf("RemoveStale(10m) = %q, %v; want [e/.tmp-edge]", removed, err)
	}
	removed, err = j.RemoveStale(ctx, 0)
	if err != nil || !slices.Equal(removed, []string{"a/.tmp-young"}) {
		t.Errorf("RemoveStale(0) = %q, %v; want [a/.tmp-young]", removed, err)
	}
	var names []string
	if err := d.List(ctx, "", func(i storage.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a/b/x.tmp-not-a-temp", "a/obj", "f/inflight", "top"}; !slices.Equal(names, want) {
		t.Errorf("objects after RemoveStale: %q, want %q", names, want)
	}
}
