package writer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestProgressWhileIdle: with nothing changing, etcd still confirms about
// every Flush that the journal is caught up, at the cluster's revision.
func TestProgressWhileIdle(t *testing.T) {
	_, cli := testenv.StartEtcd(t, 1)
	r := openRepo(t, t.TempDir(), nil)
	base := takeBase(t, cli, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	resp, err := cli.Put(ctx, "/idle", "x")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var rev atomic.Int64
	w := startWriter(t, "w", writer.Config{Client: cli.Client, Repo: r, Flush: 100 * time.Millisecond,
		OnProgress: func(r int64, at time.Time) { calls.Add(1); rev.Store(r) }}, base)
	waitFor(t, 10*time.Second, "three progress confirmations", func() bool { return calls.Load() >= 3 })
	if rev.Load() != resp.Header.Revision {
		t.Errorf("progress at revision %d, want the cluster's %d", rev.Load(), resp.Header.Revision)
	}
	if err := w.stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
