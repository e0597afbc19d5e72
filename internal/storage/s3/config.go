package s3

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Config says where a repository lives in S3.
type Config struct {
	Bucket string
	// Prefix is prepended, with a '/', to every object name; "" for the
	// bucket's root. It has no leading or trailing '/'.
	Prefix string
	// Endpoint is the server's host[:port]; "" means AWS S3.
	Endpoint string
	// Secure selects https. It is forced on when Endpoint is "".
	Secure bool
	// Region of the bucket; "" means $AWS_REGION, then $AWS_DEFAULT_REGION,
	// then asking the server (GetBucketLocation).
	Region string
	// PathStyle addresses the bucket as http://endpoint/bucket instead of
	// http://bucket.endpoint, as most S3-compatible servers need.
	PathStyle bool
	// Credentials overrides the standard AWS credential chain (environment,
	// shared credentials file and profile, then IAM: web identity, ECS, EC2).
	// Nil means the chain. Never part of Location or any error message.
	Credentials *credentials.Credentials
	// Stall fails a request whose connection moves no byte for this long
	// (storage.IdleTimeoutDialer); 0 means storage.DefaultStall. The
	// storage wrapper then retries it.
	Stall time.Duration
}

// Query parameters of s3:// URLs.
const (
	paramRegion    = "region"
	paramEndpoint  = "endpoint"
	paramPathStyle = "path-style"
)

const urlForm = "s3://bucket[/prefix][?region=R&endpoint=https://host:port&path-style=true|false]"

func badURL(u *url.URL, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s (want %s)", storage.ErrBadURL, redact(u), fmt.Sprintf(format, args...), urlForm)
}

// redact returns u as a string without passwords, also those of URLs in its
// query (?endpoint=http://user:password@host).
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if q, err := url.ParseQuery(c.RawQuery); err == nil {
		changed := false
		for _, vs := range q {
			for i, v := range vs {
				if e, err := url.Parse(v); err == nil && e.User != nil {
					vs[i], changed = e.Redacted(), true
				}
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	} else if strings.Contains(c.RawQuery, "@") {
		c.RawQuery = "(redacted)"
	}
	return c.Redacted()
}

// ParseURL turns an s3:// repository URL into a Config. Errors wrap
// storage.ErrBadURL and say what to write instead. Without an endpoint the
// bucket is on AWS S3 over https; with one, path-style addressing is the
// default, since S3-compatible servers rarely have per-bucket DNS names.
func ParseURL(u *url.URL) (Config, error) {
	var c Config
	if u == nil {
		return c, fmt.Errorf("%w: nil URL", storage.ErrBadURL)
	}
	if !strings.EqualFold(u.Scheme, "s3") {
		return c, badURL(u, "scheme is %q, not s3", u.Scheme)
	}
	if u.Opaque != "" {
		return c, badURL(u, "missing // after s3:")
	}
	if u.User != nil {
		return c, badURL(u, "credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
	}
	if u.Fragment != "" || strings.HasSuffix(u.String(), "#") {
		return c, badURL(u, "unexpected #fragment")
	}
	if u.Host == "" {
		return c, badURL(u, "missing bucket name")
	}
	if u.Port() != "" {
		return c, badURL(u, "the part after s3:// is the bucket, not a server; give the server as ?endpoint=http://%s", u.Host)
	}
	c.Bucket = u.Host
	if err := s3utils.CheckValidBucketName(c.Bucket); err != nil {
		return c, badURL(u, "bucket name %q: %v", c.Bucket, err)
	}
	prefix, err := cleanPrefix(u.Path)
	if err != nil {
		return c, badURL(u, "%v", err)
	}
	c.Prefix = prefix

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return c, badURL(u, "query: %v", err)
	}
	pathStyleSet := false
	for k, vs := range q {
		if len(vs) != 1 {
			return c, badURL(u, "parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case paramRegion:
			if v == "" {
				return c, badURL(u, "empty region")
			}
			c.Region = v
		case paramEndpoint:
			host, secure, err := parseEndpoint(v)
			if err != nil {
				return c, badURL(u, "%v", err)
			}
			c.Endpoint, c.Secure = host, secure
		case paramPathStyle:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return c, badURL(u, "path-style=%q: want true or false", v)
			}
			c.PathStyle, pathStyleSet = b, true
		default:
			return c, badURL(u, "unknown parameter %q (known: %s, %s, %s)", k, paramRegion, paramEndpoint, paramPathStyle)
		}
	}
	if c.Endpoint == "" {
		c.Secure = true
	} else if !pathStyleSet {
		c.PathStyle = true
	}
	return c, nil
}

// parseEndpoint accepts "http://host[:port]" or "https://host[:port]".
func parseEndpoint(v string) (host string, secure bool, err error) {
	if v == "" {
		return "", false, fmt.Errorf("empty endpoint")
	}
	if !strings.Contains(v, "://") {
		return "", false, fmt.Errorf("endpoint %q has no scheme: write http://%s or https://%s", v, v, v)
	}
	e, err := url.Parse(v)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %v", v, err)
	}
	switch strings.ToLower(e.Scheme) {
	case "http":
	case "https":
		secure = true
	default:
		return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", v)
	}
	if e.Host == "" || e.Hostname() == "" {
		return "", false, fmt.Errorf("endpoint %q: missing host", v)
	}
	if e.User != nil {
		return "", false, fmt.Errorf("endpoint %q: credentials do not belong in the URL", e.Redacted())
	}
	if (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "" {
		return "", false, fmt.Errorf("endpoint %q: want only scheme://host[:port], no path or query", v)
	}
	if p := e.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", false, fmt.Errorf("endpoint %q: bad port %q", v, p)
		}
	}
	return e.Host, secure, nil
}

// cleanPrefix checks a key prefix from a URL path and removes its slashes at
// both ends.
func cleanPrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "":
			return "", fmt.Errorf("prefix %q has an empty element (//)", p)
		case ".", "..":
			return "", fmt.Errorf("prefix %q has a %q element", p, el)
		}
	}
	return p, nil
}

// Location returns the URL that names c's repository, without credentials.
func (c Config) Location() string {
	u := url.URL{Scheme: "s3", Host: c.Bucket, Path: "/" + c.Prefix}
	s := u.String()
	var q []string
	if c.Region != "" {
		q = append(q, paramRegion+"="+url.QueryEscape(c.Region))
	}
	if c.Endpoint != "" {
		scheme := "http"
		if c.Secure {
			scheme = "https"
		}
		q = append(q, paramEndpoint+"="+scheme+"://"+c.Endpoint)
		if !c.PathStyle {
			q = append(q, paramPathStyle+"=false")
		}
	} else if c.PathStyle {
		q = append(q, paramPathStyle+"=true")
	}
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}
