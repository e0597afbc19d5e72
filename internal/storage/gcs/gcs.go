package gcs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gs "cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

const (
	// chunkSize is the size of the chunks of a resumable upload. The GCS
	// client buffers one chunk to resend it after a transient failure, so a
	// streamed Put holds 16 MiB of object data however long the stream.
	// Google advises chunks of at least 8 MiB for throughput.
	chunkSize = 16 << 20
	// singleMax is the largest object sent in a single request, from a
	// pooled buffer; larger ones and longer streams use a resumable upload.
	// The client allocates a chunk buffer per resumable upload, which small
	// objects (journal segments, manifests) would otherwise pay for.
	singleMax = 4 << 20
	// envEmulator is the variable the GCS client reads to talk to an
	// emulator over plain http without credentials.
	envEmulator = "STORAGE_EMULATOR_HOST"
)

// bufPool recycles the buffers of single-request uploads (*[]byte of
// singleMax).
var bufPool = sync.Pool{New: func() any { b := make([]byte, singleMax); return &b }}

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// Bucket is a repository in a GCS bucket, under an optional prefix. It is
// safe for concurrent use.
type Bucket struct {
	cfg       Config
	client    *gs.Client
	bkt       *gs.BucketHandle
	transport *http.Transport
	prefix    string // cfg.Prefix + "/", or ""
}

var (
	_ storage.Backend     = (*Bucket)(nil)
	_ storage.RangeGetter = (*Bucket)(nil)
)

// New connects to the bucket of cfg and checks that it exists (a listing of
// at most one object, which needs only storage.objects.list): a missing
// bucket is an error wrapping storage.ErrNotFound.
//
// Credentials are Application Default Credentials, unless the server is an
// emulator: $STORAGE_EMULATOR_HOST is set and cfg.Endpoint is not, or
// cfg.Endpoint is http://. Then no credentials are looked up or sent.
func New(ctx context.Context, cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("gcs: %w: missing bucket name", storage.ErrBadURL)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("gcs: %w: %v", storage.ErrBadURL, err)
	}
	cfg.Prefix = prefix
	if cfg.Endpoint != "" {
		if cfg.Endpoint, err = parseEndpoint(cfg.Endpoint); err != nil {
			return nil, fmt.Errorf("gcs: %w: %v", storage.ErrBadURL, err)
		}
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = storage.IdleTimeoutDialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, cfg.Stall)
	base.MaxIdleConnsPerHost = 32
	var rt http.RoundTripper = base
	if !anonymous(cfg) {
		rt, err = htransport.NewTransport(ctx, base, option.WithScopes(gs.ScopeReadWrite))
		if err != nil {
			base.CloseIdleConnections()
			return nil, fmt.Errorf("gcs %s: credentials: %w (set up Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, 'gcloud auth application-default login', or the service account of the machine or workload)", cfg.Location(), err)
		}
	}
	opts := []option.ClientOption{
		// The HTTP client above authenticates (or not): the GCS client
		// must not look credentials up again.
		option.WithHTTPClient(&http.Client{Transport: rt}),
		option.WithoutAuthentication(),
		gs.WithJSONReads(),
	}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint+"/storage/v1/"))
	}
	client, err := gs.NewClient(ctx, opts...)
	if err != nil {
		base.CloseIdleConnections()
		return nil, fmt.Errorf("gcs %s: %w", cfg.Location(), err)
	}
	// storage.Wrap retries every operation; the client's own retries
	// would multiply the budget. Uploads configure theirs per Put.
	client.SetRetry(gs.WithPolicy(gs.RetryNever))
	b := &Bucket{cfg: cfg, client: client, bkt: client.Bucket(cfg.Bucket), transport: base}
	if prefix != "" {
		b.prefix = prefix + "/"
	}
	err = storage.Retry(ctx, "check bucket", func(ctx context.Context) error {
		it := b.bkt.Objects(ctx, &gs.Query{Prefix: b.prefix})
		it.PageInfo().MaxSize = 1
		_, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		return classify(err)
	})
	if err != nil {
		b.Close()
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("gcs %s: bucket %q %w (create it first, and check the endpoint)", b.Location(), cfg.Bucket, storage.ErrNotFound)
		}
		return nil, fmt.Errorf("gcs %s: check bucket: %w%s", b.Location(), err, hint(err))
	}
	return b, nil
}

