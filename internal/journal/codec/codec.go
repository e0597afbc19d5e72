package codec

// Journal segment byte stream (framing versions 1 and 2)
//
// This is the raw, decoded content of one journal segment: what remains
// after the payload layers (compression, encryption) are removed. All of it
// is covered by the checks below; nothing in it is trusted before they pass.
//
//	stream = header frame*
//	header = "EBJRNL" 0x00 0x01                 8 bytes; the last byte is the
//	                                            framing version (1)
//	frame  = uvarint(len(body)) body crc        crc = CRC-32C (Castagnoli) of
//	                                            body, 4 bytes big-endian
//
// The length is an unsigned LEB128 varint (encoding/binary.AppendUvarint) in
// its minimal form (no trailing 0x00 continuation byte), at most MaxFrame
// (64 MiB). A reader rejects a larger length before allocating anything for
// the body. The CRC covers the body only; a damaged length shows up as a
// truncated stream, a CRC mismatch or a malformed next frame.
//
// body is one protobuf message (proto3 wire format) describing one revision:
//
//	message Record {
//	  int64 revision       = 1; // > 0, strictly increasing within a stream
//	  int64 time_unix_nano = 2; // agent wall clock, ns since the Unix epoch
//	                            // (UTC); 0 or absent = unknown (zero time)
//	  repeated bytes event = 3; // one mvccpb.Event (etcd api/v3 mvccpb,
//	                            // kv.proto) each, in the order etcd emitted
//	                            // them (their sub-revision order)
//	  repeated Lease lease = 4;
//	}
//	message Lease {
//	  int64 id  = 1;            // != 0
//	  int64 ttl = 2;            // seconds, >= 0; 0 = lease already gone
//	}
//
// Writers emit fields in field-number order, each scalar once and only when
// non-zero (revision is never zero), negative int64 values as 10-byte
// varints (two's complement, not zigzag), and each event exactly as
// mvccpb.Event.Marshal encodes it. Readers follow protobuf decoding rules:
// fields may come in any order, a scalar field that occurs more than once
// keeps its last value, and fields with unknown numbers are skipped in the
// record and in a lease (kept, and written back on re-encoding, in an
// event), so a later writer can add fields without a new framing version.
// A known field with the wrong wire type, a truncated or overlong varint, a
// length that runs past the end of its message, a field number 0 or a stray
// end-group tag is an error.
//
// A reader rejects, with an error wrapping format.ErrIntegrity that names
// the byte offset of the frame and the revision of the record before it:
// an empty stream (not even a header), a wrong magic, a truncated length,
// body or CRC, a non-minimal or overflowing length varint, a length above
// MaxFrame, a CRC mismatch, a malformed body, and a record that breaks the
// rules of checkRecord: revision <= 0 or not greater than the previous
// record's, no events, an event without a key-value or with an empty key,
// an event whose Kv.ModRevision is not the record's revision, an event type
// other than PUT or DELETE, a PUT with CreateRevision <= 0, CreateRevision
// > ModRevision or Version < 1, a lease with ID 0 or a negative TTL. A
// header whose first seven bytes are right but whose version byte is not 1
// is reported with an error wrapping format.ErrVersion.
//
// Framing 1 (segments with a separate manifest) ends cleanly after the
// header and a whole number of frames. A stream cut exactly at a frame
// boundary is indistinguishable from a shorter complete one; that a segment
// holds every revision it should is checked against the segment's manifest.
//
// Framing 2 (self-describing objects, no manifest) ends with a seal:
//
//	stream = header frame* seal                 header ends in 0x02
//	seal   = 0x00 uvarint(len(body)) body crc   the zero length marks it
//
//	message Seal {
//	  int64  start                = 1; // revision of the first record
//	  int64  end                  = 2; // revision of the last record
//	  int64  records              = 3;
//	  int64  events               = 4;
//	  int64  first_time_unix_nano = 5;
//	  int64  last_time_unix_nano  = 6;
//	  bytes  raw_sha256           = 7; // sha256 of every byte before the 0x00
//	  string chain                = 8; // the snapshot ID the chain follows
//	  string cluster_id           = 9; // etcd cluster ID, 16 hex digits
//	}
//
// A framing-2 reader also rejects a stream without its seal (cut anywhere),
// a seal whose counts, revisions, times or sha256 disagree with the frames
// before it, an empty stream (a seal needs at least one record), and any
// byte after the seal.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

