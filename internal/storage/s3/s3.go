package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

const (
	// partSize is the size of a multipart upload's parts, and the largest
	// object sent in a single PUT. A Put holds two part buffers, so 8 MiB
	// keeps its live heap at 16 MiB and, with Go's default GOGC=100, its
	// peak heap near 32 MiB however long the stream (16 MiB parts measured
	// 66 MiB peak on a 1 GiB stream). With maxParts parts it caps objects at
	// 78 GiB, ten times etcd's recommended maximum database size (8 GiB).
	partSize = 8 << 20
	// maxParts is S3's limit on the number of parts of an upload.
	maxParts = 10000
	// maxRetries turns minio-go's own retries off: storage.Wrap retries
	// every operation, and each step of an upload through storage.Retry,
	// under one budget (--storage-timeout).
	maxRetries = 1
	// abortTimeout bounds the cleanup of a failed multipart upload, which
	// runs even when the caller's context is cancelled.
	abortTimeout = time.Minute
)

// bufPool recycles part buffers (*[]byte of partSize) across Puts, so a
// stream of any size allocates them once.
var bufPool = sync.Pool{New: func() any { b := make([]byte, partSize); return &b }}

// Bucket is a repository in an S3 bucket, under an optional key prefix. It is
// safe for concurrent use.
type Bucket struct {
	cfg       Config
	client    *minio.Client
	core      minio.Core
	transport *http.Transport
	prefix    string // cfg.Prefix + "/", or ""

	// noConditional is set once the server rejects If-None-Match with
	// NotImplemented; Put then relies on its HEAD check alone.
	noConditional atomic.Bool
}

var _ storage.Backend = (*Bucket)(nil)

// New connects to the bucket of cfg and checks that it exists: a missing
// bucket is an error wrapping storage.ErrNotFound.
func New(ctx context.Context, cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("s3: %w: missing bucket name", storage.ErrBadURL)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("s3: %w: %v", storage.ErrBadURL, err)
	}
	cfg.Prefix = prefix
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
		cfg.Secure = true
	}
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_REGION")
	}
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	creds := cfg.Credentials
	if creds == nil {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{}, // $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE
			&credentials.IAM{},                // web identity ($AWS_WEB_IDENTITY_TOKEN_FILE), ECS, EC2 instance role
		})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	transport, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", cfg.Location(), err)
	}
	transport.DialContext = storage.IdleTimeoutDialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, cfg.Stall)
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Secure,
		Transport:    transport,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", cfg.Location(), err)
	}
	b := &Bucket{cfg: cfg, client: client, core: minio.Core{Client: client}, transport: transport}
	if prefix != "" {
		b.prefix = prefix + "/"
	}
	var ok bool
	err = storage.Retry(ctx, "check bucket", func(ctx context.Context) error {
		var err error
		ok, err = client.BucketExists(ctx, cfg.Bucket)
		return classify(err)
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("s3 %s: check bucket: %w%s", b.Location(), err, hint(err))
	}
	if !ok {
		b.Close()
		return nil, fmt.Errorf("s3 %s: bucket %q %w (create it first, and check the region and endpoint)", b.Location(), cfg.Bucket, storage.ErrNotFound)
	}
	return b, nil
}

// hint adds advice to errors people commonly meet when connecting.
func hint(err error) string {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
			return " (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role)"
		case "AuthorizationHeaderMalformed", "InvalidRegion":
			return " (check the region: ?region= in the URL or AWS_REGION)"
		}
	}
	return ""
}

// Location returns the repository URL, without credentials.
func (b *Bucket) Location() string { return b.cfg.Location() }

// Close releases idle connections.
func (b *Bucket) Close() error {
	b.transport.CloseIdleConnections()
	return nil
}

func (b *Bucket) key(name string) string { return b.prefix + name }

// Put stores r under name, create-only. See storage.Backend for the contract.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader) error {
	err := b.put(ctx, name, r)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	return fmt.Errorf("s3 put %q: %w", name, err)
}

