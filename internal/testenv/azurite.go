package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// AzuriteVersion is the Azurite release tests run against. It is installed
// by scripts/install-test-deps.sh with npm, and its azurite-blob linked
// into the test binary directory.
const AzuriteVersion = "3.37.0"

// Azurite's well-known development account: public, and accepted only by
// emulators.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is a container on an Azurite Blob service (azurite-blob)
// listening on 127.0.0.1, with its well-known development account.
type Azurite struct {
	Endpoint  string // host:port, e.g. "127.0.0.1:40123" (plain http)
	Account   string
	Key       string
	Container string // a fresh, empty container

	proc *azuriteProc
}

// azuriteProc is one azurite-blob process.
type azuriteProc struct {
	bin      string
	endpoint string
	dataDir  string // "" for in-memory persistence
	logPath  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartAzurite starts azurite-blob on a free loopback port with its data in
// t.TempDir(), waits until it answers, creates a fresh container and
// registers a t.Cleanup that kills it. Stop and Start make it unreachable
// for a while and bring the same blobs back. It fails the test when
// azurite-blob is not installed. Tests that need no restarts should share
// one process with SharedAzurite: Azurite takes seconds to start.
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	dir := t.TempDir()
	p := &azuriteProc{bin: Bin(t, "azurite-blob"), dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "azurite.log")}
	if err := os.Mkdir(p.dataDir, 0o700); err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(p.stop)
	if err := p.startOnFreePort(t); err != nil {
		t.Fatalf("azurite: %v%s", err, p.logTail())
	}
	return p.newContainer(t)
}

var shared struct {
	once sync.Once
	proc *azuriteProc
	err  error
}

// SharedAzurite returns a fresh container on the azurite-blob process that
// the test binary's tests share (started, in memory, by the first call;
// it dies with the test binary). Do not Stop it.
func SharedAzurite(t testing.TB) *Azurite {
	t.Helper()
	shared.once.Do(func() {
		bin, _ := lookBin("azurite-blob")
		if bin == "" {
			return
		}
		dir, err := os.MkdirTemp("", "etcd-backup-azurite-")
		if err != nil {
			shared.err = err
			return
		}
		p := &azuriteProc{bin: bin, logPath: filepath.Join(dir, "azurite.log")}
		if shared.err = p.startOnFreePort(t); shared.err != nil {
			shared.err = fmt.Errorf("%w%s", shared.err, p.logTail())
		}
		shared.proc = p
	})
	if shared.proc == nil {
		Bin(t, "azurite-blob") // fails with the install hint
	}
	if shared.err != nil {
		t.Fatalf("azurite: %v", shared.err)
	}
	return shared.proc.newContainer(t)
}

// startOnFreePort starts the process on a free port, trying new ports when
// another process takes the one found (go test runs packages in parallel).
func (p *azuriteProc) startOnFreePort(t testing.TB) error {
	var err error
	for range 3 {
		p.stop()
		p.endpoint = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		if err = p.start(); err == nil {
			return nil
		}
	}
	return err
}

func (p *azuriteProc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	_, port, _ := strings.Cut(p.endpoint, ":")
	args := []string{
		"--blobHost", "127.0.0.1",
		"--blobPort", port,
		"--disableTelemetry",
		"--disableProductStyleUrl",
		"--silent",
		// The SDK speaks a newer API version than Azurite knows
		// (azblob v1.8.3: 2026-12-06; Azurite 3.37.0: up to 2026-06-06):
		// Azurite refuses it unless told to skip the check.
		"--skipApiVersionCheck",
	}
	if p.dataDir != "" {
		args = append(args, "--location", p.dataDir)
	} else {
		args = append(args, "--inMemoryPersistence")
	}
	cmd := exec.Command(p.bin, args...)
	cmd.Env = azuriteEnv()
	cmd.Dir = filepath.Dir(p.logPath) // Azurite writes its debug files to the working directory
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	if err := waitHTTP(p.endpoint, "/", done, startTimeout); err != nil {
		p.stopLocked()
		return err
	}
	return nil
}

