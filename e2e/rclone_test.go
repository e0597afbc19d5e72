package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestRcloneRepositories backs up and restores through Debian's rclone: with
// the old kit's settings (RCLONE_ENDPOINT + RCLONE_CONFIG) to a local remote,
// and with --repo rclone:... --rclone-config to an S3 remote on the test
// server.
func TestRcloneRepositories(t *testing.T) {
	rclone := testenv.Bin(t, "rclone")
	srv := testenv.StartS3(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "rclone.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[site]
type = local

[objects]
type = s3
provider = Other
access_key_id = %s
secret_access_key = %s
endpoint = %s
region = %s
force_path_style = true
no_check_bucket = true
`, srv.AccessKey, srv.SecretKey, "http://"+srv.Endpoint, srv.Region)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Debian's rclone 1.60 cannot use AWS_CA_BUNDLE; run it on PATH as a user would.
	env := []string{"PATH=" + filepath.Dir(rclone) + ":" + os.Getenv("PATH"), "AWS_CA_BUNDLE="}

	c := startCluster(t, "3.6.16", newSpecs(t, "m", 3))
	want := putKeys(t, c.client(), "/rc/", 100, 50)
	eps := strings.Join(c.endpoints(), ",")

	local := filepath.Join(dir, "backups")
	ancestor := append([]string{"RCLONE_ENDPOINT=site:" + local, "RCLONE_CONFIG=" + conf}, env...)
	id1 := mustCLI(t, ancestor, "snapshot", "--endpoints", eps).lastLine()
	if _, err := os.Stat(filepath.Join(local, "clusters", "default", "snapshots", id1+".manifest.json")); err != nil {
		t.Fatalf("RCLONE_ENDPOINT backup not in %s: %v", local, err)
	}
	mustCLI(t, ancestor, "verify", id1)

	s3repo := "rclone:objects:" + srv.Bucket + "/etcd"
	id2 := mustCLI(t, env, "snapshot", "--endpoints", eps, "--repo", s3repo, "--rclone-config", conf).lastLine()
	if out := mustCLI(t, env, "list", "--repo", s3repo, "--rclone-config", conf).stdout; !strings.Contains(out, id2) {
		t.Fatalf("list over rclone misses %s:\n%s", id2, out)
	}
	if r := cli(t, env, "list", "--repo", "rclone:nosuchremote:x", "--rclone-config", conf); r.code == 0 {
		t.Fatalf("unknown rclone remote accepted:\n%s", r.stdout)
	}
	c.killAll()

	specs := newSpecs(t, "r", 3)
	ic := embedded.InitialCluster(specs)
	for _, s := range specs {
		mustCLI(t, env, "restore", id2, "--repo", s3repo, "--rclone-config", conf, "--data-dir", s.DataDir,
			"--name", s.Name, "--initial-cluster", ic, "--initial-cluster-token", "e2e")
	}
	r := startCluster(t, "3.6.16", specs) // same --initial-cluster as the restore
	for _, ep := range r.endpoints() {
		checkKeys(t, ep, "/rc/", want)
	}
}