func (b *Bucket) put(ctx context.Context, name string, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := b.key(name)
	// Fail before reading r when the object exists. If-None-Match makes the
	// final write conditional; this check is the only protection on servers
	// that ignore that header. Write-only credentials may not HEAD objects
	// (AWS answers 403 for missing keys without s3:ListBucket): then rely on
	// If-None-Match alone.
	err := storage.Retry(ctx, "check for existing object", func(ctx context.Context) error {
		_, err := b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
		return classify(err)
	})
	switch {
	case err == nil:
		return storage.ErrExists
	case !errors.Is(err, storage.ErrNotFound) && !isAccessDenied(err):
		return fmt.Errorf("check for existing object: %w", err)
	}

	token := newToken()
	buf := bufPool.Get().(*[]byte)
	n, err := io.ReadFull(storage.ContextReader{Ctx: ctx, R: r}, *buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // fits in one part
		err = b.putSingle(ctx, key, (*buf)[:n], token)
		bufPool.Put(buf)
		return err
	case nil:
		return b.putMultipart(ctx, key, buf, r, token)
	default:
		bufPool.Put(buf)
		return fmt.Errorf("read: %w", err)
	}
}

// tokenMeta is the user metadata key (x-amz-meta-put-token) holding a
// random token unique to each Put, by which Put recognises its own object.
const tokenMeta = "Put-Token"

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CheckLock implements storage.Locker: the bucket must have Object Lock
// enabled (which S3 allows only on versioned buckets) for writes with a
// retention to be enforced.
func (b *Bucket) CheckLock(ctx context.Context) error {
	return storage.Retry(ctx, "check object lock", func(ctx context.Context) error {
		enabled, _, _, _, err := b.client.GetObjectLockConfig(ctx, b.cfg.Bucket)
		if err != nil {
			var resp minio.ErrorResponse
			if errors.As(err, &resp) && (resp.Code == "ObjectLockConfigurationNotFoundError" || resp.StatusCode == http.StatusNotFound) {
				return fmt.Errorf("%w: bucket %s does not have Object Lock enabled: create it with object lock (aws s3api create-bucket --object-lock-enabled-for-bucket, mc mb --with-lock) or drop --lock-for", storage.ErrBadURL, b.cfg.Bucket)
			}
			return classify(err)
		}
		if enabled != "Enabled" {
			return fmt.Errorf("%w: bucket %s does not have Object Lock enabled (%q)", storage.ErrBadURL, b.cfg.Bucket, enabled)
		}
		return nil
	})
}

// conditional returns PutObjectOptions that make the write create-only,
// unless the server is known not to implement it.
func (b *Bucket) conditional() minio.PutObjectOptions {
	var o minio.PutObjectOptions
	if !b.noConditional.Load() {
		o.SetMatchETagExcept("*") // If-None-Match: *
	}
	return o
}

// unsupportedConditional reports whether err is the server refusing
// If-None-Match, and remembers it.
func (b *Bucket) unsupportedConditional(err error) bool {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.Code == "NotImplemented" && !b.noConditional.Load() {
		b.noConditional.Store(true)
		return true
	}
	return false
}

// putSingle stores a small object in one PUT.
func (b *Bucket) putSingle(ctx context.Context, key string, data []byte, token string) error {
	return storage.Retry(ctx, "upload", func(ctx context.Context) error {
		return b.putSingleOnce(ctx, key, data, token)
	})
}

