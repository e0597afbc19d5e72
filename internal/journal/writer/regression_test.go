package writer_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// Regression tests of journaler bugs found and fixed; each says what the
// correct behaviour is.

// TestObjectPutLandedButReported: the store keeps a journal object but the
// writer sees a retryable error (a timeout after the object store
// committed the write). The retry finds the object exists: it is the
// writer's own (the same bytes), the seal succeeded, and the chain goes on
// after it. (Framing 1's version of this bug: seal took its own manifest
// for another writer's and removed the payload it names.)
func TestObjectPutLandedButReported(t *testing.T) {
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	hist := watchHistory(t, cl.Endpoints(), base.Revision+1)
	var landed atomic.Int64
	r := openRepo(t, root, func(inner storage.Backend) storage.Backend {
		return &hooked{Backend: inner, put: func(ctx context.Context, name string, rd io.Reader, put func(io.Reader) error) error {
			err := put(rd)
			if err == nil && isObject(name) && landed.Add(1) == 1 {
				return storage.Retryable(errors.New("timeout waiting for the response (the object was stored)"))
			}
			return err
		}}
	})
	wr := startWriter(t, "w", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r, Flush: 50 * time.Millisecond}, base)
	w := newWorkload(t, cli.Client, 9, "/landed/")
	for i := 0; i < 30; i++ {
		w.step()
	}
	last := w.current()
	waitFor(t, 10*time.Second, "the chain to reach the last revision", func() bool { return chainEnd(t, r, base) >= last })
	if err := wr.stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if landed.Load() == 0 {
		t.Fatal("no object was written")
	}
	c := readChain(t, r, base)
	if int(wr.segments.Load()) != len(c.objs) {
		t.Errorf("OnSealed told of %d objects, the writer published %d", wr.segments.Load(), len(c.objs))
	}
	checkReported(t, c, wr)
	if n := c.overlapping(); n != 0 {
		t.Errorf("%d overlapping objects: the retried write was sealed twice", n)
	}
	compareEvents(t, c.recs, hist.upTo(t, last))
}

// TestStopWhileUploadRetrying: the repository is unreachable (every upload
// fails with a retryable error) and the writer holds nothing but the
// segment its uploader keeps retrying. When its context is done, Run must
// give up after SealTimeout and return an error. Today it waits for the
// uploader, which retries until upCtx is canceled, which happens only when
// Run returns: Run never returns.
func TestStopWhileUploadRetrying(t *testing.T) {
	cl, cli := testenv.StartEtcd(t, 1)
	root := t.TempDir()
	base := takeBase(t, cli, openRepo(t, root, nil))
	var attempts atomic.Int64
	var permanent atomic.Bool
	r := openRepo(t, root, func(inner storage.Backend) storage.Backend {
		return &hooked{Backend: inner, put: func(ctx context.Context, name string, rd io.Reader, put func(io.Reader) error) error {
			attempts.Add(1)
			if permanent.Load() {
				return errors.New("repository gone")
			}
			return storage.Retryable(errors.New("connection refused"))
		}}
	})
	const sealTimeout = 500 * time.Millisecond
	wr := startWriter(t, "w", writer.Config{Client: newClient(t, cl.Endpoints()), Repo: r, Flush: 50 * time.Millisecond, SealTimeout: sealTimeout}, base)
	// Registered after startWriter's cleanup, so it runs first: a hung Run
	// then ends at its next retry.
	t.Cleanup(func() { permanent.Store(true) })
	if _, err := cli.Put(context.Background(), "/retry/k", "v"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first upload attempt", func() bool { return attempts.Load() > 0 })
	time.Sleep(100 * time.Millisecond) // the writer holds nothing more
	err := wr.stop(t, sealTimeout+3*time.Second)
	if err == nil {
		t.Fatal("Run returned nil though it could not seal what it had received")
	}
	t.Logf("Run: %v", err)
}
