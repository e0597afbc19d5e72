package writer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestChainRefusesAnotherCluster: a chain is continued only on the cluster
// its snapshot came from; another cluster (or the same one restored with a
// new token) ends it with ErrChainBroken, and nothing of the other cluster
// is appended.
func TestChainRefusesAnotherCluster(t *testing.T) {
	ctx := context.Background()
	clA, cliA := testenv.StartEtcd(t, 1)
	r := openRepo(t, t.TempDir(), nil)
	base := takeBase(t, cliA, r)
	wa := startWriter(t, "a", writer.Config{Client: newClient(t, clA.Endpoints()), Repo: r, Flush: 50 * time.Millisecond}, base)
	var last int64
	for i := 0; i < 20; i++ {
		resp, err := cliA.Client.Put(ctx, fmt.Sprintf("/a/%02d", i), "A")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	waitFor(t, 10*time.Second, "A sealed", func() bool { return wa.sealed.Load() >= last })
	wa.stop(t, 5*time.Second)

	clB, cliB := testenv.StartEtcd(t, 1)
	var lastB int64
	for i := 0; lastB < last+10; i++ {
		resp, err := cliB.Client.Put(ctx, fmt.Sprintf("/b/%03d", i), "B")
		if err != nil {
			t.Fatal(err)
		}
		lastB = resp.Header.Revision
	}
	t.Logf("cluster A %x chain end %d; cluster B %x at %d", base.ClusterID, last, clB.Members[0].Server.Cluster().ID(), lastB)
	wb := startWriter(t, "b", writer.Config{Client: newClient(t, clB.Endpoints()), Repo: r, Flush: 50 * time.Millisecond}, base)
	for i := 0; i < 5; i++ {
		resp, _ := cliB.Client.Put(ctx, fmt.Sprintf("/b/new%d", i), "B")
		lastB = resp.Header.Revision
	}
	select {
	case <-wb.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a writer on another cluster went on journaling into the chain")
	}
	if !errors.Is(wb.err, writer.ErrChainBroken) {
		t.Fatalf("writer on another cluster returned %v, want ErrChainBroken", wb.err)
	}
	if wb.sealed.Load() != 0 {
		t.Fatalf("writer on another cluster sealed up to revision %d", wb.sealed.Load())
	}
}
