package s3_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestRemoveStale leaves incomplete multipart uploads on a real server the
// way a killed Put does (started, a part sent, never completed nor aborted)
// and checks that RemoveStale aborts those under the repository prefix, by
// age, and nothing else.
func TestRemoveStale(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		ctx := t.Context()
		core := minio.Core{Client: srv.Client(t)}
		startUpload := func(key string) string {
			t.Helper()
			id, err := core.NewMultipartUpload(ctx, srv.Bucket, key, minio.PutObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := core.PutObjectPart(ctx, srv.Bucket, key, id, 1, strings.NewReader("part"), 4, minio.PutObjectPartOptions{}); err != nil {
				t.Fatal(err)
			}
			return id
		}
		uploads := func() []string {
			t.Helper()
			var out []string
			for u := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
				if u.Err != nil {
					t.Fatal(u.Err)
				}
				out = append(out, u.Key)
			}
			slices.Sort(out)
			return out
		}

		b := open(t, config(srv, "repo"))
		var j storage.Janitor = b // s3 implements the optional interface
		if err := b.Put(ctx, "clusters/x/obj", strings.NewReader("complete")); err != nil {
			t.Fatal(err)
		}
		startUpload("repo/clusters/x/snapshots/a.db.zst")
		startUpload("repo/clusters/x/snapshots/a.db.zst") // two uploads of one key
		startUpload("repo/b")
		startUpload("repository-other/c") // shares the prefix string, not the directory
		startUpload("elsewhere/d")
		if got := uploads(); len(got) != 5 {
			t.Fatalf("incomplete uploads before: %q", got)
		}

		// Young uploads stay: they may belong to a Put still running.
		removed, err := j.RemoveStale(ctx, time.Hour)
		if err != nil || len(removed) != 0 {
			t.Fatalf("RemoveStale(1h) = %q, %v; want nothing removed", removed, err)
		}
		if got := uploads(); len(got) != 5 {
			t.Fatalf("RemoveStale(1h) aborted young uploads: left %q", got)
		}

		// Initiated has a resolution of one second on most servers.
		time.Sleep(1100 * time.Millisecond)
		removed, err = j.RemoveStale(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(removed) != 3 {
			t.Errorf("RemoveStale(0) removed %q, want the 3 uploads under repo/", removed)
		}
		for _, r := range removed {
			if !strings.HasPrefix(r, "clusters/x/snapshots/a.db.zst (upload ") && !strings.HasPrefix(r, "b (upload ") {
				t.Errorf("unexpected entry %q (want names relative to the repository)", r)
			}
		}
		if got, want := uploads(), []string{"elsewhere/d", "repository-other/c"}; !slices.Equal(got, want) {
			t.Errorf("incomplete uploads after: %q, want %q", got, want)
		}
		// The complete object is untouched.
		if _, err := b.Stat(ctx, "clusters/x/obj"); err != nil {
			t.Error(err)
		}
	})
}
