package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// s3AgeKey generates an age identity, writes it to dir/name and returns the
// file and the public recipient.
func s3AgeKey(t *testing.T, dir, name string) (identityFile, recipient string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	identityFile = filepath.Join(dir, name)
	if err := os.WriteFile(identityFile, []byte("# test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return identityFile, id.Recipient().String()
}

// TestS3EncryptedDisasterRecovery runs the whole runbook through the CLI
// against a real S3 server: encrypted backup of a three-member etcd 3.6,
// list, verify with and without the key, restore of all three members on new
// peer URLs, every key read back from every member.
func TestS3EncryptedDisasterRecovery(t *testing.T) {
	srv := testenv.StartS3(t)
	env := srv.Env()
	repoURL := srv.URL("etcd/prod")
	keys := t.TempDir()
	id1, r1 := s3AgeKey(t, keys, "key1.txt")
	id2, r2 := s3AgeKey(t, keys, "key2.txt")
	other, _ := s3AgeKey(t, keys, "other.txt")
	recipients := filepath.Join(keys, "recipients.txt")
	if err := os.WriteFile(recipients, []byte("# ops team\n"+r2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	old := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	want := putKeys(t, old.client(), "/registry/secrets/", 200, 100)

	snap := mustCLI(t, env, "snapshot", "--endpoints", strings.Join(old.endpoints(), ","), "--repo", repoURL,
		"--encrypt-to", r1, "--encrypt-to-file", recipients)
	id := snap.lastLine()

	// The backup is in the bucket, under the prefix.
	objects := 0
	for obj := range srv.Client(t).ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Prefix: "etcd/prod/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		objects++
	}
	if objects == 0 {
		t.Fatalf("no object under etcd/prod/ in bucket %s", srv.Bucket)
	}

	var listed []s3ListEntry
	if err := json.Unmarshal([]byte(mustCLI(t, env, "list", "--repo", repoURL, "--json").stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != id {
		t.Fatalf("list shows %+v, want one backup %s", listed, id)
	}
	if e := listed[0]; e.StoredSize <= 0 || e.Size <= 0 || !e.Encrypted || e.Error != "" ||
		!strings.HasPrefix(e.EtcdVersion, "3.6.") || e.Revision <= 0 {
		t.Fatalf("list entry %+v: want stored_size > 0, encrypted, etcd 3.6", e)
	}

	// Either recipient's identity opens it; no identity, or another one, is
	// a key error (exit 5).
	for _, key := range []string{id1, id2} {
		v := mustCLI(t, env, "verify", id, "--repo", repoURL, "--identity", key)
		if !strings.Contains(v.stdout, id+" ok") {
			t.Fatalf("verify output %q", v.stdout)
		}
	}
	for _, args := range [][]string{nil, {"--identity", other}} {
		r := cli(t, env, append([]string{"verify", id, "--repo", repoURL}, args...)...)
		t.Logf("verify %v: exit %d\n%s", args, r.code, r.stderr)
		if r.code != 5 {
			t.Fatalf("verify %v of an encrypted backup: exit %d, want 5\nstderr: %s", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "--identity") {
			t.Errorf("no hint at --identity:\n%s", r.stderr)
		}
	}

	old.killAll()

	specs := newSpecs(t, "m", 3) // new machines: new peer and client URLs
	ic := embedded.InitialCluster(specs)
	for _, s := range specs {
		mustCLI(t, env, "restore", "latest", "--repo", repoURL, "--identity", id1, "--data-dir", s.DataDir,
			"--name", s.Name, "--initial-cluster", ic, "--initial-cluster-token", "e2e")
	}
	restored := startCluster(t, "3.6.16", specs) // same --initial-cluster as the restore
	for _, ep := range restored.endpoints() {
		checkKeys(t, ep, "/registry/secrets/", want)
	}
	ml, err := restored.client().MemberList(t.Context())
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list after restore: %v %v", ml, err)
	}
	for _, m := range ml.Members {
		if len(m.PeerURLs) != 1 || !strings.Contains(ic, m.Name+"="+m.PeerURLs[0]) {
			t.Errorf("member %s has peer URLs %v, want its entry in %s", m.Name, m.PeerURLs, ic)
		}
	}
}

// s3ListEntry is one entry of `list --json`.
type s3ListEntry struct {
	ID          string `json:"id"`
	Revision    int64  `json:"revision"`
	EtcdVersion string `json:"etcd_version"`
	Size        int64  `json:"size"`
	StoredSize  int64  `json:"stored_size"`
	Encrypted   bool   `json:"encrypted"`
	Error       string `json:"error"`
}

// TestS3BadRepository: a missing bucket is "no such repository" (exit 3)
// with a hint, and a malformed s3:// URL is a usage error (exit 2), for
// readers and for snapshot, before etcd is contacted.
func TestS3BadRepository(t *testing.T) {
	srv := testenv.StartS3(t)
	env := srv.Env()
	q := "?endpoint=http://" + srv.Endpoint + "&region=" + srv.Region
	// Nothing listens here: a repository error must come before any
	// attempt to reach etcd.
	noEtcd := "http://127.0.0.1:1"

	t.Run("unknown bucket", func(t *testing.T) {
		repoURL := "s3://nosuchbucket/x" + q
		for _, args := range [][]string{
			{"list", "--repo", repoURL},
			{"verify", "--repo", repoURL},
			{"snapshot", "--repo", repoURL, "--endpoints", noEtcd},
		} {
			r := cli(t, env, args...)
			t.Logf("%s: exit %d\n%s", args[0], r.code, r.stderr)
			if r.code != 3 {
				t.Fatalf("%v: exit %d, want 3\nstderr: %s", args, r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "nosuchbucket") || !strings.Contains(r.stderr, "hint:") {
				t.Errorf("%v: error does not name the bucket or has no hint:\n%s", args, r.stderr)
			}
			if strings.Contains(r.stderr, srv.SecretKey) || strings.Contains(r.stderr, srv.AccessKey) {
				t.Errorf("%v: credentials in the output:\n%s", args, r.stderr)
			}
		}
	})

	for _, tc := range []struct {
		name, url, want string
	}{
		{"endpoint without scheme", "s3://" + srv.Bucket + "/x?endpoint=" + srv.Endpoint, "has no scheme"},
		{"endpoint with bad scheme", "s3://" + srv.Bucket + "/x?endpoint=ftp://" + srv.Endpoint, "scheme must be http or https"},
		{"endpoint with path", "s3://" + srv.Bucket + "/x?endpoint=http://" + srv.Endpoint + "/bucket", "no path"},
		{"endpoint bad port", "s3://" + srv.Bucket + "/x?endpoint=http://127.0.0.1:99999", "bad port"},
		{"server in place of bucket", "s3://" + srv.Endpoint + "/" + srv.Bucket, "?endpoint="},
		{"unknown parameter", "s3://" + srv.Bucket + "/x?endpiont=http://" + srv.Endpoint, "unknown parameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{
				{"list", "--repo", tc.url},
				{"snapshot", "--repo", tc.url, "--endpoints", noEtcd},
			} {
				r := cli(t, env, args...)
				t.Logf("%s: exit %d\n%s", args[0], r.code, r.stderr)
				if r.code != 2 {
					t.Fatalf("%v: exit %d, want 2\nstderr: %s", args, r.code, r.stderr)
				}
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("%v: error does not say %q:\n%s", args, tc.want, r.stderr)
				}
			}
		})
	}
}
