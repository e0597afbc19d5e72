package azblob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

const (
	// blockSize is the size of a staged block, and the largest object sent
	// in a single Put Blob. A Put holds two block buffers (one filling, one
	// uploading), so its live heap stays near 16 MiB whatever the object's
	// size. With maxBlocks blocks it caps objects at 390 GiB.
	blockSize = 8 << 20
	// maxBlocks is Azure's limit on the committed blocks of a blob.
	maxBlocks = 50000
	// tokenMeta is the metadata key that holds a Put's random token.
	tokenMeta = "etcdbackupput"
	// checkTimeout bounds the listing New makes to check the container.
	checkTimeout = time.Minute
)

// bufPool recycles block buffers (*[]byte of blockSize) across Puts.
var bufPool = sync.Pool{New: func() any { b := make([]byte, blockSize); return &b }}

// Container is a repository in an Azure Blob Storage container, under an
// optional name prefix. It is safe for concurrent use.
type Container struct {
	cfg       Config // Account and Endpoint resolved; credentials dropped
	client    *container.Client
	transport *http.Transport
	prefix    string // cfg.Prefix + "/", or ""
	auth      string // how it authenticates, for hints: "connection string", "shared key", "SAS", "Entra ID"
}

var (
	_ storage.Backend     = (*Container)(nil)
	_ storage.RangeGetter = (*Container)(nil)
)

// New connects to the container of cfg and checks that it exists (a
// missing container is an error wrapping storage.ErrNotFound). Credentials
// are those of cfg (see Config; call FromEnv first for the environment's).
func New(ctx context.Context, cfg Config) (*Container, error) {
	if cfg.Container == "" {
		return nil, fmt.Errorf("azblob: %w: missing container name", storage.ErrBadURL)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("azblob: %w: %v", storage.ErrBadURL, err)
	}
	cfg.Prefix = prefix

	key, sas := cfg.Key, strings.TrimPrefix(cfg.SASToken, "?")
	auth := "shared key"
	switch {
	case cfg.ConnectionString != "":
		cs, err := parseConnString(cfg.ConnectionString)
		if err != nil {
			return nil, fmt.Errorf("azblob %s: %w: %v", cfg.Location(), storage.ErrBadURL, err)
		}
		if cfg.Account == "" {
			cfg.Account = cs.account
		}
		if cfg.Endpoint == "" {
			cfg.Endpoint = cs.endpoint
		}
		key, sas, auth = cs.key, cs.sas, "connection string"
	case key != "":
	case sas != "":
		auth = "SAS"
	default:
		auth = "Entra ID"
	}
	if cfg.Endpoint == "" {
		if cfg.Account == "" {
			return nil, fmt.Errorf("azblob %s: %w: no storage account: set %s (or ?account= in the URL), %s, or ?endpoint=",
				cfg.Location(), storage.ErrBadURL, EnvAccount, EnvConnectionString)
		}
		cfg.Endpoint = serviceURL(cfg.Account)
	}
	if e, err := parseEndpoint(cfg.Endpoint); err != nil {
		return nil, fmt.Errorf("azblob %s: %w: %v", cfg.Location(), storage.ErrBadURL, err)
	} else {
		cfg.Endpoint = e
	}
	cfg.ConnectionString, cfg.Key, cfg.SASToken = "", "", ""

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = storage.IdleTimeoutDialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, cfg.Stall)
	transport.MaxIdleConnsPerHost = 16
	transport.ResponseHeaderTimeout = 0
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: transport},
		// storage.Wrap retries every operation, and each step of an
		// upload through storage.Retry, under one budget
		// (--storage-timeout): the SDK's own retries are off.
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Telemetry: policy.TelemetryOptions{ApplicationID: "etcd-backup"},
	}}
	containerURL := cfg.Endpoint + "/" + url.PathEscape(cfg.Container)

	var client *container.Client
	switch {
	case key != "":
		if cfg.Account == "" {
			return nil, fmt.Errorf("azblob %s: %w: a shared key needs the storage account name: set %s or ?account=", cfg.Location(), storage.ErrBadURL, EnvAccount)
		}
		cred, err := container.NewSharedKeyCredential(cfg.Account, key)
		if err != nil {
			// The SDK's error would not quote the key, but say no more
			// than needed.
			return nil, fmt.Errorf("azblob %s: %w: the account key is not valid base64", cfg.Location(), storage.ErrBadURL)
		}
		client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
		if err != nil {
			return nil, fmt.Errorf("azblob %s: %w", cfg.Location(), err)
		}
	case sas != "":
		if _, err := url.ParseQuery(sas); err != nil {
			return nil, fmt.Errorf("azblob %s: %w: the SAS token is not a query string", cfg.Location(), storage.ErrBadURL)
		}
		client, err = container.NewClientWithNoCredential(containerURL+"?"+sas, opts)
		if err != nil {
			return nil, fmt.Errorf("azblob %s: %w", cfg.Location(), errors.New("bad SAS URL"))
		}
	default:
		if cfg.NoEntraID {
			return nil, fmt.Errorf("azblob %s: %w: no credentials: set %s, %s and %s, or %s",
				cfg.Location(), storage.ErrBadURL, EnvConnectionString, EnvAccount, EnvKey, EnvSASToken)
		}
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: transport}},
		})
		if err != nil {
			return nil, fmt.Errorf("azblob %s: Entra ID credentials (none of %s, %s or %s is set): %w",
				cfg.Location(), EnvConnectionString, EnvKey, EnvSASToken, err)
		}
		client, err = container.NewClient(containerURL, cred, opts)
		if err != nil {
			return nil, fmt.Errorf("azblob %s: %w", cfg.Location(), err)
		}
	}

	c := &Container{cfg: cfg, client: client, transport: transport, auth: auth}
	if prefix != "" {
		c.prefix = prefix + "/"
	}
	// Check the container with the cheapest request that the repository
	// needs permission for anyway: a listing of at most one blob (a SAS
	// for a container may not allow reading its properties).
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err = storage.Retry(cctx, "check container", func(ctx context.Context) error {
		one := int32(1)
		pager := client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &c.prefix, MaxResults: &one})
		_, err := pager.NextPage(ctx)
		return classify(err)
	})
	if err != nil {
		c.Close()
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("azblob %s: container %q %w (create it first, and check the account and endpoint): %w",
				c.Location(), cfg.Container, storage.ErrNotFound, err)
		}
		return nil, fmt.Errorf("azblob %s: check container: %w%s", c.Location(), err, c.hint(err))
	}
	return c, nil
}