// anonymous reports whether cfg's server gets no credentials: an emulator.
func anonymous(cfg Config) bool {
	if cfg.Endpoint != "" {
		return strings.HasPrefix(cfg.Endpoint, "http://")
	}
	return os.Getenv(envEmulator) != ""
}

// hint adds advice to errors people commonly meet when connecting.
func hint(err error) string {
	var ge *googleapi.Error
	if errors.As(err, &ge) && (ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden) {
		return " (check the credentials and that their principal may list and write objects in the bucket, e.g. roles/storage.objectAdmin)"
	}
	return ""
}

// Location returns the repository URL, without credentials.
func (b *Bucket) Location() string { return b.cfg.Location() }

// Close releases the client and its idle connections.
func (b *Bucket) Close() error {
	err := b.client.Close()
	b.transport.CloseIdleConnections()
	return err
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
	return fmt.Errorf("gcs put %q: %w", name, err)
}

func (b *Bucket) put(ctx context.Context, name string, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := b.key(name)
	token := newToken()
	buf := bufPool.Get().(*[]byte)
	n, err := io.ReadFull(storage.ContextReader{Ctx: ctx, R: r}, *buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // fits in one request
		err = b.putSingle(ctx, key, (*buf)[:n], token)
		bufPool.Put(buf)
		return err
	case nil:
		return b.putResumable(ctx, key, buf, r, token)
	default:
		bufPool.Put(buf)
		return fmt.Errorf("read: %w", err)
	}
}