// Stop stops the Azurite process (SIGTERM, so that it saves its metadata,
// then SIGKILL after 10 s) and waits for it to exit; its data is kept, so Start brings the same containers and blobs back. Only for
// servers from StartAzurite.
func (a *Azurite) Stop() { a.proc.stop() }

// Start restarts a stopped server on the same address and data. Like
// t.Fatalf, call it from the goroutine of the test that started it.
func (a *Azurite) Start(t testing.TB) {
	t.Helper()
	if err := a.proc.start(); err != nil {
		t.Fatalf("azurite on %s: %v%s", a.Endpoint, err, a.proc.logTail())
	}
}

func (p *azuriteProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
}

func (p *azuriteProc) stopLocked() {
	if p.cmd == nil {
		return
	}
	// Azurite saves its metadata database on an interval and when it
	// closes: SIGTERM lets it close (and save), SIGKILL after a grace.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd, p.done = nil, nil
}

func (p *azuriteProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\nazurite log (" + p.logPath + "):\n" + string(b)
}

// newContainer creates a fresh container on p.
func (p *azuriteProc) newContainer(t testing.TB) *Azurite {
	t.Helper()
	a := &Azurite{
		Endpoint:  p.endpoint,
		Account:   AzuriteAccount,
		Key:       AzuriteKey,
		Container: "etcd-backup-test-" + randHex(t, 6),
		proc:      p,
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := a.Client(t).Create(ctx, nil); err != nil {
		t.Fatalf("azurite on %s: create container %q: %v%s", a.Endpoint, a.Container, err, p.logTail())
	}
	// Free the container's data when the test ends: a shared, in-memory
	// Azurite lives as long as the test binary.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = a.Client(t).Delete(ctx, nil)
	})
	return a
}

// ServiceURL is the Blob service URL of the account, e.g.
// "http://127.0.0.1:40123/devstoreaccount1".
func (a *Azurite) ServiceURL() string { return "http://" + a.Endpoint + "/" + a.Account }

// URL returns the repository URL of prefix (may be "") in the container,
// e.g. "azblob://container/prefix?endpoint=http://127.0.0.1:40123/devstoreaccount1".
// Credentials are not part of it: pass Env to subprocesses.
func (a *Azurite) URL(prefix string) string {
	p := (&url.URL{Path: strings.Trim(prefix, "/")}).EscapedPath()
	return fmt.Sprintf("azblob://%s/%s?endpoint=%s", a.Container, p, a.ServiceURL())
}

// ConnectionString returns a connection string for the account.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", a.Account, a.Key, a.ServiceURL())
}

// Env returns the environment variables (KEY=value) that give the azblob
// backend this account's shared key. The other AZURE_STORAGE_* variables
// are set empty so that the caller's own settings do not leak in.
func (a *Azurite) Env() []string {
	return []string{
		"AZURE_STORAGE_ACCOUNT=" + a.Account,
		"AZURE_STORAGE_KEY=" + a.Key,
		"AZURE_STORAGE_CONNECTION_STRING=",
		"AZURE_STORAGE_SAS_TOKEN=",
		"AZURE_STORAGE_BLOB_ENDPOINT=",
	}
}

// SetEnv sets Env for the rest of the test with t.Setenv (so t must not be
// parallel), for in-process code that reads credentials from the environment.
func (a *Azurite) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range a.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Client returns an SDK client for the container with the account's key
// (SDK retries off), for tests that inspect Azurite directly.
func (a *Azurite) Client(t testing.TB) *container.Client {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(a.Account, a.Key)
	if err != nil {
		t.Fatalf("azurite credential: %v", err)
	}
	c, err := container.NewClientWithSharedKeyCredential(a.ServiceURL()+"/"+a.Container, cred, &container.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatalf("azurite client: %v", err)
	}
	return c
}

// azuriteEnv is the environment for azurite-blob: the caller's, minus
// variables that configure Azurite itself.
func azuriteEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AZURITE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