// hint adds advice to errors people commonly meet when connecting.
func (c *Container) hint(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusForbidden:
			return fmt.Sprintf(" (check the credentials, here from %s: %s; %s with %s or %s; %s; or the identity's role, e.g. Storage Blob Data Contributor)",
				c.auth, EnvConnectionString, EnvAccount, EnvKey, EnvSASToken, "a managed identity")
		case re.ErrorCode == "InvalidHeaderValue" || re.ErrorCode == "InvalidApiVersion":
			return " (the server does not support this API version: an old emulator?)"
		}
	}
	var ae *azidentity.AuthenticationFailedError
	if errors.As(err, &ae) || c.auth == "Entra ID" && strings.Contains(err.Error(), "DefaultAzureCredential") {
		return fmt.Sprintf(" (no Entra ID credential worked; set %s, %s with %s, or %s instead)", EnvConnectionString, EnvAccount, EnvKey, EnvSASToken)
	}
	return ""
}

// Location returns the repository URL, without credentials.
func (c *Container) Location() string { return c.cfg.Location() }

// Close releases idle connections.
func (c *Container) Close() error {
	c.transport.CloseIdleConnections()
	return nil
}

func (c *Container) key(name string) string { return c.prefix + name }

func (c *Container) blockBlob(name string) *blockblob.Client {
	return c.client.NewBlockBlobClient(c.key(name))
}

// createOnly makes a write fail when the blob exists.
func createOnly() *blob.AccessConditions {
	any := azcore.ETagAny
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &any}}
}

// newToken returns a random token that marks one Put's blocks and blob.
func newToken() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Put stores r under name, create-only. See storage.Backend for the contract.
func (c *Container) Put(ctx context.Context, name string, r io.Reader) error {
	err := c.put(ctx, name, r)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	return fmt.Errorf("azblob put %q: %w", name, err)
}