const (
	// Magic starts every journal segment stream. Its last byte is the
	// framing version.
	Magic = "EBJRNL\x00\x02"
	// MagicV1 starts a framing-1 stream (segments with a manifest).
	MagicV1 = "EBJRNL\x00\x01"
	// MaxFrame is the largest frame body a writer produces and a reader
	// accepts, in bytes.
	MaxFrame = 64 << 20

	crcSize = 4
)

// Protobuf field numbers of the frame body.
const (
	fieldRevision protowire.Number = 1
	fieldTime     protowire.Number = 2
	fieldEvent    protowire.Number = 3
	fieldLease    protowire.Number = 4

	fieldLeaseID  protowire.Number = 1
	fieldLeaseTTL protowire.Number = 2

	sealStart     protowire.Number = 1
	sealEnd       protowire.Number = 2
	sealRecords   protowire.Number = 3
	sealEvents    protowire.Number = 4
	sealFirstTime protowire.Number = 5
	sealLastTime  protowire.Number = 6
	sealSHA256    protowire.Number = 7
	sealChain     protowire.Number = 8
	sealClusterID protowire.Number = 9
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendFrame appends r's frame (length, body, CRC) to dst and returns the
// extended slice. It does not write the stream header. It refuses a record
// a reader would reject (see checkRecord), a record whose Time is outside
// the range of int64 nanoseconds since 1970 (years 1678 to 2262), and a body
// larger than MaxFrame; dst is then returned unchanged with the error. It
// does not check that r's revision follows the previous frame's; Writer
// does.
//
// A Time equal to the Unix epoch itself encodes as 0 and reads back as the
// zero time.Time.
func AppendFrame(dst []byte, r *Record) ([]byte, error) {
	if r == nil {
		return dst, errors.New("journal: cannot encode a nil record")
	}
	if err := checkRecord(r, 0); err != nil {
		return dst, fmt.Errorf("journal: invalid record: %w", err)
	}
	var tn int64
	if !r.Time.IsZero() {
		tn = r.Time.UnixNano()
		if !time.Unix(0, tn).Equal(r.Time) {
			return dst, fmt.Errorf("journal: cannot encode revision %d: time %s is outside the int64 nanosecond range", r.Revision, r.Time)
		}
	}

	// Size the body first so that dst grows at most once.
	size := protowire.SizeTag(fieldRevision) + protowire.SizeVarint(uint64(r.Revision))
	if tn != 0 {
		size += protowire.SizeTag(fieldTime) + protowire.SizeVarint(uint64(tn))
	}
	for _, ev := range r.Events {
		size += protowire.SizeTag(fieldEvent) + protowire.SizeBytes(ev.Size())
		if size > MaxFrame {
			// Stop early: huge values could overflow an int on 32-bit.
			break
		}
	}
	for _, l := range r.Leases {
		size += protowire.SizeTag(fieldLease) + protowire.SizeBytes(leaseSize(l))
	}
	if size > MaxFrame {
		return dst, fmt.Errorf("journal: cannot encode revision %d: frame body is larger than %d bytes", r.Revision, MaxFrame)
	}

	orig := len(dst)
	out := slices.Grow(dst, protowire.SizeVarint(uint64(size))+size+crcSize)
	out = protowire.AppendVarint(out, uint64(size))
	start := len(out)
	out = protowire.AppendTag(out, fieldRevision, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(r.Revision))
	if tn != 0 {
		out = protowire.AppendTag(out, fieldTime, protowire.VarintType)
		out = protowire.AppendVarint(out, uint64(tn))
	}
	for _, ev := range r.Events {
		n := ev.Size()
		out = protowire.AppendTag(out, fieldEvent, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(n))
		at := len(out)
		out = out[:at+n] // capacity reserved above
		m, err := ev.MarshalToSizedBuffer(out[at:])
		if err != nil || m != n {
			// Only if the event changed under us (concurrent mutation).
			return dst[:orig], fmt.Errorf("journal: cannot encode revision %d: marshalling an event: size %d, wrote %d: %v", r.Revision, n, m, err)
		}
	}
	for _, l := range r.Leases {
		out = protowire.AppendTag(out, fieldLease, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(leaseSize(l)))
		out = appendLease(out, l)
	}
	if len(out)-start != size {
		return dst[:orig], fmt.Errorf("journal: cannot encode revision %d: body is %d bytes, sized %d", r.Revision, len(out)-start, size)
	}
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out[start:], castagnoli)), nil
}

