package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWVersion is the versitygw release tests run against. It is
// installed by scripts/install-test-deps.sh with
//
//	GOBIN=<repo>/.cache/test-bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
const VersityGWVersion = "v1.8.0"

// MinIOVersion is the MinIO server tests run against (StartMinIO). MinIO
// publishes no semantic-version tags (its releases are RELEASE.<date> tags),
// so this is the pseudo-version of the commit go install resolved as
// @latest; scripts/install-test-deps.sh installs it with
//
//	GOBIN=<repo>/.cache/test-bin go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Kinds of S3Server.
const (
	VersityGW = "versitygw"
	MinIO     = "minio"
)

// S3Server is a real S3-compatible server listening on 127.0.0.1 with one
// fresh bucket: versitygw with its posix backend (StartS3) or MinIO on a
// single drive (StartMinIO), its data in a temporary directory. Credentials
// are random per server and passed to clients explicitly or via Env; they
// are never taken from the caller's environment.
type S3Server struct {
	Kind      string // VersityGW or MinIO
	Endpoint  string // host:port, e.g. "127.0.0.1:40123" (plain http)
	Bucket    string // a fresh, empty bucket
	AccessKey string
	SecretKey string
	Region    string

	t       testing.TB
	bin     string
	dataDir string // posix backend root (versitygw) or drive (MinIO)
	logPath string
	console string // MinIO's console address (host:port)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startTimeout bounds how long StartS3, StartMinIO and Start wait for the
// server to answer.
const startTimeout = 30 * time.Second

// StartS3 starts versitygw on a free loopback port with its posix backend in
// t.TempDir(), waits until it answers, creates a fresh bucket and registers a
// t.Cleanup that kills it. It fails the test when versitygw is not installed.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	return startServer(t, VersityGW)
}

// StartMinIO is StartS3 with a MinIO server (single node, single drive in
// t.TempDir()) instead of versitygw: the same loopback address, random root
// credentials and fresh bucket. It fails the test when minio is not
// installed.
func StartMinIO(t testing.TB) *S3Server {
	t.Helper()
	return startServer(t, MinIO)
}

// S3Kinds lists the S3 servers a test suite runs against, by kind, for
// tests that prove the S3 backend on every one:
//
//	for _, kind := range testenv.S3Kinds {
//		t.Run(kind, func(t *testing.T) { srv := testenv.StartS3Kind(t, kind); ... })
//	}
var S3Kinds = []string{VersityGW, MinIO}

// StartS3Kind starts the server of kind (VersityGW or MinIO).
func StartS3Kind(t testing.TB, kind string) *S3Server {
	t.Helper()
	return startServer(t, kind)
}

func startServer(t testing.TB, kind string) *S3Server {
	t.Helper()
	if kind != VersityGW && kind != MinIO {
		t.Fatalf("testenv: unknown S3 server kind %q", kind)
	}
	s := &S3Server{
		Kind:      kind,
		t:         t,
		bin:       Bin(t, kind),
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		AccessKey: "AKTEST" + strings.ToUpper(randHex(t, 7)),
		SecretKey: randHex(t, 20),
		Region:    "us-east-1",
		Bucket:    "etcd-backup-test-" + randHex(t, 4),
	}
	if kind == MinIO {
		s.console = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
	dir := t.TempDir()
	s.dataDir = filepath.Join(dir, "data")
	s.logPath = filepath.Join(dir, kind+".log")
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	t.Cleanup(s.Stop)

	// FreePort's port may be taken before the server binds it (go test runs
	// packages in parallel, and they start servers too): then the server
	// exits, or another server answers and refuses our credentials. Retry
	// on a new port.
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			s.Stop()
			s.Endpoint = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
			if kind == MinIO {
				s.console = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
			}
		}
		if err = s.start(); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		err = s.Client(t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region})
		cancel()
		if err == nil {
			return s
		}
		err = fmt.Errorf("create bucket %q: %w", s.Bucket, err)
	}
	t.Fatalf("%s on %s: %v%s", kind, s.Endpoint, err, s.logTail())
	return nil
}

// MakeLockedBucket creates another bucket, with versioning and S3 Object
// Lock enabled (MakeBucket with x-amz-bucket-object-lock-enabled), and
// returns its name. Objects in it can be given retention, during which no
// one can delete or overwrite their versions: what immutable backups rely
// on. MinIO supports it; versitygw's posix backend only when started with a
// versioning directory, which StartS3 does not give it.
func (s *S3Server) MakeLockedBucket(t testing.TB) string {
	t.Helper()
	name := "etcd-backup-locked-" + randHex(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region, ObjectLocking: true}); err != nil {
		t.Fatalf("%s: create bucket %q with object lock: %v", s.Kind, name, err)
	}
	return name
}

