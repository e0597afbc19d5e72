package backends

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/azblob"
	"github.com/etcd-backup/etcd-backup/internal/storage/gcs"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
	"github.com/etcd-backup/etcd-backup/internal/storage/rclone"
	"github.com/etcd-backup/etcd-backup/internal/storage/s3"
)

// Options adjust how Open opens a repository.
type Options struct {
	// Create makes a missing local repository directory (snapshot does;
	// list and restore do not, so that a typo is reported as not found).
	// Buckets are never created by the s3 and gs backends; for rclone: URLs the
	// remote's own configuration decides (no_check_bucket).
	Create bool
	// RcloneConfig is the rclone config file for rclone: URLs (rclone's
	// --config). "" leaves rclone's default lookup ($RCLONE_CONFIG, then
	// ~/.config/rclone/rclone.conf, ...).
	RcloneConfig string
	// RcloneBinary is the rclone executable for rclone: URLs, a path or a
	// name looked up in $PATH. "" means "rclone".
	RcloneBinary string
	// Retry is the policy of the retry, resume and stall wrapper every
	// backend is opened with (storage.Wrap); its stall bound also goes to
	// the backend's own transport (HTTP idle timeout, rclone --timeout).
	Retry storage.Policy
	// LockFor, when set, writes every object locked for that long (S3
	// Object Lock, mode LockMode: "GOVERNANCE" or "COMPLIANCE"); Open fails
	// unless the repository can lock objects.
	LockFor  time.Duration
	LockMode string
}

// Supported describes the accepted repository URL forms, for help texts.
const Supported = "a directory path, file:///abs/path, s3://bucket/prefix[?region=R&endpoint=https://host:port&path-style=true], gs://bucket/prefix[?endpoint=http://host:port], azblob://container/prefix[?account=NAME&endpoint=https://host:port/path], or rclone:REMOTE:PATH"

