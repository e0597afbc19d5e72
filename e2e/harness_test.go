package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

var binary string // the etcd-backup binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "etcd-backup-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "etcd-backup")
	build := exec.Command("go", "build", "-o", binary, "../cmd/etcd-backup")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build etcd-backup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result of one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) lastLine() string {
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	return lines[len(lines)-1]
}

// cli runs etcd-backup with args and extra environment.
func cli(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run etcd-backup %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// mustCLI runs etcd-backup and fails the test unless it exits 0.
func mustCLI(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r := cli(t, env, args...)
	if r.code != 0 {
		t.Fatalf("etcd-backup %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// cleanEnv is the test process environment without ETCD_BACKUP_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_BACKUP_") || strings.HasPrefix(kv, "ETCD_BACKUP_TEST_BIN=") {
			env = append(env, kv)
		}
	}
	return env
}

// etcdProc is one real etcd server process.
type etcdProc struct {
	spec embedded.MemberSpec
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error
}

// realCluster is a cluster of real etcd processes of one version.
type realCluster struct {
	t       *testing.T
	version string
	bin     string
	procs   []*etcdProc
}

// etcdBinary returns the path of the etcd server of version ("3.4" is
// Debian's package).
func etcdBinary(t *testing.T, version string) string {
	return testenv.Bin(t, "etcd-"+version)
}

// startEtcd starts one etcd process for spec. state is "new" or "existing".
func startEtcd(t *testing.T, bin string, s embedded.MemberSpec, initialCluster, state string) *etcdProc {
	t.Helper()
	args := []string{
		"--name=" + s.Name, "--data-dir=" + s.DataDir,
		"--listen-peer-urls=" + s.PeerURL, "--initial-advertise-peer-urls=" + s.PeerURL,
		"--listen-client-urls=" + s.ClientURL, "--advertise-client-urls=" + s.ClientURL,
		"--initial-cluster=" + initialCluster, "--initial-cluster-state=" + state,
		"--initial-cluster-token=e2e", "--heartbeat-interval=50", "--election-timeout=500",
		"--logger=zap", "--log-level=warn",
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	return startCmd(t, cmd, s)
}

// startCmd starts an etcd command and registers its SIGKILL on cleanup.
func startCmd(t *testing.T, cmd *exec.Cmd, s embedded.MemberSpec) *etcdProc {
	t.Helper()
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	bin := cmd.Path
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &etcdProc{spec: s, cmd: cmd, log: &log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *etcdProc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	}
}

// startCluster starts n members of version on fresh ports under dir.
func startCluster(t *testing.T, version string, specs []embedded.MemberSpec) *realCluster {
	t.Helper()
	bin := etcdBinary(t, version)
	c := &realCluster{t: t, version: version, bin: bin}
	ic := embedded.InitialCluster(specs)
	for _, s := range specs {
		c.procs = append(c.procs, startEtcd(t, bin, s, ic, "new"))
	}
	c.waitHealthy()
	return c
}

func (c *realCluster) endpoints() []string {
	var eps []string
	for _, p := range c.procs {
		eps = append(eps, p.spec.ClientURL)
	}
	return eps
}

// waitHealthy waits until every member serves a linearizable read.
func (c *realCluster) waitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range c.procs {
		for {
			err := func() error {
				cl, err := clientv3.New(clientv3.Config{Endpoints: []string{p.spec.ClientURL}, DialTimeout: 2 * time.Second})
				if err != nil {
					return err
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err = cl.Get(ctx, "health")
				return err
			}()
			if err == nil {
				break
			}
			select {
			case werr := <-p.done:
				c.t.Fatalf("etcd %s %s exited: %v\n%s", c.version, p.spec.Name, werr, p.log.String())
			default:
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("etcd %s %s not healthy: %v\n%s", c.version, p.spec.Name, err, p.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// killAll SIGKILLs every member.
func (c *realCluster) killAll() {
	for _, p := range c.procs {
		p.kill()
	}
}

func (c *realCluster) client() *clientv3.Client {
	c.t.Helper()
	cl, err := clientv3.New(clientv3.Config{Endpoints: c.endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// putKeys writes n keys under prefix and returns them.
func putKeys(t *testing.T, cl *clientv3.Client, prefix string, n, valueSize int) map[string]string {
	t.Helper()
	want := make(map[string]string, n)
	pad := strings.Repeat("v", valueSize)
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("%s%06d", prefix, i), fmt.Sprintf("%d-%s", i, pad)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cl.Put(ctx, k, v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	return want
}

// checkKeys reads prefix from one member (serializable: that member's own
// copy) and compares with want.
func checkKeys(t *testing.T, endpoint, prefix string, want map[string]string) {
	t.Helper()
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cl.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("read %s: %v", endpoint, err)
	}
	if len(resp.Kvs) != len(want) {
		t.Fatalf("%s has %d keys under %s, want %d", endpoint, len(resp.Kvs), prefix, len(want))
	}
	for _, kv := range resp.Kvs {
		if want[string(kv.Key)] != string(kv.Value) {
			t.Fatalf("%s: key %s has the wrong value", endpoint, kv.Key)
		}
	}
}

func newSpecs(t *testing.T, prefix string, n int) []embedded.MemberSpec {
	t.Helper()
	specs, err := embedded.NewSpecs(t.TempDir(), prefix, n)
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

// treeDigest summarises every file (path, size, mode, content hash) under
// dir, to assert that a failed command changed nothing.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v %d", rel, info.Mode(), info.Size())
		if info.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", hash(data))
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}
