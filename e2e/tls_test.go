package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// tlsFiles are the PEM files of an in-test PKI.
type tlsFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	OtherCA                                          string // a CA that signed nothing etcd uses
}

// newTestPKI writes a CA, a server certificate for 127.0.0.1 and localhost,
// a client certificate (CN root) and an unrelated second CA into dir. Every
// key is ECDSA P-256.
func newTestPKI(t *testing.T, dir string) tlsFiles {
	t.Helper()
	now := time.Now()
	serial := int64(1)
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(name, "PRIVATE KEY", der)
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		serial++
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, k, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage []x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		serial++
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  usage,
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}

	ca, caKey, caDER := newCA("etcd-backup e2e CA")
	_, _, otherDER := newCA("some other CA")
	// etcd's gRPC gateway dials the server with the server certificate, so
	// it also needs client auth.
	srvDER, srvKey := leaf(ca, caKey, "etcd-server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	cliDER, cliKey := leaf(ca, caKey, "root", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil)
	return tlsFiles{
		CA:         writePEM("ca.pem", "CERTIFICATE", caDER),
		OtherCA:    writePEM("other-ca.pem", "CERTIFICATE", otherDER),
		ServerCert: writePEM("server.pem", "CERTIFICATE", srvDER),
		ServerKey:  writeKey("server-key.pem", srvKey),
		ClientCert: writePEM("client.pem", "CERTIFICATE", cliDER),
		ClientKey:  writeKey("client-key.pem", cliKey),
	}
}

