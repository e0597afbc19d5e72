package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// tmpPrefix starts the names of files being written by Put. List skips them
// and storage.CheckName refuses object names using it.
const tmpPrefix = storage.TmpPrefix

// Permissions of what Put creates: backups hold all of a cluster's data,
// secrets included, so they are private to the owner by default.
const (
	dirPerm = 0o700
)

// Dir is a repository in a local directory. It is safe for concurrent use,
// also by several processes on the same directory.
type Dir struct {
	root string // absolute, cleaned
}

var _ storage.Backend = (*Dir)(nil)

// New opens the directory root as a repository. When root does not exist, New
// creates it (and its parents) if create is true, and otherwise returns an
// error wrapping storage.ErrNotFound.
func New(root string, create bool) (*Dir, error) {
	if root == "" {
		return nil, fmt.Errorf("local repository: empty directory name")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("local repository %q: %w", root, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err == nil:
		if !fi.IsDir() {
			return nil, fmt.Errorf("local repository %s: not a directory", abs)
		}
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := os.MkdirAll(abs, dirPerm); err != nil {
			return nil, fmt.Errorf("local repository %s: create: %w", abs, err)
		}
		if err := syncDir(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("local repository %s: create: %w", abs, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("local repository %s: directory %w (check the path; a snapshot creates it)", abs, storage.ErrNotFound)
	default:
		return nil, fmt.Errorf("local repository %s: %w", abs, err)
	}
	return &Dir{root: abs}, nil
}

// Location returns the absolute path of the repository directory.
func (d *Dir) Location() string { return d.root }

// Close does nothing: Dir holds no resources.
func (d *Dir) Close() error { return nil }

func (d *Dir) path(name string) string {
	return filepath.Join(d.root, filepath.FromSlash(name))
}

// Put stores r under name. See storage.Backend for the contract.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local put %q: %w", name, err)
	}
	final := d.path(name)
	dir := filepath.Dir(final)

	// Fail early, before reading r, when the object exists. The link below is
	// what guarantees create-only; this only saves a useless copy.
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("local put %q: %w", name, storage.ErrExists)
	}

	f, err := d.createTemp(dir)
	if err != nil {
		return fmt.Errorf("local put %q: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if tmp != "" {
			_ = os.Remove(tmp)
		}
	}()

	if _, err := io.CopyBuffer(writerOnly{f}, storage.ContextReader{Ctx: ctx, R: r}, make([]byte, copyBufSize)); err != nil {
		return fmt.Errorf("local put %q: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("local put %q: sync: %w", name, err)
	}
	closeErr := f.Close()
	f = nil
	if closeErr != nil {
		return fmt.Errorf("local put %q: %w", name, closeErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local put %q: %w", name, err)
	}

	// link(2) publishes the complete file atomically and, unlike rename(2),
	// fails with EEXIST instead of replacing an existing object.
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("local put %q: %w", name, storage.ErrExists)
		}
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) {
			return fmt.Errorf("local put %q: %w (the file system must support hard links)", name, err)
		}
		return fmt.Errorf("local put %q: %w", name, err)
	}
	if err := os.Remove(tmp); err != nil {
		// The object is complete and visible; a leftover temporary link is
		// invisible to List. Report it anyway: it wastes no space but
		// indicates a file system problem.
		return fmt.Errorf("local put %q: stored, but removing temporary file: %w", name, err)
	}
	tmp = ""
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("local put %q: sync directory: %w", name, err)
	}
	return nil
}

// createTemp creates a temporary file in dir, creating dir (and fsyncing the
// parents of new directories) as needed. It retries when a concurrent Remove
// deletes a directory it just created.
func (d *Dir) createTemp(dir string) (*os.File, error) {
	var err error
	for range 5 {
		var f *os.File
		f, err = os.CreateTemp(dir, tmpPrefix+"*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if err = d.mkdirAll(dir); err != nil {
			return nil, err
		}
	}
	return nil, err
}