func leaseSize(l Lease) int {
	n := 0
	if l.ID != 0 {
		n += protowire.SizeTag(fieldLeaseID) + protowire.SizeVarint(uint64(l.ID))
	}
	if l.TTL != 0 {
		n += protowire.SizeTag(fieldLeaseTTL) + protowire.SizeVarint(uint64(l.TTL))
	}
	return n
}

func appendLease(b []byte, l Lease) []byte {
	if l.ID != 0 {
		b = protowire.AppendTag(b, fieldLeaseID, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(l.ID))
	}
	if l.TTL != 0 {
		b = protowire.AppendTag(b, fieldLeaseTTL, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(l.TTL))
	}
	return b
}

// checkRecord returns why r is not a valid journal record, or nil. prev is
// the revision of the record before r in the stream, 0 if none.
func checkRecord(r *Record, prev int64) error {
	if r.Revision <= 0 {
		return fmt.Errorf("revision %d is not positive", r.Revision)
	}
	if r.Revision <= prev {
		return fmt.Errorf("revision %d does not follow revision %d", r.Revision, prev)
	}
	if len(r.Events) == 0 {
		return fmt.Errorf("revision %d has no events", r.Revision)
	}
	for i, ev := range r.Events {
		if ev == nil {
			return fmt.Errorf("revision %d: event %d is nil", r.Revision, i)
		}
		kv := ev.Kv
		if kv == nil {
			return fmt.Errorf("revision %d: event %d has no key-value", r.Revision, i)
		}
		if len(kv.Key) == 0 {
			return fmt.Errorf("revision %d: event %d has an empty key", r.Revision, i)
		}
		if kv.ModRevision != r.Revision {
			return fmt.Errorf("revision %d: event %d (key %s) has mod revision %d, not the record's", r.Revision, i, quoteKey(kv.Key), kv.ModRevision)
		}
		switch ev.Type {
		case mvccpb.PUT:
			if kv.CreateRevision <= 0 || kv.CreateRevision > kv.ModRevision {
				return fmt.Errorf("revision %d: put %d (key %s) has create revision %d, outside 1..%d", r.Revision, i, quoteKey(kv.Key), kv.CreateRevision, kv.ModRevision)
			}
			if kv.Version < 1 {
				return fmt.Errorf("revision %d: put %d (key %s) has version %d, below 1", r.Revision, i, quoteKey(kv.Key), kv.Version)
			}
		case mvccpb.DELETE:
		default:
			return fmt.Errorf("revision %d: event %d (key %s) has type %d, not PUT or DELETE", r.Revision, i, quoteKey(kv.Key), int32(ev.Type))
		}
	}
	for i, l := range r.Leases {
		if l.ID == 0 {
			return fmt.Errorf("revision %d: lease %d has ID 0", r.Revision, i)
		}
		if l.TTL < 0 {
			return fmt.Errorf("revision %d: lease %d (ID %x) has negative TTL %d", r.Revision, i, l.ID, l.TTL)
		}
	}
	return nil
}

// quoteKey quotes a key for an error message, shortened to keep the message
// on one line.
func quoteKey(k []byte) string {
	const max = 64
	if len(k) > max {
		return fmt.Sprintf("%q...", k[:max])
	}
	return fmt.Sprintf("%q", k)
}

// Writer writes a journal segment stream: the header, then one frame per
// record, then (framing 2) the seal. It does no buffering of its own: each
// Write, WriteHeader and Seal is one Write call on the underlying writer.
// After an error from the underlying writer, every later call returns that
// error (the stream is then in an unknown state).
type Writer struct {
	w      io.Writer
	magic  string
	buf    []byte
	header bool
	last   int64
	err    error
	sum    hash.Hash // of every byte written (framing 2)
	seal   Seal      // counts so far
	sealed bool
}

