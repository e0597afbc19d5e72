package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// FakeGCSVersion is the fake-gcs-server release tests run against. It is
// installed by scripts/install-test-deps.sh with
//
//	GOBIN=<repo>/.cache/test-bin go install github.com/fsouza/fake-gcs-server@v1.56.1
const FakeGCSVersion = "v1.56.1"

// GCSServer is a Google Cloud Storage emulator (fake-gcs-server with its
// memory backend) serving the JSON API over plain http on 127.0.0.1, with
// one fresh bucket. It takes no credentials.
type GCSServer struct {
	Endpoint string // host:port, e.g. "127.0.0.1:40123" (plain http)
	Bucket   string // a fresh, empty bucket

	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartGCS starts fake-gcs-server on a free loopback port, waits until it
// answers, creates a fresh bucket and registers a t.Cleanup that kills it.
// It fails the test when fake-gcs-server is not installed.
func StartGCS(t testing.TB) *GCSServer {
	t.Helper()
	bin := Bin(t, "fake-gcs-server")
	s := &GCSServer{
		Bucket:  "etcd-backup-test-" + randHex(t, 4),
		logPath: filepath.Join(t.TempDir(), "fake-gcs-server.log"),
	}
	t.Cleanup(s.Stop)
	// As in StartS3: the free port may be taken before the server binds
	// it; try again on another.
	var err error
	for range 3 {
		s.Stop()
		s.Endpoint = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		if err = s.start(bin); err != nil {
			continue
		}
		if err = s.CreateBucket(s.Bucket); err == nil {
			return s
		}
	}
	t.Fatalf("fake-gcs-server on %s: %v%s", s.Endpoint, err, s.logTail())
	return nil
}

func (s *GCSServer) start(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	host, port, _ := strings.Cut(s.Endpoint, ":")
	cmd := exec.Command(bin,
		"-scheme", "http",
		"-host", host,
		"-port", port,
		"-backend", "memory",
		"-public-host", s.Endpoint,
		"-external-url", "http://"+s.Endpoint,
		"-log-level", "warn")
	cmd.Env = gcsEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := waitHTTP(s.Endpoint, "/", done, startTimeout); err != nil {
		s.stopLocked()
		return err
	}
	return nil
}

// Stop kills the server and waits for it to exit; its objects are lost.
// Stop is idempotent and is called by t.Cleanup.
func (s *GCSServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *GCSServer) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

// CreateBucket creates another bucket on the server.
func (s *GCSServer) CreateBucket(name string) error {
	body, _ := json.Marshal(map[string]string{"name": name})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL()+"/storage/v1/b?project=test", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return fmt.Errorf("create bucket %q: %s: %s", name, resp.Status, msg)
	}
	return nil
}

// BaseURL is the server's root URL, e.g. "http://127.0.0.1:40123", for
// tests that inspect it with plain JSON API requests.
func (s *GCSServer) BaseURL() string { return "http://" + s.Endpoint }

// URL returns the repository URL of prefix (may be "") in the server's
// bucket, e.g. "gs://bucket/prefix?endpoint=http://127.0.0.1:40123".
func (s *GCSServer) URL(prefix string) string {
	p := (&url.URL{Path: strings.Trim(prefix, "/")}).EscapedPath()
	return fmt.Sprintf("gs://%s/%s?endpoint=http://%s", s.Bucket, p, s.Endpoint)
}

// ObjectExists asks the server directly whether the object key (the full
// name in the bucket, prefix included) exists.
func (s *GCSServer) ObjectExists(t testing.TB, key string) bool {
	t.Helper()
	u := fmt.Sprintf("%s/storage/v1/b/%s/o/%s", s.BaseURL(), url.PathEscape(s.Bucket), url.PathEscape(key))
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("stat %s on fake-gcs-server: %v", key, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("stat %s on fake-gcs-server: %s", key, resp.Status)
	return false
}

// gcsEnv is the environment for fake-gcs-server: the caller's, minus
// Google credentials and emulator settings.
func gcsEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GOOGLE_") || strings.HasPrefix(k, "STORAGE_EMULATOR") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *GCSServer) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\nfake-gcs-server log (" + s.logPath + "):\n" + string(b)
}
