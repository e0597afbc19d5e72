package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

const MiB = 1 << 20

// BigSize is the size of the large objects the suite streams: several parts
// of a multipart upload (the S3 backend uses 8 MiB parts; others commonly
// 5-16 MiB), with a short last part.
const BigSize = 40*MiB + 12345

// Run runs the conformance suite. newBackend must return a new, empty backend
// for each call (for example a fresh directory, or a fresh prefix in a
// bucket); it is called once per subtest with that subtest's t, and may
// register cleanups on it. The suite checks the backend as every command
// uses it: wrapped by storage.Wrap (names, retries, resumed reads), and
// also unwrapped where a backend's own behaviour is at stake (GetRange).
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	RunWrapped(t, newBackend, storage.Policy{})
}

// RunWrapped is Run with the wrapper's policy given, for suites that run
// through a faulty network (short backoff and stall bounds keep them fast).
func RunWrapped(t *testing.T, newBackend func(t *testing.T) storage.Backend, p storage.Policy) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
		raw  bool // run on the backend itself, not wrapped
	}{
		{"RoundTrip", testRoundTrip, false},
		{"PutExisting", testPutExisting, false},
		{"NotFound", testNotFound, false},
		{"Remove", testRemove, false},
		{"List", testList, false},
		{"ListStops", testListStops, false},
		{"ReaderFails", testReaderFails, false},
		{"Cancel", testCancel, false},
		{"ConcurrentPuts", testConcurrentPuts, false},
		{"ConcurrentSameName", testConcurrentSameName, false},
		{"InvalidNames", testInvalidNames, false},
		{"Location", testLocation, false},
		{name: "GetRange", fn: testGetRange, raw: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := newBackend(t)
			b := storage.Wrap(raw, p)
			if tc.raw {
				b = raw
			}
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

// Gen is a reader of n deterministic pseudo-random bytes that hides its
// length (no Len, Seek or WriterTo), like a pipe. After failAt bytes (if
// failAt >= 0) it returns failErr. Sum returns the SHA-256 of what it has
// produced so far.
type Gen struct {
	rng     *rand.ChaCha8
	left    int64
	read    int64
	failAt  int64
	failErr error
	before  func(read int64) // called before each Read, with bytes read so far
	h       hashWriter
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// NewGen returns a Gen of n bytes from seed.
func NewGen(seed uint64, n int64) *Gen {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &Gen{rng: rand.NewChaCha8(s), left: n, failAt: -1, h: sha256.New()}
}

// FailAfter makes the reader return err once n bytes have been read.
func (g *Gen) FailAfter(n int64, err error) *Gen {
	g.failAt, g.failErr = n, err
	return g
}

func (g *Gen) Read(p []byte) (int, error) {
	if g.before != nil {
		g.before(g.read)
	}
	if g.failAt >= 0 && g.read >= g.failAt {
		return 0, g.failErr
	}
	if g.left == 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	n = min(n, g.left)
	if g.failAt >= 0 {
		n = min(n, g.failAt-g.read)
	}
	_, _ = g.rng.Read(p[:n])
	_, _ = g.h.Write(p[:n])
	g.left -= n
	g.read += n
	return int(n), nil
}

// Sum is the SHA-256 of the bytes read so far.
func (g *Gen) Sum() []byte { return g.h.Sum(nil) }

// onlyReader hides everything but Read, so backends see a stream of unknown
// length even for in-memory data.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, b storage.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(ctxT(t), name, onlyReader{bytes.NewReader(data)}); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

func get(t *testing.T, b storage.Backend, name string) []byte {
	t.Helper()
	rc, err := b.Get(ctxT(t), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", name, err)
	}
	return data
}

// getSum streams name and returns its size and SHA-256.
func getSum(t *testing.T, b storage.Backend, name string) (int64, []byte) {
	t.Helper()
	rc, err := b.Get(ctxT(t), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", name, err)
	}
	return n, h.Sum(nil)
}

func list(t *testing.T, b storage.Backend, prefix string) []storage.Info {
	t.Helper()
	var infos []storage.Info
	err := b.List(ctxT(t), prefix, func(i storage.Info) error {
		infos = append(infos, i)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return infos
}

func names(infos []storage.Info) []string {
	var n []string
	for _, i := range infos {
		n = append(n, i.Name)
	}
	return n
}

// wantErr checks that err wraps target and names the object, for people.
func wantErr(t *testing.T, op string, err, target error, name string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %v", op, err, target)
	}
	if name != "" && !strings.Contains(err.Error(), name) {
		t.Errorf("%s: error %q does not name the object %q", op, err, name)
	}
}

// wantAbsent checks that name is not visible to Stat, Get or List.
func wantAbsent(t *testing.T, b storage.Backend, name string) {
	t.Helper()
	ctx := ctxT(t)
	_, err := b.Stat(ctx, name)
	wantErr(t, fmt.Sprintf("Stat(%q)", name), err, storage.ErrNotFound, name)
	rc, err := b.Get(ctx, name)
	if err == nil {
		rc.Close()
	}
	wantErr(t, fmt.Sprintf("Get(%q)", name), err, storage.ErrNotFound, name)
	if got := names(list(t, b, "")); slices.Contains(got, name) {
		t.Fatalf("List shows %q: %q", name, got)
	}
}

func testRoundTrip(t *testing.T, b storage.Backend) {
	start := time.Now()
	small := []byte("hello, world\n")
	put(t, b, "small", small)
	put(t, b, "empty", nil)
	if got := get(t, b, "small"); !bytes.Equal(got, small) {
		t.Errorf("Get(small) = %q, want %q", got, small)
	}
	if got := get(t, b, "empty"); len(got) != 0 {
		t.Errorf("Get(empty) = %d bytes, want 0", len(got))
	}

	g := NewGen(1, BigSize)
	if err := b.Put(ctxT(t), "dir/sub/big", g); err != nil {
		t.Fatalf("Put(big, %d bytes streamed): %v", BigSize, err)
	}
	n, sum := getSum(t, b, "dir/sub/big")
	if n != BigSize || !bytes.Equal(sum, g.Sum()) {
		t.Errorf("Get(big): %d bytes sha256 %x, want %d bytes sha256 %x", n, sum, BigSize, g.Sum())
	}

	for _, c := range []struct {
		name string
		size int64
	}{{"small", int64(len(small))}, {"empty", 0}, {"dir/sub/big", BigSize}} {
		info, err := b.Stat(ctxT(t), c.name)
		if err != nil {
			t.Fatalf("Stat(%q): %v", c.name, err)
		}
		if info.Name != c.name || info.Size != c.size {
			t.Errorf("Stat(%q) = %+v, want name %q size %d", c.name, info, c.name, c.size)
		}
		// Backends may store coarse times (S3: seconds); allow slack.
		if info.ModTime.Before(start.Add(-2*time.Second)) || info.ModTime.After(time.Now().Add(2*time.Second)) {
			t.Errorf("Stat(%q).ModTime = %v, want between %v and now", c.name, info.ModTime, start)
		}
	}
}

func testPutExisting(t *testing.T, b storage.Backend) {
	put(t, b, "x", []byte("first"))
	err := b.Put(ctxT(t), "x", onlyReader{strings.NewReader("second")})
	wantErr(t, "Put(existing)", err, storage.ErrExists, "x")

	// A large replacement is refused too (an S3 backend would use a
	// multipart upload for it).
	err = b.Put(ctxT(t), "x", NewGen(2, 20*MiB))
	wantErr(t, "Put(existing, 20 MiB)", err, storage.ErrExists, "x")

	if got := get(t, b, "x"); string(got) != "first" {
		t.Errorf("after refused Puts, Get(x) = %q, want %q", got, "first")
	}
	if got := names(list(t, b, "")); !slices.Equal(got, []string{"x"}) {
		t.Errorf("after refused Puts, List = %q, want [x]", got)
	}

	// Same for a large existing object.
	g := NewGen(3, 17*MiB)
	if err := b.Put(ctxT(t), "big", g); err != nil {
		t.Fatalf("Put(big): %v", err)
	}
	err = b.Put(ctxT(t), "big", onlyReader{strings.NewReader("small")})
	wantErr(t, "Put(existing big)", err, storage.ErrExists, "big")
	if n, sum := getSum(t, b, "big"); n != 17*MiB || !bytes.Equal(sum, g.Sum()) {
		t.Errorf("after refused Put, big changed: %d bytes", n)
	}
}

func testNotFound(t *testing.T, b storage.Backend) {
	ctx := ctxT(t)
	put(t, b, "dir/present", []byte("p"))
	for _, name := range []string{"missing", "dir/missing", "dir", "nodir/missing", "dir/present/below"} {
		_, err := b.Stat(ctx, name)
		wantErr(t, fmt.Sprintf("Stat(%q)", name), err, storage.ErrNotFound, name)
		rc, err := b.Get(ctx, name)
		if err == nil {
			rc.Close()
		}
		wantErr(t, fmt.Sprintf("Get(%q)", name), err, storage.ErrNotFound, name)
		err = b.Remove(ctx, name)
		wantErr(t, fmt.Sprintf("Remove(%q)", name), err, storage.ErrNotFound, name)
	}
	if got := get(t, b, "dir/present"); string(got) != "p" {
		t.Errorf("Get(dir/present) = %q", got)
	}
}

func testRemove(t *testing.T, b storage.Backend) {
	ctx := ctxT(t)
	put(t, b, "a/b/c", []byte("1"))
	put(t, b, "a/d", []byte("2"))
	if err := b.Remove(ctx, "a/b/c"); err != nil {
		t.Fatalf("Remove(a/b/c): %v", err)
	}
	wantAbsent(t, b, "a/b/c")
	if got := names(list(t, b, "")); !slices.Equal(got, []string{"a/d"}) {
		t.Errorf("after Remove, List = %q, want [a/d]", got)
	}
	err := b.Remove(ctx, "a/b/c")
	wantErr(t, "second Remove", err, storage.ErrNotFound, "a/b/c")
	// A removed name can be used again.
	put(t, b, "a/b/c", []byte("3"))
	if got := get(t, b, "a/b/c"); string(got) != "3" {
		t.Errorf("Get(a/b/c) after re-Put = %q, want 3", got)
	}
}

func testList(t *testing.T, b storage.Backend) {
	// Names chosen so that a directory walk in readdir order would be wrong:
	// "a.txt" < "a/x" because '.' < '/', and "a0" > "a/..." because '0' > '/'.
	objs := map[string]int{
		"a/x":    1,
		"a/y/z":  22,
		"a/y/z2": 3,
		"a.txt":  4,
		"a0":     5,
		"ab":     6,
		"b":      0,
		"snap/2024-01-02T03:04:05Z/manifest.json": 7,
		"snap/2024-01-02T03:04:05Z/data":          8,
		"snap/2023-12-31T23:59:59Z/manifest.json": 9,
		"z-last": 10,
	}
	for name, size := range objs {
		put(t, b, name, bytes.Repeat([]byte{'x'}, size))
	}
	all := slices.Sorted(func(yield func(string) bool) {
		for n := range objs {
			if !yield(n) {
				return
			}
		}
	})

	infos := list(t, b, "")
	if got := names(infos); !slices.Equal(got, all) {
		t.Errorf("List(\"\") =\n  %q\nwant\n  %q", got, all)
	}
	for _, i := range infos {
		if i.Size != int64(objs[i.Name]) {
			t.Errorf("List: %s has size %d, want %d", i.Name, i.Size, objs[i.Name])
		}
		if i.ModTime.IsZero() {
			t.Errorf("List: %s has no ModTime", i.Name)
		}
	}

	for _, prefix := range []string{"a", "a/", "a/y", "a/y/", "a/y/z", "a.", "snap/", "snap/2024", "snap/2024-01-02T03:04:05Z/", "z", "nothing", "a/nothing/", "b/"} {
		var want []string
		for _, n := range all {
			if strings.HasPrefix(n, prefix) {
				want = append(want, n)
			}
		}
		if got := names(list(t, b, prefix)); !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func testListStops(t *testing.T, b storage.Backend) {
	for _, n := range []string{"1", "2", "3"} {
		put(t, b, n, []byte(n))
	}
	stop := errors.New("stop here")
	var seen []string
	err := b.List(ctxT(t), "", func(i storage.Info) error {
		seen = append(seen, i.Name)
		if i.Name == "2" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List with failing fn: err = %v, want %v", err, stop)
	}
	if !slices.Equal(seen, []string{"1", "2"}) {
		t.Errorf("List with failing fn saw %q, want [1 2]", seen)
	}
}

var errBoom = errors.New("source failed (test)")

func testReaderFails(t *testing.T, b storage.Backend) {
	// Fail inside the first part, then after a whole part has been uploaded.
	for _, failAt := range []int64{0, 1 * MiB, 20 * MiB} {
		name := fmt.Sprintf("fail/at-%d", failAt)
		err := b.Put(ctxT(t), name, NewGen(4, BigSize).FailAfter(failAt, errBoom))
		if !errors.Is(err, errBoom) {
			t.Fatalf("Put(%q) with a reader failing after %d bytes: err = %v, want one wrapping %v", name, failAt, err, errBoom)
		}
		wantAbsent(t, b, name)
		if got := list(t, b, ""); len(got) != 0 {
			t.Fatalf("after failed Put, List shows %q", names(got))
		}
		// The name is free: a retry succeeds.
		put(t, b, name, []byte("retry"))
		if got := get(t, b, name); string(got) != "retry" {
			t.Fatalf("Get(%q) after retry = %q", name, got)
		}
		if err := b.Remove(ctxT(t), name); err != nil {
			t.Fatalf("Remove(%q): %v", name, err)
		}
	}
}

func testCancel(t *testing.T, b storage.Backend) {
	// Already cancelled.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := b.Put(ctx, "cancelled/before", onlyReader{strings.NewReader("data")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: err = %v, want one wrapping %v", err, context.Canceled)
	}
	wantAbsent(t, b, "cancelled/before")

	// Cancelled while streaming: inside the first part, and after one.
	for _, at := range []int64{1 * MiB, 20 * MiB} {
		name := fmt.Sprintf("cancelled/at-%d", at)
		ctx, cancel := context.WithCancel(t.Context())
		g := NewGen(5, BigSize)
		g.before = func(read int64) {
			if read >= at {
				cancel()
			}
		}
		err := b.Put(ctx, name, g)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put(%q) cancelled after %d bytes: err = %v, want one wrapping %v", name, at, err, context.Canceled)
		}
		wantAbsent(t, b, name)
		if got := list(t, b, ""); len(got) != 0 {
			t.Fatalf("after cancelled Put, List shows %q", names(got))
		}
		put(t, b, name, []byte("retry"))
		if err := b.Remove(ctxT(t), name); err != nil {
			t.Fatalf("Remove(%q): %v", name, err)
		}
	}
}

func testConcurrentPuts(t *testing.T, b storage.Backend) {
	const n = 8
	sizes := []int64{0, 1, 1000, 100 << 10, 1 * MiB, 3 * MiB, 17 * MiB, 5}
	sums := make([][]byte, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			g := NewGen(uint64(100+i), sizes[i])
			errs[i] = b.Put(ctxT(t), fmt.Sprintf("c/%d", i), g)
			sums[i] = g.Sum()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Put(c/%d): %v", i, err)
		}
	}
	if t.Failed() {
		return
	}
	var want []string
	for i := range n {
		name := fmt.Sprintf("c/%d", i)
		want = append(want, name)
		size, sum := getSum(t, b, name)
		if size != sizes[i] || !bytes.Equal(sum, sums[i]) {
			t.Errorf("Get(%s): %d bytes, want %d, content match %v", name, size, sizes[i], bytes.Equal(sum, sums[i]))
		}
	}
	if got := names(list(t, b, "c/")); !slices.Equal(got, want) {
		t.Errorf("List(c/) = %q, want %q", got, want)
	}
}

func testConcurrentSameName(t *testing.T, b storage.Backend) {
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			data := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
			errs[i] = b.Put(ctxT(t), "same", onlyReader{bytes.NewReader(data)})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("two concurrent Puts of the same name succeeded (%d and %d): Put is not create-only", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrExists):
			t.Errorf("concurrent Put %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no concurrent Put succeeded: %v", errs)
	}
	got := get(t, b, "same")
	if want := bytes.Repeat([]byte{byte('a' + winner)}, 64<<10); !bytes.Equal(got, want) {
		t.Errorf("content is not the winner's (%c): %d bytes starting %q", 'a'+winner, len(got), got[:min(len(got), 8)])
	}
}

func testInvalidNames(t *testing.T, b storage.Backend) {
	for _, name := range []string{"", "/abs", "../up", "a/../b", "a//b", "a/", "./a", "."} {
		err := b.Put(ctxT(t), name, onlyReader{strings.NewReader("x")})
		if err == nil {
			t.Errorf("Put(%q) succeeded, want an error", name)
		} else if errors.Is(err, storage.ErrExists) {
			t.Errorf("Put(%q) = %v, want an invalid-name error", name, err)
		}
	}
	if got := names(list(t, b, "")); len(got) != 0 {
		t.Errorf("after invalid Puts, List = %q", got)
	}
}

func testLocation(t *testing.T, b storage.Backend) {
	if b.Location() == "" {
		t.Error("Location() is empty")
	}
}

// testGetRange checks storage.RangeGetter, which every backend implements:
// reads from an offset, the empty read at the end, and the pin that keeps
// a resumed read on the object it started.
func testGetRange(t *testing.T, b storage.Backend) {
	rg, ok := b.(storage.RangeGetter)
	if !ok {
		t.Fatalf("%T does not implement storage.RangeGetter: its reads cannot resume after a cut", b)
	}
	ctx := ctxT(t)
	w := storage.Wrap(b, storage.Policy{})
	data := make([]byte, 3*MiB+17)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	put(t, w, "r/obj", data)
	got, pin, err := getRange(ctx, rg, "r/obj", 0, "")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetRange(0) read %d bytes, err %v; want the %d bytes stored", len(got), err, len(data))
	}
	if pin == "" {
		// A backend may leave a first read unpinned when pinning costs a
		// request (rclone), but it must pin a resumed one: the resumed
		// read pins the object from then on.
		got, pin, err = getRange(ctx, rg, "r/obj", 1, "")
		if err != nil || !bytes.Equal(got, data[1:]) {
			t.Fatalf("GetRange(1) without a pin read %d bytes (err %v), want %d bytes from that offset", len(got), err, len(data)-1)
		}
		if pin == "" {
			t.Fatalf("%T pins neither a first read nor a resumed one: a resumed read cannot tell a replaced object", b)
		}
	}
	for _, off := range []int64{1, MiB + 3, int64(len(data)) - 1, int64(len(data))} {
		got, p, err := getRange(ctx, rg, "r/obj", off, pin)
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("GetRange(%d, pin %q) read %d bytes (err %v), want %d bytes from that offset", off, pin, len(got), err, len(data)-int(off))
		}
		if p != pin {
			t.Errorf("GetRange(%d, pin %q) returned pin %q for the same object", off, pin, p)
		}
	}
	if _, _, err := getRange(ctx, rg, "r/missing", 0, ""); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetRange of a missing object: %v, want ErrNotFound", err)
	}
	if _, _, err := getRange(ctx, rg, "r/missing", 1, pin); !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrChanged) {
		t.Errorf("resumed GetRange of a missing object: %v, want ErrNotFound or ErrChanged", err)
	}
	// Another object under the same name: a resumed read must not splice.
	if err := w.Remove(ctx, "r/obj"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	other := bytes.Repeat([]byte("other "), len(data)/6+1)
	put(t, w, "r/obj", other)
	if _, _, err := getRange(ctx, rg, "r/obj", 10, pin); !errors.Is(err, storage.ErrChanged) {
		t.Errorf("GetRange with the pin of a replaced object: %v, want ErrChanged", err)
	}
}

// getRange reads name from off with GetRange and returns the bytes and
// the pin. The suite may run through a faulty network (RunWrapped) and
// nothing else retries a backend's own GetRange, so retryable errors and
// failures mid-body are tried again, up to 10 times; other errors
// (ErrNotFound, ErrChanged) are returned at once.
func getRange(ctx context.Context, rg storage.RangeGetter, name string, off int64, pin string) ([]byte, string, error) {
	var err error
	for try := range 10 {
		if try > 0 {
			select {
			case <-ctx.Done():
				return nil, "", fmt.Errorf("%w (after %v)", ctx.Err(), err)
			case <-time.After(time.Duration(try) * 50 * time.Millisecond):
			}
		}
		var (
			rc  io.ReadCloser
			got string
		)
		rc, got, err = rg.GetRange(ctx, name, off, pin)
		if err != nil {
			if storage.IsRetryable(err) {
				continue
			}
			return nil, "", err
		}
		var data []byte
		data, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			return data, got, nil
		}
	}
	return nil, "", err
}
