package fsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "secrets.env")
	if err := WriteFileAtomic(p, []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("A=2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "A=2\n" || st.Mode().Perm() != 0o640 {
		t.Fatalf("got %q %v", b, st.Mode())
	}
	left, _ := filepath.Glob(filepath.Join(dir, "sub", ".*tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	// A failed write leaves the existing file as it was.
	if err := WriteFileAtomic(filepath.Join(p, "under-a-file"), []byte("x"), 0o600); err == nil {
		t.Fatal("write below a regular file succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "A=2\n" {
		t.Fatalf("existing file changed: %q", b)
	}
}

func TestWritebackWritesEveryByte(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriteback(f, 4096)
	want := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes: many spans
	for p := want; len(p) > 0; p = p[min(len(p), 3000):] {
		if n, err := w.Write(p[:min(len(p), 3000)]); err != nil || n != min(len(p), 3000) {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (%v), wrote %d", len(got), err, len(want))
	}
	if w.started == 0 && !w.unsup {
		t.Fatal("no span was handed to writeback")
	}
}