// Seal is what the last frame of a framing-2 stream says about the stream:
// the range and counts of its records and the checksum of every byte
// before it.
type Seal struct {
	Start, End          int64
	Records, Events     int64
	FirstTime, LastTime time.Time
	RawSHA256           [sha256.Size]byte
	Chain, ClusterID    string
}

// NewWriter returns a Writer that writes a framing-2 stream to w; finish it
// with Seal.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, magic: Magic, sum: sha256.New()}
}

// NewWriterV1 returns a Writer of a framing-1 stream (no seal), as written
// with a separate manifest by releases before framing 2. Only tests write
// it now.
func NewWriterV1(w io.Writer) *Writer {
	return &Writer{w: w, magic: MagicV1}
}

// WriteHeader writes the stream header if it has not been written yet. Call
// it to make a framing-1 stream with no records (a valid, empty stream);
// Write calls it implicitly.
func (w *Writer) WriteHeader() error {
	if w.err != nil || w.header {
		return w.err
	}
	if err := w.write(append(w.buf[:0], w.magic...)); err != nil {
		return err
	}
	w.header = true
	return nil
}

// Write writes r's frame, preceded by the header if this is the first
// record. r's revision must be greater than that of the previous record. An
// invalid record is refused without writing anything and does not break
// the Writer.
func (w *Writer) Write(r *Record) error {
	if w.err != nil {
		return w.err
	}
	if w.sealed {
		return errors.New("journal: cannot encode a record after the seal")
	}
	if r != nil && r.Revision <= w.last {
		return fmt.Errorf("journal: cannot encode revision %d: it does not follow revision %d", r.Revision, w.last)
	}
	buf := w.buf[:0]
	if !w.header {
		buf = append(buf, w.magic...)
	}
	buf, err := AppendFrame(buf, r)
	if err != nil {
		return err
	}
	if err := w.write(buf); err != nil {
		return err
	}
	w.header = true
	w.last = r.Revision
	if w.seal.Records == 0 {
		w.seal.Start, w.seal.FirstTime = r.Revision, r.Time
	}
	w.seal.End, w.seal.LastTime = r.Revision, r.Time
	w.seal.Records++
	w.seal.Events += int64(len(r.Events))
	return nil
}

// Records is the number of records written so far.
func (w *Writer) Records() int64 { return w.seal.Records }

// Seal ends a framing-2 stream with its seal, naming the chain and the
// etcd cluster ID the records belong to, and returns the seal. A stream
// needs at least one record.
func (w *Writer) Seal(chain, clusterID string) (Seal, error) {
	if w.err != nil {
		return Seal{}, w.err
	}
	if w.sum == nil || w.sealed {
		return Seal{}, errors.New("journal: this stream takes no seal (framing 1, or sealed already)")
	}
	if w.seal.Records == 0 {
		return Seal{}, errors.New("journal: cannot seal a stream without records")
	}
	s := w.seal
	s.Chain, s.ClusterID = chain, clusterID
	copy(s.RawSHA256[:], w.sum.Sum(nil))
	body := appendSeal(nil, &s)
	buf := append(w.buf[:0], 0)
	buf = protowire.AppendVarint(buf, uint64(len(body)))
	buf = append(buf, body...)
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(body, castagnoli))
	if err := w.write(buf); err != nil {
		return Seal{}, err
	}
	w.sealed = true
	return s, nil
}

