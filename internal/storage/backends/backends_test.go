package backends

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/azblob"
	"github.com/etcd-backup/etcd-backup/internal/storage/gcs"
	"github.com/etcd-backup/etcd-backup/internal/storage/local"
	"github.com/etcd-backup/etcd-backup/internal/storage/rclone"
	"github.com/etcd-backup/etcd-backup/internal/storage/s3"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

func TestParse(t *testing.T) {
	good := []struct {
		in     string
		kind   string
		path   string    // local
		s3     s3.Config // s3
		gs     gcs.Config
		rclone string // rclone: Config.Remote
	}{
		{in: "/var/backups/etcd", kind: "local", path: "/var/backups/etcd"},
		{in: "backups", kind: "local", path: "backups"},
		{in: "./backups:2024", kind: "local", path: "./backups:2024"},
		{in: "../a b/c", kind: "local", path: "../a b/c"},
		{in: "C:/backups", kind: "local", path: "C:/backups"}, // a drive letter is not a scheme
		{in: "file:///var/backups", kind: "local", path: "/var/backups"},
		{in: "file://localhost/var/backups", kind: "local", path: "/var/backups"},
		{in: "file:/var/backups", kind: "local", path: "/var/backups"},
		{in: "FILE:///x%20y", kind: "local", path: "/x y"},
		{in: "s3://bucket/prefix", kind: "s3", s3: s3.Config{Bucket: "bucket", Prefix: "prefix", Secure: true}},
		{in: "s3://bucket/a/b?region=R&endpoint=http://host:9000&path-style=true", kind: "s3",
			s3: s3.Config{Bucket: "bucket", Prefix: "a/b", Region: "R", Endpoint: "host:9000", PathStyle: true}},
		{in: "s3://bucket?endpoint=https://s3.example.com", kind: "s3",
			s3: s3.Config{Bucket: "bucket", Endpoint: "s3.example.com", Secure: true, PathStyle: true}},
		{in: "gs://bucket/a/b", kind: "gs", gs: gcs.Config{Bucket: "bucket", Prefix: "a/b"}},
		{in: "GS://bucket?endpoint=http://127.0.0.1:4443", kind: "gs", gs: gcs.Config{Bucket: "bucket", Endpoint: "http://127.0.0.1:4443"}},
		{in: "rclone:remote:path", kind: "rclone", rclone: "remote:path"},
		{in: "rclone:s3remote:bucket/etcd", kind: "rclone", rclone: "s3remote:bucket/etcd"},
		{in: "RCLONE:gdrive:", kind: "rclone", rclone: "gdrive:"},
		{in: "rclone:/var/backups", kind: "rclone", rclone: "/var/backups"},
		{in: "rclone::s3,provider=AWS:bucket/p", kind: "rclone", rclone: ":s3,provider=AWS:bucket/p"},
	}
	for _, tc := range good {
		kind, got, err := parse(tc.in)
		if err != nil {
			t.Errorf("parse(%q): %v", tc.in, err)
			continue
		}
		if kind != tc.kind || got.path != tc.path || got.s3 != tc.s3 || got.gs != tc.gs || got.rclone.Remote != tc.rclone {
			t.Errorf("parse(%q) = %s %+v, want %s path=%q s3=%+v rclone=%q", tc.in, kind, got, tc.kind, tc.path, tc.s3, tc.rclone)
		}
	}

	bad := []struct{ name, in, hint string }{
		{"empty", "", "empty repository URL"},
		{"blank", "  ", "empty repository URL"},
		{"unknown scheme", "ftp://host/dir", `unknown scheme "ftp"`},
		{"colon in relative path", "backups:2024", "prefix ./"},
		{"azure scheme", "azure://container/p", "azblob://container/prefix"},
		{"azblob without container", "azblob:///prefix", "missing container"},
		{"azblob bad container", "azblob://Upper_Case/p", "container name"},
		{"azblob server as container", "azblob://127.0.0.1:10000/p", "?endpoint="},
		{"azblob endpoint without scheme", "azblob://container/p?endpoint=host:10000", "no scheme"},
		{"azblob endpoint with SAS", "azblob://container/p?endpoint=https://a.blob.core.windows.net/?sig=topsecret", "AZURE_STORAGE_SAS_TOKEN"},
		{"azblob unknown parameter", "azblob://container/p?region=x", "unknown parameter"},
		{"azblob credentials", "azblob://acct:topsecret@container/p", "AZURE_STORAGE_CONNECTION_STRING"},
		{"gcs scheme", "gcs://bucket/p", "gs://bucket/prefix"},
		{"gs without bucket", "gs:///prefix", "missing bucket"},
		{"gs credentials", "gs://user:topsecret@bucket/p", "Application Default Credentials"},
		{"gs unknown parameter", "gs://bucket/p?region=x", "unknown parameter"},
		{"rclone empty", "rclone:", "missing remote"},
		{"rclone empty remote name", "rclone::path", `missing ":"`},
		{"rclone empty backend", "rclone::", "empty backend name"},
		{"rclone without path colon", "rclone:remote", `missing ":" after the remote name`},
		{"rclone relative path", "rclone:backups/etcd", `missing ":"`},
		{"rclone secret in bad remote", "rclone:,secret_access_key=topsecret:b", "empty remote name"},
		{"s3 without bucket", "s3:///prefix", "missing bucket"},
		{"s3 without //", "s3:bucket/prefix", "missing //"},
		{"s3 bad endpoint scheme", "s3://bucket/p?endpoint=ftp://host", "http or https"},
		{"s3 endpoint without scheme", "s3://bucket/p?endpoint=host:9000", "no scheme"},
		{"s3 endpoint with path", "s3://bucket/p?endpoint=http://host/x", "no path"},
		{"s3 unknown parameter", "s3://bucket/p?endpiont=http://host", "unknown parameter"},
		{"s3 malformed", "s3://bucket/%zz", "invalid URL escape"},
		{"s3 credentials", "s3://AKID:topsecret@bucket/p", "AWS_ACCESS_KEY_ID"},
		{"file remote host", "file://server/share", "remote hosts"},
		{"file relative", "file:relative/dir", "must be absolute"},
		{"file query", "file:///x?y=1", "query"},
	}
	for _, tc := range bad {
		_, _, err := parse(tc.in)
		if !errors.Is(err, storage.ErrBadURL) {
			t.Errorf("%s: parse(%q) = %v, want ErrBadURL", tc.name, tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("%s: parse(%q) = %q, want it to contain %q", tc.name, tc.in, err, tc.hint)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: error leaks a password: %q", tc.name, err)
		}
	}
}

func TestOpenLocal(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")

	_, err := Open(ctx, dir, Options{})
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Open(missing dir) = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open without Create made %s", dir)
	}
	b, err := Open(ctx, dir, Options{Create: true})
	if err != nil {
		t.Fatalf("Open(missing dir, Create): %v", err)
	}
	if _, ok := storage.As[*local.Dir](b); !ok || b.Location() != dir {
		t.Errorf("Open(%q) = %T at %q", dir, b, b.Location())
	}
	if err := b.Put(ctx, "x", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	b2, err := Open(ctx, "file://"+dir, Options{})
	if err != nil {
		t.Fatalf("Open(file://): %v", err)
	}
	if _, err := b2.Stat(ctx, "x"); err != nil {
		t.Errorf("file:// URL does not open the same directory: %v", err)
	}
}

func TestOpenS3(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.SetEnv(t)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	ctx := context.Background()

	b, err := Open(ctx, srv.URL("team/etcd"), Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", srv.URL("team/etcd"), err)
	}
	defer b.Close()
	if _, ok := storage.As[*s3.Bucket](b); !ok {
		t.Fatalf("Open(s3://) = %T", b)
	}
	if err := b.Put(ctx, "x", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	if loc := b.Location(); strings.Contains(loc, srv.SecretKey) || !strings.Contains(loc, srv.Bucket+"/team/etcd") {
		t.Errorf("Location() = %q", loc)
	}
	// The object is at the key prefix given in the URL.
	if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, "team/etcd/x", minio.StatObjectOptions{}); err != nil {
		t.Errorf("object not stored under the URL's prefix: %v", err)
	}

	missing := strings.Replace(srv.URL("p"), srv.Bucket, "missing-bucket", 1)
	if _, err := Open(ctx, missing, Options{Create: true}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(%s) = %v, want ErrNotFound (buckets are never created)", missing, err)
	}
}

func TestOpenAzblob(t *testing.T) {
	az := testenv.SharedAzurite(t)
	az.SetEnv(t)
	ctx := context.Background()

	kind, tgt, err := parse(az.URL("team/etcd"))
	if err != nil || kind != "azblob" || tgt.azblob.Container != az.Container || tgt.azblob.Prefix != "team/etcd" || tgt.azblob.Endpoint != az.ServiceURL() {
		t.Fatalf("parse(%s) = %s %+v, %v", az.URL("team/etcd"), kind, tgt.azblob, err)
	}
	b, err := Open(ctx, az.URL("team/etcd"), Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", az.URL("team/etcd"), err)
	}
	defer b.Close()
	if _, ok := storage.As[*azblob.Container](b); !ok {
		t.Fatalf("Open(azblob://) = %T", b)
	}
	if err := b.Put(ctx, "x", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	if loc := b.Location(); strings.Contains(loc, az.Key) || loc != az.URL("team/etcd") {
		t.Errorf("Location() = %q, want %q", loc, az.URL("team/etcd"))
	}
	// The object is at the name prefix given in the URL.
	if _, err := az.Client(t).NewBlobClient("team/etcd/x").GetProperties(ctx, nil); err != nil {
		t.Errorf("object not stored under the URL's prefix: %v", err)
	}
	if CreatesMissing(az.URL("p")) {
		t.Error("CreatesMissing(azblob://) = true: containers are never created")
	}
	missing := strings.Replace(az.URL("p"), az.Container, "missing-container", 1)
	if _, err := Open(ctx, missing, Options{Create: true}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(%s) = %v, want ErrNotFound (containers are never created)", missing, err)
	}
}

func TestOpenRclone(t *testing.T) {
	ctx := context.Background()
	// rclone must not see the caller's AWS_CA_BUNDLE or RCLONE_* settings
	// (Open passes the process environment to rclone).
	t.Setenv("AWS_CA_BUNDLE", "")
	t.Setenv("RCLONE_CONFIG", filepath.Join(t.TempDir(), "not-this-one.conf"))
	conf := filepath.Join(t.TempDir(), "rclone.conf")
	if err := os.WriteFile(conf, []byte("[loc]\ntype = local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	opt := Options{RcloneConfig: conf, RcloneBinary: testenv.Bin(t, "rclone")}

	_, err := Open(ctx, "rclone:loc:"+dir, opt)
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Open(missing dir) = %v, want ErrNotFound", err)
	}
	opt.Create = true
	b, err := Open(ctx, "rclone:loc:"+dir, opt)
	if err != nil {
		t.Fatalf("Open(rclone:loc:..., Create): %v", err)
	}
	defer b.Close()
	if _, ok := storage.As[*rclone.Remote](b); !ok || b.Location() != "rclone:loc:"+dir {
		t.Errorf("Open(rclone:loc:%s) = %T at %q", dir, b, b.Location())
	}
	if err := b.Put(ctx, "x/y", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	// The same directory as a local repository: rclone's local remote
	// stores objects as plain files.
	l, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Stat(ctx, "x/y"); err != nil {
		t.Errorf("object stored through rclone is not at x/y of the directory: %v", err)
	}

	// Without RcloneConfig, rclone's own lookup applies: $RCLONE_CONFIG.
	t.Setenv("RCLONE_CONFIG", conf)
	if _, err := Open(ctx, "rclone:loc:"+dir, Options{RcloneBinary: opt.RcloneBinary}); err != nil {
		t.Errorf("Open with $RCLONE_CONFIG: %v", err)
	}

	_, err = Open(ctx, "rclone:loc:"+dir, Options{RcloneConfig: conf, RcloneBinary: filepath.Join(t.TempDir(), "no-rclone")})
	if err == nil || !strings.Contains(err.Error(), "rclone") {
		t.Errorf("Open with a missing rclone binary = %v", err)
	}
}

// Every backend Open returns comes wrapped: the name rule (and the retries
// with it) apply whatever the URL.
func TestOpenWraps(t *testing.T) {
	b, err := Open(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := b.(interface{ Unwrap() storage.Backend }); !ok {
		t.Fatalf("Open returned %T, not the storage wrapper", b)
	}
	if err := b.Put(t.Context(), "../escape", strings.NewReader("x")); err == nil {
		t.Fatal("Put of ../escape succeeded")
	}
}

func TestOpenGCS(t *testing.T) {
	srv := testenv.StartGCS(t)
	ctx := context.Background()

	b, err := Open(ctx, srv.URL("team/etcd"), Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", srv.URL("team/etcd"), err)
	}
	defer b.Close()
	if _, ok := storage.As[*gcs.Bucket](b); !ok {
		t.Fatalf("Open(gs://) = %T", b)
	}
	if err := b.Put(ctx, "x", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	if loc := b.Location(); loc != srv.URL("team/etcd") {
		t.Errorf("Location() = %q, want %q", loc, srv.URL("team/etcd"))
	}
	// The object is at the prefix given in the URL.
	if !srv.ObjectExists(t, "team/etcd/x") {
		t.Error("object not stored under the URL's prefix")
	}
	if CreatesMissing(srv.URL("p")) {
		t.Error("CreatesMissing(gs://) = true")
	}
	missing := strings.Replace(srv.URL("p"), srv.Bucket, "missing-bucket", 1)
	if _, err := Open(ctx, missing, Options{Create: true}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(%s) = %v, want ErrNotFound (buckets are never created)", missing, err)
	}
}
