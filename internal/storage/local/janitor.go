package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

var _ storage.Janitor = (*Dir)(nil)

// RemoveStale removes the ".tmp-*" files of Puts that did not finish (a
// killed process, a crash) whose last write is older than olderThan, and
// the directories that leaves empty. A Put still writing keeps its file's
// modification time fresh; if RemoveStale removes the file of a Put stalled
// for longer than olderThan, that Put fails at its final link and publishes
// nothing.
func (d *Dir) RemoveStale(ctx context.Context, olderThan time.Duration) ([]string, error) {
	cutoff := time.Now().Add(-olderThan)
	var removed []string
	var dirs []string // directories that held a removed file
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed concurrently
			}
			return err
		}
		if e.IsDir() || !strings.HasPrefix(e.Name(), tmpPrefix) || !e.Type().IsRegular() {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // the Put finished and removed it
			}
			return err
		}
		if !fi.ModTime().Before(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(d.root, p)
		removed = append(removed, filepath.ToSlash(rel))
		dirs = append(dirs, filepath.Dir(p))
		return nil
	})
	for _, dir := range dirs {
		_ = syncDir(dir)
		// Like Remove: drop parents left empty; rmdir fails harmlessly on
		// a non-empty directory.
		for dir != d.root && len(dir) > len(d.root) {
			if os.Remove(dir) != nil {
				break
			}
			dir = filepath.Dir(dir)
		}
	}
	if err != nil {
		return removed, fmt.Errorf("local remove stale temporary files in %s: %w", d.root, err)
	}
	return removed, nil
}