func (w *Writer) write(b []byte) error {
	if w.sum != nil && !w.sealed {
		w.sum.Write(b)
	}
	// Keep the grown buffer for the next record, but not a huge one.
	if cap(b) <= 1<<20 {
		w.buf = b[:0]
	} else {
		w.buf = nil
	}
	n, err := w.w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("journal: writing: %w", err)
	}
	return w.err
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func appendSeal(b []byte, s *Seal) []byte {
	for _, f := range []struct {
		n protowire.Number
		v int64
	}{{sealStart, s.Start}, {sealEnd, s.End}, {sealRecords, s.Records}, {sealEvents, s.Events},
		{sealFirstTime, unixNano(s.FirstTime)}, {sealLastTime, unixNano(s.LastTime)}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.n, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(f.v))
		}
	}
	b = protowire.AppendTag(b, sealSHA256, protowire.BytesType)
	b = protowire.AppendBytes(b, s.RawSHA256[:])
	if s.Chain != "" {
		b = protowire.AppendTag(b, sealChain, protowire.BytesType)
		b = protowire.AppendString(b, s.Chain)
	}
	if s.ClusterID != "" {
		b = protowire.AppendTag(b, sealClusterID, protowire.BytesType)
		b = protowire.AppendString(b, s.ClusterID)
	}
	return b
}

func decodeSeal(b []byte) (*Seal, error) {
	s := new(Seal)
	var sum []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case sealStart, sealEnd, sealRecords, sealEvents, sealFirstTime, sealLastTime:
			if typ != protowire.VarintType {
				return nil, fmt.Errorf("field %d has wire type %d, want varint", num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case sealStart:
				s.Start = int64(v)
			case sealEnd:
				s.End = int64(v)
			case sealRecords:
				s.Records = int64(v)
			case sealEvents:
				s.Events = int64(v)
			case sealFirstTime:
				s.FirstTime = fromUnixNano(int64(v))
			case sealLastTime:
				s.LastTime = fromUnixNano(int64(v))
			}
		case sealSHA256, sealChain, sealClusterID:
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("field %d has wire type %d, want bytes", num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case sealSHA256:
				sum = v
			case sealChain:
				s.Chain = string(v)
			case sealClusterID:
				s.ClusterID = string(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("unknown field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if len(sum) != sha256.Size {
		return nil, fmt.Errorf("raw_sha256 is %d bytes, want %d", len(sum), sha256.Size)
	}
	copy(s.RawSHA256[:], sum)
	return s, nil
}

// byteReader is what Reader reads from: a uvarint length needs ReadByte.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// Reader decodes a journal segment stream. It checks everything listed at
// the top of this file; see Next.
type Reader struct {
	r       byteReader
	off     int64 // offset of the next unread byte
	buf     []byte
	last    int64 // revision of the last record returned, 0 if none
	hdr     bool
	version byte
	err     error     // sticky: returned by every Next after the first error
	sum     hash.Hash // framing 2: of every byte before the seal
	counts  Seal      // framing 2: what the frames so far add up to
	seal    *Seal
	// the bytes of the last length varint read
	lenBytes [binary.MaxVarintLen64]byte
	lenN     int
}

// NewReader returns a Reader that decodes the stream in r. It reads r
// through a bufio.Reader unless r already has a ReadByte method.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(byteReader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{r: br}
}

// Next returns the next record. Each call returns a new Record that shares
// no memory with the Reader or with earlier records.
//
// At a clean end of the stream (after the header and whole frames) it
// returns io.EOF. Corrupt or truncated data gives an error wrapping
// format.ErrIntegrity (format.ErrVersion for an unknown framing version)
// that says what is wrong, at which byte offset and after which revision.
// An error from the underlying reader is returned wrapped, as is. After an
// error, or io.EOF, Next returns the same error again.
func (r *Reader) Next() (*Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	r.last = rec.Revision
	if r.counts.Records == 0 {
		r.counts.Start, r.counts.FirstTime = rec.Revision, rec.Time
	}
	r.counts.End, r.counts.LastTime = rec.Revision, rec.Time
	r.counts.Records++
	r.counts.Events += int64(len(rec.Events))
	return rec, nil
}

// Version is the framing version of the stream (1 or 2), known once Next
// has read the header.
func (r *Reader) Version() int { return int(r.version) }

// Sealed returns the seal of a framing-2 stream once Next has returned
// io.EOF (every check of the seal passed), else nil.
func (r *Reader) Sealed() *Seal { return r.seal }

func (r *Reader) next() (*Record, error) {
	if !r.hdr {
		if err := r.readHeader(); err != nil {
			return nil, err
		}
		r.hdr = true
	}
	frame := r.off
	size, err := r.readLen(frame)
	if err == io.EOF && r.version >= 2 {
		return nil, r.corrupt(frame, "the stream ends without its seal (cut short)")
	}
	if err != nil {
		return nil, err
	}
	if size == 0 && r.version >= 2 {
		return nil, r.readSeal(frame)
	}
	if size > MaxFrame {
		return nil, r.corrupt(frame, "frame length %d is above the maximum %d", size, MaxFrame)
	}
	n := int(size) + crcSize
	if err := r.fill(n); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			if len(r.buf) < int(size) {
				return nil, r.corrupt(frame, "truncated frame body: %d of %d bytes", len(r.buf), size)
			}
			return nil, r.corrupt(frame, "truncated frame checksum: %d of %d bytes", len(r.buf)-int(size), crcSize)
		}
		return nil, r.readErr(err)
	}
	body := r.buf[:size]
	want := binary.BigEndian.Uint32(r.buf[size:])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return nil, r.corrupt(frame, "frame checksum mismatch: stored %08x, computed %08x", want, got)
	}
	if r.sum != nil {
		r.sum.Write(r.lenBytes[:r.lenN])
		r.sum.Write(r.buf[:n])
	}
	rec, err := decodeBody(body)
	if err != nil {
		return nil, r.corrupt(frame, "malformed record: %v", err)
	}
	if err := checkRecord(rec, r.last); err != nil {
		return nil, r.corrupt(frame, "%v", err)
	}
	return rec, nil
}