// clientTLS is the tls.Config a test client uses against the in-test PKI.
func (f tlsFiles) clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// startTLSEtcd starts a single-member etcd 3.6 whose client URL is https with
// client certificate authentication (the peer URL stays http), and waits
// until it serves a linearizable read over TLS.
func startTLSEtcd(t *testing.T, pki tlsFiles) *etcdProc {
	t.Helper()
	s := newSpecs(t, "tls", 1)[0]
	s.ClientURL = strings.Replace(s.ClientURL, "http://", "https://", 1)
	bin := etcdBinary(t, "3.6.16")
	args := []string{
		"--name=" + s.Name, "--data-dir=" + s.DataDir,
		"--listen-peer-urls=" + s.PeerURL, "--initial-advertise-peer-urls=" + s.PeerURL,
		"--listen-client-urls=" + s.ClientURL, "--advertise-client-urls=" + s.ClientURL,
		"--initial-cluster=" + embedded.InitialCluster([]embedded.MemberSpec{s}), "--initial-cluster-state=new",
		"--initial-cluster-token=e2e-tls", "--heartbeat-interval=50", "--election-timeout=500",
		"--cert-file=" + pki.ServerCert, "--key-file=" + pki.ServerKey,
		"--trusted-ca-file=" + pki.CA, "--client-cert-auth",
		"--logger=zap", "--log-level=warn",
	}
	cmd := exec.Command(bin, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &etcdProc{spec: s, cmd: cmd, log: &log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.kill() })

	tc := pki.clientTLS(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			cl, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL}, DialTimeout: 2 * time.Second, TLS: tc})
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = cl.Put(ctx, "/tls/hello", "world")
			return err
		}()
		if err == nil {
			return p
		}
		select {
		case werr := <-p.done:
			t.Fatalf("etcd (TLS) exited: %v\n%s", werr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd (TLS) not healthy: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTLS backs up an etcd that serves clients over https and requires
// client certificates, with etcdctl's flags.
func TestTLS(t *testing.T) {
	pki := newTestPKI(t, t.TempDir())
	p := startTLSEtcd(t, pki)
	ep := p.spec.ClientURL
	repoDir := t.TempDir()

	t.Run("ca and client cert", func(t *testing.T) {
		snap := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--cacert", pki.CA, "--cert", pki.ClientCert,
			"--key", pki.ClientKey, "--repo", repoDir, "--dial-timeout", "3s")
		id := snap.lastLine()
		v := mustCLI(t, nil, "verify", id, "--repo", repoDir)
		if !strings.Contains(v.stdout, id+" ok") {
			t.Fatalf("verify output %q does not say %s ok", v.stdout, id)
		}
	})

	// The server certificate is signed by a CA the client does not trust
	// (system roots without --cacert, or another CA): the error must say so,
	// not just "unreachable".
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no cacert", []string{"--cert", pki.ClientCert, "--key", pki.ClientKey}},
		{"wrong cacert", []string{"--cacert", pki.OtherCA, "--cert", pki.ClientCert, "--key", pki.ClientKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			args := append([]string{"snapshot", "--endpoints", ep, "--repo", t.TempDir(), "--dial-timeout", "1s",
				"--command-timeout", "1s"}, tc.args...)
			r := cli(t, nil, args...)
			t.Logf("exit %d\n%s", r.code, r.stderr)
			if r.code != exitCodeTLS {
				t.Fatalf("exit %d, want %d (TLS failure)\nstderr: %s", r.code, exitCodeTLS, r.stderr)
			}
			line := tlsErrorLine(t, r.stderr)
			for _, want := range []string{"TLS", "x509: certificate signed by unknown authority", "--cacert"} {
				if !strings.Contains(line, want) {
					t.Errorf("error does not say %q:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(line, "unreachable") {
				t.Errorf("TLS failure reported as unreachable:\n%s", r.stderr)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}

	t.Run("no client cert", func(t *testing.T) {
		r := cli(t, nil, "snapshot", "--endpoints", ep, "--cacert", pki.CA, "--repo", t.TempDir(),
			"--dial-timeout", "1s", "--command-timeout", "1s")
		t.Logf("exit %d\n%s", r.code, r.stderr)
		if r.code != exitCodeTLS {
			t.Fatalf("exit %d, want %d (TLS failure)\nstderr: %s", r.code, exitCodeTLS, r.stderr)
		}
		line := tlsErrorLine(t, r.stderr)
		for _, want := range []string{"TLS", "certificate required", "--cert"} {
			if !strings.Contains(line, want) {
				t.Errorf("error does not say %q:\n%s", want, r.stderr)
			}
		}
		if strings.Contains(line, "unreachable") {
			t.Errorf("TLS failure reported as unreachable:\n%s", r.stderr)
		}
	})

	t.Run("insecure skip verify with client cert", func(t *testing.T) {
		dir := t.TempDir()
		id := mustCLI(t, nil, "snapshot", "--endpoints", ep, "--insecure-skip-tls-verify", "--cert", pki.ClientCert,
			"--key", pki.ClientKey, "--repo", dir).lastLine()
		mustCLI(t, nil, "verify", id, "--repo", dir)
	})
}

// exitCodeTLS is the exit code of a TLS handshake failure: 1 (etcd refused
// the request), not 6 (etcd unreachable): retrying does not help, the
// operator must fix a certificate or a flag.
const exitCodeTLS = 1

// tlsErrorLine is the "etcd-backup: error: ..." line of stderr.
func tlsErrorLine(t *testing.T, stderr string) string {
	t.Helper()
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "etcd-backup: error: ") {
			return l
		}
	}
	t.Fatalf("no error line in stderr:\n%s", stderr)
	return ""
}

// startAuthEtcd starts a plain-http single-member etcd 3.6 with user root
// (password pw, role root) and auth enabled.
func startAuthEtcd(t *testing.T, pw string) string {
	t.Helper()
	c := startCluster(t, "3.6.16", newSpecs(t, "auth", 1))
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cl.Put(ctx, "/auth/k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UserAdd(ctx, "root", pw); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	return c.endpoints()[0]
}

// TestAuth backs up an etcd with authentication enabled, with the password
// given three ways, and checks that a wrong password is reported as refused
// credentials and that no password ever reaches the output.
func TestAuth(t *testing.T) {
	const pw = "s3cr3t-Pa55w0rd-e2e"
	const wrong = "wr0ng-Pa55w0rd-e2e"
	ep := startAuthEtcd(t, pw)

	// Auth is really on: without credentials the snapshot is refused.
	r := cli(t, nil, "snapshot", "--endpoints", ep, "--repo", t.TempDir())
	t.Logf("without credentials: exit %d\n%s", r.code, r.stderr)
	if r.code != 1 || !strings.Contains(r.stderr, "refused the credentials") || strings.Contains(r.stderr, "unreachable") {
		t.Fatalf("snapshot without credentials on an etcd with auth enabled: exit %d, want 1 and refused credentials\nstdout: %s\nstderr: %s",
			r.code, r.stdout, r.stderr)
	}

	// An https:// endpoint on a plain-http etcd is a TLS problem with a
	// pointer at http://, not "unreachable".
	t.Run("https to plain etcd", func(t *testing.T) {
		r := cli(t, nil, "snapshot", "--endpoints", strings.Replace(ep, "http://", "https://", 1), "--user", "root:"+pw,
			"--repo", t.TempDir(), "--dial-timeout", "1s", "--command-timeout", "1s")
		t.Logf("exit %d\n%s", r.code, r.stderr)
		if r.code != exitCodeTLS {
			t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitCodeTLS, r.stderr)
		}
		if line := tlsErrorLine(t, r.stderr); !strings.Contains(line, "TLS") || !strings.Contains(line, "http://") {
			t.Errorf("error does not say the endpoint does not speak TLS:\n%s", r.stderr)
		}
	})

	noLeak := func(t *testing.T, r result, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
				t.Errorf("password %q appears in the output\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
			}
		}
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"user and password flags", nil, []string{"--user", "root", "--password", pw}},
		{"user:password", nil, []string{"--user", "root:" + pw}},
		{"password from env", []string{"ETCD_BACKUP_PASSWORD=" + pw}, []string{"--user", "root"}},
		{"user and password from env", []string{"ETCD_BACKUP_USER=root", "ETCD_BACKUP_PASSWORD=" + pw}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, verbose := range []bool{false, true} {
				args := append([]string{"snapshot", "--endpoints", ep, "--repo", dir}, tc.args...)
				if verbose {
					args = append(args, "--verbose")
				}
				r := mustCLI(t, tc.env, args...)
				noLeak(t, r, pw)
				mustCLI(t, nil, "verify", r.lastLine(), "--repo", dir)
			}
		})
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"wrong password flag", nil, []string{"--user", "root", "--password", wrong}},
		{"wrong user:password", nil, []string{"--user", "root:" + wrong}},
		{"wrong password env", []string{"ETCD_BACKUP_PASSWORD=" + wrong}, []string{"--user", "root"}},
		{"unknown user", nil, []string{"--user", "nobody", "--password", pw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, verbose := range []bool{false, true} {
				dir := t.TempDir()
				args := append([]string{"snapshot", "--endpoints", ep, "--repo", dir, "--dial-timeout", "3s"}, tc.args...)
				if verbose {
					args = append(args, "--verbose")
				}
				start := time.Now()
				r := cli(t, tc.env, args...)
				t.Logf("exit %d\n%s", r.code, r.stderr)
				if r.code != 1 {
					t.Fatalf("exit %d, want 1 (etcd refused the request)\nstderr: %s", r.code, r.stderr)
				}
				if !strings.Contains(r.stderr, "refused the credentials") {
					t.Errorf("error does not say the credentials were refused:\n%s", r.stderr)
				}
				if strings.Contains(r.stderr, "unreachable") {
					t.Errorf("refused credentials reported as unreachable:\n%s", r.stderr)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("took %v to fail", d)
				}
				noLeak(t, r, pw, wrong)
				if got := mustCLI(t, nil, "list", "--repo", dir, "--json").stdout; strings.TrimSpace(got) != "[]" {
					t.Errorf("a failed snapshot left a backup: %s", got)
				}
			}
		})
	}
}
