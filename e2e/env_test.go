package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// envListIDs runs `list --json` and returns the IDs.
func envListIDs(t *testing.T, env []string, args ...string) []string {
	t.Helper()
	r := mustCLI(t, env, append([]string{"list", "--json"}, args...)...)
	var entries []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	ids := []string{}
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}

func envSameIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: list shows %v, want %v", what, got, want)
	}
}

// TestEnvSettings: every flag can come from ETCD_BACKUP_<FLAG>; a flag on the
// command line wins; a bad value in the environment is a usage error that
// names the variable.
func TestEnvSettings(t *testing.T) {
	c := startCluster(t, "3.6.16", newSpecs(t, "env", 1))
	ep := c.endpoints()[0]
	putKeys(t, c.client(), "/env/", 10, 10)
	repoDir := t.TempDir()

	// No flags at all: repository, endpoints and cluster from the environment.
	base := []string{"ETCD_BACKUP_REPO=" + repoDir, "ETCD_BACKUP_ENDPOINTS=" + ep}
	prod := append(append([]string{}, base...), "ETCD_BACKUP_CLUSTER=prod", "ETCD_BACKUP_LOG_FORMAT=json")
	snap := mustCLI(t, prod, "snapshot")
	prodID := snap.lastLine()
	// ETCD_BACKUP_LOG_FORMAT=json: every log line on stderr is JSON.
	logLines := strings.Split(strings.TrimSpace(snap.stderr), "\n")
	for _, l := range logLines {
		if !json.Valid([]byte(l)) {
			t.Errorf("ETCD_BACKUP_LOG_FORMAT=json, but stderr line is not JSON: %q", l)
		}
	}
	if len(logLines) == 0 || !strings.Contains(snap.stderr, prodID) {
		t.Errorf("no log of the backup on stderr: %q", snap.stderr)
	}

	envSameIDs(t, "ETCD_BACKUP_CLUSTER=prod", envListIDs(t, prod), prodID)
	envSameIDs(t, "default cluster", envListIDs(t, base))
	envSameIDs(t, "--cluster prod, no env", envListIDs(t, nil, "--repo", repoDir, "--cluster", "prod"), prodID)
	mustCLI(t, prod, "verify") // latest of prod, from the environment
	if r := cli(t, base, "verify"); r.code != 3 {
		t.Errorf("verify latest of the default cluster: exit %d, want 3 (no backup)\n%s", r.code, r.stderr)
	}

	// The command line wins over the environment, for strings and lists.
	t.Run("flag wins", func(t *testing.T) {
		otherRepo := t.TempDir()
		env := []string{
			"ETCD_BACKUP_REPO=" + otherRepo, "ETCD_BACKUP_CLUSTER=prod",
			"ETCD_BACKUP_ENDPOINTS=http://127.0.0.1:1", // nothing listens there
			"ETCD_BACKUP_COMMAND_TIMEOUT=1s", "ETCD_BACKUP_DIAL_TIMEOUT=1s",
		}
		id := mustCLI(t, env, "snapshot", "--repo", repoDir, "--cluster", "staging", "--endpoints", ep).lastLine()
		envSameIDs(t, "--cluster staging", envListIDs(t, nil, "--repo", repoDir, "--cluster", "staging"), id)
		envSameIDs(t, "prod after a --cluster staging snapshot", envListIDs(t, prod), prodID)
		envSameIDs(t, "ETCD_BACKUP_REPO ignored for --repo", envListIDs(t, nil, "--repo", otherRepo, "--cluster", "staging"))
		// The environment alone (dead endpoint) does fail, quickly, with
		// the timeouts from the environment.
		start := time.Now()
		r := cli(t, env, "snapshot")
		if r.code != 6 {
			t.Errorf("snapshot against a dead endpoint from ETCD_BACKUP_ENDPOINTS: exit %d, want 6\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "127.0.0.1:1") {
			t.Errorf("error does not name the endpoint from the environment:\n%s", r.stderr)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("took %v: ETCD_BACKUP_COMMAND_TIMEOUT=1s not applied", d)
		}
	})

	// Lists: a comma-separated ETCD_BACKUP_ENDPOINTS is several endpoints.
	t.Run("endpoint list", func(t *testing.T) {
		env := append(append([]string{}, base...), "ETCD_BACKUP_CLUSTER=list",
			"ETCD_BACKUP_ENDPOINTS=http://127.0.0.1:1,"+ep, "ETCD_BACKUP_COMMAND_TIMEOUT=1s")
		id := mustCLI(t, env, "snapshot").lastLine()
		envSameIDs(t, "cluster list", envListIDs(t, env), id)
	})

	// Encryption keys and restore settings from the environment.
	t.Run("keys and restore", func(t *testing.T) {
		keys := t.TempDir()
		idFile, recipient := s3AgeKey(t, keys, "key.txt")
		env := append(append([]string{}, base...), "ETCD_BACKUP_CLUSTER=enc", "ETCD_BACKUP_ENCRYPT_TO="+recipient)
		id := mustCLI(t, env, "snapshot").lastLine()
		if r := cli(t, env, "verify", id); r.code != 5 {
			t.Errorf("verify of a backup encrypted via ETCD_BACKUP_ENCRYPT_TO without a key: exit %d, want 5\n%s", r.code, r.stderr)
		}
		withKey := append(append([]string{}, env...), "ETCD_BACKUP_IDENTITY="+idFile)
		mustCLI(t, withKey, "verify", id)

		dataDir := t.TempDir() + "/m1.etcd"
		ic := "m1=http://127.0.0.1:2380"
		r := mustCLI(t, append(withKey, "ETCD_BACKUP_DATA_DIR="+dataDir, "ETCD_BACKUP_NAME=m1",
			"ETCD_BACKUP_INITIAL_CLUSTER="+ic, "ETCD_BACKUP_DRY_RUN=true"), "restore")
		for _, want := range []string{"would restore backup " + id, dataDir, "member m1", ic} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("restore dry run from the environment does not say %q:\n%s", want, r.stdout)
			}
		}
	})

	// Bad values: a usage error (exit 2) naming the variable, before
	// anything else happens.
	t.Run("bad values", func(t *testing.T) {
		for _, tc := range []struct{ cmd, kv string }{
			{"snapshot", "ETCD_BACKUP_DIAL_TIMEOUT=abc"},
			{"snapshot", "ETCD_BACKUP_COMMAND_TIMEOUT=10"},
			{"snapshot", "ETCD_BACKUP_COMPRESSION_LEVEL=fast"},
			{"snapshot", "ETCD_BACKUP_INSECURE_SKIP_TLS_VERIFY=maybe"},
			{"list", "ETCD_BACKUP_JSON=yes please"},
			{"list", "ETCD_BACKUP_VERBOSE=loud"},
			{"verify", "ETCD_BACKUP_QUIET=2"},
			{"restore", "ETCD_BACKUP_BUMP_REVISION=-1"},
			{"restore", "ETCD_BACKUP_FOUNDING=maybe"},
			{"restore", "ETCD_BACKUP_DRY_RUN=maybe"},
		} {
			name, _, _ := strings.Cut(tc.kv, "=")
			r := cli(t, append(append([]string{}, base...), tc.kv), tc.cmd)
			if r.code != 2 {
				t.Errorf("%s %s: exit %d, want 2\nstdout: %s\nstderr: %s", tc.kv, tc.cmd, r.code, r.stdout, r.stderr)
				continue
			}
			if !strings.Contains(tlsErrorLine(t, r.stderr), name) {
				t.Errorf("%s %s: the error does not name %s:\n%s", tc.kv, tc.cmd, name, r.stderr)
			}
		}
	})

	// Every typed flag of every command is read from the environment: a
	// value it cannot parse is refused with the variable named. Flags come
	// from --help, so a new flag is covered without editing this test.
	t.Run("every typed flag", func(t *testing.T) {
		flagRE := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)(?: (\w+))?\s`)
		bad := map[string]string{"": "maybe", "duration": "abc", "int": "x", "uint": "-1", "uint64": "-1"}
		checked := 0
		for _, cmd := range []string{"snapshot", "list", "verify", "restore"} {
			help := mustCLI(t, nil, cmd, "--help").stdout
			i := strings.Index(help, "\nFlags:")
			if i < 0 {
				t.Fatalf("%s --help has no Flags: section:\n%s", cmd, help)
			}
			help = help[i:] // not the examples
			for _, m := range flagRE.FindAllStringSubmatch(help, -1) {
				flag, typ := m[1], m[2]
				v, ok := bad[typ]
				if !ok || flag == "help" {
					continue // strings take any value
				}
				name := "ETCD_BACKUP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
				r := cli(t, append(append([]string{}, base...), name+"="+v), cmd)
				if r.code != 2 || !strings.Contains(r.stderr, name) {
					t.Errorf("%s=%s %s (--%s %s): exit %d, want 2 naming %s\nstderr: %s", name, v, cmd, flag, typ, r.code, name, r.stderr)
				}
				checked++
			}
		}
		t.Logf("%d typed flags checked", checked)
		if checked < 12 {
			t.Errorf("checked only %d typed flags: is the --help format still parsed?", checked)
		}
	})
}