func (r *Reader) readHeader() error {
	var h [len(Magic)]byte
	n, err := io.ReadFull(r.r, h[:])
	r.off += int64(n)
	if n > 0 && string(h[:min(n, len(Magic)-1)]) != Magic[:min(n, len(Magic)-1)] {
		return fmt.Errorf("%w: journal: not a journal segment (bad magic %q)", format.ErrIntegrity, h[:n])
	}
	switch {
	case err == io.EOF:
		return fmt.Errorf("%w: journal: empty stream (no header)", format.ErrIntegrity)
	case err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: journal: truncated header: %d of %d bytes", format.ErrIntegrity, n, len(Magic))
	case err != nil:
		return r.readErr(err)
	}
	switch v := h[len(Magic)-1]; v {
	case 1:
	case 2:
		r.sum = sha256.New()
		r.sum.Write(h[:])
	default:
		return fmt.Errorf("%w: journal segment has framing version %d, this binary reads versions 1 and 2 (upgrade etcd-backup)", format.ErrVersion, v)
	}
	r.version = h[len(Magic)-1]
	return nil
}

// readSeal reads the seal of a framing-2 stream (its 0x00 marker has been
// read), checks it against the frames before it and that nothing follows,
// and returns io.EOF when all is well.
func (r *Reader) readSeal(frame int64) error {
	size, err := r.readLen(frame)
	if err == io.EOF {
		return r.corrupt(frame, "truncated seal")
	}
	if err != nil {
		return err
	}
	if size > 1<<10 {
		return r.corrupt(frame, "seal length %d is implausible", size)
	}
	if err := r.fill(int(size) + crcSize); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return r.corrupt(frame, "truncated seal")
		}
		return r.readErr(err)
	}
	body := r.buf[:size]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(r.buf[size:]); got != want {
		return r.corrupt(frame, "seal checksum mismatch: stored %08x, computed %08x", want, got)
	}
	s, err := decodeSeal(body)
	if err != nil {
		return r.corrupt(frame, "malformed seal: %v", err)
	}
	c := r.counts
	switch {
	case c.Records == 0:
		return r.corrupt(frame, "a seal without records")
	case s.Start != c.Start || s.End != c.End:
		return r.corrupt(frame, "the seal says revisions %d..%d, the records are %d..%d", s.Start, s.End, c.Start, c.End)
	case s.Records != c.Records || s.Events != c.Events:
		return r.corrupt(frame, "the seal says %d records and %d events, the stream has %d and %d", s.Records, s.Events, c.Records, c.Events)
	case !s.FirstTime.Equal(c.FirstTime) || !s.LastTime.Equal(c.LastTime):
		return r.corrupt(frame, "the seal's record times do not match the records")
	case !bytes.Equal(s.RawSHA256[:], r.sum.Sum(nil)):
		return r.corrupt(frame, "the seal's sha256 does not match the stream")
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		if err != nil {
			return r.readErr(err)
		}
		return r.corrupt(r.off, "bytes after the seal")
	}
	r.seal = s
	return io.EOF
}

