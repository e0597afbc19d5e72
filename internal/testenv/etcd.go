package testenv

import (
	"context"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
)

// StartEtcd starts an in-process cluster of n members on loopback ports and
// a client on all of them; both are closed when the test ends.
func StartEtcd(t testing.TB, n int) (*embedded.Cluster, *etcd.Client) {
	t.Helper()
	specs, err := embedded.NewSpecs(t.TempDir(), "m", n)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := embedded.Start(context.Background(), specs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	cli, err := etcd.Connect(etcd.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cl, cli
}