// schemeRE matches the scheme of an absolute URL. Windows drive letters
// ("C:") are not schemes: a scheme here has at least two characters.
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.\-]+):`)

// Open returns the backend for rawURL. Errors from a malformed URL or an
// unsupported scheme wrap storage.ErrBadURL; a missing local directory (when
// !opt.Create) or bucket wraps storage.ErrNotFound.
//
// The backend comes wrapped (storage.Wrap with opt.Retry): this is the one
// place where retries, resumed reads, stall bounds and the name rule are
// composed around every backend. Opening itself runs under the same retry
// policy.
func Open(ctx context.Context, rawURL string, opt Options) (storage.Backend, error) {
	b, err := open(ctx, rawURL, opt)
	if err != nil {
		return nil, err
	}
	w := storage.Wrap(b, opt.Retry)
	if opt.LockFor > 0 {
		l, err := storage.LockFor(storage.WithPolicy(ctx, opt.Retry), w, opt.LockFor, opt.LockMode)
		if err != nil {
			w.Close()
			return nil, err
		}
		return l, nil
	}
	return w, nil
}

func open(ctx context.Context, rawURL string, opt Options) (storage.Backend, error) {
	kind, target, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	ctx = storage.WithPolicy(ctx, opt.Retry)
	switch kind {
	case "local":
		d, err := local.New(target.path, opt.Create)
		if err != nil {
			return nil, err
		}
		return d, nil
	case "s3":
		cfg := target.s3
		cfg.Stall = opt.Retry.Stall
		b, err := s3.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	case "azblob":
		cfg := target.azblob.FromEnv(os.Getenv)
		cfg.Stall = opt.Retry.Stall
		c, err := azblob.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	case "gs":
		cfg := target.gs
		cfg.Stall = opt.Retry.Stall
		b, err := gcs.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	case "rclone":
		cfg := target.rclone
		cfg.ConfigFile = opt.RcloneConfig
		cfg.Binary = opt.RcloneBinary
		cfg.Stall = opt.Retry.Stall
		r, err := rclone.New(ctx, cfg, opt.Create)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	panic("backends: unhandled kind " + kind)
}

// CreatesMissing reports whether Open with Create makes a missing
// repository root for rawURL (a local directory or an rclone path; never an
// S3 or GCS bucket or Azure container). It does not touch the file system or network.
func CreatesMissing(rawURL string) bool {
	kind, _, err := parse(rawURL)
	return err == nil && (kind == "local" || kind == "rclone")
}

// LocalPath checks rawURL without touching the file system or network and,
// for a local directory repository, returns its path ("" for remote ones).
func LocalPath(rawURL string) (string, error) {
	kind, t, err := parse(rawURL)
	if err != nil {
		return "", err
	}
	if kind == "local" {
		return t.path, nil
	}
	return "", nil
}

// target is what parse extracted from a URL.
type target struct {
	path   string        // local
	s3     s3.Config     // s3
	azblob azblob.Config // azblob (no credentials: Open reads them)
	gs     gcs.Config    // gs
	rclone rclone.Config // rclone (Remote only)
}

// parse maps rawURL to a backend kind ("local", "s3", "gs", "azblob" or "rclone") and its target,
// without touching the file system or network.
func parse(rawURL string) (kind string, t target, err error) {
	if strings.TrimSpace(rawURL) == "" {
		return "", t, fmt.Errorf("%w: empty repository URL (want %s)", storage.ErrBadURL, Supported)
	}
	m := schemeRE.FindStringSubmatch(rawURL)
	if m == nil {
		// A plain path, absolute or relative.
		return "local", target{path: rawURL}, nil
	}
	scheme := strings.ToLower(m[1])
	switch scheme {
	case "file":
		u, err := url.Parse(rawURL)
		if err != nil {
			return "", t, fmt.Errorf("%w: %v (want file:///absolute/path)", storage.ErrBadURL, err)
		}
		p, err := filePath(u)
		if err != nil {
			return "", t, err
		}
		return "local", target{path: p}, nil
	case "s3":
		u, err := url.Parse(rawURL)
		if err != nil {
			return "", t, fmt.Errorf("%w: %v (want %s)", storage.ErrBadURL, redactErr(err), Supported)
		}
		c, err := s3.ParseURL(u)
		if err != nil {
			return "", t, err
		}
		return "s3", target{s3: c}, nil
	case "azblob":
		u, err := url.Parse(rawURL)
		if err != nil {
			return "", t, fmt.Errorf("%w: %v (want %s)", storage.ErrBadURL, redactErr(err), Supported)
		}
		c, err := azblob.ParseURL(u)
		if err != nil {
			return "", t, err
		}
		return "azblob", target{azblob: c}, nil
	case "gs":
		u, err := url.Parse(rawURL)
		if err != nil {
			return "", t, fmt.Errorf("%w: %v (want %s)", storage.ErrBadURL, redactErr(err), Supported)
		}
		c, err := gcs.ParseURL(u)
		if err != nil {
			return "", t, err
		}
		return "gs", target{gs: c}, nil
	case "gcs":
		return "", t, fmt.Errorf("%w: scheme %q: Google Cloud Storage URLs are written gs://bucket/prefix", storage.ErrBadURL, scheme)
	case rclone.Scheme:
		c, err := rclone.ParseURL(rawURL)
		if err != nil {
			return "", t, err
		}
		return "rclone", target{rclone: c}, nil
	case "azure", "az", "wasb", "wasbs", "abfs", "abfss":
		return "", t, fmt.Errorf("%w: scheme %q: write Azure Blob Storage repositories as azblob://container/prefix; supported: %s", storage.ErrBadURL, scheme, Supported)
	case "sftp", "http", "https", "swift", "b2":
		return "", t, fmt.Errorf("%w: scheme %q is not supported yet; supported: %s", storage.ErrBadURL, scheme, Supported)
	default:
		// The URL itself is not echoed: it may carry credentials.
		return "", t, fmt.Errorf("%w: unknown scheme %q; supported: %s (prefix ./ for a relative directory whose name has a colon)",
			storage.ErrBadURL, scheme, Supported)
	}
}

// filePath returns the local path of a file: URL.
func filePath(u *url.URL) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s (want file:///absolute/path, or a plain path)", storage.ErrBadURL, u.Redacted(), why)
	}
	switch {
	case u.Opaque != "":
		return "", bad("file URLs must be absolute")
	case u.User != nil:
		return "", bad("unexpected user name")
	case u.Host != "" && u.Host != "localhost":
		return "", bad("remote hosts are not supported")
	case u.RawQuery != "" || u.ForceQuery:
		return "", bad("unexpected ?query")
	case u.Fragment != "":
		return "", bad("unexpected #fragment")
	case u.Path == "":
		return "", bad("missing path")
	}
	return u.Path, nil
}

// redactErr describes a url.Parse error without quoting the URL, which may
// hold a password.
func redactErr(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Op + " URL: " + ue.Err.Error()
	}
	return err.Error()
}
