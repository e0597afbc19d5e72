package iopipe

import (
	"errors"
	"io"
	"sync"
)

// chunk is one filled buffer passed between the goroutines.
type chunk struct {
	buf []byte
	n   int
	err error
}

// Reader is returned by ReadAhead.
type Reader struct {
	src    io.Reader
	full   chan chunk
	free   chan []byte
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	cur    chunk
	off    int
	err    error
	closer io.Closer
}

// ReadAhead returns a reader of src that reads up to n buffers of size
// bytes ahead of its consumer on its own goroutine. src's error (io.EOF at
// the end) is returned once the bytes read before it were consumed. Close
// stops the goroutine and closes src when it is an io.Closer.
func ReadAhead(src io.Reader, n, size int) *Reader {
	if n < 1 {
		n = 1
	}
	r := &Reader{src: src, full: make(chan chunk, n), free: make(chan []byte, n),
		stop: make(chan struct{}), done: make(chan struct{})}
	if c, ok := src.(io.Closer); ok {
		r.closer = c
	}
	for range n {
		r.free <- make([]byte, size)
	}
	go r.fill()
	return r
}

func (r *Reader) fill() {
	defer close(r.done)
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.stop:
			return
		}
		n, err := io.ReadAtLeast(r.src, buf, len(buf))
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		select {
		case r.full <- chunk{buf: buf, n: n, err: err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read copies the bytes read ahead into p.
func (r *Reader) Read(p []byte) (int, error) {
	for r.off >= r.cur.n {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur.buf != nil {
			r.free <- r.cur.buf
		}
		r.cur, r.off = <-r.full, 0
		if r.cur.err != nil {
			r.err = r.cur.err
		}
		if r.cur.n == 0 && r.err == nil {
			continue
		}
	}
	n := copy(p, r.cur.buf[r.off:r.cur.n])
	r.off += n
	return n, nil
}

// Err returns the source's error that Read has reached (io.EOF at the
// end), or nil. It belongs to the consumer's goroutine, as Read does.
func (r *Reader) Err() error { return r.err }

// Close stops reading ahead and closes the source (when it is a Closer).
// It does not wait for a Read of the source in progress: that one ends
// when the source is closed, and its bytes are dropped.
func (r *Reader) Close() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		if r.closer != nil {
			err = r.closer.Close()
		}
	})
	return err
}

// Wait returns once the reading goroutine has ended (after the source's
// error, or after Close and the end of the source's Read in progress).
func (r *Reader) Wait() { <-r.done }

// Writer is returned by WriteBehind.
type Writer struct {
	dst  io.Writer
	size int
	cur  []byte
	full chan []byte
	free chan []byte
	done chan struct{}
	mu   sync.Mutex
	err  error // the first write error of dst
	once sync.Once
}

// WriteBehind returns a writer that collects what it is given into
// buffers of size bytes and writes each full one to dst on its own
// goroutine, with up to n buffers in flight. A write error of dst is
// returned by a later Write and by Close. Close writes what is left and
// waits for every write; it does not close dst.
func WriteBehind(dst io.Writer, n, size int) *Writer {
	if n < 1 {
		n = 1
	}
	w := &Writer{dst: dst, size: size, full: make(chan []byte, n), free: make(chan []byte, n+1), done: make(chan struct{})}
	for range n + 1 {
		w.free <- make([]byte, 0, size)
	}
	go w.drain()
	return w
}

func (w *Writer) drain() {
	defer close(w.done)
	for buf := range w.full {
		if w.failed() == nil {
			if _, err := w.dst.Write(buf); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
		}
		w.free <- buf[:0]
	}
}

func (w *Writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Write buffers p, handing each full buffer to the writing goroutine.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		if w.cur == nil {
			w.cur = <-w.free
		}
		k := copy(w.cur[len(w.cur):w.size], p)
		w.cur = w.cur[:len(w.cur)+k]
		p = p[k:]
		written += k
		if len(w.cur) == w.size {
			w.full <- w.cur
			w.cur = nil
		}
	}
	return written, nil
}

// Close writes what is buffered and waits for every write to end; it
// returns the first write error.
func (w *Writer) Close() error {
	w.once.Do(func() {
		if len(w.cur) > 0 {
			w.full <- w.cur
		}
		w.cur = nil
		close(w.full)
		<-w.done
	})
	return w.failed()
}