func (c *Container) put(ctx context.Context, name string, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	bb := c.blockBlob(name)
	// Fail before reading r when the blob exists. The writes themselves
	// are conditional (If-None-Match: *); this only saves uploading an
	// object that cannot be stored. A SAS without read permission cannot
	// look: then rely on the condition alone.
	err := storage.Retry(ctx, "check for existing object", func(ctx context.Context) error {
		_, err := bb.GetProperties(ctx, nil)
		return classify(err)
	})
	switch {
	case err == nil:
		return storage.ErrExists
	case !errors.Is(err, storage.ErrNotFound) && !isForbidden(err):
		return fmt.Errorf("check for existing object: %w", err)
	}

	first := bufPool.Get().(*[]byte)
	n, err := io.ReadFull(storage.ContextReader{Ctx: ctx, R: r}, *first)
	token := newToken()
	switch {
	case err == nil:
		return c.putBlocks(ctx, bb, first, blockSize, r, token) // takes first
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		err := c.putSingle(ctx, bb, (*first)[:n], token)
		if errors.Is(err, errUncommitted) {
			// Commit Block List judges If-None-Match by committed
			// blobs only: send the object as one block.
			return c.putBlocks(ctx, bb, first, n, eofReader{}, token)
		}
		bufPool.Put(first)
		return err
	default:
		bufPool.Put(first)
		return fmt.Errorf("read: %w", err)
	}
}

// errUncommitted is a Put Blob refused as BlobAlreadyExists where no blob
// is visible: the name has only uncommitted blocks (of a failed or running
// Put). Azurite 3.37.0 judges If-None-Match: * on Put Blob against such a
// name as existing, though its Get and List (like Azure's) do not show it.
var errUncommitted = errors.New("name has only uncommitted blocks")

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// putSingle stores a small object in one Put Blob request.
func (c *Container) putSingle(ctx context.Context, bb *blockblob.Client, data []byte, token string) error {
	err := storage.Retry(ctx, "upload", func(ctx context.Context) error {
		_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
			Metadata:         map[string]*string{tokenMeta: &token},
			AccessConditions: createOnly(),
		})
		err = classify(err)
		if errors.Is(err, storage.ErrExists) {
			switch visible, ours, oerr := c.owner(ctx, bb, token); {
			case oerr != nil:
				return oerr // retried: the next try asks again
			case ours:
				return nil
			case !visible:
				return errUncommitted
			}
		}
		return err
	})
	return err
}

// blockID is the ID of block num of the Put holding token. IDs are unique
// per Put, so concurrent writers of one name never mix their uncommitted
// blocks, and of equal length, as Azure requires within a blob.
func blockID(token string, num int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%s-%06d", token, num))
}

