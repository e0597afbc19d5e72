package writer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// TestCompactedKeepsReceivedRevisions: backpressure, then etcd compacts
// while the watch is paused: the reopened watch reports ErrCompacted, and the
// revisions already received (contiguous, and gone from etcd now) are still
// sealed before Run returns.
func TestCompactedKeepsReceivedRevisions(t *testing.T) {
	_, cli := testenv.StartEtcd(t, 1)
	release := make(chan struct{})
	var puts atomic.Int64
	r := openRepo(t, t.TempDir(), func(b storage.Backend) storage.Backend {
		return &hooked{Backend: b, put: func(ctx context.Context, name string, rd io.Reader, inner func(io.Reader) error) error {
			if isObject(name) {
				switch puts.Add(1) {
				case 1:
					<-release
				default:
					select { // a slowish upload
					case <-time.After(time.Second):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			return inner(rd)
		}}
	})
	base := takeBase(t, cli, r)
	wr := startWriter(t, "w", writer.Config{Client: cli.Client, Repo: r, Flush: 50 * time.Millisecond, MaxSegment: 4000}, base)
	val := strings.Repeat("x", 200)
	put := func(n int) int64 {
		var rev int64
		for i := 0; i < n; i++ {
			resp, err := cli.Client.Put(context.Background(), fmt.Sprintf("/bp/%04d", i), val)
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		return rev
	}
	put(20)
	waitFor(t, 5*time.Second, "first upload to start", func() bool { return puts.Load() >= 1 })
	rev := put(300)
	time.Sleep(500 * time.Millisecond) // the watch is cancelled under backpressure
	received := base.Revision + wr.events.Load()
	if received >= rev {
		t.Fatalf("the writer applied no backpressure: it received %d of %d revisions with its uploads blocked", received, rev)
	}
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case <-wr.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if !errors.Is(wr.err, writer.ErrCompacted) {
		t.Fatalf("Run: %v", wr.err)
	}
	end := chainEnd(t, r, base)
	t.Logf("received up to %d, chain sealed to %d, compacted at %d", received, end, rev)
	if end < received {
		t.Errorf("revisions %d..%d were received (and are now compacted in etcd) but never sealed", end+1, received)
	}
}
