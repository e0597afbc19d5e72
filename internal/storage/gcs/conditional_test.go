package gcs

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestConditionalWrites shows that both kinds of upload are create-only on
// the server (ifGenerationMatch=0), which is what protects concurrent
// writers of the same name: the single request, and the resumable upload,
// whose precondition the server checks when it finalises the object.
func TestConditionalWrites(t *testing.T) {
	srv := testenv.StartGCS(t)
	ctx := t.Context()
	b, err := New(ctx, Config{Bucket: srv.Bucket, Prefix: "cond", Endpoint: srv.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(ctx, "obj", strings.NewReader("original")); err != nil {
		t.Fatal(err)
	}
	key := b.key("obj")
	if err := b.putSingle(ctx, key, []byte("replaced"), newToken()); !errors.Is(err, storage.ErrExists) {
		t.Errorf("single request over an existing object: %v, want ErrExists", err)
	}
	first := bufPool.Get().(*[]byte)
	err = b.putResumable(ctx, key, first, bytes.NewReader(make([]byte, chunkSize+5)), newToken())
	if !errors.Is(err, storage.ErrExists) {
		t.Errorf("resumable upload over an existing object: %v, want ErrExists", err)
	}
	rc, err := b.Get(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); string(got) != "original" {
		t.Errorf("object changed to %d bytes %.20q", len(got), got)
	}
}

// TestRetriedWriteIsOurs covers a write whose answer is lost and that is
// sent again: the second try meets the object the first created (412), and
// Put must recognise its own object by the token in its metadata. Another
// Put, even of identical content, still gets ErrExists.
func TestRetriedWriteIsOurs(t *testing.T) {
	srv := testenv.StartGCS(t)
	ctx := t.Context()
	b, err := New(ctx, Config{Bucket: srv.Bucket, Endpoint: srv.BaseURL()})
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
		t.Errorf("resent single request: %v, want success", err)
	}
	if err := b.putSingle(ctx, "s", small, newToken()); !errors.Is(err, storage.ErrExists) {
		t.Errorf("another single request of the same content: %v, want ErrExists", err)
	}

	data := bytes.Repeat([]byte("0123456789abcdef"), (singleMax+singleMax/2)/16)
	resumable := func(token string) error {
		first := bufPool.Get().(*[]byte)
		copy(*first, data[:singleMax])
		return b.putResumable(ctx, "m", first, bytes.NewReader(data[singleMax:]), token)
	}
	token = newToken()
	if err := resumable(token); err != nil {
		t.Fatal(err)
	}
	if err := resumable(token); err != nil {
		t.Errorf("resent resumable upload: %v, want success", err)
	}
	if err := resumable(newToken()); !errors.Is(err, storage.ErrExists) {
		t.Errorf("another resumable upload of the same content: %v, want ErrExists", err)
	}
}