// putBlocks stages first (a full block) and the rest of r as blocks, then
// commits the block list with If-None-Match: *. One goroutine stages a block
// while this one reads the next, so at most two block buffers are in use.
// A Put that fails leaves its staged blocks uncommitted: they are invisible
// and Azure discards them (after a week, or when another write to the name
// commits).
func (c *Container) putBlocks(ctx context.Context, bb *blockblob.Client, first *[]byte, n int, r io.Reader, token string) error {
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Exactly two block buffers circulate, passed between the reader and
	// the uploader through free.
	free := make(chan *[]byte, 2)
	free <- bufPool.Get().(*[]byte)
	defer func() {
		close(free)
		for buf := range free {
			bufPool.Put(buf)
		}
	}()

	type block struct {
		num int
		buf *[]byte
		n   int
	}
	work := make(chan block)
	var (
		ids     []string // written by the uploader, read after done
		upErr   error
		upBytes int64
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range work {
			if upErr == nil {
				id := blockID(token, b.num)
				err := storage.Retry(uctx, "upload block", func(ctx context.Context) error {
					_, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader((*b.buf)[:b.n])), nil)
					return classify(err)
				})
				if err != nil {
					upErr = fmt.Errorf("upload block %d: %w", b.num, err)
					cancel() // stop the reader
				} else {
					ids = append(ids, id)
					upBytes += int64(b.n)
				}
			}
			free <- b.buf
		}
	}()

	var readErr error
	next := block{num: 1, buf: first, n: n}
	for {
		if next.num > maxBlocks {
			free <- next.buf
			readErr = fmt.Errorf("object larger than the Azure limit of %d blocks of %d MiB", maxBlocks, blockSize>>20)
			break
		}
		work <- next // blocks while the previous block uploads
		if next.n < blockSize || uctx.Err() != nil {
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
		next = block{num: next.num + 1, buf: buf, n: n}
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

	err := storage.Retry(ctx, "commit block list", func(ctx context.Context) error {
		_, err := bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
			Metadata:         map[string]*string{tokenMeta: &token},
			AccessConditions: createOnly(),
		})
		invalid := bloberror.HasCode(err, bloberror.InvalidBlockList)
		err = classify(err)
		if !invalid && !errors.Is(err, storage.ErrExists) {
			return err
		}
		// The blob exists, or our blocks are gone (another writer
		// committed the name, which discards every uncommitted block):
		// either way, unless a retried commit of ours landed.
		visible, ours, oerr := c.owner(ctx, bb, token)
		switch {
		case oerr != nil:
			return oerr // retried: the next try asks again
		case ours:
			return nil
		case invalid && visible:
			return fmt.Errorf("%w: %w", storage.ErrExists, err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("commit block list (%d blocks, %d bytes): %w", len(ids), upBytes, err)
	}
	return nil
}

// owner reports whether a blob is visible under bb's name and whether it is
// the one written by the Put that holds token. A retryable error means it
// could not tell this time; after another error it says visible and not
// ours. When a write's response is lost and storage.Retry sends it again,
// the retry's If-None-Match fails on the blob the first try created: the
// Put must then recognise its own blob by token.
func (c *Container) owner(ctx context.Context, bb *blockblob.Client, token string) (visible, ours bool, err error) {
	p, err := bb.GetProperties(ctx, nil)
	if err != nil {
		err = classify(err)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return false, false, nil
		case storage.IsRetryable(err):
			return false, false, fmt.Errorf("check who wrote the existing blob: %w", err)
		}
		return true, false, nil
	}
	for k, v := range p.Metadata {
		if strings.EqualFold(k, tokenMeta) && v != nil && *v == token {
			return true, true, nil
		}
	}
	return true, false, nil
}

// Get opens the object name for reading.
func (c *Container) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, _, err := c.GetRange(ctx, name, 0, "")
	return rc, err
}

// GetRange opens the object name from byte off, pinned by its ETag: a
// resumed read sends If-Match with the ETag the first read returned, so a
// different blob under the same name is never spliced in.
func (c *Container) GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error) {
	opts := &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off}}
	if pin != "" {
		etag := azcore.ETag(pin)
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}
	}
	resp, err := c.client.NewBlobClient(c.key(name)).DownloadStream(ctx, opts)
	if err != nil {
		var re *azcore.ResponseError
		if errors.As(err, &re) {
			switch {
			case pin != "" && (re.StatusCode == http.StatusPreconditionFailed || re.ErrorCode == string(bloberror.ConditionNotMet)):
				return nil, "", fmt.Errorf("azblob get %q: %w (its ETag is no longer %s)", name, storage.ErrChanged, pin)
			case off > 0 && (re.StatusCode == http.StatusRequestedRangeNotSatisfiable || re.ErrorCode == string(bloberror.InvalidRange)):
				return io.NopCloser(strings.NewReader("")), pin, nil // off is the blob's size
			}
		}
		return nil, "", fmt.Errorf("azblob get %q: %w", name, classify(err))
	}
	etag := ""
	if resp.ETag != nil {
		etag = string(*resp.ETag)
	}
	return resp.Body, etag, nil
}

// Stat describes the object name.
func (c *Container) Stat(ctx context.Context, name string) (storage.Info, error) {
	p, err := c.client.NewBlobClient(c.key(name)).GetProperties(ctx, nil)
	if err != nil {
		return storage.Info{}, fmt.Errorf("azblob stat %q: %w", name, classify(err))
	}
	info := storage.Info{Name: name}
	if p.ContentLength != nil {
		info.Size = *p.ContentLength
	}
	if p.LastModified != nil {
		info.ModTime = *p.LastModified
	}
	return info, nil
}

// Remove deletes the object name (and snapshots of it, which etcd-backup
// never makes but an operator may have).
func (c *Container) Remove(ctx context.Context, name string) error {
	include := blob.DeleteSnapshotsOptionTypeInclude
	_, err := c.client.NewBlobClient(c.key(name)).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: &include})
	if err != nil {
		return fmt.Errorf("azblob remove %q: %w", name, classify(err))
	}
	return nil
}

