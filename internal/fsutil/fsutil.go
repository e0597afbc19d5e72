package fsutil

import (
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path through a temp file in the same
// directory (created 0600, so a secret is never readable on the way),
// fsynced, given mode, renamed into place, and the directory fsynced. On
// error the temp file is removed and path is unchanged.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Chmod(f.Name(), mode); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Writeback is a writer to a file that asks the kernel to start writing
// each span of every bytes to disk as soon as it is written
// (sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait). A large file
// written this way reaches the disk while it is being produced, and the
// fsync that ends it (etcd's first commit, for a restored database) has
// little left to write, instead of all of it at once. Where the call is not
// supported it is a plain writer.
type Writeback struct {
	f       *os.File
	every   int64
	off     int64
	started int64 // bytes before this offset were handed to writeback
	unsup   bool  // sync_file_range failed once: not supported here
}

// NewWriteback returns a Writeback for f, written from its current
// offset 0, starting writeback every `every` bytes.
func NewWriteback(f *os.File, every int64) *Writeback { return &Writeback{f: f, every: every} }

func (w *Writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if !w.unsup && w.off-w.started >= w.every {
		if serr := syncFileRange(w.f, w.started, w.off-w.started); serr != nil {
			w.unsup = true
		}
		w.started = w.off
	}
	return n, err
}
