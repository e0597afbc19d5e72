package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// FuzzReader decodes arbitrary bytes. The reader must not panic, must only
// fail with an integrity or version error, must not allocate much beyond the
// size of its input (never MaxFrame for a short one), and every record it
// returns must re-encode, and decode again, to an equal record.
//
// Almost every mutation of a frame body breaks its CRC, which would keep
// the fuzzer away from the protobuf decoder and the record rules. So each
// input is also checked a second time with the CRC of every frame it can
// delimit recomputed.
//
//	go test -run XXX -fuzz FuzzReader -fuzztime 60s ./internal/journal
func FuzzReader(f *testing.F) {
	for seed := int64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewSource(seed))
		f.Add(encodeStream(f, randRecords(rng, 1+rng.Intn(4))))
	}
	f.Add([]byte(MagicV1))
	f.Add([]byte{})
	f.Add(encodeStream(f, []*Record{
		{Revision: 100, Time: time.Unix(1700000000, 1).UTC(), Events: []*mvccpb.Event{put("/a", "one", 100, 100, 1, 0x1234)}, Leases: []Lease{{ID: 0x1234, TTL: 60}}},
		{Revision: 101, Events: []*mvccpb.Event{put("/b", "", 90, 101, 4, 0), del("/c", 101)}},
	}))
	// A body with unknown fields of each wire type and a nested group.
	body := rawBody(&Record{Revision: 3, Events: []*mvccpb.Event{del("k", 3)}, Leases: []Lease{{ID: 1, TTL: 2}}})
	body = protowire.AppendTag(body, 7, protowire.StartGroupType)
	body = protowire.AppendTag(body, 1, protowire.Fixed32Type)
	body = protowire.AppendFixed32(body, 5)
	body = protowire.AppendTag(body, 7, protowire.EndGroupType)
	body = protowire.AppendTag(body, 8, protowire.BytesType)
	body = protowire.AppendBytes(body, []byte("x"))
	f.Add(stream(frame(body)))

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		if fixed := fixCRCs(data); !bytes.Equal(fixed, data) {
			checkDecode(t, fixed)
		}
	})
}

func checkDecode(t *testing.T, data []byte) {
	rd := NewReader(bytes.NewReader(data))
	var recs []*Record
	var err error
	for {
		var r *Record
		if r, err = rd.Next(); err != nil {
			break
		}
		recs = append(recs, r)
	}
	if err != io.EOF && !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
		t.Fatalf("error neither integrity nor version: %v", err)
	}
	if _, err2 := rd.Next(); err2 != err {
		t.Fatalf("error not sticky: %v, then %v", err, err2)
	}
	// The body buffer is the only allocation sized by a length read from
	// the stream; it grows with the data actually read.
	if c, limit := cap(rd.buf), 3*max(len(data), 64<<10); c > limit {
		t.Fatalf("reader buffer grew to %d bytes for a %d-byte input", c, len(data))
	}

	// Re-encode what was decoded: it must be accepted and read back equal.
	var out bytes.Buffer
	w := NewWriterV1(&out)
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("re-encoding revision %d: %v", r.Revision, err)
		}
	}
	again, err := decodeAll(out.Bytes())
	if err != nil {
		t.Fatalf("decoding the re-encoded stream: %v", err)
	}
	if len(again) != len(recs) {
		t.Fatalf("re-encoded stream has %d records, want %d", len(again), len(recs))
	}
	for i := range recs {
		if err := recordsEqual(again[i], recs[i]); err != nil {
			t.Fatalf("record %d re-encoded differently: %v", i, err)
		}
	}
}

// fixCRCs returns data with the CRC of every frame it can delimit set to
// the right value. It leaves data itself alone.
func fixCRCs(data []byte) []byte {
	if len(data) < len(MagicV1) {
		return data
	}
	out := bytes.Clone(data)
	b := out[len(MagicV1):]
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			break
		}
		body := b[k : k+int(n)]
		b = b[k+int(n):]
		if len(b) < crcSize {
			break
		}
		binary.BigEndian.PutUint32(b, crc32.Checksum(body, castagnoli))
		b = b[crcSize:]
	}
	return out
}
