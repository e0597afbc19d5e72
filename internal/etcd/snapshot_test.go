package etcd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// split cuts b into buffers at random points, as HTTP/2 frames cut a message.
func split(b []byte, rng *rand.Rand) mem.BufferSlice {
	var bs mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(40))
		bs = append(bs, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return bs
}

func TestSnapshotCodecDecodesAcrossBuffers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 1000)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	first := &pb.SnapshotResponse{Header: &pb.ResponseHeader{Revision: 42, MemberId: 7}, RemainingBytes: 5000, Blob: blob[:600], Version: "3.6.0"}
	second := &pb.SnapshotResponse{Header: &pb.ResponseHeader{Revision: 43}, RemainingBytes: 400, Blob: blob[600:], Version: "x"}
	b1, err := first.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := second.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// An unknown field of every wire type is skipped.
	b2 = protowire.AppendTag(b2, 9, protowire.VarintType)
	b2 = protowire.AppendVarint(b2, 1<<40)
	b2 = protowire.AppendTag(b2, 10, protowire.Fixed32Type)
	b2 = protowire.AppendFixed32(b2, 1)
	b2 = protowire.AppendTag(b2, 11, protowire.Fixed64Type)
	b2 = protowire.AppendFixed64(b2, 1)
	b2 = protowire.AppendTag(b2, 12, protowire.BytesType)
	b2 = protowire.AppendBytes(b2, []byte("ignored"))

	for range 20 {
		m := &snapshotMsg{first: true}
		var codec snapshotCodec
		if err := codec.Unmarshal(split(b1, rng), m); err != nil {
			t.Fatal(err)
		}
		if m.header == nil || m.header.Revision != 42 || m.header.MemberId != 7 || m.version != "3.6.0" {
			t.Fatalf("first message: header %v version %q", m.header, m.version)
		}
		got := append([]byte(nil), m.buf...)
		m.first = false
		var w bytes.Buffer
		m.w, m.buf = &w, m.buf[:0]
		if err := codec.Unmarshal(split(b2, rng), m); err != nil {
			t.Fatal(err)
		}
		if len(m.buf) != 0 {
			t.Fatal("blob appended to buf while a writer was set")
		}
		got = append(got, w.Bytes()...)
		if !bytes.Equal(got, blob) {
			t.Fatal("blob bytes differ")
		}
		if m.header.Revision != 42 || m.version != "3.6.0" {
			t.Fatalf("later message changed the first one's header %v or version %q", m.header, m.version)
		}
	}
}

func TestSnapshotCodecRejectsMalformed(t *testing.T) {
	good, err := (&pb.SnapshotResponse{Blob: []byte("abcdef"), Version: "3.6.0"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	twoBlobs := protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), good...), 3, protowire.BytesType), []byte("x"))
	for name, b := range map[string][]byte{
		"truncated":      good[:len(good)-2],
		"truncated tag":  append(append([]byte(nil), good...), 0x80),
		"group":          protowire.AppendTag(append([]byte(nil), good...), 5, protowire.StartGroupType),
		"two blobs":      twoBlobs,
		"huge length":    protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.BytesType), 1<<40),
		"varint too big": append(protowire.AppendTag(nil, 2, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11)...),
	} {
		m := &snapshotMsg{first: true}
		if err := (snapshotCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m); !errors.Is(err, errMalformed) {
			t.Errorf("%s: got %v, want errMalformed", name, err)
		}
	}
}

func TestSnapshotCodecOtherMessages(t *testing.T) {
	b, err := (&pb.SnapshotRequest{}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var req pb.SnapshotRequest
	if err := (snapshotCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &req); err != nil {
		t.Fatal(err)
	}
	out, err := (snapshotCodec{}).Marshal(&pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out.Free()
}

func TestDirtyPoolTiers(t *testing.T) {
	p := &dirtyPool{}
	for _, n := range []int{0, 1, 255, 256, 257, 4096, 16384, 16385, 32768, 40000, 1 << 20, 1<<20 + 1} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d): len %d", n, len(*b))
		}
		p.Put(b)
		b = p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d) after Put: len %d", n, len(*b))
		}
	}
	small := make([]byte, 10)
	p.Put(&small) // below every tier: dropped
}
