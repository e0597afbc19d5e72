package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// VerifyStored reads the stored payload of m and checks its size and sha256
// against the manifest (check 2 of docs/format.md "Verification"), without
// decrypting or decompressing it. It is the check that needs no key: for an
// encrypted backup it proves the bytes are the ones written, whose
// decompressed content and etcd trailer the writer checked before it
// published the manifest. Fetch checks everything; use it when you can.
// A mismatch or a missing payload is an error wrapping format.ErrIntegrity.
func VerifyStored(ctx context.Context, r *repo.Repo, m *format.Manifest) error {
	rc, err := r.OpenPayload(ctx, m)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, stopReader{ctx, rc}, make([]byte, 1<<20))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read payload of %s: %w", m.ID, err)
	}
	switch {
	case n != m.StoredSize:
		return fmt.Errorf("%w: backup %s: stored payload is %d bytes, manifest says %d", format.ErrIntegrity, m.ID, n, m.StoredSize)
	case hex.EncodeToString(h.Sum(nil)) != m.StoredSHA256:
		return fmt.Errorf("%w: backup %s: stored payload sha256 does not match the manifest", format.ErrIntegrity, m.ID)
	}
	return nil
}

// stopReader stops a copy when ctx is done.
type stopReader struct {
	ctx context.Context
	r   io.Reader
}

func (c stopReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
