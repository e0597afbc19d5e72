package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

var _ storage.CreateOnlyChecker = (*Bucket)(nil)

// probePrefix starts the name of the object CheckCreateOnly writes and
// removes, at the repository root. It is a storage.TmpPrefix name: List
// does not show it and no Put can use it; RemoveStale removes one left by a
// process killed while probing (or without permission to delete).
const probePrefix = storage.TmpPrefix + "create-only-probe-"

// probeTimeout bounds a probe (three requests, retried under the caller's
// policy).
const probeTimeout = time.Minute

// probes remembers, per server and bucket, what CheckCreateOnly found:
// once per process, whatever the number of Buckets opened on it.
var probes sync.Map // probeKey -> *probeResult

type probeKey struct{ endpoint, bucket string }

type probeResult struct {
	mu   sync.Mutex
	done bool
	err  error // nil: create-only enforced; wraps storage.ErrNotCreateOnly: not
}

// CheckCreateOnly finds out whether the server enforces create-only writes
// ("If-None-Match: *" on PUT), once per process per endpoint and bucket: it
// PUTs a probe object under a fresh name with If-None-Match: * twice, and
// the second PUT must fail with 412 Precondition Failed. When it succeeds
// (the server ignores the header) or is refused as NotImplemented (the
// server rejects it; Put then sends no If-None-Match), the answer wraps
// storage.ErrNotCreateOnly, and Put's HEAD check before each write is the
// only protection. The probe is removed afterwards; on a versioned bucket
// its two versions stay (behind a delete marker) until a lifecycle rule or
// retention removes them. Errors that leave the question open (storage
// unreachable, access denied) are returned as such and not remembered.
func (b *Bucket) CheckCreateOnly(ctx context.Context) error {
	v, _ := probes.LoadOrStore(probeKey{b.cfg.Endpoint, b.cfg.Bucket}, &probeResult{})
	res := v.(*probeResult)
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.done {
		return res.err
	}
	ignored, err := b.probe(ctx)
	if err != nil {
		return fmt.Errorf("s3 %s: check create-only writes: %w", b.Location(), err)
	}
	res.done = true
	if ignored != "" {
		res.err = fmt.Errorf("s3 %s: %w: the server %s \"If-None-Match: *\" on PUT, so two writers racing for one object name could both succeed", b.Location(), storage.ErrNotCreateOnly, ignored)
	}
	return res.err
}

// probe runs the probe. ignored is "" when the server enforces
// If-None-Match, else how it failed to ("ignores", "does not implement").
func (b *Bucket) probe(ctx context.Context) (ignored string, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	key := b.key(probePrefix + newToken())
	defer func() {
		// Best effort: write-only credentials may not delete; RemoveStale
		// takes what stays.
		_ = storage.Retry(ctx, "remove create-only probe", func(ctx context.Context) error {
			err := classify(b.client.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{}))
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			}
			return err
		})
	}()
	put := func(body string) error {
		return storage.Retry(ctx, "create-only probe", func(ctx context.Context) error {
			var o minio.PutObjectOptions
			o.SetMatchETagExcept("*")
			_, err := b.client.PutObject(ctx, b.cfg.Bucket, key, strings.NewReader(body), int64(len(body)), o)
			if isNotImplemented(err) {
				return err // not retryable: classify would keep it as is
			}
			return classify(err)
		})
	}
	// The first PUT creates the object. ErrExists here can only be a try of
	// this PUT that landed although its answer was lost: the name is new.
	switch err := put("1"); {
	case isNotImplemented(err):
		b.noConditional.Store(true)
		return "does not implement", nil
	case err != nil && !errors.Is(err, storage.ErrExists):
		return "", err
	}
	switch err := put("2"); {
	case err == nil:
		return "ignores", nil
	case isNotImplemented(err):
		b.noConditional.Store(true)
		return "does not implement", nil
	case errors.Is(err, storage.ErrExists), isConflict(err):
		return "", nil
	default:
		return "", err
	}
}

func isNotImplemented(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && (resp.Code == "NotImplemented" || resp.StatusCode == http.StatusNotImplemented)
}

// isConflict reports 409 ConditionalRequestConflict: a conditional write
// raced another one for the key, which AWS answers instead of 412 when
// they overlap. Only a server that checks the condition says it.
func isConflict(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && resp.Code == "ConditionalRequestConflict"
}

// removeStaleProbes removes probe objects older than cutoff, left by a
// process killed while probing or without permission to delete.
func (b *Bucket) removeStaleProbes(ctx context.Context, cutoff time.Time) ([]string, error) {
	var removed []string
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range b.client.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{Prefix: b.key(probePrefix)}) {
		if oi.Err != nil {
			return removed, fmt.Errorf("s3 list create-only probes: %w", classify(oi.Err))
		}
		if !oi.LastModified.Before(cutoff) {
			continue
		}
		if err := b.client.RemoveObject(ctx, b.cfg.Bucket, oi.Key, minio.RemoveObjectOptions{}); err != nil {
			return removed, fmt.Errorf("s3 remove create-only probe %q: %w", oi.Key, classify(err))
		}
		removed = append(removed, fmt.Sprintf("%s (create-only probe, written %s)", strings.TrimPrefix(oi.Key, b.prefix), oi.LastModified.UTC().Format(time.RFC3339)))
	}
	return removed, nil
}