// Start (re)starts a stopped server on the same address, data directory and
// credentials, and waits until it answers. It does nothing when the server is
// running. Use it with Stop to make storage unreachable for a while. Like
// t.Fatalf, call it from the goroutine of the test that started the server.
func (s *S3Server) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("%s on %s: %v%s", s.Kind, s.Endpoint, err, s.logTail())
	}
}

func (s *S3Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	var cmd *exec.Cmd
	ready := "/" // versitygw: any answer
	switch s.Kind {
	case MinIO:
		cmd = exec.Command(s.bin, "server", s.dataDir,
			"--address", s.Endpoint,
			"--console-address", s.console,
			"--quiet")
		cmd.Env = append(cleanEnv(),
			"MINIO_ROOT_USER="+s.AccessKey,
			"MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_SITE_REGION="+s.Region,
			"MINIO_BROWSER=off", // no web console
			"MINIO_UPDATE=off",  // never looks for updates online
			"MINIO_CALLHOME_ENABLE=off",
		)
		// MinIO answers 503 XMinioServerNotInitialized while it formats
		// or loads its drive; this answers 200 once it serves requests.
		ready = "/minio/health/ready"
	default:
		cmd = exec.Command(s.bin,
			"--port", s.Endpoint,
			"--access", s.AccessKey,
			"--secret", s.SecretKey,
			"--region", s.Region,
			"--quiet",
			"posix", s.dataDir)
		cmd.Env = cleanEnv()
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	if err := waitHTTP(s.Endpoint, ready, done, startTimeout); err != nil {
		s.stopLocked()
		return err
	}
	if s.Kind == MinIO {
		// Ready says the process serves; after a restart MinIO may still
		// answer S3 requests with 503 XMinioServerNotInitialized for a
		// moment while it loads its drive. Wait for a real answer.
		if err := s.waitS3(done, startTimeout); err != nil {
			s.stopLocked()
			return err
		}
	}
	return nil
}

// waitS3 polls with ListBuckets until the server answers it, the process
// exits or timeout passes.
func (s *S3Server) waitS3(done <-chan struct{}, timeout time.Duration) error {
	c := s.Client(s.t)
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("exited before answering")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no S3 answer within %v: %v", timeout, err)
}

// Stop kills the server and waits for it to exit; the data directory is
// kept, so Start brings the same buckets and objects back. Stop is
// idempotent and is called by t.Cleanup.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *S3Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

// URL returns the repository URL of prefix (may be "") in the server's
// bucket, e.g. "s3://bucket/prefix?endpoint=http://127.0.0.1:40123&region=us-east-1".
// Credentials are not part of it: pass Env to subprocesses.
func (s *S3Server) URL(prefix string) string {
	p := (&url.URL{Path: strings.Trim(prefix, "/")}).EscapedPath()
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=%s", s.Bucket, p, s.Endpoint, s.Region)
}

// Env returns the environment variables (KEY=value) that give an AWS SDK
// style client this server's credentials. AWS_SESSION_TOKEN and AWS_PROFILE
// are set empty so that the caller's own AWS settings do not leak in.
func (s *S3Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_REGION=" + s.Region,
	}
}

// SetEnv sets Env for the rest of the test with t.Setenv (so t must not be
// parallel), for in-process code that reads credentials from the environment.
func (s *S3Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Client returns a minio client for the server with its static credentials,
// for tests that inspect the server directly (incomplete uploads, raw keys).
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatalf("minio client for %s: %v", s.Endpoint, err)
	}
	return c
}

// waitHTTP polls endpoint until it answers a GET of path (any answer for
// "/", 200 OK for any other path), the process exits (done closes) or
// timeout passes.
func waitHTTP(endpoint, path string, done <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("exited before answering")
		default:
		}
		resp, err := client.Get("http://" + endpoint + path)
		if err == nil {
			resp.Body.Close()
			if path == "/" || resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no answer within %v: %v", timeout, lastErr)
}

// cleanEnv is the environment for versitygw and MinIO: the caller's, minus
// variables that configure either server or its root account.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VGW_") || strings.HasPrefix(k, "ROOT_") || strings.HasPrefix(k, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *S3Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n" + s.Kind + " log (" + s.logPath + "):\n" + string(b)
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// EachS3 runs f in a subtest per S3 server kind (S3Kinds), named by the kind
// ("versitygw", "minio"), with a start function that starts a server of that
// kind (StartS3Kind), as often as f needs. A test written with it proves
// the S3 backend on every server:
//
//	func TestX(t *testing.T) {
//		testenv.EachS3(t, func(t *testing.T, start func(testing.TB) *testenv.S3Server) {
//			srv := start(t)
//			...
//		})
//	}
func EachS3(t *testing.T, f func(t *testing.T, start func(testing.TB) *S3Server)) {
	t.Helper()
	for _, kind := range S3Kinds {
		t.Run(kind, func(t *testing.T) {
			f(t, func(t testing.TB) *S3Server {
				t.Helper()
				return StartS3Kind(t, kind)
			})
		})
	}
}
