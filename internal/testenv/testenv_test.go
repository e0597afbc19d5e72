package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// fatalTB records Fatalf instead of stopping the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestBinMissingFails(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	Bin(f, "no-such-binary-for-etcd-backup")
	if !strings.Contains(f.msg, "scripts/install-test-deps.sh") || !strings.Contains(f.msg, "no-such-binary") {
		t.Errorf("Bin(missing) failed with %q, want the name and the install hint", f.msg)
	}
}

func TestBinSearchOrder(t *testing.T) {
	envDir, pathDir := t.TempDir(), t.TempDir()
	for _, d := range []string{envDir, pathDir} {
		if err := os.WriteFile(filepath.Join(d, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(envDir, "notexec"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", pathDir)
	t.Setenv(BinDirEnv, envDir)
	if got := Bin(t, "tool"); got != filepath.Join(envDir, "tool") {
		t.Errorf("Bin(tool) = %q, want the one in $%s", got, BinDirEnv)
	}
	t.Setenv(BinDirEnv, "")
	if got := Bin(t, "tool"); got != filepath.Join(pathDir, "tool") {
		t.Errorf("Bin(tool) = %q, want the one in $PATH", got)
	}
	f := &fatalTB{TB: t}
	t.Setenv(BinDirEnv, envDir)
	Bin(f, "notexec")
	if f.msg == "" {
		t.Error("Bin found a non-executable file")
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if !isModuleFile(filepath.Join(root, "go.mod")) {
		t.Errorf("RepoRoot() = %q, which has no go.mod for %s", root, ModulePath)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv")); err != nil {
		t.Errorf("RepoRoot() = %q: %v", root, err)
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("FreePort() = %d, which cannot be bound: %v", p, err)
	}
	l.Close()
}

func TestStartS3(t *testing.T) {
	EachS3(t, func(t *testing.T, start func(testing.TB) *S3Server) { testStartS3(t, start(t)) })
}

func testStartS3(t *testing.T, srv *S3Server) {
	ctx := context.Background()
	c := srv.Client(t)
	ok, err := c.BucketExists(ctx, srv.Bucket)
	if err != nil || !ok {
		t.Fatalf("BucketExists(%s) = %v, %v", srv.Bucket, ok, err)
	}
	if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	wantURL := fmt.Sprintf("s3://%s/a/b?endpoint=http://%s&region=%s", srv.Bucket, srv.Endpoint, srv.Region)
	if got := srv.URL("/a/b/"); got != wantURL {
		t.Errorf("URL = %q, want %q", got, wantURL)
	}
	env := strings.Join(srv.Env(), " ")
	for _, want := range []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() = %q, missing %q", env, want)
		}
	}

	// Stop makes it unreachable; Start brings back the same data.
	srv.Stop()
	srv.Stop() // idempotent
	if conn, err := net.DialTimeout("tcp", srv.Endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatal("server still reachable after Stop")
	}
	srv.Start()
	if _, err := c.StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{}); err != nil {
		t.Errorf("object lost across Stop/Start: %v", err)
	}

	// Each server has its own bucket and credentials.
	other := StartS3(t)
	if other.Bucket == srv.Bucket || other.Endpoint == srv.Endpoint || other.SecretKey == srv.SecretKey {
		t.Errorf("two servers share a bucket, endpoint or key: %+v %+v", srv, other)
	}
}

// TestMakeLockedBucket: MinIO makes a bucket with versioning and Object
// Lock, whose objects can be given retention that refuses their deletion.
func TestMakeLockedBucket(t *testing.T) {
	srv := StartMinIO(t)
	ctx := context.Background()
	c := srv.Client(t)
	b := srv.MakeLockedBucket(t)
	if _, _, _, _, err := c.GetObjectLockConfig(ctx, b); err != nil {
		t.Fatalf("GetObjectLockConfig(%s): %v", b, err)
	}
	if v, err := c.GetBucketVersioning(ctx, b); err != nil || !v.Enabled() {
		t.Fatalf("versioning of %s: %+v, %v; want enabled", b, v, err)
	}
	mode := minio.Governance
	until := time.Now().Add(time.Hour)
	info, err := c.PutObject(ctx, b, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{Mode: mode, RetainUntilDate: until})
	if err != nil {
		t.Fatal(err)
	}
	err = c.RemoveObject(ctx, b, "k", minio.RemoveObjectOptions{VersionID: info.VersionID})
	if err == nil {
		t.Fatal("removed a version under retention")
	}
	t.Logf("removing a retained version: %v", err)
}

func TestAzurite(t *testing.T) {
	az := StartAzurite(t)
	ctx := context.Background()
	c := az.Client(t)
	if _, err := c.NewBlockBlobClient("k").UploadBuffer(ctx, []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	wantURL := fmt.Sprintf("azblob://%s/a/b?endpoint=http://%s/devstoreaccount1", az.Container, az.Endpoint)
	if got := az.URL("/a/b/"); got != wantURL {
		t.Errorf("URL = %q, want %q", got, wantURL)
	}
	env := strings.Join(az.Env(), " ")
	for _, want := range []string{"AZURE_STORAGE_ACCOUNT=devstoreaccount1", "AZURE_STORAGE_KEY=" + az.Key} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() = %q, missing %q", env, want)
		}
	}

	// Stop makes it unreachable; Start brings back the same data.
	az.Stop()
	az.Stop() // idempotent
	if conn, err := net.DialTimeout("tcp", az.Endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatal("server still reachable after Stop")
	}
	az.Start(t)
	if _, err := c.NewBlobClient("k").GetProperties(ctx, nil); err != nil {
		t.Errorf("blob lost across Stop/Start: %v", err)
	}

	// The shared process gives each caller its own container.
	a, b := SharedAzurite(t), SharedAzurite(t)
	if a.Endpoint != b.Endpoint || a.Container == b.Container {
		t.Errorf("SharedAzurite: %s/%s and %s/%s, want one process and two containers", a.Endpoint, a.Container, b.Endpoint, b.Container)
	}
}
