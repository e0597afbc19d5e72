package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
)

// readEnvFile parses the KEY=VALUE lines join writes.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("bad env line %q", line)
		}
		env[k] = v
	}
	return env
}

// startEtcdFromEnvFile starts etcd the way a systemd unit with
// EnvironmentFile= would: the unit passes listen/advertise-client flags and
// the data dir; name, initial cluster and state come from the env file.
func startEtcdFromEnvFile(t *testing.T, bin string, s embedded.MemberSpec, envFile string) *etcdProc {
	t.Helper()
	env := readEnvFile(t, envFile)
	for _, k := range []string{"ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER_STATE"} {
		if env[k] == "" {
			t.Fatalf("env file lacks %s: %v", k, env)
		}
	}
	if len(env) != 4 {
		t.Fatalf("env file must hold exactly the four settings, has %v", env)
	}
	cmd := exec.Command(bin, "--data-dir="+s.DataDir, "--listen-peer-urls="+s.PeerURL,
		"--listen-client-urls="+s.ClientURL, "--advertise-client-urls="+s.ClientURL,
		"--initial-cluster-token=e2e", "--heartbeat-interval=50", "--election-timeout=500", "--logger=zap", "--log-level=warn")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return startCmd(t, cmd, s)
}

// TestRunbookFoundingMemberJoinPromote follows docs/operations.md runbook
// (c): only one node reaches the backup. It founds a one-member cluster from
// the backup, then the two other nodes join as learners and are promoted,
// one at a time. One of them still holds stale data, which must end up
// moved aside, intact.
func TestRunbookFoundingMemberJoinPromote(t *testing.T) {
	for _, v := range []string{"3.4", "3.6.16"} {
		t.Run("etcd-"+v, func(t *testing.T) {
			repoDir := t.TempDir()
			oldSpecs := newSpecs(t, "m", 3)
			old := startCluster(t, v, oldSpecs)
			want := putKeys(t, old.client(), "/app/", 200, 100)
			mustCLI(t, nil, "snapshot", "--endpoints", strings.Join(old.endpoints(), ","), "--repo", repoDir)
			old.killAll()

			specs := newSpecs(t, "n", 3)
			bin := etcdBinary(t, v)
			n1, n2, n3 := specs[0], specs[1], specs[2]

			// Node 1: founding member.
			mustCLI(t, nil, "restore", "--founding", "--repo", repoDir, "--data-dir", n1.DataDir,
				"--name", n1.Name, "--initial-advertise-peer-urls", n1.PeerURL, "--initial-cluster-token", "e2e")
			founded := &realCluster{t: t, version: v, bin: bin}
			founded.procs = append(founded.procs, startEtcd(t, bin, n1, n1.Name+"="+n1.PeerURL, "new"))
			founded.waitHealthy()
			checkKeys(t, n1.ClientURL, "/app/", want)

			// Node 2 still holds the stale data dir of an old member.
			if err := exec.Command("cp", "-a", oldSpecs[1].DataDir, n2.DataDir).Run(); err != nil {
				t.Fatal(err)
			}
			staleDigest := treeDigest(t, n2.DataDir)

			for _, s := range []embedded.MemberSpec{n2, n3} {
				envFile := filepath.Join(t.TempDir(), "etcd-join.env")
				out := mustCLI(t, nil, "join", "--endpoints", n1.ClientURL, "--name", s.Name,
					"--initial-advertise-peer-urls", s.PeerURL, "--data-dir", s.DataDir, "--env-file", envFile, "--timeout", "2m")
				if s == n2 {
					aside, _ := filepath.Glob(n2.DataDir + ".pre-join-*")
					if len(aside) != 1 {
						t.Fatalf("stale data dir not moved aside: %v\n%s", aside, out.stdout)
					}
					if got := treeDigest(t, aside[0]); got != staleDigest {
						t.Fatal("stale data dir changed while being moved aside")
					}
				}
				p := startEtcdFromEnvFile(t, bin, s, envFile)
				founded.procs = append(founded.procs, p)
				mustCLI(t, nil, "promote", "--endpoints", n1.ClientURL, "--name", s.Name, "--timeout", "2m")
				founded.waitHealthy()

				// Running join and promote again is harmless.
				mustCLI(t, nil, "join", "--endpoints", n1.ClientURL, "--name", s.Name,
					"--initial-advertise-peer-urls", s.PeerURL, "--data-dir", s.DataDir, "--env-file", filepath.Join(t.TempDir(), "again.env"))
				mustCLI(t, nil, "promote", "--endpoints", n1.ClientURL, "--name", s.Name)
				if aside, _ := filepath.Glob(s.DataDir + ".pre-join-*"); (s == n3 && len(aside) != 0) || (s == n2 && len(aside) != 1) {
					t.Fatalf("repeated join moved a live data dir: %v", aside)
				}
			}

			cl := founded.client()
			ml, err := cl.MemberList(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(ml.Members) != 3 {
				t.Fatalf("%d members, want 3", len(ml.Members))
			}
			for _, m := range ml.Members {
				if m.IsLearner {
					t.Fatalf("member %s is still a learner", m.Name)
				}
			}
			for _, s := range specs {
				checkKeys(t, s.ClientURL, "/app/", want)
			}
		})
	}
}
