package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestCreateOnlyWarning opens an S3 repository for writing through a proxy
// that makes the server ignore If-None-Match: the command warns once,
// however often it reopens the repository, and goes on; opening it to read
// probes nothing.
func TestCreateOnlyWarning(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.SetEnv(t)
	p := testenv.StartFaultProxy(t, srv.Endpoint)
	p.SetCredentials(srv.AccessKey, srv.SecretKey, srv.Region)
	p.Set(testenv.Faults{StripIfNoneMatch: true})
	var logs bytes.Buffer
	g := &Globals{
		Repo:    fmt.Sprintf("s3://%s/repo?endpoint=http://%s&region=%s", srv.Bucket, p.Addr, srv.Region),
		Cluster: "default",
		log:     slog.New(slog.NewTextHandler(&logs, nil)),
	}
	r, err := g.openRepo(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	closeRepo(r)
	if p.Stats().ByMethod["PUT"] != 0 || logs.Len() != 0 {
		t.Fatalf("opening to read: %v requests, log %q; want no probe", p.Stats().ByMethod, logs.String())
	}
	for range 3 {
		r, err := g.openRepo(t.Context(), true)
		if err != nil {
			t.Fatalf("opening a repository whose storage ignores If-None-Match: %v, want a warning only", err)
		}
		closeRepo(r)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
	if p.Stats().Stripped != 2 {
		t.Errorf("%d requests stripped, want the probe's 2 (one probe per process and bucket)", p.Stats().Stripped)
	}
	t.Log(logs.String())
}
