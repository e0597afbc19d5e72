package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Snapshot is an open snapshot stream of one member. Read it, or better let
// it write itself (WriteTo, which io.Copy uses): then each message's bytes go
// from gRPC's receive buffers straight to the writer, uncopied.
type Snapshot struct {
	Member MemberStatus // status taken just before the stream was opened
	// Revision: every write at or below it is in the snapshot (read
	// linearizably on the member before the stream was opened).
	Revision int64
	// StreamRevision is the revision in the stream's first header.
	StreamRevision int64
	StorageVersion string
	stream         *snapshotStream
	client         *Client
}

// Read reads the raw snapshot bytes (etcd's sha256 trailer included).
func (s *Snapshot) Read(p []byte) (int, error) { return s.stream.Read(p) }

// WriteTo writes the rest of the raw snapshot bytes to w. A failed Write of
// w is returned as is; any other error is the stream's.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) { return s.stream.WriteTo(w) }

// Close ends the stream and the member connection.
func (s *Snapshot) Close() error {
	s.stream.cancel()
	s.client.Close()
	return nil
}

// OpenSnapshot streams a snapshot from the member behind endpoint ep, after
// a linearizable read on it, so the snapshot holds every write acknowledged
// before the call.
func (c *Client) OpenSnapshot(ctx context.Context, ep string) (*Snapshot, error) {
	mc, err := c.ForEndpoint(ep)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Snapshot, error) {
		mc.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, mc.timeout())
	gr, err := mc.Get(rctx, "\x00", clientv3.WithCountOnly()) // linearizable (ReadIndex) read
	cancel()
	if err != nil {
		return fail(fmt.Errorf("linearizable read on %s: %w", ep, mc.cfg.diagnose([]string{ep}, err)))
	}
	st := mc.Status(ctx, ep)
	if st.Err != nil {
		return fail(st.Err)
	}
	if st.Name, err = mc.MemberName(ctx, st.ID); err != nil {
		return fail(err)
	}
	ss, err := openSnapshotStream(ctx, mc.Client)
	if err != nil {
		return fail(fmt.Errorf("open snapshot stream on %s: %w", ep, classify([]string{ep}, err)))
	}
	s := &Snapshot{stream: ss, Member: st, Revision: gr.Header.Revision,
		StorageVersion: ss.msg.version, client: mc}
	if ss.msg.header != nil {
		s.StreamRevision = ss.msg.header.Revision
	}
	if s.StreamRevision < s.Revision {
		s.StreamRevision = s.Revision
	}
	return s, nil
}

// snapshotStream receives the Maintenance/Snapshot RPC itself, as
// clientv3's SnapshotWithVersion does (same connection, interceptors and
// auth token), but decodes its messages with snapshotCodec: clientv3 has
// gRPC gather each message into a fresh zeroed buffer, unmarshals its blob
// into another new slice and copies that through an io.Pipe, three copies
// and a clear of every byte of the database.
type snapshotStream struct {
	ctx     context.Context
	cancel  context.CancelFunc
	cs      grpc.ClientStream
	msg     snapshotMsg
	pending []byte // received blob bytes not yet read
	err     error  // sticky: io.EOF at the end, or why the stream failed
}

// openSnapshotStream opens the stream and receives its first message, which
// carries the header and the storage version.
func openSnapshotStream(ctx context.Context, cli *clientv3.Client) (*snapshotStream, error) {
	sctx, cancel := context.WithCancel(ctx)
	cs, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Snapshot(sctx, &pb.SnapshotRequest{},
		grpc.ForceCodecV2(snapshotCodec{}), grpc.WaitForReady(true), grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		cancel()
		return nil, clientv3.ContextError(ctx, err)
	}
	s := &snapshotStream{ctx: sctx, cancel: cancel, cs: cs, msg: snapshotMsg{first: true}}
	if err := s.recv(nil); err != nil {
		cancel()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("etcd ended the snapshot stream before its first message")
		}
		return nil, err
	}
	s.msg.first = false
	return s, nil
}

// recv receives one message: its blob goes to w, or with w nil to
// s.pending.
func (s *snapshotStream) recv(w io.Writer) error {
	if s.err != nil {
		return s.err
	}
	s.msg.w, s.msg.buf, s.msg.werr = w, s.msg.buf[:0], nil
	err := s.cs.RecvMsg(&s.msg)
	s.msg.w = nil
	switch {
	case err == nil:
		if w == nil {
			s.pending = s.msg.buf
		}
		return nil
	case s.msg.werr != nil: // the writer's error, not the stream's
		err = s.msg.werr
	case errors.Is(err, io.EOF):
		err = io.EOF
	default:
		err = clientv3.ContextError(s.ctx, err)
	}
	s.err = err
	s.cancel()
	return err
}