func (b *Bucket) putSingleOnce(ctx context.Context, key string, data []byte, token string) error {
	for {
		opts := b.conditional()
		opts.PartSize = partSize
		opts.UserMetadata = map[string]string{tokenMeta: token}
		if r, ok := storage.RetentionFrom(ctx); ok {
			opts.Mode, opts.RetainUntilDate = minio.RetentionMode(r.Mode), r.Until
			opts.SendContentMd5 = true // S3 wants Content-MD5 on writes that lock
		}
		_, err := b.client.PutObject(ctx, b.cfg.Bucket, key, bytes.NewReader(data), int64(len(data)), opts)
		if err != nil && b.unsupportedConditional(err) {
			continue
		}
		err = classify(err)
		if errors.Is(err, storage.ErrExists) && b.isOurs(ctx, key, token) {
			return nil
		}
		return err
	}
}

// abort aborts a multipart upload and makes sure it stays aborted: a part
// whose request was cancelled client-side may still be stored by the
// server after the abort (seen with versitygw), bringing the upload back;
// abort looks again and aborts again, a few times.
func (b *Bucket) abort(ctx context.Context, key, uploadID string) error {
	var err error
	for try := 0; try < 4; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(250 * time.Millisecond):
			}
			res, lerr := b.core.ListMultipartUploads(ctx, b.cfg.Bucket, key, "", "", "", 1000)
			if lerr != nil {
				return err
			}
			found := false
			for _, u := range res.Uploads {
				found = found || (u.Key == key && u.UploadID == uploadID)
			}
			if !found {
				return nil
			}
		}
		err = b.core.AbortMultipartUpload(ctx, b.cfg.Bucket, key, uploadID)
	}
	return err
}

// isOurs reports whether the object at key was written by the Put that
// holds token. minio-go retries a request whose response was lost; when the
// first try did succeed, the retry's If-None-Match fails, and without this
// check Put would report ErrExists for its own object.
func (b *Bucket) isOurs(ctx context.Context, key, token string) bool {
	oi, err := b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return false
	}
	return oi.UserMetadata[tokenMeta] == token || oi.Metadata.Get("X-Amz-Meta-"+tokenMeta) == token
}

