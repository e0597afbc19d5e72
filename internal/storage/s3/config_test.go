package s3

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
	}{
		{"s3://bucket", Config{Bucket: "bucket", Secure: true}},
		{"s3://bucket/", Config{Bucket: "bucket", Secure: true}},
		{"s3://bucket/a/b/", Config{Bucket: "bucket", Prefix: "a/b", Secure: true}},
		{"S3://bucket/p?region=eu-west-1", Config{Bucket: "bucket", Prefix: "p", Secure: true, Region: "eu-west-1"}},
		{"s3://bucket/p?path-style=true", Config{Bucket: "bucket", Prefix: "p", Secure: true, PathStyle: true}},
		{"s3://bucket/p?endpoint=http://127.0.0.1:9000", Config{Bucket: "bucket", Prefix: "p", Endpoint: "127.0.0.1:9000", PathStyle: true}},
		{"s3://bucket?endpoint=https://minio.example.com/&path-style=false&region=r1",
			Config{Bucket: "bucket", Endpoint: "minio.example.com", Secure: true, Region: "r1"}},
		{"s3://my.bucket-1/x%20y", Config{Bucket: "my.bucket-1", Prefix: "x y", Secure: true}},
	}
	for _, tc := range good {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tc.in, err)
		}
		got, err := ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseURL(%q) =\n  %+v\nwant\n  %+v", tc.in, got, tc.want)
		}
	}

	bad := []struct{ in, hint string }{
		{"s3:bucket/prefix", "missing //"},
		{"s3:///prefix", "missing bucket"},
		{"s3://", "missing bucket"},
		{"s3://host:9000/bucket", "?endpoint="},
		{"s3://key:secret@bucket/p", "AWS_ACCESS_KEY_ID"},
		{"s3://b/p", "bucket name"}, // too short
		{"s3://bucket..name/p", "bucket name"},
		{"s3://bucket/a//b", "empty element"},
		{"s3://bucket/a/../b", `".."`},
		{"s3://bucket/p#frag", "fragment"},
		{"s3://bucket/p?regoin=x", `unknown parameter "regoin"`},
		{"s3://bucket/p?region=", "empty region"},
		{"s3://bucket/p?region=a&region=b", "2 times"},
		{"s3://bucket/p?path-style=maybe", "true or false"},
		{"s3://bucket/p?endpoint=", "empty endpoint"},
		{"s3://bucket/p?endpoint=127.0.0.1:9000", "no scheme"},
		{"s3://bucket/p?endpoint=minio.local", "no scheme"},
		{"s3://bucket/p?endpoint=ftp://host", "http or https"},
		{"s3://bucket/p?endpoint=http://", "missing host"},
		{"s3://bucket/p?endpoint=http://host:99999", "bad port"},
		{"s3://bucket/p?endpoint=http://host/path", "no path"},
		{"s3://bucket/p?endpoint=http://u:pw@host", "credentials"},
		{"gs://bucket/p", "not s3"},
	}
	for _, tc := range bad {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tc.in, err)
		}
		_, err = ParseURL(u)
		if !errors.Is(err, storage.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseURL(%q) = %q, want a message containing %q", tc.in, err, tc.hint)
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), ":pw@") {
			t.Errorf("ParseURL(%q) = %q leaks a password", tc.in, err)
		}
	}
}

func TestConfigLocation(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"s3://bucket/a/b", "s3://bucket/a/b"},
		{"s3://bucket", "s3://bucket/"},
		{"s3://bucket/p?region=r&endpoint=http://h:1", "s3://bucket/p?region=r&endpoint=http://h:1"},
		{"s3://bucket/p?endpoint=https://h&path-style=false", "s3://bucket/p?endpoint=https://h&path-style=false"},
		{"s3://bucket/p?path-style=true", "s3://bucket/p?path-style=true"},
	} {
		u, _ := url.Parse(tc.in)
		c, err := ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Location(); got != tc.want {
			t.Errorf("Location of %q = %q, want %q", tc.in, got, tc.want)
		}
		// Location round-trips.
		u2, _ := url.Parse(c.Location())
		if c2, err := ParseURL(u2); err != nil || c2 != c {
			t.Errorf("ParseURL(Location of %q) = %+v, %v; want %+v", tc.in, c2, err, c)
		}
	}
}
