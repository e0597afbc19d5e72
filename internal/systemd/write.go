package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/etcd-backup/etcd-backup/internal/fsutil"
)

// Action is what Write did, or would do, to one file.
type Action string

const (
	Created   Action = "created"
	Replaced  Action = "replaced"  // content differed; only with force
	Unchanged Action = "unchanged" // same content and mode
	ModeFixed Action = "mode fixed"
)

// Change is the outcome for one file.
type Change struct {
	Path   string // absolute path under the root
	Action Action
}

// ErrConflict: files exist with other content and force was not given.
var ErrConflict = errors.New("existing files differ")

// Conflict is an existing file that differs from the rendered one.
type Conflict struct {
	Path string // absolute path under the root
	Why  string // "content differs", "masked (symlink to /dev/null)", ...
}

// ConflictError lists the files Write refused to replace. Nothing was written.
type ConflictError struct {
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	var parts []string
	for _, c := range e.Conflicts {
		parts = append(parts, c.Path+": "+c.Why)
	}
	return fmt.Sprintf("%d existing file(s) differ from the rendered ones and were left alone (nothing was written; force replaces them): %s",
		len(e.Conflicts), strings.Join(parts, "; "))
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// Write puts files under root. A file that exists with other content (or is
// a symlink, as a masked unit is) is replaced only when force is set;
// otherwise Write writes nothing at all and returns a *ConflictError. A file
// with the same content but another mode gets its mode fixed. Each file is
// written to a temporary file (created 0600, so a secret is never readable
// by others), synced, chmod-ed and renamed into place.
func Write(root string, files []File, force bool) ([]Change, error) {
	type op struct {
		f      File
		target string
		action Action
	}
	var ops []op
	var conflicts []Conflict
	for _, f := range files {
		if !fs.ValidPath(f.Path) {
			return nil, fmt.Errorf("systemd: invalid file path %q", f.Path)
		}
		target := filepath.Join(root, filepath.FromSlash(f.Path))
		action, why, err := compare(target, f)
		if err != nil {
			return nil, err
		}
		if action == Replaced && !force {
			conflicts = append(conflicts, Conflict{Path: target, Why: why})
		}
		ops = append(ops, op{f, target, action})
	}
	if len(conflicts) > 0 {
		return nil, &ConflictError{Conflicts: conflicts}
	}
	var changes []Change
	for _, o := range ops {
		var err error
		switch o.action {
		case Created, Replaced:
			err = fsutil.WriteFileAtomic(o.target, o.f.Data, o.f.Mode)
		case ModeFixed:
			err = os.Chmod(o.target, o.f.Mode)
		}
		if err != nil {
			return changes, fmt.Errorf("write %s: %w", o.target, err)
		}
		changes = append(changes, Change{Path: o.target, Action: o.action})
	}
	return changes, nil
}

// compare tells what writing f to target would do, and why it would
// replace something.
func compare(target string, f File) (Action, string, error) {
	st, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return Created, "", nil
	}
	if err != nil {
		return "", "", err
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		dest, _ := os.Readlink(target)
		if dest == "/dev/null" {
			return Replaced, "masked (symlink to /dev/null)", nil
		}
		return Replaced, "a symlink to " + dest, nil
	case st.IsDir():
		return "", "", fmt.Errorf("%s is a directory", target)
	case !st.Mode().IsRegular():
		return "", "", fmt.Errorf("%s is not a regular file", target)
	}
	old, err := os.ReadFile(target)
	if err != nil {
		return "", "", err
	}
	if !bytes.Equal(old, f.Data) {
		return Replaced, "content differs", nil
	}
	if st.Mode().Perm() != f.Mode.Perm() {
		return ModeFixed, "", nil
	}
	return Unchanged, "", nil
}
