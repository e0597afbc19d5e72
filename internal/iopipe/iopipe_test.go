package iopipe

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestReadAheadYieldsEverythingThenTheSourceError(t *testing.T) {
	data := randomBytes(1<<20 + 12345)
	for _, tc := range []struct {
		name string
		src  io.Reader
	}{
		{"whole", bytes.NewReader(data)},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(data))},
		{"data with EOF", iotest.DataErrReader(bytes.NewReader(data))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ReadAhead(tc.src, 3, 64<<10)
			defer r.Close()
			got, err := io.ReadAll(iotest.HalfReader(r))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, err %v; want %d bytes", len(got), err, len(data))
			}
		})
	}
	boom := errors.New("connection reset")
	r := ReadAhead(io.MultiReader(bytes.NewReader(data[:100000]), iotest.ErrReader(boom)), 2, 4096)
	defer r.Close()
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) || !bytes.Equal(got, data[:100000]) {
		t.Fatalf("got %d bytes, err %v; want the 100000 bytes before the failure, then it", len(got), err)
	}
}

// blockingReader blocks in Read until closed, as a stalled download does.
type blockingReader struct{ closed chan struct{} }

func (b *blockingReader) Read([]byte) (int, error) { <-b.closed; return 0, errors.New("closed") }
func (b *blockingReader) Close() error             { close(b.closed); return nil }

func TestReadAheadCloseUnblocksAStalledSource(t *testing.T) {
	r := ReadAhead(&blockingReader{closed: make(chan struct{})}, 2, 1024)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Wait() // the stalled Read ended when Close closed the source
}

type failingWriter struct {
	n   int
	err error
	buf bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.buf.Len()+len(p) > f.n {
		return 0, f.err
	}
	return f.buf.Write(p)
}

func TestWriteBehindWritesInOrder(t *testing.T) {
	data := randomBytes(3<<20 + 7)
	var out bytes.Buffer
	w := WriteBehind(&out, 2, 100000)
	for p := data; len(p) > 0; {
		k := min(len(p), 1+len(p)%77777)
		if n, err := w.Write(p[:k]); n != k || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("Close: %v; wrote %d of %d bytes, equal %v", err, out.Len(), len(data), bytes.Equal(out.Bytes(), data))
	}
}

func TestWriteBehindReportsTheWriteError(t *testing.T) {
	full := errors.New("no space left on device")
	fw := &failingWriter{n: 250000, err: full}
	w := WriteBehind(fw, 2, 100000)
	data := randomBytes(1 << 20)
	var werr error
	for p := data; len(p) > 0 && werr == nil; p = p[min(len(p), 4096):] {
		_, werr = w.Write(p[:min(len(p), 4096)])
	}
	if cerr := w.Close(); !errors.Is(cerr, full) {
		t.Fatalf("Close: %v, want %v", cerr, full)
	}
	if werr != nil && !errors.Is(werr, full) {
		t.Fatalf("Write: %v", werr)
	}
}
