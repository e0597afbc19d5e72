package azblob

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in   string
		want Config
		loc  string
	}{
		{"azblob://backups/etcd", Config{Container: "backups", Prefix: "etcd"}, "azblob://backups/etcd"},
		{"azblob://backups", Config{Container: "backups"}, "azblob://backups/"},
		{"AZBLOB://backups/a/b/?account=acct1", Config{Container: "backups", Prefix: "a/b", Account: "acct1"}, "azblob://backups/a/b?account=acct1"},
		{"azblob://backups/p?endpoint=http://127.0.0.1:10000/devstoreaccount1/", Config{Container: "backups", Prefix: "p", Endpoint: "http://127.0.0.1:10000/devstoreaccount1"},
			"azblob://backups/p?endpoint=http://127.0.0.1:10000/devstoreaccount1"},
		{"azblob://backups/p?account=acct&endpoint=https://acct.blob.core.chinacloudapi.cn", Config{Container: "backups", Prefix: "p", Account: "acct", Endpoint: "https://acct.blob.core.chinacloudapi.cn"},
			"azblob://backups/p?endpoint=https://acct.blob.core.chinacloudapi.cn"},
		{"azblob://backups/p?account=acct&endpoint=https://acct.blob.core.windows.net", Config{Container: "backups", Prefix: "p", Account: "acct", Endpoint: "https://acct.blob.core.windows.net"},
			"azblob://backups/p?account=acct"},
		{"azblob://$root/p", Config{Container: "$root", Prefix: "p"}, "azblob://$root/p"},
	}
	for _, tc := range good {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if loc := got.Location(); loc != tc.loc {
			t.Errorf("ParseURL(%q).Location() = %q, want %q", tc.in, loc, tc.loc)
		}
	}
	bad := []struct{ in, hint string }{
		{"azblob:container/p", "missing //"},
		{"azblob:///p", "missing container"},
		{"azblob://ab/p", "container name"},
		{"azblob://a--b/p", "container name"},
		{"azblob://c0ntainer/a//b", "empty element"},
		{"azblob://c0ntainer/a/../b", `".." element`},
		{"azblob://c0ntainer/p#x", "fragment"},
		{"azblob://c0ntainer/p?account=Bad_Name", "account"},
		{"azblob://c0ntainer/p?account=a&account=b", "given 2 times"},
		{"azblob://c0ntainer/p?endpoint=ftp://host", "http or https"},
		{"azblob://c0ntainer/p?endpoint=https://user:topsecret@host", "credentials"},
		{"azblob://c0ntainer/p?endpoint=https://host/?sv=1%26sig=topsecret", "SAS_TOKEN"},
		{"azblob://user:topsecret@c0ntainer/p", "credentials do not belong"},
	}
	for _, tc := range bad {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseURL(u)
		if !errors.Is(err, storage.ErrBadURL) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL mentioning %q", tc.in, err, tc.hint)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParseURL(%q): error leaks a secret: %v", tc.in, err)
		}
	}
}

func TestFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	base := Config{Container: "c0ntainer"}
	cases := []struct {
		name string
		cfg  Config
		env  func(string) string
		want Config
	}{
		{"connection string wins", base, env(EnvConnectionString, "cs", EnvKey, "k", EnvSASToken, "s", EnvAccount, "acct"),
			Config{Container: "c0ntainer", ConnectionString: "cs", Account: "acct"}},
		{"key", base, env(EnvKey, "k", EnvSASToken, "s", EnvAccount, "acct"), Config{Container: "c0ntainer", Key: "k", Account: "acct"}},
		{"SAS", base, env(EnvSASToken, "s", EnvAccount, "acct"), Config{Container: "c0ntainer", SASToken: "s", Account: "acct"}},
		{"account alone (Entra ID)", base, env(EnvAccount, "acct"), Config{Container: "c0ntainer", Account: "acct"}},
		{"URL wins", Config{Container: "c0ntainer", Account: "fromurl", Endpoint: "https://e"}, env(EnvAccount, "acct", EnvEndpoint, "https://other"),
			Config{Container: "c0ntainer", Account: "fromurl", Endpoint: "https://e"}},
		{"config credentials kept", Config{Container: "c0ntainer", SASToken: "mine"}, env(EnvKey, "k"), Config{Container: "c0ntainer", SASToken: "mine"}},
	}
	for _, tc := range cases {
		if got := tc.cfg.FromEnv(tc.env); got != tc.want {
			t.Errorf("%s: FromEnv = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestParseConnString(t *testing.T) {
	good := []struct {
		in   string
		want connString
	}{
		{"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
			connString{account: "acct", key: "a2V5", endpoint: "https://acct.blob.core.windows.net"}},
		{"AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn",
			connString{account: "acct", key: "a2V5", endpoint: "https://acct.blob.core.chinacloudapi.cn"}},
		{"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=?sv=1&sig=x",
			connString{sas: "sv=1&sig=x", endpoint: "https://acct.blob.core.windows.net/"}},
		{"UseDevelopmentStorage=true",
			connString{account: DevAccount, key: DevKey, endpoint: "http://127.0.0.1:10000/devstoreaccount1"}},
		{"AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
			connString{account: DevAccount, key: "a2V5", endpoint: "http://127.0.0.1:10000/devstoreaccount1"}},
	}
	for _, tc := range good {
		got, err := parseConnString(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseConnString(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"AccountName=acct", "AccountKey=topsecret", "garbage-topsecret", "AccountName=a;AccountKey=topsecret;BlobEndpoint=ftp://x"} {
		_, err := parseConnString(in)
		if err == nil {
			t.Errorf("parseConnString(%q) succeeded", in)
		} else if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("parseConnString(%q): error leaks a secret: %v", in, err)
		}
	}
}

func TestScrub(t *testing.T) {
	ue := &url.Error{Op: "Get", URL: "https://a.blob.core.windows.net/c/x?sv=1&sig=topsecret", Err: errors.New("connection reset")}
	for _, err := range []error{ue, errors.Join(errors.New("wrapped"), ue)} {
		got := classify(err)
		if strings.Contains(got.Error(), "topsecret") {
			t.Errorf("classify(%v) = %q: leaks the SAS", err, got)
		}
		if !storage.IsRetryable(got) {
			t.Errorf("classify(%v) is not retryable", err)
		}
	}
}
