package prune_test

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/retention"
	"github.com/etcd-backup/etcd-backup/internal/storage/s3"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestS3 prunes real backups on a real S3 server (versitygw): policy, the
// newest verified backup (presence check and read-back), orphans by age,
// and an incomplete multipart upload aborted through the backend's janitor.
func TestS3(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	ctx := t.Context()
	b, err := s3.New(ctx, s3.Config{
		Bucket: srv.Bucket, Prefix: "etcd", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		Credentials: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r := wrapRepo(t, b)
	if err := r.EnsureMarker(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	client := srv.Client(t)
	key := func(name string) string { return "etcd/clusters/default/snapshots/" + name }

	b1 := writeBackup(t, r, day(1, 0, 0))
	b2 := writeBackup(t, r, day(2, 0, 0))
	b3 := writeBackup(t, r, day(3, 0, 0))
	b4 := writeBackup(t, r, day(4, 0, 0))
	// Damage the newest payload in place, as bit rot would.
	obj, err := client.GetObject(ctx, srv.Bucket, key(b4.Payload), minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if _, err := client.PutObject(ctx, srv.Bucket, key(b4.Payload), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// An orphan payload (a backup that failed before its manifest) and an
	// upload a killed backup left incomplete.
	orphan := format.NewID(day(5, 0, 0))
	if err := r.PutPayload(ctx, orphan, false, strings.NewReader("no manifest")); err != nil {
		t.Fatal(err)
	}
	core := minio.Core{Client: client}
	killed := key(format.NewID(day(6, 0, 0)) + ".db.zst")
	uploadID, err := core.NewMultipartUpload(ctx, srv.Bucket, killed, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.PutObjectPart(ctx, srv.Bucket, killed, uploadID, 1, strings.NewReader("part"), 4, minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	uploads := func() int {
		n := 0
		for u := range client.ListIncompleteUploads(ctx, srv.Bucket, "etcd/", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			n++
		}
		return n
	}

	// The presence check does not read b4: same size, so it is the newest
	// verified backup.
	rep, err := prune.Run(ctx, r, retention.Policy{Last: 1}, prune.Options{Now: time.Now, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != b4.ID || len(rep.VerifyFailed) != 0 {
		t.Errorf("presence check: verified %s, failed %v; want %s", rep.Verified, rep.VerifyFailed, b4.ID)
	}

	// Read back: keep only the newest, b4 by policy, and b3 as the newest
	// verified. The orphan and the upload are young and stay.
	rep, err = prune.Run(ctx, r, retention.Policy{Last: 1}, prune.Options{Now: time.Now, ReadBack: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(t, r), []string{b4.ID, b3.ID}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	if rep.Verified != b3.ID || len(rep.VerifyFailed) != 1 || rep.VerifyFailed[0].ID != b4.ID {
		t.Errorf("verified %s, failed %v", rep.Verified, rep.VerifyFailed)
	}
	if got, want := backupIDs(rep.Doomed()), []string{b2.ID, b1.ID}; !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	if got, want := objects(t, r), append(objectsOf(b3, b4), orphan+".db.zst"); !slices.Equal(got, sorted(want)) {
		t.Errorf("objects left %v, want %v", got, sorted(want))
	}
	if len(rep.Orphans) != 1 || !rep.Orphans[0].Young || len(rep.Stale) != 0 || uploads() != 1 {
		t.Errorf("young leftovers touched: orphans %+v, stale %v, uploads left %d", rep.Orphans, rep.Stale, uploads())
	}

	// A payload gone from the bucket fails the presence check: b3 is the
	// newest verified again (by a Stat that finds nothing). A little later,
	// with a short orphan age, the orphan and the upload go.
	if err := client.RemoveObject(ctx, srv.Bucket, key(b4.Payload), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	rep, err = prune.Run(ctx, r, retention.Policy{Last: 1}, prune.Options{OrphanAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != b3.ID || len(rep.VerifyFailed) != 1 || rep.VerifyFailed[0].ID != b4.ID {
		t.Errorf("presence check, b4's payload gone: verified %s, failed %v", rep.Verified, rep.VerifyFailed)
	}
	if got, want := objects(t, r), sorted([]string{b3.ID + ".manifest.json", b3.Payload, b4.ID + ".manifest.json"}); !slices.Equal(got, want) {
		t.Errorf("objects left %v, want %v", got, want)
	}
	if len(rep.Orphans) != 1 || !rep.Orphans[0].Removed {
		t.Errorf("orphans %+v, want one removed", rep.Orphans)
	}
	if len(rep.Stale) != 1 || rep.StaleErr != nil || uploads() != 0 {
		t.Errorf("janitor: removed %v (err %v), %d uploads left; want the upload aborted", rep.Stale, rep.StaleErr, uploads())
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
