package s3

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestConditionalWrites bypasses Put's HEAD check to show that the writes
// themselves are create-only (If-None-Match: *), which is what protects
// concurrent writers of the same name.
func TestConditionalWrites(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		ctx := t.Context()
		b, err := New(ctx, Config{
			Bucket: srv.Bucket, Prefix: "cond", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
			Credentials: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Put(ctx, "obj", strings.NewReader("original")); err != nil {
			t.Fatal(err)
		}
		key := b.key("obj")

		err = b.putSingle(ctx, key, []byte("replaced"), newToken())
		if !errors.Is(err, storage.ErrExists) {
			t.Errorf("single PUT over an existing object: %v, want ErrExists", err)
		}
		first := bufPool.Get().(*[]byte)
		err = b.putMultipart(ctx, key, first, strings.NewReader("tail"), newToken())
		if !errors.Is(err, storage.ErrExists) {
			t.Errorf("multipart upload over an existing object: %v, want ErrExists", err)
		}
		if b.noConditional.Load() {
			t.Error("server reported as not implementing If-None-Match")
		}

		rc, err := b.Get(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, _ := io.ReadAll(rc); string(got) != "original" {
			t.Errorf("object changed to %d bytes %.20q", len(got), got)
		}
		for u := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
			t.Errorf("refused multipart upload left behind: %s %v", u.Key, u.Err)
		}
	})
}

// TestRetriedWriteIsOurs covers a write whose response is lost: minio-go
// retries it, the retry's If-None-Match fails because the first try stored
// the object, and Put must recognise its own object (by the token in its
// metadata) and succeed. Another Put, even of identical content, still gets
// ErrExists: create-only holds for concurrent writers of the same bytes.
func TestRetriedWriteIsOurs(t *testing.T) {
	testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
		srv := start(t)
		ctx := t.Context()
		b, err := New(ctx, Config{
			Bucket: srv.Bucket, Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
			Credentials: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()

		small := []byte("small object")
		token := newToken()
		if err := b.putSingle(ctx, "s", small, token); err != nil {
			t.Fatal(err)
		}
		if err := b.putSingle(ctx, "s", small, token); err != nil {
			t.Errorf("retried single PUT: %v, want success", err)
		}
		if err := b.putSingle(ctx, "s", small, newToken()); !errors.Is(err, storage.ErrExists) {
			t.Errorf("another single PUT of the same content: %v, want ErrExists", err)
		}

		data := bytes.Repeat([]byte("0123456789abcdef"), (partSize+partSize/2)/16)
		multipart := func(token string) error {
			first := bufPool.Get().(*[]byte)
			copy(*first, data[:partSize])
			return b.putMultipart(ctx, "m", first, bytes.NewReader(data[partSize:]), token)
		}
		token = newToken()
		if err := multipart(token); err != nil {
			t.Fatal(err)
		}
		if err := multipart(token); err != nil {
			t.Errorf("retried multipart upload: %v, want success", err)
		}
		if err := multipart(newToken()); !errors.Is(err, storage.ErrExists) {
			t.Errorf("another multipart upload of the same content: %v, want ErrExists", err)
		}
	})
}