// putMultipart uploads first (a full part) and the rest of r in parts. One
// goroutine uploads a part while this one reads the next, so at most two
// part buffers are in use. On any failure the upload is aborted, which
// deletes its parts; nothing becomes visible.
func (b *Bucket) putMultipart(ctx context.Context, key string, first *[]byte, r io.Reader, token string) (err error) {
	// The upload is created under a context the caller cannot cancel: once
	// the server made it, this Put must know its ID to abort it (a request
	// cut by a cancelled context could leave an upload nobody knows).
	var uploadID string
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout) // keeps the retry policy
	err = storage.Retry(sctx, "start multipart upload", func(ctx context.Context) error {
		var err error
		opts := minio.PutObjectOptions{UserMetadata: map[string]string{tokenMeta: token}}
		if r, ok := storage.RetentionFrom(ctx); ok {
			opts.Mode, opts.RetainUntilDate = minio.RetentionMode(r.Mode), r.Until
		}
		uploadID, err = b.core.NewMultipartUpload(ctx, b.cfg.Bucket, key, opts)
		return classify(err)
	})
	scancel()
	if err == nil && ctx.Err() != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		_ = b.abort(actx, key, uploadID)
		cancel()
		err = ctx.Err()
	}
	if err != nil {
		bufPool.Put(first)
		return fmt.Errorf("start multipart upload: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		if aerr := b.abort(actx, key, uploadID); aerr != nil {
			err = fmt.Errorf("%w; aborting multipart upload %s also failed (its parts stay invisible but use space until a lifecycle rule for incomplete uploads removes them): %v", err, uploadID, aerr)
		}
	}()

	uctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Exactly two part buffers circulate: the reader fills one while the
	// uploader sends the other. They come from and go back to bufPool, but
	// are passed between the two goroutines through free, since sync.Pool
	// does not hand a buffer put on one P to a Get on another and would
	// allocate a third.
	free := make(chan *[]byte, 2)
	free <- bufPool.Get().(*[]byte)
	defer func() {
		close(free)
		for buf := range free {
			bufPool.Put(buf)
		}
	}()

	type part struct {
		num int
		buf *[]byte
		n   int
	}
	work := make(chan part)
	var (
		parts   []minio.CompletePart // written by the uploader, read after done
		upErr   error
		upBytes int64
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range work {
			if upErr == nil {
				var op minio.ObjectPart
				err := storage.Retry(uctx, "upload part", func(ctx context.Context) error {
					var err error
					var popts minio.PutObjectPartOptions
					if _, ok := storage.RetentionFrom(ctx); ok {
						sum := md5.Sum((*p.buf)[:p.n]) // S3 wants Content-MD5 on parts of a locked object
						popts.Md5Base64 = base64.StdEncoding.EncodeToString(sum[:])
					}
					op, err = b.core.PutObjectPart(ctx, b.cfg.Bucket, key, uploadID, p.num,
						bytes.NewReader((*p.buf)[:p.n]), int64(p.n), popts)
					return classify(err)
				})
				if err != nil {
					upErr = fmt.Errorf("upload part %d: %w", p.num, err)
					cancel() // stop the reader
				} else {
					parts = append(parts, minio.CompletePart{
						PartNumber:        p.num,
						ETag:              op.ETag,
						ChecksumCRC32:     op.ChecksumCRC32,
						ChecksumCRC32C:    op.ChecksumCRC32C,
						ChecksumSHA1:      op.ChecksumSHA1,
						ChecksumSHA256:    op.ChecksumSHA256,
						ChecksumCRC64NVME: op.ChecksumCRC64NVME,
					})
					upBytes += int64(p.n)
				}
			}
			free <- p.buf
		}
	}()

	var readErr error
	next := part{num: 1, buf: first, n: partSize}
	for {
		if next.num > maxParts {
			free <- next.buf
			readErr = fmt.Errorf("object larger than the S3 limit of %d parts of %d MiB", maxParts, partSize>>20)
			break
		}
		work <- next // blocks while the previous part uploads
		last := next.n < partSize
		if last || uctx.Err() != nil {
			break
		}
		buf := <-free
		n, err := io.ReadFull(storage.ContextReader{Ctx: uctx, R: r}, *buf)
		if err == io.EOF {
			free <- buf
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			free <- buf
			readErr = fmt.Errorf("read: %w", err)
			break
		}
		next = part{num: next.num + 1, buf: buf, n: n}
	}
	close(work)
	<-done

	switch {
	case upErr != nil:
		return upErr
	case ctx.Err() != nil:
		return ctx.Err()
	case readErr != nil:
		return readErr
	}

	err = storage.Retry(ctx, "complete multipart upload", func(ctx context.Context) error {
		for {
			_, err := b.core.CompleteMultipartUpload(ctx, b.cfg.Bucket, key, uploadID, parts, b.conditional())
			if err != nil && b.unsupportedConditional(err) {
				continue
			}
			return classify(err)
		}
	})
	if err != nil {
		if errors.Is(err, storage.ErrExists) && b.isOurs(ctx, key, token) {
			return nil
		}
		return fmt.Errorf("complete multipart upload (%d parts, %d bytes): %w", len(parts), upBytes, err)
	}
	return nil
}

var _ storage.RangeGetter = (*Bucket)(nil)

// Get opens the object name for reading.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, _, err := b.GetRange(ctx, name, 0, "")
	return rc, err
}