// readLen reads a frame's length varint. It returns io.EOF, as is, if the
// stream ends before its first byte.
func (r *Reader) readLen(frame int64) (uint64, error) {
	var x uint64
	r.lenN = 0
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.r.ReadByte()
		if err == nil {
			r.lenBytes[i] = b
			r.lenN = i + 1
		}
		if err != nil {
			if err == io.EOF {
				if i == 0 {
					return 0, io.EOF
				}
				return 0, r.corrupt(frame, "truncated frame length")
			}
			return 0, r.readErr(err)
		}
		r.off++
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break // overflows 64 bits
			}
			if i > 0 && b == 0 {
				return 0, r.corrupt(frame, "frame length is not a minimal varint")
			}
			return x | uint64(b)<<(7*i), nil
		}
		x |= uint64(b&0x7f) << (7 * i)
	}
	return 0, r.corrupt(frame, "frame length varint overflows 64 bits")
}

// fill reads exactly n bytes into r.buf. It grows r.buf as data arrives, in
// steps no larger than what has been read so far (beyond a first 64 KiB),
// so that a corrupt length on a short stream cannot make it allocate much
// more than the stream holds. It returns io.ErrUnexpectedEOF, with r.buf
// holding what was read, if the stream ends first.
func (r *Reader) fill(n int) error {
	const step = 64 << 10
	buf := r.buf[:0]
	for len(buf) < n {
		chunk := n - len(buf)
		if c := max(len(buf), step); chunk > c && chunk > cap(buf)-len(buf) {
			chunk = c
		}
		buf = slices.Grow(buf, chunk)
		m, err := io.ReadFull(r.r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+m]
		r.off += int64(m)
		if err != nil {
			r.buf = buf
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	r.buf = buf
	return nil
}

func (r *Reader) corrupt(frame int64, msg string, args ...any) error {
	after := "first frame"
	if r.last > 0 {
		after = fmt.Sprintf("after revision %d", r.last)
	}
	return fmt.Errorf("%w: journal frame at byte %d (%s): %s", format.ErrIntegrity, frame, after, fmt.Sprintf(msg, args...))
}

func (r *Reader) readErr(err error) error {
	return fmt.Errorf("journal: reading at byte %d: %w", r.off, err)
}

// decodeBody parses a frame body. It checks the wire format only; the
// caller checks the record with checkRecord.
func decodeBody(b []byte) (*Record, error) {
	rec := new(Record)
	var tn int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldRevision, fieldTime:
			if typ != protowire.VarintType {
				return nil, fmt.Errorf("field %d has wire type %d, want varint", num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldRevision {
				rec.Revision = int64(v)
			} else {
				tn = int64(v)
			}
		case fieldEvent, fieldLease:
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("field %d has wire type %d, want bytes", num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldEvent {
				ev := new(mvccpb.Event)
				if err := ev.Unmarshal(v); err != nil {
					return nil, fmt.Errorf("event %d: %v", len(rec.Events), err)
				}
				rec.Events = append(rec.Events, ev)
			} else {
				l, err := decodeLease(v)
				if err != nil {
					return nil, fmt.Errorf("lease %d: %v", len(rec.Leases), err)
				}
				rec.Leases = append(rec.Leases, l)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("unknown field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if tn != 0 {
		rec.Time = time.Unix(0, tn).UTC()
	}
	return rec, nil
}

func decodeLease(b []byte) (Lease, error) {
	var l Lease
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Lease{}, fmt.Errorf("field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldLeaseID, fieldLeaseTTL:
			if typ != protowire.VarintType {
				return Lease{}, fmt.Errorf("field %d has wire type %d, want varint", num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Lease{}, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldLeaseID {
				l.ID = int64(v)
			} else {
				l.TTL = int64(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Lease{}, fmt.Errorf("unknown field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return l, nil
}