// List calls fn for every object whose name starts with prefix, in lexical
// order (Azure lists blob names in UTF-8 binary order).
func (c *Container) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	p := c.key(prefix)
	pager := c.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:  &p,
		Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("azblob list %q: %w", prefix, classify(err))
		}
		for _, it := range page.Segment.BlobItems {
			if it == nil || it.Name == nil || isDirectory(it) {
				continue
			}
			name, ok := strings.CutPrefix(*it.Name, c.prefix)
			if !ok || name == "" || strings.HasSuffix(name, "/") {
				continue // "directory" markers made by other tools
			}
			info := storage.Info{Name: name}
			if pr := it.Properties; pr != nil {
				if pr.ContentLength != nil {
					info.Size = *pr.ContentLength
				}
				if pr.LastModified != nil {
					info.ModTime = *pr.LastModified
				}
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// isDirectory reports a directory of an account with a hierarchical
// namespace (Data Lake Storage), which flat listings return as blobs.
func isDirectory(it *container.BlobItem) bool {
	if pr := it.Properties; pr != nil && pr.ResourceType != nil && *pr.ResourceType == "directory" {
		return true
	}
	for k, v := range it.Metadata {
		if strings.EqualFold(k, "hdi_isfolder") && v != nil && strings.EqualFold(*v, "true") {
			return true
		}
	}
	return false
}

// Error codes of transient conditions.
var retryableCodes = map[bloberror.Code]bool{
	bloberror.InternalError:     true,
	bloberror.OperationTimedOut: true,
	bloberror.ServerBusy:        true,
}

// classify maps SDK errors to the storage errors: missing blobs and
// containers to ErrNotFound, failed If-None-Match to ErrExists, and
// throttling, 5xx and network failures to storage.Retryable. Context errors
// and other errors are returned unchanged (but with any URL's query, which
// may hold a SAS, removed).
func classify(err error) error {
	if err == nil {
		return nil
	}
	err = scrub(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		err = compact(err, re)
		code := bloberror.Code(re.ErrorCode)
		switch {
		case code == bloberror.BlobNotFound || code == bloberror.ContainerNotFound || code == bloberror.ResourceNotFound:
			return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		case code == bloberror.BlobAlreadyExists || code == bloberror.ConditionNotMet || re.StatusCode == http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", storage.ErrExists, err)
		case retryableCodes[code],
			re.StatusCode >= 500,
			re.StatusCode == http.StatusTooManyRequests,
			re.StatusCode == http.StatusRequestTimeout:
			return storage.Retryable(err)
		case re.StatusCode == http.StatusNotFound:
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

// compact replaces the SDK's multi-line error text (headers, the XML
// body) with one line: "GET https://host/path: 404 BlobNotFound". The
// result still unwraps to the *azcore.ResponseError.
func compact(err error, re *azcore.ResponseError) error {
	if err != error(re) {
		return err // wrapped by something else: keep its text
	}
	what := ""
	if r := re.RawResponse; r != nil && r.Request != nil && r.Request.URL != nil {
		u := *r.Request.URL
		u.RawQuery, u.User = "", nil
		what = r.Request.Method + " " + u.String() + ": "
	}
	code := re.ErrorCode
	if code == "" {
		code = http.StatusText(re.StatusCode)
	}
	return &oneLine{msg: fmt.Sprintf("%s%d %s", what, re.StatusCode, code), err: err}
}

// oneLine is an error with a shorter text than the one it wraps.
type oneLine struct {
	msg string
	err error
}

func (o *oneLine) Error() string { return o.msg }
func (o *oneLine) Unwrap() error { return o.err }

// scrub removes the query (a SAS token's signature) from the URL of a
// *url.Error in err's chain, by rebuilding the chain's top when it is one.
func scrub(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.RawQuery == "" {
		return err
	}
	u.RawQuery = ""
	clean := &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
	if err == error(ue) {
		return clean
	}
	// The url.Error is wrapped: keep the chain (for errors.Is/As) but make
	// the text come from the clean copy.
	return &oneLine{msg: strings.ReplaceAll(err.Error(), ue.URL, clean.URL), err: err}
}

// isForbidden reports a 403 from the server.
func isForbidden(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