// GetRange opens the object name from byte off, pinned by its ETag: a
// resumed read sends If-Match with the ETag the first read returned, so a
// different object under the same name is never spliced in.
func (b *Bucket) GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error) {
	var opts minio.GetObjectOptions
	if off > 0 {
		if err := opts.SetRange(off, 0); err != nil {
			return nil, "", fmt.Errorf("s3 get %q: %w", name, err)
		}
	}
	if pin != "" {
		if err := opts.SetMatchETag(pin); err != nil {
			return nil, "", fmt.Errorf("s3 get %q: %w", name, err)
		}
	}
	body, oi, _, err := b.core.GetObject(ctx, b.cfg.Bucket, b.key(name), opts)
	if err != nil {
		var resp minio.ErrorResponse
		switch {
		case errors.As(err, &resp) && pin != "" && (resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed):
			return nil, "", fmt.Errorf("s3 get %q: %w (its ETag is no longer %s)", name, storage.ErrChanged, pin)
		case errors.As(err, &resp) && off > 0 && (resp.Code == "InvalidRange" || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable):
			return io.NopCloser(strings.NewReader("")), pin, nil // off is the object's size
		}
		return nil, "", fmt.Errorf("s3 get %q: %w", name, classify(err))
	}
	return body, oi.ETag, nil
}

// Stat describes the object name.
func (b *Bucket) Stat(ctx context.Context, name string) (storage.Info, error) {
	oi, err := b.client.StatObject(ctx, b.cfg.Bucket, b.key(name), minio.StatObjectOptions{})
	if err != nil {
		return storage.Info{}, fmt.Errorf("s3 stat %q: %w", name, classify(err))
	}
	return storage.Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// Remove deletes the object name. S3 deletes are idempotent, so Remove checks
// first that the object exists, to report ErrNotFound like other backends.
func (b *Bucket) Remove(ctx context.Context, name string) error {
	key := b.key(name)
	if _, err := b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{}); err != nil {
		return fmt.Errorf("s3 remove %q: %w", name, classify(err))
	}
	if err := b.client.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3 remove %q: %w", name, classify(err))
	}
	return nil
}

// List calls fn for every object whose name starts with prefix, in lexical
// order (S3 lists keys in UTF-8 binary order).
func (b *Bucket) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine when fn fails
	for oi := range b.client.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:    b.key(prefix),
		Recursive: true,
	}) {
		if oi.Err != nil {
			return fmt.Errorf("s3 list %q: %w", prefix, classify(oi.Err))
		}
		name, ok := strings.CutPrefix(oi.Key, b.prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue // "directory" markers made by other tools
		}
		if storage.HasTmpElement(name) {
			continue // a create-only probe (CheckCreateOnly)
		}
		if err := fn(storage.Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 list %q: %w", prefix, err)
	}
	return nil
}

// Error codes that S3 servers return for transient conditions.
var retryableCodes = map[string]bool{
	"InternalError":              true,
	"ServiceUnavailable":         true,
	"SlowDown":                   true,
	"SlowDownRead":               true,
	"SlowDownWrite":              true,
	"Throttling":                 true,
	"ThrottlingException":        true,
	"RequestLimitExceeded":       true,
	"TooManyRequests":            true,
	"RequestTimeout":             true,
	"OperationAborted":           true,
	"ConditionalRequestConflict": true, // a concurrent conditional write; retry sees the winner
	"XMinioServerNotInitialized": true,
}

// classify maps minio-go errors to the storage errors: missing keys and
// buckets to ErrNotFound, failed If-None-Match to ErrExists, and throttling,
// 5xx and network failures to storage.Retryable. Context errors and other
// errors are returned unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch {
		case resp.Code == "NoSuchKey" || resp.Code == "NoSuchBucket" || resp.Code == "NotFound":
			return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", storage.ErrExists, err)
		case retryableCodes[resp.Code],
			resp.StatusCode >= 500,
			resp.StatusCode == http.StatusTooManyRequests,
			resp.StatusCode == http.StatusRequestTimeout:
			return storage.Retryable(err)
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		}
		return err
	}
	if storage.IsPermanentNetErr(err) {
		return err
	}
	var netErr net.Error // includes *url.Error from the HTTP client
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return storage.Retryable(err)
	}
	return err
}

// isAccessDenied reports a 403 from the server.
func isAccessDenied(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && (resp.Code == "AccessDenied" || resp.StatusCode == http.StatusForbidden)
}
