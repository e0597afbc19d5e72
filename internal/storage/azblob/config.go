package azblob

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Environment variables New reads when Config carries no credentials.
const (
	EnvConnectionString = "AZURE_STORAGE_CONNECTION_STRING"
	EnvAccount          = "AZURE_STORAGE_ACCOUNT"
	EnvKey              = "AZURE_STORAGE_KEY"
	EnvSASToken         = "AZURE_STORAGE_SAS_TOKEN"
	// EnvEndpoint overrides the Blob service URL like ?endpoint= (which
	// wins over it).
	EnvEndpoint = "AZURE_STORAGE_BLOB_ENDPOINT"
)

// Config says where a repository lives in Azure Blob Storage and how to
// authenticate. Of the credential fields the first set wins, in the order
// ConnectionString, Key, SASToken; with none, New uses Microsoft Entra ID
// (DefaultAzureCredential: environment, workload identity, managed identity,
// Azure CLI). FromEnv fills them from the AZURE_STORAGE_* variables.
type Config struct {
	Container string
	// Prefix is prepended, with a '/', to every blob name; "" for the
	// container's root. It has no leading or trailing '/'.
	Prefix string
	// Account is the storage account name. With Endpoint "" the service
	// is https://<Account>.blob.core.windows.net.
	Account string
	// Endpoint is the Blob service URL, e.g. https://acct.blob.core.chinacloudapi.cn
	// or http://127.0.0.1:10000/devstoreaccount1 (Azurite); "" means
	// Azure's public cloud for Account.
	Endpoint string

	// ConnectionString is an Azure Storage connection string
	// (AccountName=...;AccountKey=...;BlobEndpoint=... or
	// SharedAccessSignature=...). Its account and endpoint fill Account and
	// Endpoint when those are "".
	ConnectionString string
	// Key is the account's shared key (base64).
	Key string
	// SASToken is a shared access signature (the query string of a SAS
	// URL, with or without the leading '?').
	SASToken string
	// NoEntraID refuses the DefaultAzureCredential fallback: without a
	// connection string, key or SAS, New fails and says what to set.
	NoEntraID bool

	// Stall fails a request whose connection moves no byte for this long
	// (storage.IdleTimeoutDialer); 0 means storage.DefaultStall. The
	// storage wrapper then retries it.
	Stall time.Duration
}

// Query parameters of azblob:// URLs.
const (
	paramAccount  = "account"
	paramEndpoint = "endpoint"
)

const urlForm = "azblob://container[/prefix][?account=NAME&endpoint=https://host[:port][/path]]"

func badURL(u *url.URL, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s (want %s)", storage.ErrBadURL, redact(u), fmt.Sprintf(format, args...), urlForm)
}

// redact returns u as a string without passwords or query strings of URLs
// in its query (?endpoint=https://host/?sig=...).
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if q, err := url.ParseQuery(c.RawQuery); err == nil {
		for _, vs := range q {
			for i, v := range vs {
				if e, err := url.Parse(v); err == nil && (e.User != nil || e.RawQuery != "") {
					e.User, e.RawQuery = nil, ""
					vs[i] = e.String()
				}
			}
		}
		c.RawQuery = q.Encode()
	} else {
		c.RawQuery = "(redacted)"
	}
	return c.Redacted()
}

// containerRE is Azure's rule for container names: 3 to 63 lowercase
// letters, digits and single hyphens, starting and ending with a letter or
// digit ("$root" and "$web" are the special containers).
var containerRE = regexp.MustCompile(`^(?:[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}|\$root|\$web)$`)

// accountRE is Azure's rule for storage account names.
var accountRE = regexp.MustCompile(`^[a-z0-9]{3,24}$`)

// ParseURL turns an azblob:// repository URL into a Config (without
// credentials: see FromEnv). Errors wrap storage.ErrBadURL and say what to
// write instead.
func ParseURL(u *url.URL) (Config, error) {
	var c Config
	if u == nil {
		return c, fmt.Errorf("%w: nil URL", storage.ErrBadURL)
	}
	if !strings.EqualFold(u.Scheme, "azblob") {
		return c, badURL(u, "scheme is %q, not azblob", u.Scheme)
	}
	if u.Opaque != "" {
		return c, badURL(u, "missing // after azblob:")
	}
	if u.User != nil {
		return c, badURL(u, "credentials do not belong in the URL; set %s, %s and %s, %s or %s", EnvConnectionString, EnvAccount, EnvKey, EnvSASToken, EnvAccount)
	}
	if u.Fragment != "" || strings.HasSuffix(u.String(), "#") {
		return c, badURL(u, "unexpected #fragment")
	}
	if u.Host == "" {
		return c, badURL(u, "missing container name")
	}
	if u.Port() != "" {
		return c, badURL(u, "the part after azblob:// is the container, not a server; give the server as ?endpoint=http://%s/ACCOUNT", u.Host)
	}
	c.Container = u.Host
	if !containerRE.MatchString(c.Container) {
		return c, badURL(u, "container name %q: want 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit", c.Container)
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
		v := vs[0]
		switch k {
		case paramAccount:
			if !accountRE.MatchString(v) {
				return c, badURL(u, "account %q: want 3 to 24 lowercase letters and digits", v)
			}
			c.Account = v
		case paramEndpoint:
			e, err := parseEndpoint(v)
			if err != nil {
				return c, badURL(u, "%v", err)
			}
			c.Endpoint = e
		default:
			return c, badURL(u, "unknown parameter %q (known: %s, %s)", k, paramAccount, paramEndpoint)
		}
	}
	return c, nil
}

