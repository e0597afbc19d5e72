package rclone

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

var _ storage.Janitor = (*Remote)(nil)

// RemoveStale removes the temporary ".tmp-*" objects of Puts that did not
// finish (rclone or this process killed during rcat, or between rcat and
// the publishing move) whose modification time, as the server reports it,
// is older than olderThan.
//
// It does not abort incomplete S3 multipart uploads: "rclone backend
// cleanup" selects them by key prefix, which cannot name one repository
// exactly (a root "etcd" also matches "etcd-old/..."). Put aborts its own
// uploads; for the rest, use a bucket lifecycle rule.
func (r *Remote) RemoveStale(ctx context.Context, olderThan time.Duration) ([]string, error) {
	cutoff := time.Now().Add(-olderThan)
	p, err := r.start(ctx, startOpts{pipeOut: true}, "lsjson", "-R", "--files-only", "--no-mimetype",
		"--include", tmpPrefix+"*", "--", r.root)
	if err != nil {
		return nil, fmt.Errorf("rclone remove stale temporary objects: %w", err)
	}
	var stale []string
	decErr := decodeList(p.stdout, func(it lsItem) {
		if !it.IsDir && storage.HasTmpElement(it.Path) && it.ModTime.Before(cutoff) {
			stale = append(stale, it.Path)
		}
	})
	if decErr != nil {
		_ = p.stdout.Close()
		p.terminate()
	}
	if err := p.wait(); err != nil {
		if exitCode(err) == exitDirNotFound {
			return nil, nil // nothing stored yet
		}
		return nil, fmt.Errorf("rclone remove stale temporary objects: %w", classify(err))
	}
	if decErr != nil {
		return nil, fmt.Errorf("rclone remove stale temporary objects: lsjson: bad output: %w", decErr)
	}
	var removed []string
	for _, name := range stale {
		if err := r.run(ctx, "deletefile", "--", r.objPath(name)); err != nil {
			if _, serr := r.stat(ctx, name); errors.Is(serr, storage.ErrNotFound) {
				continue // its Put finished or cleaned up meanwhile
			}
			return removed, fmt.Errorf("rclone remove stale temporary object %q: %w", name, classify(err))
		}
		removed = append(removed, name)
	}
	return removed, nil
}