func (s *snapshotStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if err := s.recv(nil); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *snapshotStream) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	if len(s.pending) > 0 {
		p := s.pending
		s.pending = nil
		if _, err := cw.Write(p); err != nil {
			return cw.n, err
		}
	}
	for {
		err := s.recv(cw)
		if errors.Is(err, io.EOF) {
			return cw.n, nil
		}
		if err != nil {
			return cw.n, err
		}
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// snapshotMsg is what snapshotCodec decodes a SnapshotResponse into.
type snapshotMsg struct {
	// Kept from the first message, as clientv3 does.
	first   bool
	header  *pb.ResponseHeader
	version string

	w    io.Writer // when set, the blob is written to it
	buf  []byte    // otherwise the blob is appended here (reused)
	werr error     // w's error
}

// snapshotCodec is gRPC's proto codec, except that it decodes a
// SnapshotResponse (rpc.proto: header = 1, remaining_bytes = 2, blob = 3,
// version = 4) into a *snapshotMsg, from the received buffers as they are:
// the blob, most of the message, is handed on in place.
type snapshotCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

func (snapshotCodec) Name() string { return "proto" }

func (snapshotCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (snapshotCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*snapshotMsg)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	return m.decode(data)
}

var errMalformed = errors.New("malformed snapshot response")

func (m *snapshotMsg) decode(data mem.BufferSlice) error {
	c := cursor{bufs: data}
	blobs := 0
	for {
		key, err := c.uvarint()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		num, typ := protowire.Number(key>>3), protowire.Type(key&7)
		if typ != protowire.BytesType {
			if err := c.skip(typ); err != nil {
				return err
			}
			continue
		}
		n, err := c.uvarint()
		if err != nil {
			return err
		}
		switch num {
		case 3: // blob
			if blobs++; blobs > 1 {
				return fmt.Errorf("%w: two blobs in one message", errMalformed)
			}
			err = c.each(n, m.blob)
		case 1, 4: // header, version
			var b []byte
			b, err = c.bytes(n)
			if err == nil && m.first && num == 1 {
				h := new(pb.ResponseHeader)
				if err = h.Unmarshal(b); err == nil {
					m.header = h
				}
			} else if err == nil && m.first {
				m.version = string(b)
			}
		default:
			err = c.each(n, func([]byte) error { return nil })
		}
		if err != nil {
			return err
		}
	}
}

func (m *snapshotMsg) blob(p []byte) error {
	if m.w == nil {
		m.buf = append(m.buf, p...)
		return nil
	}
	if _, err := m.w.Write(p); err != nil {
		m.werr = err
		return err
	}
	return nil
}

// cursor reads a message spread over gRPC's buffers.
type cursor struct {
	bufs mem.BufferSlice
	i    int
	cur  []byte
}

// more makes cur non-empty; false at the end of the message.
func (c *cursor) more() bool {
	for len(c.cur) == 0 {
		if c.i == len(c.bufs) {
			return false
		}
		c.cur = c.bufs[c.i].ReadOnlyData()
		c.i++
	}
	return true
}

// uvarint reads a varint; io.EOF only when the message ends before it.
func (c *cursor) uvarint() (uint64, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if !c.more() {
			if shift == 0 {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("%w: truncated varint", errMalformed)
		}
		b := c.cur[0]
		c.cur = c.cur[1:]
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: varint overflows", errMalformed)
}

// each hands the next n bytes to fn, in the pieces they are stored in.
func (c *cursor) each(n uint64, fn func([]byte) error) error {
	for n > 0 {
		if !c.more() {
			return fmt.Errorf("%w: truncated field", errMalformed)
		}
		k := int(min(uint64(len(c.cur)), n))
		if err := fn(c.cur[:k]); err != nil {
			return err
		}
		c.cur = c.cur[k:]
		n -= uint64(k)
	}
	return nil
}

// bytes returns a copy of the next n bytes (a small field).
func (c *cursor) bytes(n uint64) ([]byte, error) {
	if n > 1<<20 {
		return nil, fmt.Errorf("%w: field of %d bytes", errMalformed, n)
	}
	b := make([]byte, 0, n)
	err := c.each(n, func(p []byte) error { b = append(b, p...); return nil })
	return b, err
}

// skip skips a field of wire type typ other than bytes.
func (c *cursor) skip(typ protowire.Type) error {
	switch typ {
	case protowire.VarintType:
		_, err := c.uvarint()
		if err == io.EOF {
			err = fmt.Errorf("%w: truncated varint", errMalformed)
		}
		return err
	case protowire.Fixed32Type:
		return c.each(4, func([]byte) error { return nil })
	case protowire.Fixed64Type:
		return c.each(8, func([]byte) error { return nil })
	}
	return fmt.Errorf("%w: wire type %d", errMalformed, typ)
}
