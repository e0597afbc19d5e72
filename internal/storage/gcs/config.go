package gcs

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Config says where a repository lives in Google Cloud Storage.
type Config struct {
	Bucket string
	// Prefix is prepended, with a '/', to every object name; "" for the
	// bucket's root. It has no leading or trailing '/'.
	Prefix string
	// Endpoint is the JSON API server as scheme://host[:port], for an
	// emulator or a private endpoint; "" means Google Cloud Storage, or the
	// emulator named by $STORAGE_EMULATOR_HOST. An http:// endpoint gets no
	// credentials (tokens are never sent in clear text); an https:// one
	// gets Application Default Credentials.
	Endpoint string
	// Stall fails a request whose connection moves no byte for this long
	// (storage.IdleTimeoutDialer); 0 means storage.DefaultStall. The
	// storage wrapper then retries it.
	Stall time.Duration
}

// Query parameters of gs:// URLs.
const paramEndpoint = "endpoint"

const urlForm = "gs://bucket[/prefix][?endpoint=http://host:port]"

func badURL(u *url.URL, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s (want %s)", storage.ErrBadURL, redact(u), fmt.Sprintf(format, args...), urlForm)
}

// redact returns u as a string without passwords, also those of URLs in its
// query (?endpoint=http://user:password@host).
func redact(u *url.URL) string {
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

// ParseURL turns a gs:// repository URL into a Config. Errors wrap
// storage.ErrBadURL and say what to write instead.
func ParseURL(u *url.URL) (Config, error) {
	var c Config
	if u == nil {
		return c, fmt.Errorf("%w: nil URL", storage.ErrBadURL)
	}
	if !strings.EqualFold(u.Scheme, "gs") {
		return c, badURL(u, "scheme is %q, not gs", u.Scheme)
	}
	if u.Opaque != "" {
		return c, badURL(u, "missing // after gs:")
	}
	if u.User != nil {
		return c, badURL(u, "credentials do not belong in the URL; use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, or the instance's service account)")
	}
	if u.Fragment != "" || strings.HasSuffix(u.String(), "#") {
		return c, badURL(u, "unexpected #fragment")
	}
	if u.Host == "" {
		return c, badURL(u, "missing bucket name")
	}
	if u.Port() != "" {
		return c, badURL(u, "the part after gs:// is the bucket, not a server; give the server as ?endpoint=http://%s", u.Host)
	}
	c.Bucket = u.Host
	if err := checkBucketName(c.Bucket); err != nil {
		return c, badURL(u, "%v", err)
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
	for k, vs := range q {
		if len(vs) != 1 {
			return c, badURL(u, "parameter %q given %d times", k, len(vs))
		}
		switch k {
		case paramEndpoint:
			e, err := parseEndpoint(vs[0])
			if err != nil {
				return c, badURL(u, "%v", err)
			}
			c.Endpoint = e
		default:
			return c, badURL(u, "unknown parameter %q (known: %s)", k, paramEndpoint)
		}
	}
	return c, nil
}

// checkBucketName applies the GCS bucket naming rules that matter for a URL:
// 3-63 characters (up to 222 when dotted, 63 per dot-separated part) of
// lowercase letters, digits, '-', '_' and '.', starting and ending with a
// letter or digit.
func checkBucketName(b string) error {
	max := 63
	if strings.Contains(b, ".") {
		max = 222
	}
	if len(b) < 3 || len(b) > max {
		return fmt.Errorf("bucket name %q: want 3 to 63 characters (222 with dots)", b)
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("bucket name %q: only lowercase letters, digits, '-', '_' and '.' are allowed", b)
		}
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	for _, part := range strings.Split(b, ".") {
		if part == "" || len(part) > 63 {
			return fmt.Errorf("bucket name %q: each dot-separated part has 1 to 63 characters", b)
		}
	}
	return nil
}

// parseEndpoint accepts "http://host[:port]" or "https://host[:port]" and
// returns it normalised (lowercase scheme, no trailing '/').
func parseEndpoint(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("empty endpoint")
	}
	if !strings.Contains(v, "://") {
		return "", fmt.Errorf("endpoint %q has no scheme: write http://%s or https://%s", v, v, v)
	}
	e, err := url.Parse(v)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %v", v, err)
	}
	scheme := strings.ToLower(e.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("endpoint %q: scheme must be http or https", v)
	}
	if e.Host == "" || e.Hostname() == "" {
		return "", fmt.Errorf("endpoint %q: missing host", v)
	}
	if e.User != nil {
		return "", fmt.Errorf("endpoint %q: credentials do not belong in the URL", e.Redacted())
	}
	if (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "" {
		return "", fmt.Errorf("endpoint %q: want only scheme://host[:port], no path or query", v)
	}
	if p := e.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("endpoint %q: bad port %q", v, p)
		}
	}
	return scheme + "://" + e.Host, nil
}

// cleanPrefix checks an object name prefix from a URL path and removes its
// slashes at both ends.
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

// Location returns the URL that names c's repository. It never holds
// credentials: a Config has none.
func (c Config) Location() string {
	u := url.URL{Scheme: "gs", Host: c.Bucket, Path: "/" + c.Prefix}
	s := u.String()
	if c.Endpoint != "" {
		s += "?" + paramEndpoint + "=" + c.Endpoint
	}
	return s
}
