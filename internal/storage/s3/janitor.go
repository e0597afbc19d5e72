package s3

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

var _ storage.Janitor = (*Bucket)(nil)

// RemoveStale aborts the incomplete multipart uploads under the repository
// prefix that were initiated more than olderThan ago, which deletes their
// parts. Put aborts its own upload when it fails; these are left by killed
// processes and by aborts that failed. With an empty prefix (a repository
// at the bucket root) that is every old incomplete upload in the bucket.
//
// The age is the server's Initiated time against this machine's clock, so
// olderThan should also cover clock skew. Each entry of removed is
// "<name> (upload <id>, initiated <time>)".
//
// Listing uploads needs the s3:ListBucketMultipartUploads permission and
// aborting them s3:AbortMultipartUpload.
//
// It also removes the probe objects of CheckCreateOnly older than
// olderThan, left by a process killed while probing or without permission
// to delete ("<name> (create-only probe, written <time>)").
func (b *Bucket) RemoveStale(ctx context.Context, olderThan time.Duration) ([]string, error) {
	cutoff := time.Now().Add(-olderThan)
	removed, err := b.removeStaleProbes(ctx, cutoff)
	if err != nil {
		return removed, err
	}
	found, err := b.removeStaleUploads(ctx, b.prefix, cutoff)
	removed = append(removed, found...)
	if err != nil || len(found) > 0 || b.prefix == "" {
		return removed, err
	}
	// MinIO lists the uploads of one object name only, not of a prefix:
	// "repo/" finds nothing although "repo/b" has uploads (AWS and
	// versitygw list by prefix). When the prefix finds nothing, list the
	// whole bucket's uploads and keep those under it.
	found, err = b.removeStaleUploads(ctx, "", cutoff)
	return append(removed, found...), err
}

// removeStaleUploads aborts the incomplete uploads listed under listPrefix
// that are under the repository prefix and older than cutoff.
func (b *Bucket) removeStaleUploads(ctx context.Context, listPrefix string, cutoff time.Time) ([]string, error) {
	var removed []string
	keyMarker, uploadMarker := "", ""
	for {
		res, err := b.core.ListMultipartUploads(ctx, b.cfg.Bucket, listPrefix, keyMarker, uploadMarker, "", 1000)
		if err != nil {
			return removed, fmt.Errorf("s3 list incomplete uploads under %q: %w", b.prefix, classify(err))
		}
		for _, u := range res.Uploads {
			name, ok := strings.CutPrefix(u.Key, b.prefix)
			if !ok || u.UploadID == "" || u.Initiated.IsZero() || !u.Initiated.Before(cutoff) {
				// A server that does not report Initiated gets no
				// guess: leave the upload to a lifecycle rule.
				continue
			}
			if err := b.core.AbortMultipartUpload(ctx, b.cfg.Bucket, u.Key, u.UploadID); err != nil {
				err = classify(err)
				if isNoSuchUpload(err) {
					continue // completed or aborted meanwhile
				}
				return removed, fmt.Errorf("s3 abort incomplete upload %s of %q: %w", u.UploadID, name, err)
			}
			removed = append(removed, fmt.Sprintf("%s (upload %s, initiated %s)", name, u.UploadID, u.Initiated.UTC().Format(time.RFC3339)))
		}
		if !res.IsTruncated {
			return removed, nil
		}
		if res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == uploadMarker || res.NextKeyMarker == "" && res.NextUploadIDMarker == "" {
			// A truncated listing without progress: stop rather than loop.
			return removed, fmt.Errorf("s3 list incomplete uploads under %q: server reported a truncated listing without a next marker", b.prefix)
		}
		keyMarker, uploadMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// isNoSuchUpload reports that an upload no longer exists.
func isNoSuchUpload(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && resp.Code == "NoSuchUpload"
}
