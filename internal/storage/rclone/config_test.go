package rclone

import (
	"errors"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in, remote, root, display, objA string
	}{
		{"rclone:s3remote:bucket/etcd", "s3remote:bucket/etcd", "s3remote:bucket/etcd", "s3remote:bucket/etcd", "s3remote:bucket/etcd/a"},
		{"rclone:s3remote:bucket/etcd/", "s3remote:bucket/etcd/", "s3remote:bucket/etcd", "s3remote:bucket/etcd", "s3remote:bucket/etcd/a"},
		{"RCLONE:gdrive:", "gdrive:", "gdrive:", "gdrive:", "gdrive:a"},
		{"rclone:sftp:/srv/backup", "sftp:/srv/backup", "sftp:/srv/backup", "sftp:/srv/backup", "sftp:/srv/backup/a"},
		{"rclone:sftp:/", "sftp:/", "sftp:/", "sftp:/", "sftp:/a"},
		{"rclone:my remote.2:x", "my remote.2:x", "my remote.2:x", "my remote.2:x", "my remote.2:x/a"},
		{"rclone:/var/backups", "/var/backups", "/var/backups", "/var/backups", "/var/backups/a"},
		{"rclone:/", "/", "/", "/", "/a"},
		{"rclone::s3:bucket/p", ":s3:bucket/p", ":s3:bucket/p", ":s3:bucket/p", ":s3:bucket/p/a"},
		{"rclone::s3,provider=AWS,secret_access_key=topsecret:bucket", ":s3,provider=AWS,secret_access_key=topsecret:bucket",
			":s3,provider=AWS,secret_access_key=topsecret:bucket", ":s3,…:bucket", ":s3,provider=AWS,secret_access_key=topsecret:bucket/a"},
		{`rclone:r,url="http://h:1/x":p`, `r,url="http://h:1/x":p`, `r,url="http://h:1/x":p`, "r,…:p", `r,url="http://h:1/x":p/a`},
		{"rclone:r:path:with:colons", "r:path:with:colons", "r:path:with:colons", "r:path:with:colons", "r:path:with:colons/a"},
	}
	for _, tc := range good {
		c, err := ParseURL(tc.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if c.Remote != tc.remote {
			t.Errorf("ParseURL(%q).Remote = %q, want %q", tc.in, c.Remote, tc.remote)
		}
		rem, err := parseRemote(c.Remote)
		if err != nil {
			t.Fatal(err)
		}
		r := &Remote{rem: rem, root: rem.root()}
		if rem.root() != tc.root || rem.display() != tc.display || r.objPath("a") != tc.objA {
			t.Errorf("%q: root %q display %q objPath(a) %q, want %q %q %q", tc.in, rem.root(), rem.display(), r.objPath("a"), tc.root, tc.display, tc.objA)
		}
	}

	bad := []struct{ in, hint string }{
		{"rclone:", "missing remote"},
		{"rclone:  ", "missing remote"},
		{"rclone::", "empty backend name"},
		{"rclone::bucket", "missing"},
		{"rclone::path", `missing ":"`},
		{"rclone:remote", `missing ":" after the remote name`},
		{"rclone:relative/dir:x", `missing ":"`},
		{"rclone:,secret=topsecret:x", "empty remote name"},
		{"rclone:-flag:x", "invalid remote name"},
		{"rclone:bad\x00name:x", "invalid remote name"},
		{"s3:x", "not an rclone URL"},
	}
	for _, tc := range bad {
		_, err := ParseURL(tc.in)
		if !errors.Is(err, storage.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("ParseURL(%q) = %q, want it to contain %q", tc.in, err, tc.hint)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParseURL(%q): error leaks a parameter: %q", tc.in, err)
		}
	}
}

func TestRedact(t *testing.T) {
	r := &Remote{rem: remote{name: ":s3", params: ",secret_access_key=topsecret", path: "b"}}
	got := r.redact(`Failed to create file system for ":s3,secret_access_key=topsecret:b": boom`)
	if strings.Contains(got, "topsecret") || !strings.Contains(got, `":s3,…:b"`) {
		t.Errorf("redact = %q", got)
	}
	for in, want := range map[string]string{
		"r,k=v:p":             "r,…:p",
		`r,k="a:b":p`:         "r,…:p",
		"r,k=secret":          "r,…",
		"plain:path,with,com": "plain:path,with,com",
	} {
		if got := redactSpec(in); got != want {
			t.Errorf("redactSpec(%q) = %q, want %q", in, got, want)
		}
	}
}