// tokenMeta is the custom metadata key holding a random token unique to
// each Put, by which Put recognises its own object when a retried request
// finds it already created.
const tokenMeta = "put-token"

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writer returns a create-only writer of key (ifGenerationMatch=0: the
// server refuses with 412 to replace any object), whose transient failures
// the client retries only as far as retry allows.
func (b *Bucket) writer(ctx context.Context, key, token string, retry func(error) bool, backoff gax.Backoff) *gs.Writer {
	obj := b.bkt.Object(key).
		If(gs.Conditions{DoesNotExist: true}).
		Retryer(gs.WithPolicy(gs.RetryAlways), gs.WithErrorFunc(retry), gs.WithBackoff(backoff))
	w := obj.NewWriter(ctx)
	w.ContentType = "application/octet-stream"
	w.Metadata = map[string]string{tokenMeta: token}
	return w
}

// noRetry keeps the client from retrying: note that with RetryNever the
// GCS client still resends failed chunks of a resumable upload, with
// its default error test, so retries are turned off through the error
// function instead.
func noRetry(error) bool { return false }

// putSingle stores a small object in one request, retried as a whole
// (storage.Retry) with the data in memory. The data's CRC32C goes with
// it, so the server refuses bytes damaged on the way.
func (b *Bucket) putSingle(ctx context.Context, key string, data []byte, token string) error {
	crc := crc32.Checksum(data, crc32cTable)
	err := storage.Retry(ctx, "upload", func(ctx context.Context) error {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := b.writer(wctx, key, token, noRetry, gax.Backoff{})
		w.ChunkSize = 0 // one request, no buffer of the client's
		w.CRC32C, w.SendCRC32C = crc, true
		if _, err := w.Write(data); err != nil {
			cancel()
			_ = w.Close()
			return classify(err)
		}
		return classify(w.Close())
	})
	if errors.Is(err, storage.ErrExists) && b.isOurs(ctx, key, token) {
		return nil
	}
	return err
}

// putResumable streams first (a full buffer) and the rest of r in a
// resumable upload of chunkSize chunks. The upload is only finalised when r
// ends: on any failure, or when ctx is cancelled, the session is abandoned
// and nothing becomes visible (GCS drops unfinished sessions after a week).
//
// The client resends a chunk that failed transiently from its buffer; it
// does so under the retry policy of the Wrap this Put runs in
// (storage.StepPolicy): the same classification of errors, backoff bounds
// and budget (per chunk), reported through Policy.OnRetry as "upload chunk".
func (b *Bucket) putResumable(ctx context.Context, key string, first *[]byte, r io.Reader, token string) (err error) {
	retry, backoff := noRetry, gax.Backoff{}
	p, steps := storage.StepPolicy(ctx)
	var budget *chunkBudget
	if steps {
		budget = &chunkBudget{p: p, key: key, ctx: ctx}
		retry = budget.retry
		backoff = gax.Backoff{Initial: p.MinBackoff, Max: p.MaxBackoff, Multiplier: 2}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.writer(wctx, key, token, retry, backoff)
	w.ChunkSize = chunkSize
	if steps {
		w.ChunkRetryDeadline = p.Timeout
		w.ProgressFunc = func(int64) { budget.progress() }
	}
	// abort ends the upload without finalising it: the context is
	// cancelled before Close, which would otherwise send the last chunk.
	abort := func() {
		cancel()
		_ = w.Close()
	}

	// Write blocks until the client's buffer took the bytes, so first
	// can go back to the pool right after.
	_, werr := w.Write(*first)
	bufPool.Put(first)
	if werr != nil {
		abort()
		return fmt.Errorf("upload: %w", budget.or(classify(werr)))
	}
	var readErr error
	_, cerr := io.Copy(w, readerFunc(func(p []byte) (int, error) {
		n, err := storage.ContextReader{Ctx: ctx, R: r}.Read(p)
		if err != nil && err != io.EOF {
			readErr = err
		}
		return n, err
	}))
	switch {
	case readErr != nil:
		abort()
		return fmt.Errorf("read: %w", readErr)
	case cerr != nil:
		abort()
		return fmt.Errorf("upload: %w", budget.or(classify(cerr)))
	}
	if err := w.Close(); err != nil {
		err = classify(err)
		if errors.Is(err, storage.ErrExists) && b.isOurs(ctx, key, token) {
			return nil
		}
		return fmt.Errorf("upload: %w", budget.or(err))
	}
	return nil
}

// chunkBudget decides, for the GCS client, whether to resend a request of
// a resumable upload (starting the session, or a chunk) as storage.Retry
// would: transient errors only, until Policy.Timeout has passed since the
// first failure after the upload last made progress.
type chunkBudget struct {
	p   storage.Policy
	key string
	ctx context.Context

	mu    sync.Mutex
	since time.Time // first failure since the last progress
	tries int       // failures since then
	gave  bool      // the budget ran out
}

func (c *chunkBudget) retry(err error) bool {
	cerr := classify(err)
	if !storage.IsRetryable(cerr) || c.ctx.Err() != nil {
		return false
	}
	c.mu.Lock()
	now := time.Now()
	if c.tries == 0 {
		c.since = now
	}
	c.tries++
	if now.Sub(c.since) > c.p.Timeout {
		c.gave = true
		c.mu.Unlock()
		if c.p.Logger != nil {
			c.p.Logger.Warn("storage: giving up", "op", "upload chunk", "name", c.key, "tries", c.tries, "error", err)
		}
		if c.p.OnGiveUp != nil {
			c.p.OnGiveUp("upload chunk")
		}
		return false
	}
	c.mu.Unlock()
	if c.p.Logger != nil {
		c.p.Logger.Debug("storage: retrying", "op", "upload chunk", "name", c.key, "error", err)
	}
	if c.p.OnRetry != nil {
		c.p.OnRetry("upload chunk", cerr)
	}
	return true
}

// progress starts a new budget: a chunk was stored.
func (c *chunkBudget) progress() {
	c.mu.Lock()
	c.tries, c.since = 0, time.Time{}
	c.mu.Unlock()
}

// or returns err, or, when the budget ran out, the upload's failure as a
// *storage.GiveUpError (ErrUnavailable) with err as its last error.
func (c *chunkBudget) or(err error) error {
	if c == nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gave {
		return err
	}
	return &storage.GiveUpError{Op: "upload chunk", Name: c.key, Tries: c.tries, For: time.Since(c.since), Last: err.Error()}
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// isOurs reports whether the object at key was written by the Put that
// holds token: a request whose answer was lost and that was sent again
// finds the object its first try created (412), and must not report it as
// somebody else's.
func (b *Bucket) isOurs(ctx context.Context, key, token string) bool {
	attrs, err := b.bkt.Object(key).Attrs(ctx)
	return err == nil && attrs.Metadata[tokenMeta] == token
}

// Get opens the object name for reading.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, _, err := b.GetRange(ctx, name, 0, "")
	return rc, err
}

// GetRange opens the object name from byte off, pinned by its generation:
// a resumed read asks for that generation (generation=N) on the condition
// that it is still the live one (ifGenerationMatch=N), so a different
// object under the same name is never spliced in.
func (b *Bucket) GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error) {
	obj := b.bkt.Object(b.key(name))
	var gen int64
	if pin != "" {
		var err error
		if gen, err = strconv.ParseInt(pin, 10, 64); err != nil || gen <= 0 {
			return nil, "", fmt.Errorf("gcs get %q: bad pin %q: not a generation", name, pin)
		}
		obj = obj.Generation(gen).If(gs.Conditions{GenerationMatch: gen})
	}
	rd, err := obj.NewRangeReader(ctx, off, -1)
	if err != nil {
		var ge *googleapi.Error
		switch {
		case errors.As(err, &ge) && off > 0 && ge.Code == http.StatusRequestedRangeNotSatisfiable:
			return io.NopCloser(strings.NewReader("")), pin, nil // off is the object's size
		case pin != "" && errors.As(err, &ge) && ge.Code == http.StatusPreconditionFailed:
			return nil, "", fmt.Errorf("gcs get %q: %w (its generation is no longer %s)", name, storage.ErrChanged, pin)
		case pin != "" && errors.Is(classify(err), storage.ErrNotFound) && b.exists(ctx, name):
			// Generation gen is gone but the name is there: replaced.
			return nil, "", fmt.Errorf("gcs get %q: %w (its generation is no longer %s)", name, storage.ErrChanged, pin)
		}
		return nil, "", fmt.Errorf("gcs get %q: %w", name, classify(err))
	}
	got := pin
	if g := rd.Attrs.Generation; g > 0 {
		got = strconv.FormatInt(g, 10)
	}
	return rd, got, nil
}

// exists reports whether name exists now, at any generation.
func (b *Bucket) exists(ctx context.Context, name string) bool {
	_, err := b.bkt.Object(b.key(name)).Attrs(ctx)
	return err == nil
}

// Stat describes the object name.
func (b *Bucket) Stat(ctx context.Context, name string) (storage.Info, error) {
	attrs, err := b.bkt.Object(b.key(name)).Attrs(ctx)
	if err != nil {
		return storage.Info{}, fmt.Errorf("gcs stat %q: %w", name, classify(err))
	}
	return storage.Info{Name: name, Size: attrs.Size, ModTime: modTime(attrs)}, nil
}

// modTime is when the object was created: objects are never changed.
func modTime(a *gs.ObjectAttrs) time.Time {
	if !a.Created.IsZero() {
		return a.Created
	}
	return a.Updated
}

// Remove deletes the object name; GCS answers 404 for a missing one.
func (b *Bucket) Remove(ctx context.Context, name string) error {
	if err := b.bkt.Object(b.key(name)).Delete(ctx); err != nil {
		return fmt.Errorf("gcs remove %q: %w", name, classify(err))
	}
	return nil
}

// List calls fn for every object whose name starts with prefix, in lexical
// order (GCS lists names in UTF-8 binary order), a page of up to 1000
// objects per request.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	q := &gs.Query{Prefix: b.key(prefix)}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Created", "Updated"}); err != nil {
		return fmt.Errorf("gcs list %q: %w", prefix, err)
	}
	it := b.bkt.Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return fmt.Errorf("gcs list %q: %w", prefix, classify(err))
		}
		name, ok := strings.CutPrefix(attrs.Name, b.prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue // "folder" placeholders made by other tools
		}
		if err := fn(storage.Info{Name: name, Size: attrs.Size, ModTime: modTime(attrs)}); err != nil {
			return err
		}
	}
}

// classify maps GCS client errors to the storage errors: missing objects
// and buckets to ErrNotFound, a failed create-only precondition (412) to
// ErrExists, and throttling, 5xx and network failures to
// storage.Retryable. Context errors and other errors are returned
// unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, gs.ErrObjectNotExist) || errors.Is(err, gs.ErrBucketNotExist) {
		return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == http.StatusNotFound:
			return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		case ge.Code == http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", storage.ErrExists, err)
		case ge.Code >= 500, ge.Code == http.StatusTooManyRequests, ge.Code == http.StatusRequestTimeout:
			return storage.Retryable(err)
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
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return storage.Retryable(err)
	}
	return err
}