// parseEndpoint checks a Blob service URL: http(s)://host[:port][/path],
// without credentials, query or fragment. It returns it without a trailing
// '/'.
func parseEndpoint(v string) (string, error) {
	if v == "" {
		return "", errors.New("empty endpoint")
	}
	if !strings.Contains(v, "://") {
		return "", fmt.Errorf("endpoint %q has no scheme: write https://%s", v, v)
	}
	e, err := url.Parse(v)
	if err != nil {
		return "", fmt.Errorf("endpoint: %v", err)
	}
	switch strings.ToLower(e.Scheme) {
	case "http", "https":
	default:
		return "", fmt.Errorf("endpoint %q: scheme must be http or https", e.Redacted())
	}
	if e.User != nil {
		return "", fmt.Errorf("endpoint %q: credentials do not belong in the URL", e.Redacted())
	}
	if e.RawQuery != "" || e.ForceQuery {
		return "", fmt.Errorf("endpoint: no ?query (a SAS token goes in %s)", EnvSASToken)
	}
	if e.Host == "" || e.Hostname() == "" {
		return "", fmt.Errorf("endpoint %q: missing host", v)
	}
	if e.Fragment != "" {
		return "", fmt.Errorf("endpoint %q: unexpected #fragment", v)
	}
	return strings.TrimRight(e.String(), "/"), nil
}

// cleanPrefix checks a blob name prefix from a URL path and removes its
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

// FromEnv fills what c lacks from the environment (getenv, e.g. os.Getenv):
// the account from AZURE_STORAGE_ACCOUNT, the endpoint from
// AZURE_STORAGE_BLOB_ENDPOINT and, when c has no credentials, one of
// AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or
// AZURE_STORAGE_SAS_TOKEN, in that order. Values given in the URL win.
func (c Config) FromEnv(getenv func(string) string) Config {
	if getenv == nil {
		getenv = os.Getenv
	}
	if c.ConnectionString == "" && c.Key == "" && c.SASToken == "" {
		switch {
		case getenv(EnvConnectionString) != "":
			c.ConnectionString = getenv(EnvConnectionString)
		case getenv(EnvKey) != "":
			c.Key = getenv(EnvKey)
		case getenv(EnvSASToken) != "":
			c.SASToken = getenv(EnvSASToken)
		}
	}
	if c.Account == "" {
		c.Account = getenv(EnvAccount)
	}
	if c.Endpoint == "" {
		c.Endpoint = getenv(EnvEndpoint)
	}
	return c
}

// connString is what New takes from a connection string.
type connString struct {
	account, key, sas, endpoint string
}

// parseConnString reads an Azure Storage connection string. Errors never
// quote it: it holds secrets.
func parseConnString(s string) (connString, error) {
	var (
		cs               connString
		protocol, suffix string
		dev              bool
		devProxy         string
	)
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, errors.New("connection string: an element without '=' (want Key=Value;Key=Value)")
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "accountname":
			cs.account = v
		case "accountkey":
			cs.key = v
		case "sharedaccesssignature":
			cs.sas = strings.TrimPrefix(v, "?")
		case "blobendpoint":
			cs.endpoint = v
		case "defaultendpointsprotocol":
			protocol = v
		case "endpointsuffix":
			suffix = v
		case "usedevelopmentstorage":
			dev = strings.EqualFold(v, "true")
		case "developmentstorageproxyuri":
			devProxy = v
		}
	}
	if dev {
		// Azurite's well-known account, on its default port.
		host := "http://127.0.0.1"
		if devProxy != "" {
			host = strings.TrimRight(devProxy, "/")
		}
		if cs.account == "" {
			cs.account = DevAccount
			cs.key = DevKey
		}
		if cs.endpoint == "" {
			cs.endpoint = host + ":10000/" + cs.account
		}
	}
	if cs.endpoint == "" && cs.account != "" {
		if protocol == "" {
			protocol = "https"
		}
		if suffix == "" {
			suffix = "core.windows.net"
		}
		cs.endpoint = protocol + "://" + cs.account + ".blob." + suffix
	}
	if cs.key == "" && cs.sas == "" {
		return cs, errors.New("connection string has neither AccountKey nor SharedAccessSignature")
	}
	if cs.endpoint == "" {
		return cs, errors.New("connection string has neither AccountName nor BlobEndpoint")
	}
	if _, err := parseEndpoint(cs.endpoint); err != nil {
		return cs, fmt.Errorf("connection string BlobEndpoint: %v", err)
	}
	return cs, nil
}

// Azurite's (and the former Storage Emulator's) well-known development
// account. It is public, documented, and accepted only by emulators.
const (
	DevAccount = "devstoreaccount1"
	DevKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// serviceURL is the Blob service URL of account on Azure's public cloud.
func serviceURL(account string) string {
	return "https://" + account + ".blob.core.windows.net"
}

// Location returns the URL that names c's repository, without credentials:
// the account, or the endpoint when it is not Azure's public cloud default.
func (c Config) Location() string {
	u := url.URL{Scheme: "azblob", Host: c.Container, Path: "/" + c.Prefix}
	s := u.String()
	switch {
	case c.Endpoint != "" && (c.Account == "" || c.Endpoint != serviceURL(c.Account)):
		e := c.Endpoint
		if p, err := url.Parse(e); err == nil {
			p.User, p.RawQuery, p.Fragment = nil, "", ""
			e = p.String()
		}
		s += "?" + paramEndpoint + "=" + e
	case c.Account != "":
		s += "?" + paramAccount + "=" + url.QueryEscape(c.Account)
	}
	return s
}