// mkdirAll creates dir and its missing parents below the root, fsyncing the
// parent of every directory it creates so that new objects survive a crash.
func (d *Dir) mkdirAll(dir string) error {
	if dir == d.root {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if len(parent) < len(d.root) {
		return fmt.Errorf("%s is outside the repository %s", dir, d.root)
	}
	if err := d.mkdirAll(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

var _ storage.RangeGetter = (*Dir)(nil)

// Get opens the object name for reading.
func (d *Dir) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	f, _, err := d.GetRange(ctx, name, 0, "")
	return f, err
}

// GetRange opens the object name at byte off. Its pin is the file's device,
// inode, size and modification time: a file replaced under the same name
// (never by Put, which is create-only) is another object.
func (d *Dir) GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("local get %q: %w", name, err)
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		return nil, "", fmt.Errorf("local get %q: %w", name, mapErr(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("local get %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, "", fmt.Errorf("local get %q: %w (it is a directory)", name, storage.ErrNotFound)
	}
	got := filePin(fi)
	if pin != "" && got != pin {
		f.Close()
		return nil, "", fmt.Errorf("local get %q: %w", name, storage.ErrChanged)
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return nil, "", fmt.Errorf("local get %q: %w", name, err)
		}
	}
	return f, got, nil
}

// filePin identifies one version of a file.
func filePin(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}

// Stat describes the object name.
func (d *Dir) Stat(ctx context.Context, name string) (storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return storage.Info{}, fmt.Errorf("local stat %q: %w", name, err)
	}
	fi, err := os.Stat(d.path(name))
	if err != nil {
		return storage.Info{}, fmt.Errorf("local stat %q: %w", name, mapErr(err))
	}
	if !fi.Mode().IsRegular() {
		return storage.Info{}, fmt.Errorf("local stat %q: %w (it is a directory)", name, storage.ErrNotFound)
	}
	return storage.Info{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Remove deletes the object name, then the directories that it leaves empty.
func (d *Dir) Remove(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local remove %q: %w", name, err)
	}
	p := d.path(name)
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("local remove %q: %w", name, mapErr(err))
	}
	if fi.IsDir() {
		return fmt.Errorf("local remove %q: %w (it is a directory)", name, storage.ErrNotFound)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("local remove %q: %w", name, mapErr(err))
	}
	dir := filepath.Dir(p)
	if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local remove %q: sync directory: %w", name, err)
	}
	// Prune empty parents; rmdir fails harmlessly on a non-empty directory or
	// one that a concurrent Put is filling (createTemp retries if it loses).
	for dir != d.root && len(dir) > len(d.root) {
		if os.Remove(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// List calls fn for each object whose name starts with prefix, in lexical
// order of name. Temporary files of unfinished Puts are not listed.
func (d *Dir) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	// Start at the deepest directory that prefix names completely.
	start := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
	}
	if start != "" && storage.CheckName(start) != nil {
		// No object can have such a prefix ("../", "a//b", ...).
		return nil
	}
	err := d.walk(ctx, start, prefix, fn)
	if err != nil {
		return fmt.Errorf("local list %q: %w", prefix, err)
	}
	return nil
}

// walk lists directory rel (a '/'-separated path relative to the root, ""
// for the root) depth-first. Entries are visited in the order of their name
// with a '/' appended for directories, which makes the full names come out in
// plain lexical order ("a.txt" < "a/b" because '.' < '/').
func (d *Dir) walk(ctx context.Context, rel, prefix string, fn func(storage.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(d.path(rel))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil // removed concurrently, or a prefix naming no directory
		}
		return err
	}
	type entry struct {
		key  string // name, plus "/" for directories
		name string
		dir  bool
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, tmpPrefix) {
			continue
		}
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			// Follow symlinks placed by hand: objects are what they point to.
			fi, err := os.Stat(d.path(path.Join(rel, n)))
			if err != nil {
				continue
			}
			isDir = fi.IsDir()
		}
		key := n
		if isDir {
			key += "/"
		}
		list = append(list, entry{key: key, name: n, dir: isDir})
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.key, b.key) })

	for _, e := range list {
		full := path.Join(rel, e.name)
		if e.dir {
			// Descend only when names below can start with prefix.
			if !strings.HasPrefix(full+"/", prefix) && !strings.HasPrefix(prefix, full+"/") {
				continue
			}
			if err := d.walk(ctx, full, prefix, fn); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(full, prefix) {
			continue
		}
		fi, err := os.Stat(d.path(full))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed concurrently
			}
			return err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := fn(storage.Info{Name: full, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// mapErr turns "does not exist" errors into storage.ErrNotFound, keeping the
// original message.
func mapErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
	}
	return err
}

// syncDir fsyncs a directory so that entries created or removed in it are
// durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil // file systems that cannot sync directories
	}
	return err
}

// copyBufSize is the size of Put's copy buffer: large enough to keep
// syscalls few, small enough not to matter for memory.
const copyBufSize = 256 << 10

// writerOnly hides (*os.File).ReadFrom so that io.CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }
