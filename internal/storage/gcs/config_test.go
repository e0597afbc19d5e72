package gcs

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
		{"gs://bucket", Config{Bucket: "bucket"}, "gs://bucket/"},
		{"gs://bucket/", Config{Bucket: "bucket"}, "gs://bucket/"},
		{"gs://my-bucket/etcd/prod", Config{Bucket: "my-bucket", Prefix: "etcd/prod"}, "gs://my-bucket/etcd/prod"},
		{"GS://b_1.example.com/p/", Config{Bucket: "b_1.example.com", Prefix: "p"}, "gs://b_1.example.com/p"},
		{"gs://bucket/p?endpoint=http://127.0.0.1:4443", Config{Bucket: "bucket", Prefix: "p", Endpoint: "http://127.0.0.1:4443"},
			"gs://bucket/p?endpoint=http://127.0.0.1:4443"},
		{"gs://bucket?endpoint=HTTPS://storage.example.com/", Config{Bucket: "bucket", Endpoint: "https://storage.example.com"},
			"gs://bucket/?endpoint=https://storage.example.com"},
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
		{"gs:///prefix", "missing bucket"},
		{"gs:bucket/prefix", "missing //"},
		{"gs://user:topsecret@bucket/p", "Application Default Credentials"},
		{"gs://bucket:4443/p", "?endpoint=http://bucket:4443"},
		{"gs://Bucket/p", "lowercase"},
		{"gs://ab/p", "3 to 63"},
		{"gs://-bucket/p", "start and end"},
		{"gs://bucket/a//b", "empty element"},
		{"gs://bucket/a/../b", `".." element`},
		{"gs://bucket/p#frag", "fragment"},
		{"gs://bucket/p?endpoint=127.0.0.1:4443", "no scheme"},
		{"gs://bucket/p?endpoint=ftp://host", "http or https"},
		{"gs://bucket/p?endpoint=http://host/storage/v1", "no path"},
		{"gs://bucket/p?endpoint=http://u:topsecret@host", "credentials"},
		{"gs://bucket/p?endpoint=http://a&endpoint=http://b", "2 times"},
		{"gs://bucket/p?project=x", "unknown parameter"},
	}
	for _, tc := range bad {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseURL(u)
		if !errors.Is(err, storage.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseURL(%q) = %q, want it to contain %q", tc.in, err, tc.hint)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParseURL(%q) leaks a password: %q", tc.in, err)
		}
	}
}
