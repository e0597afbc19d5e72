package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/etcd-backup/etcd-backup/internal/iopipe"
)

// EtcdTrailerSize is the size of the sha256 trailer etcd appends to a
// snapshot stream.
const EtcdTrailerSize = sha256.Size

// Sums are the sizes and checksums of one payload, as recorded in its manifest.
type Sums struct {
	RawSize      int64
	RawSHA256    string
	StoredSize   int64
	StoredSHA256 string
}

// counter hashes and counts what passes through it; with no hash (h nil)
// it only counts.
type counter struct {
	h hash.Hash
	n int64
}

func newCounter() *counter { return &counter{h: sha256.New()} }

func (c *counter) Write(p []byte) (int, error) {
	if c.h != nil {
		c.h.Write(p)
	}
	c.n += int64(len(p))
	return len(p), nil
}

func (c *counter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// trailerCheck hashes everything but the last EtcdTrailerSize bytes written
// to it and keeps those last bytes, to check etcd's snapshot trailer.
// With none set (journal segments, which carry no etcd trailer) it hashes
// everything and check always passes; with none and no hash (h nil: a
// sealed journal object, whose stream carries its own sha256) it does
// nothing.
type trailerCheck struct {
	h    hash.Hash
	tail []byte
	none bool
}

func newTrailerCheck(none bool) *trailerCheck {
	return &trailerCheck{h: sha256.New(), tail: make([]byte, 0, 2*EtcdTrailerSize), none: none}
}

func (t *trailerCheck) Write(p []byte) (int, error) {
	n := len(p)
	if t.none {
		if t.h != nil {
			t.h.Write(p)
		}
		return n, nil
	}
	if len(p) >= EtcdTrailerSize {
		t.h.Write(t.tail)
		t.h.Write(p[:len(p)-EtcdTrailerSize])
		t.tail = append(t.tail[:0], p[len(p)-EtcdTrailerSize:]...)
		return n, nil
	}
	t.tail = append(t.tail, p...)
	if extra := len(t.tail) - EtcdTrailerSize; extra > 0 {
		t.h.Write(t.tail[:extra])
		t.tail = append(t.tail[:0], t.tail[extra:]...)
	}
	return n, nil
}

// sum is the sha256 of the database bytes (everything but the trailer).
func (t *trailerCheck) sum() string { return hex.EncodeToString(t.h.Sum(nil)) }

func (t *trailerCheck) check() error {
	if t.none {
		return nil
	}
	if len(t.tail) < EtcdTrailerSize {
		return fmt.Errorf("%w: snapshot is shorter than etcd's sha256 trailer", ErrIntegrity)
	}
	if !bytes.Equal(t.h.Sum(nil), t.tail) {
		return fmt.Errorf("%w: etcd's sha256 trailer does not match the snapshot data", ErrIntegrity)
	}
	return nil
}

// EncoderOptions tune payload encoding.
type EncoderOptions struct {
	Recipients []Recipient
	// Level is the zstd level: 1 fastest … 4 best. 0 means 1.
	Level int
	// Concurrency is the number of zstd encoder goroutines; 0 means 2.
	Concurrency int
	// NoTrailer: the raw bytes are not an etcd snapshot (a journal
	// segment): there is no etcd trailer to check, and RawSHA256 covers
	// every raw byte.
	NoTrailer bool
}

// Encoder encodes raw etcd snapshot bytes into a stored payload. Write the
// raw stream to it, then call Close, which flushes everything and checks
// etcd's trailer. If Close (or any Write) fails, the stored bytes written so
// far must be discarded.
type Encoder struct {
	rawN    int64
	trailer *trailerCheck
	stored  *counter
	zw      *zstd.Encoder
	aw      io.WriteCloser // nil when unencrypted
	mw      io.Writer
}

// NewEncoder returns an Encoder writing the stored payload to w.
func NewEncoder(w io.Writer, opt EncoderOptions) (*Encoder, error) {
	e := &Encoder{trailer: newTrailerCheck(opt.NoTrailer), stored: newCounter()}
	out := io.MultiWriter(w, e.stored)
	var zdst io.Writer = out
	if len(opt.Recipients) > 0 {
		rs := make([]age.Recipient, len(opt.Recipients))
		for i, r := range opt.Recipients {
			rs[i] = r.Recipient
		}
		aw, err := age.Encrypt(out, rs...)
		if err != nil {
			return nil, fmt.Errorf("%w: age: %v", ErrKey, err)
		}
		e.aw = aw
		zdst = aw
	}
	level := zstd.SpeedFastest
	if opt.Level > 1 {
		level = zstd.EncoderLevelFromZstd(opt.Level)
	}
	conc := opt.Concurrency
	if conc <= 0 {
		conc = 2
	}
	zw, err := zstd.NewWriter(zdst,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(conc),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(4<<20))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	e.zw = zw
	e.mw = io.MultiWriter(e.trailer, zw)
	return e, nil
}

// Write takes raw snapshot bytes.
func (e *Encoder) Write(p []byte) (int, error) {
	n, err := e.mw.Write(p)
	e.rawN += int64(n)
	return n, err
}

// Close flushes the zstd and age streams and checks etcd's sha256 trailer.
func (e *Encoder) Close() (Sums, error) {
	if err := e.zw.Close(); err != nil {
		return Sums{}, fmt.Errorf("zstd: %w", err)
	}
	if e.aw != nil {
		if err := e.aw.Close(); err != nil {
			return Sums{}, fmt.Errorf("age: %w", err)
		}
	}
	if err := e.trailer.check(); err != nil {
		return Sums{}, err
	}
	return e.Sums(), nil
}

// Sums reports the sizes and checksums so far (final after Close).
func (e *Encoder) Sums() Sums {
	return Sums{
		RawSize: e.rawN, RawSHA256: e.trailer.sum(),
		StoredSize: e.stored.n, StoredSHA256: e.stored.sum(),
	}
}

// RawBytes reports how many raw bytes were written so far.
func (e *Encoder) RawBytes() int64 { return e.rawN }

// Decoder reads a stored payload and yields the raw etcd snapshot bytes.
// The bytes it returns are not trusted until Read has returned io.EOF: only
// then have all the checks of docs/format.md "Verification" passed. Any
// mismatch is reported, in place of io.EOF, as an error wrapping ErrIntegrity.
// A failure to read the stored payload (the source's error) is returned
// wrapped as is, never as ErrIntegrity: bytes that were not read were not
// judged.
type Decoder struct {
	m       *Manifest
	src     *countingReader
	zr      *zstd.Decoder
	rawN    int64
	trailer *trailerCheck
	done    bool
	// selfChecked: the decoded stream carries its own checks (a journal
	// object of framing 2); there is no manifest to compare sizes and
	// sums with.
	selfChecked bool
	ahead       *iopipe.Reader // nil without DecoderOptions.ReadAhead
}

// countingReader counts and hashes the stored bytes, and remembers a read
// error of the source: that is the storage failing, not the data.
type countingReader struct {
	r   io.Reader
	c   *counter
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.c.Write(p[:n])
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// sourceErr reports a failure to read the stored payload: the data was not
// all read, so nothing was judged (it does not wrap ErrIntegrity).
func (d *Decoder) sourceErr() error {
	err := d.src.err
	if d.ahead != nil {
		// The read-ahead goroutine owns d.src; what it met reaches this
		// goroutine with the bytes.
		if err = d.ahead.Err(); err == io.EOF {
			err = nil
		}
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("read payload of %s: %w", d.m.ID, err)
}

// NewDecoder starts decoding the stored payload r described by m. For an
// encrypted payload, identities must hold a matching key; otherwise the error
// wraps ErrKey.
func NewDecoder(r io.Reader, m *Manifest, identities []age.Identity) (*Decoder, error) {
	return NewDecoderWith(r, m, identities, DecoderOptions{})
}

// DecoderOptions tune a Decoder.
type DecoderOptions struct {
	// ReadAhead, when above 0, is how many buffers of 1 MiB the stored
	// payload is read (and its sha256 computed) ahead of decoding, on a
	// goroutine of its own: for one large payload (a snapshot), so that
	// download and checksum overlap decompression. Close stops it.
	ReadAhead int
}

// NewDecoderWith is NewDecoder with options.
func NewDecoderWith(r io.Reader, m *Manifest, identities []age.Identity, opt DecoderOptions) (*Decoder, error) {
	d := &Decoder{m: m, src: &countingReader{r: r, c: newCounter()}, trailer: newTrailerCheck(m.Kind == KindJournal)}
	if opt.ReadAhead > 0 {
		// The stored bytes are counted and hashed on the read-ahead
		// goroutine; the decoder looks at the count, the sum and the
		// source's error only after a chunk carrying an error (EOF at the
		// end) came over the read-ahead's channel, which orders it after
		// them.
		d.ahead = iopipe.ReadAhead(d.src, opt.ReadAhead, 1<<20)
	}
	if err := d.start(identities); err != nil {
		if d.ahead != nil {
			d.ahead.Close()
		}
		return nil, err
	}
	return d, nil
}

// zstdReaders keeps zstd readers for reuse: a reader's buffers (the
// window, up to the 64 MiB NewDecoder allows, and its block buffers) are
// as large as what it decodes, and a restore decodes one journal object
// after another.
var zstdReaders sync.Pool

func (d *Decoder) start(identities []age.Identity) error {
	m := d.m
	var zsrc io.Reader = d.src
	if d.ahead != nil {
		zsrc = d.ahead
	}
	switch m.Encryption {
	case EncryptionNone, "":
	case EncryptionAge:
		if len(identities) == 0 {
			return fmt.Errorf("%w: backup %s is encrypted (recipients %v): pass --identity FILE", ErrKey, m.ID, m.Recipients)
		}
		ar, err := age.Decrypt(zsrc, identities...)
		if serr := d.sourceErr(); err != nil && serr != nil {
			return serr
		}
		if err != nil {
			var nm *age.NoIdentityMatchError
			if errors.As(err, &nm) {
				return fmt.Errorf("%w: backup %s was encrypted to %v and no key in --identity matches", ErrKey, m.ID, m.Recipients)
			}
			return fmt.Errorf("%w: age header: %v", ErrIntegrity, err)
		}
		zsrc = ar
	default:
		return fmt.Errorf("%w: unknown encryption %q", ErrVersion, m.Encryption)
	}
	if m.Compression != CompressionZstd {
		return fmt.Errorf("%w: unknown compression %q", ErrVersion, m.Compression)
	}
	if zr, ok := zstdReaders.Get().(*zstd.Decoder); ok {
		if err := zr.Reset(zsrc); err == nil {
			d.zr = zr
			return nil
		}
		zr.Close()
	}
	// Concurrency 1: the reader decodes in the caller's goroutine and
	// starts none, so a pooled one holds nothing but memory.
	zr, err := zstd.NewReader(zsrc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	d.zr = zr
	return nil
}

// NewSealedDecoder decodes a stored journal object of framing 2, which has
// no manifest: its decoded stream ends with a seal that carries the
// checksum of the stream (internal/journal/codec checks it), and zstd's
// content checksum and age's authentication cover the stored bytes. label
// names the object in messages.
func NewSealedDecoder(r io.Reader, label string, encrypted bool, identities []age.Identity) (*Decoder, error) {
	m := &Manifest{ID: label, Kind: KindJournal, Compression: CompressionZstd, Encryption: EncryptionNone}
	if encrypted {
		m.Encryption = EncryptionAge
	}
	// Nothing compares the sums of the stored or raw bytes with anything:
	// count only.
	d := &Decoder{m: m, src: &countingReader{r: r, c: &counter{}}, trailer: &trailerCheck{none: true}, selfChecked: true}
	if err := d.start(identities); err != nil {
		return nil, err
	}
	return d, nil
}

// Read returns raw snapshot bytes. At the end it runs every check and
// returns io.EOF only when all passed.
func (d *Decoder) Read(p []byte) (int, error) {
	if d.done {
		return 0, io.EOF
	}
	n, err := d.zr.Read(p)
	if n > 0 {
		d.rawN += int64(n)
		d.trailer.Write(p[:n])
	}
	if err == io.EOF {
		if cerr := d.finish(); cerr != nil {
			return n, cerr
		}
		d.done = true
		return n, io.EOF
	}
	if err != nil {
		if serr := d.sourceErr(); serr != nil {
			return n, serr
		}
		return n, fmt.Errorf("%w: decode payload of %s: %v", ErrIntegrity, d.m.ID, err)
	}
	return n, nil
}

func (d *Decoder) finish() error {
	// Drain whatever follows the zstd stream (age's final chunk, or junk
	// appended to the object), so the stored checksum covers every byte.
	var rest io.Reader = d.src
	if d.ahead != nil {
		rest = d.ahead
	}
	if _, err := io.Copy(io.Discard, rest); err != nil {
		if serr := d.sourceErr(); serr != nil {
			return serr
		}
		return fmt.Errorf("%w: read payload of %s: %v", ErrIntegrity, d.m.ID, err)
	}
	if d.selfChecked {
		return nil
	}
	id := d.m.ID
	switch {
	case d.src.c.n != d.m.StoredSize:
		return fmt.Errorf("%w: backup %s: stored payload is %d bytes, manifest says %d", ErrIntegrity, id, d.src.c.n, d.m.StoredSize)
	case d.src.c.sum() != d.m.StoredSHA256:
		return fmt.Errorf("%w: backup %s: stored payload sha256 does not match the manifest", ErrIntegrity, id)
	case d.rawN != d.m.RawSize:
		return fmt.Errorf("%w: backup %s: snapshot is %d bytes, manifest says %d", ErrIntegrity, id, d.rawN, d.m.RawSize)
	case d.trailer.sum() != d.m.RawSHA256:
		return fmt.Errorf("%w: backup %s: database sha256 does not match the manifest", ErrIntegrity, id)
	}
	return d.trailer.check() // and etcd's own trailer, which covers the last 32 bytes
}

// Close releases the decoder's resources.
func (d *Decoder) Close() {
	if d.ahead != nil {
		d.ahead.Close()
	}
	if d.zr == nil {
		return
	}
	// Reset(nil) drops the source and any output not read; the reader
	// is then as good as new.
	if err := d.zr.Reset(nil); err == nil {
		zstdReaders.Put(d.zr)
	} else {
		d.zr.Close()
	}
	d.zr = nil
}
