package rclone

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestRemoveStaleLocal leaves temporary files like a killed rcat does and
// checks that RemoveStale removes the old ones only, and no object.
func TestRemoveStaleLocal(t *testing.T) {
	t.Parallel()
	conf := writeConf(t, localConf)
	dir := filepath.Join(t.TempDir(), "repo")
	r := open(t, Config{Remote: "loc:" + dir, ConfigFile: conf}, true)
	var j storage.Janitor = r
	ctx := t.Context()
	if err := r.Put(ctx, "a/obj", strings.NewReader("object")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for name, mtime := range map[string]time.Time{
		"a/.tmp-old": old, ".tmp-root": old, "b/c/.tmp-deep": old, "a/.tmp-young": time.Now(),
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(filepath.Join(dir, "a", "obj"), old, old); err != nil {
		t.Fatal(err)
	}
	removed, err := j.RemoveStale(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{".tmp-root", "a/.tmp-old", "b/c/.tmp-deep"}; !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	for _, name := range []string{"a/obj", "a/.tmp-young"} {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestRemoveStaleS3: on a bucket remote the age is the server's.
func TestRemoveStaleS3(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	conf := writeConf(t, s3Conf(srv))
	r := open(t, Config{Remote: "s3t:" + srv.Bucket + "/repo", ConfigFile: conf}, false)
	ctx := t.Context()
	c := srv.Client(t)
	for _, key := range []string{"repo/x/.tmp-killed", "repo/x/obj", "other/.tmp-foreign"} {
		if _, err := c.PutObject(ctx, srv.Bucket, key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if removed, err := r.RemoveStale(ctx, time.Hour); err != nil || len(removed) != 0 {
		t.Fatalf("RemoveStale(1h) = %q, %v; want nothing (young)", removed, err)
	}
	time.Sleep(1100 * time.Millisecond) // server times have 1 s resolution
	removed, err := r.RemoveStale(ctx, 0)
	if err != nil || !slices.Equal(removed, []string{"x/.tmp-killed"}) {
		t.Fatalf("RemoveStale(0) = %q, %v; want [x/.tmp-killed]", removed, err)
	}
	var keys []string
	for o := range c.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		keys = append(keys, o.Key)
	}
	slices.Sort(keys)
	if want := []string{"other/.tmp-foreign", "repo/x/obj"}; !slices.Equal(keys, want) {
		t.Errorf("objects left %q, want %q", keys, want)
	}
}
