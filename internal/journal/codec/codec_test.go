package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

func put(key, val string, create, mod, ver, lease int64) *mvccpb.Event {
	kv := &mvccpb.KeyValue{Key: []byte(key), CreateRevision: create, ModRevision: mod, Version: ver, Lease: lease}
	if val != "" {
		kv.Value = []byte(val)
	}
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: kv}
}

func del(key string, mod int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: mod}}
}

// randRecords returns n valid records with increasing revisions: puts with
// and without values and leases, deletes, several events per revision,
// leases, zero and non-zero times.
func randRecords(rng *rand.Rand, n int) []*Record {
	var recs []*Record
	rev := int64(1 + rng.Intn(1000))
	if rng.Intn(4) == 0 {
		rev = 1 << (40 + rng.Intn(20)) // large varints
	}
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		rev += 1 + int64(rng.Intn(3))
		r := &Record{Revision: rev}
		switch rng.Intn(3) {
		case 0: // zero time
		case 1:
			r.Time = base.Add(time.Duration(rng.Int63n(int64(365 * 24 * time.Hour))))
		case 2:
			r.Time = time.Unix(0, -1-rng.Int63n(1e18)).UTC() // before 1970
		}
		nev := 1 + rng.Intn(4)
		for j := 0; j < nev; j++ {
			key := fmt.Sprintf("/registry/k%d/%d", rng.Intn(50), j)
			if rng.Intn(5) == 0 {
				r.Events = append(r.Events, del(key, rev))
				continue
			}
			val := make([]byte, rng.Intn(300))
			rng.Read(val)
			create := rev
			if rng.Intn(2) == 0 {
				create = 1 + rng.Int63n(rev)
			}
			var lease int64
			if rng.Intn(3) == 0 {
				lease = 1 + rng.Int63n(math.MaxInt64-1)
				r.Leases = append(r.Leases, Lease{ID: lease, TTL: rng.Int63n(3600)})
			}
			r.Events = append(r.Events, put(key, string(val), create, rev, 1+rng.Int63n(1000), lease))
		}
		recs = append(recs, r)
	}
	return recs
}

func encodeStream(t testing.TB, recs []*Record) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriterV1(&b)
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// decodeAll returns the records decoded before the first error, and that
// error (nil at a clean end).
func decodeAll(data []byte) ([]*Record, error) {
	rd := NewReader(bytes.NewReader(data))
	var recs []*Record
	for {
		r, err := rd.Next()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		recs = append(recs, r)
	}
}

// recordsEqual reports how a and b differ. Events are compared by their
// protobuf encoding (so a nil and an empty value are equal), times by
// instant.
func recordsEqual(a, b *Record) error {
	if a.Revision != b.Revision {
		return fmt.Errorf("revision %d != %d", a.Revision, b.Revision)
	}
	if a.Time.IsZero() != b.Time.IsZero() || !a.Time.Equal(b.Time) {
		return fmt.Errorf("revision %d: time %v != %v", a.Revision, a.Time, b.Time)
	}
	if len(a.Events) != len(b.Events) {
		return fmt.Errorf("revision %d: %d events != %d", a.Revision, len(a.Events), len(b.Events))
	}
	for i := range a.Events {
		x, err1 := a.Events[i].Marshal()
		y, err2 := b.Events[i].Marshal()
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return fmt.Errorf("revision %d: event %d: %v != %v", a.Revision, i, a.Events[i], b.Events[i])
		}
	}
	if len(a.Leases) != len(b.Leases) {
		return fmt.Errorf("revision %d: %d leases != %d", a.Revision, len(a.Leases), len(b.Leases))
	}
	for i := range a.Leases {
		if a.Leases[i] != b.Leases[i] {
			return fmt.Errorf("revision %d: lease %d: %+v != %+v", a.Revision, i, a.Leases[i], b.Leases[i])
		}
	}
	return nil
}

func checkRecords(t *testing.T, got, want []*Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if err := recordsEqual(got[i], want[i]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
}

// rawBody encodes r as a frame body without any check, independently of
// AppendFrame, so tests can build invalid records.
func rawBody(r *Record) []byte {
	var b []byte
	if r.Revision != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.Revision))
	}
	if !r.Time.IsZero() {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.Time.UnixNano()))
	}
	for _, ev := range r.Events {
		m, err := ev.Marshal()
		if err != nil {
			panic(err)
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	for _, l := range r.Leases {
		var lb []byte
		if l.ID != 0 {
			lb = protowire.AppendTag(lb, 1, protowire.VarintType)
			lb = protowire.AppendVarint(lb, uint64(l.ID))
		}
		if l.TTL != 0 {
			lb = protowire.AppendTag(lb, 2, protowire.VarintType)
			lb = protowire.AppendVarint(lb, uint64(l.TTL))
		}
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, lb)
	}
	return b
}

// frame frames body with a correct length and CRC.
func frame(body []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(body)))
	b = append(b, body...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}

func stream(frames ...[]byte) []byte {
	return append([]byte(MagicV1), bytes.Join(frames, nil)...)
}

func TestRoundTripRandom(t *testing.T) {
	for seed := int64(1); seed <= 50; seed++ {
		rng := rand.New(rand.NewSource(seed))
		recs := randRecords(rng, rng.Intn(40))
		data := encodeStream(t, recs)

		// The Writer's bytes are the header plus AppendFrame of each record,
		// and each body is what an independent encoder produces.
		want := []byte(MagicV1)
		for _, r := range recs {
			var err error
			if want, err = AppendFrame(want, r); err != nil {
				t.Fatal(err)
			}
			if f := frame(rawBody(r)); !bytes.HasSuffix(want, f) {
				t.Fatalf("seed %d revision %d: frame\n%x\nwant\n%x", seed, r.Revision, want[len(want)-len(f):], f)
			}
		}
		if !bytes.Equal(data, want) {
			t.Fatalf("seed %d: Writer and AppendFrame differ", seed)
		}

		got, err := decodeAll(data)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		checkRecords(t, got, recs)
		for _, r := range got {
			if !r.Time.IsZero() && r.Time.Location() != time.UTC {
				t.Fatalf("time %v is not UTC", r.Time)
			}
		}
	}
}

func TestEmptyStream(t *testing.T) {
	var b bytes.Buffer
	w := NewWriterV1(&b)
	for i := 0; i < 2; i++ {
		if err := w.WriteHeader(); err != nil {
			t.Fatal(err)
		}
	}
	if b.String() != MagicV1 {
		t.Fatalf("empty stream is %q, want %q", b.String(), MagicV1)
	}
	// A record after an explicit header does not repeat it.
	if err := w.Write(&Record{Revision: 3, Events: []*mvccpb.Event{del("a", 3)}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	if got, err := decodeAll(b.Bytes()); err != nil || len(got) != 1 {
		t.Fatalf("got %d records, %v", len(got), err)
	}

	rd := NewReader(strings.NewReader(MagicV1))
	for i := 0; i < 2; i++ {
		if r, err := rd.Next(); r != nil || err != io.EOF {
			t.Fatalf("Next on an empty stream: %v, %v", r, err)
		}
	}
}

// TestGolden pins the byte format against a hand-assembled stream.
func TestGolden(t *testing.T) {
	r := &Record{
		Revision: 5,
		Time:     time.Unix(0, 1),
		Events:   []*mvccpb.Event{put("k", "v", 5, 5, 1, 7)},
		Leases:   []Lease{{ID: 7, TTL: 10}},
	}
	body, _ := hex.DecodeString("" +
		"0805" + // revision 5
		"1001" + // time_unix_nano 1
		"1a10" + "120e" + "0a016b" + "1005" + "1805" + "2001" + "2a0176" + "3007" + // event: kv{key k, create 5, mod 5, version 1, value v, lease 7}
		"2204" + "0807" + "100a") // lease {id 7, ttl 10}
	want := []byte("EBJRNL\x00\x01")
	want = append(want, 0x1c)
	want = append(want, body...)
	want = binary.BigEndian.AppendUint32(want, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	got := encodeStream(t, []*Record{r})
	if !bytes.Equal(got, want) {
		t.Fatalf("stream\n%x\nwant\n%x", got, want)
	}
	dec, err := decodeAll(want)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, dec, []*Record{r})
}

func TestTime(t *testing.T) {
	loc := time.FixedZone("x", 3600)
	for _, tc := range []struct {
		in, want time.Time
	}{
		{time.Time{}, time.Time{}},
		{time.Date(2025, 1, 2, 3, 4, 5, 6, loc), time.Date(2025, 1, 2, 2, 4, 5, 6, time.UTC)},
		{time.Unix(0, -5), time.Unix(0, -5).UTC()},
		{time.Unix(0, 0), time.Time{}}, // the epoch itself reads back as unknown
	} {
		data := encodeStream(t, []*Record{{Revision: 1, Time: tc.in, Events: []*mvccpb.Event{del("a", 1)}}})
		got, err := decodeAll(data)
		if err != nil {
			t.Fatal(err)
		}
		if g := got[0].Time; g != tc.want {
			t.Errorf("time %v read back as %v, want %v", tc.in, g, tc.want)
		}
	}
	// time.Now has a monotonic reading; it is dropped.
	now := time.Now()
	data := encodeStream(t, []*Record{{Revision: 1, Time: now, Events: []*mvccpb.Event{del("a", 1)}}})
	if got, err := decodeAll(data); err != nil || !got[0].Time.Equal(now) {
		t.Fatalf("time.Now: %v, %v", got, err)
	}
	for _, bad := range []time.Time{time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if _, err := AppendFrame(nil, &Record{Revision: 1, Time: bad, Events: []*mvccpb.Event{del("a", 1)}}); err == nil {
			t.Errorf("AppendFrame accepted time %v", bad)
		}
	}
}

// invalidRecords are records the rules reject, each for one reason.
var invalidRecords = []struct {
	name, msg string
	rec       *Record
}{
	{"zero revision", "revision 0 is not positive", &Record{Revision: 0, Events: []*mvccpb.Event{del("a", 0)}}},
	{"negative revision", "revision -3 is not positive", &Record{Revision: -3, Events: []*mvccpb.Event{del("a", -3)}}},
	{"no events", "has no events", &Record{Revision: 20}},
	{"nil kv", "has no key-value", &Record{Revision: 20, Events: []*mvccpb.Event{del("a", 20), {Type: mvccpb.DELETE}}}},
	{"empty key", "has an empty key", &Record{Revision: 20, Events: []*mvccpb.Event{del("", 20)}}},
	{"mod revision", "has mod revision 19", &Record{Revision: 20, Events: []*mvccpb.Event{del("a", 19)}}},
	{"event type", "has type 2, not PUT or DELETE", &Record{Revision: 20, Events: []*mvccpb.Event{{Type: 2, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 20}}}}},
	{"create revision zero", "has create revision 0", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", 0, 20, 1, 0)}}},
	{"create revision negative", "has create revision -1", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", -1, 20, 1, 0)}}},
	{"create after mod", "has create revision 21", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", 21, 20, 1, 0)}}},
	{"version zero", "has version 0", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", 20, 20, 0, 0)}}},
	{"lease id zero", "lease 1 has ID 0", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", 20, 20, 1, 0)}, Leases: []Lease{{ID: 1, TTL: 1}, {ID: 0, TTL: 5}}}},
	{"lease ttl negative", "has negative TTL -1", &Record{Revision: 20, Events: []*mvccpb.Event{put("a", "v", 20, 20, 1, 0)}, Leases: []Lease{{ID: 9, TTL: -1}}}},
}

func TestAppendFrameRejects(t *testing.T) {
	for _, tc := range invalidRecords {
		dst := []byte("prefix")
		out, err := AppendFrame(dst, tc.rec)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.msg)
		}
		if string(out) != "prefix" {
			t.Errorf("%s: dst changed to %q", tc.name, out)
		}
	}
	if _, err := AppendFrame(nil, nil); err == nil {
		t.Error("nil record accepted")
	}
	if _, err := AppendFrame(nil, &Record{Revision: 1, Events: []*mvccpb.Event{nil}}); err == nil {
		t.Error("nil event accepted")
	}
}

// TestReaderRejects feeds one defect per case after a good first record and
// checks that the good record is returned, then an ErrIntegrity error with
// the expected message.
func TestReaderRejects(t *testing.T) {
	first := &Record{Revision: 10, Events: []*mvccpb.Event{put("a", "v", 10, 10, 1, 0)}}
	good := frame(rawBody(first))
	next := rawBody(&Record{Revision: 11, Events: []*mvccpb.Event{del("a", 11)}})
	nextFrame := frame(next)
	badCRC := bytes.Clone(nextFrame)
	badCRC[len(badCRC)-1] ^= 1
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	withRev := func(b []byte) []byte { return cat(tag(1, protowire.VarintType), []byte{11}, b) }

	type tc struct {
		name, msg string
		tail      []byte // after MagicV1 and good
	}
	cases := []tc{
		{"truncated length", "truncated frame length", []byte{0x80}},
		{"truncated body", "truncated frame body: 2 of", nextFrame[:3]},
		{"truncated crc", "truncated frame checksum: 2 of 4", nextFrame[:len(nextFrame)-2]},
		{"crc mismatch", "frame checksum mismatch", badCRC},
		{"too large", "frame length 67108865 is above the maximum", binary.AppendUvarint(nil, MaxFrame+1)},
		{"huge length", "above the maximum", binary.AppendUvarint(nil, math.MaxUint64)},
		{"length overflow", "overflows 64 bits", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}},
		{"non-minimal length", "not a minimal varint", cat([]byte{byte(len(next)) | 0x80, 0x00}, nextFrame[1:])},
		{"empty body", "revision 0 is not positive", frame(nil)},
		{"bad tag", "malformed record: field tag", frame([]byte{0x80})},
		{"field number 0", "malformed record: field tag", frame([]byte{0x00, 0x01})},
		{"truncated varint", "malformed record: field 1", frame([]byte{0x08, 0x80})},
		{"revision wire type", "field 1 has wire type 2", frame(cat(tag(1, protowire.BytesType), []byte{0}))},
		{"time wire type", "field 2 has wire type 1", frame(cat(tag(2, protowire.Fixed64Type), make([]byte, 8)))},
		{"event wire type", "field 3 has wire type 0", frame(cat(tag(3, protowire.VarintType), []byte{1}))},
		{"lease wire type", "field 4 has wire type 5", frame(cat(tag(4, protowire.Fixed32Type), make([]byte, 4)))},
		{"event length past end", "malformed record: field 3", frame(withRev(cat(tag(3, protowire.BytesType), []byte{5, 1})))},
		{"event not protobuf", "malformed record: event 0", frame(withRev(cat(tag(3, protowire.BytesType), []byte{2, 0x12, 0x05})))},
		{"lease not protobuf", "malformed record: lease 0", frame(withRev(cat(tag(4, protowire.BytesType), []byte{1, 0x08})))},
		{"lease wrong type", "lease 0: field 1 has wire type 2", frame(withRev(cat(tag(4, protowire.BytesType), []byte{2, 0x0a, 0x00})))},
		{"unknown field truncated", "malformed record: unknown field 9", frame(withRev(cat(tag(9, protowire.BytesType), []byte{3})))},
		{"stray end group", "malformed record: unknown field 9", frame(withRev(tag(9, protowire.EndGroupType)))},
		{"same revision", "revision 10 does not follow revision 10", frame(rawBody(&Record{Revision: 10, Events: []*mvccpb.Event{del("a", 10)}}))},
		{"lower revision", "revision 9 does not follow revision 10", frame(rawBody(&Record{Revision: 9, Events: []*mvccpb.Event{del("a", 9)}}))},
	}
	for _, c := range invalidRecords {
		// The invalid records use revision 20 (or <= 0), so that following
		// revision 10 only the intended rule fails.
		cases = append(cases, tc{c.name, c.msg, frame(rawBody(c.rec))})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := cat([]byte(MagicV1), good, tc.tail)
			rd := NewReader(bytes.NewReader(data))
			r, err := rd.Next()
			if err != nil {
				t.Fatalf("first record: %v", err)
			}
			checkRecords(t, []*Record{r}, []*Record{first})
			r, err = rd.Next()
			if r != nil || !errors.Is(err, format.ErrIntegrity) {
				t.Fatalf("got %v, %v; want an integrity error", r, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("error %q does not contain %q", msg, tc.msg)
			}
			at := fmt.Sprintf("journal frame at byte %d (after revision 10)", len(MagicV1)+len(good))
			if !strings.Contains(msg, at) {
				t.Errorf("error %q does not contain %q", msg, at)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans lines", msg)
			}
			if _, err2 := rd.Next(); err2 != err {
				t.Errorf("second Next: %v, want the same error", err2)
			}
		})
	}
}

func TestReaderRejectsHeader(t *testing.T) {
	good := frame(rawBody(&Record{Revision: 1, Events: []*mvccpb.Event{del("a", 1)}}))
	for _, tc := range []struct {
		name, data, msg string
		version         bool
	}{
		{"empty", "", "empty stream (no header)", false},
		{"truncated header", MagicV1[:5], "truncated header: 5 of 8 bytes", false},
		{"truncated header at version", MagicV1[:7], "truncated header: 7 of 8 bytes", false},
		{"bad magic", "EBJRNX\x00\x01" + string(good), "bad magic", false},
		{"short bad magic", "{", "bad magic", false},
		{"not a journal", "\x28\xb5\x2f\xfd" + string(good), "bad magic", false},
		{"first frame", MagicV1 + "\x05", "journal frame at byte 8 (first frame): truncated frame body", false},
		{"version 3", "EBJRNL\x00\x03" + string(good), "framing version 3, this binary reads versions 1 and 2", true},
		{"version 0", "EBJRNL\x00\x00", "framing version 0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(strings.NewReader(tc.data)).Next()
			if r != nil || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, %v; want error %q", r, err, tc.msg)
			}
			if errors.Is(err, format.ErrVersion) != tc.version || errors.Is(err, format.ErrIntegrity) == tc.version {
				t.Fatalf("error %v: ErrVersion %v, ErrIntegrity %v", err, errors.Is(err, format.ErrVersion), errors.Is(err, format.ErrIntegrity))
			}
		})
	}
}

// TestUnknownFields: fields a later writer might add are skipped, of every
// wire type, at the top level and in a lease; fields may come in any order
// and a repeated scalar keeps its last value.
func TestUnknownFields(t *testing.T) {
	want := &Record{
		Revision: 7,
		Time:     time.Unix(100, 5).UTC(),
		Events:   []*mvccpb.Event{put("a", "v", 3, 7, 2, 9), del("b", 7)},
		Leases:   []Lease{{ID: 9, TTL: 30}},
	}
	unknown := func(num protowire.Number) []byte {
		var b []byte
		b = protowire.AppendTag(b, num, protowire.VarintType)
		b = protowire.AppendVarint(b, 1<<60)
		b = protowire.AppendTag(b, num+1, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 1)
		b = protowire.AppendTag(b, num+2, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("future"))
		b = protowire.AppendTag(b, num+3, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 1)
		b = protowire.AppendTag(b, num+4, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		b = protowire.AppendTag(b, num+4, protowire.EndGroupType)
		return b
	}
	lease := append(unknown(3), 0x10, 30, 0x08, 9)
	var body []byte
	body = append(body, unknown(5)...)
	body = protowire.AppendTag(body, 4, protowire.BytesType)
	body = protowire.AppendBytes(body, lease)
	body = append(body, 0x08, 99) // revision 99, overridden below
	for _, ev := range want.Events {
		m, _ := ev.Marshal()
		body = protowire.AppendTag(body, 3, protowire.BytesType)
		body = protowire.AppendBytes(body, m)
	}
	body = protowire.AppendTag(body, 2, protowire.VarintType)
	body = protowire.AppendVarint(body, uint64(want.Time.UnixNano()))
	body = append(body, 0x08, 7)
	body = append(body, unknown(1000)...)

	got, err := decodeAll(stream(frame(body)))
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, []*Record{want})
}

// threeRecords is a small stream for the truncation and bit-flip tests.
func threeRecords(t *testing.T) ([]*Record, []byte, []int) {
	recs := []*Record{
		{Revision: 100, Time: time.Unix(1700000000, 1).UTC(), Events: []*mvccpb.Event{put("/a", "one", 100, 100, 1, 0x1234)}, Leases: []Lease{{ID: 0x1234, TTL: 60}}},
		{Revision: 101, Events: []*mvccpb.Event{put("/b", "", 90, 101, 4, 0), del("/c", 101)}},
		{Revision: 105, Time: time.Unix(1700000001, 0).UTC(), Events: []*mvccpb.Event{del("/a", 105)}},
	}
	data := encodeStream(t, recs)
	// ends[i] is the offset just after record i-1's frame (ends[0] = header).
	ends := []int{len(MagicV1)}
	b := []byte(MagicV1)
	for _, r := range recs {
		b, _ = AppendFrame(b, r)
		ends = append(ends, len(b))
	}
	return recs, data, ends
}

func TestTruncateEveryOffset(t *testing.T) {
	recs, data, ends := threeRecords(t)
	for n := 0; n < len(data); n++ {
		got, err := decodeAll(data[:n])
		// Whole frames before the cut decode exactly.
		whole := 0
		for whole < len(recs) && ends[whole+1] <= n {
			whole++
		}
		if len(got) != whole {
			t.Fatalf("prefix %d: %d records, want %d", n, len(got), whole)
		}
		checkRecords(t, got, recs[:whole])
		// A cut exactly after the header or a frame is a clean (shorter)
		// stream; anywhere else it is an integrity error.
		atBoundary := false
		for _, e := range ends {
			atBoundary = atBoundary || e == n
		}
		if atBoundary {
			if err != nil {
				t.Fatalf("prefix %d (frame boundary): %v", n, err)
			}
		} else if !errors.Is(err, format.ErrIntegrity) {
			t.Fatalf("prefix %d: err %v, want an integrity error", n, err)
		}
	}
	if got, err := decodeAll(data); err != nil || len(got) != len(recs) {
		t.Fatalf("whole stream: %d records, %v", len(got), err)
	}
}

func TestFlipEveryByte(t *testing.T) {
	recs, data, ends := threeRecords(t)
	for i := range data {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(data)
			b[i] ^= mask
			got, err := decodeAll(b)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: stream accepted", i, mask)
			}
			if !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
				t.Fatalf("byte %d ^ %#x: %v", i, mask, err)
			}
			// Records before the damaged frame are intact; none after it
			// is returned.
			before := 0
			for before < len(recs) && ends[before+1] <= i {
				before++
			}
			if len(got) != before {
				t.Fatalf("byte %d ^ %#x: %d records, want %d", i, mask, len(got), before)
			}
			checkRecords(t, got, recs[:before])
		}
	}
}

// TestLargeLengthSmallAlloc: a frame claiming MaxFrame bytes on a short
// stream must not make the reader allocate anywhere near MaxFrame.
func TestLargeLengthSmallAlloc(t *testing.T) {
	data := stream(append(binary.AppendUvarint(nil, MaxFrame), make([]byte, 1000)...))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeAll(data)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, format.ErrIntegrity) || !strings.Contains(err.Error(), "truncated frame body: 1000 of 67108864") {
		t.Fatalf("err %v", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("decoding %d bytes allocated %d bytes", len(data), d)
	}
}

// TestLargeFrame: a body of exactly MaxFrame bytes is written and read
// back, through a reader without ReadByte; one byte more is refused.
func TestLargeFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	ev := put("k", "", 1, 1, 1, 0)
	r := &Record{Revision: 1, Events: []*mvccpb.Event{ev}}
	bodySize := func() int { return len(rawBody(&Record{Revision: 1})) + 1 + protowire.SizeBytes(ev.Size()) }
	ev.Kv.Value = make([]byte, MaxFrame-100, MaxFrame)
	for bodySize() < MaxFrame {
		ev.Kv.Value = ev.Kv.Value[:len(ev.Kv.Value)+1]
	}
	if bodySize() != MaxFrame {
		t.Fatalf("body size %d", bodySize())
	}
	data, err := AppendFrame([]byte(MagicV1), r)
	if err != nil {
		t.Fatal(err)
	}
	rd := NewReader(struct{ io.Reader }{bytes.NewReader(data)})
	got, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, []*Record{got}, []*Record{r})
	if _, err := rd.Next(); err != io.EOF {
		t.Fatal(err)
	}
	ev.Kv.Value = append(ev.Kv.Value, 0)
	if _, err := AppendFrame(nil, r); err == nil || !strings.Contains(err.Error(), "larger than 67108864") {
		t.Fatalf("body of MaxFrame+1 bytes: %v", err)
	}
}

type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestReaderPassesIOErrors: an error of the underlying reader is not
// reported as corruption.
func TestReaderPassesIOErrors(t *testing.T) {
	_, data, ends := threeRecords(t)
	boom := errors.New("connection reset")
	for _, n := range []int{0, 4, ends[0], ends[1], ends[1] + 1, ends[1] + 5} {
		rd := NewReader(&errReader{data: data[:n], err: boom})
		var err error
		for err == nil {
			_, err = rd.Next()
		}
		if !errors.Is(err, boom) || errors.Is(err, format.ErrIntegrity) {
			t.Errorf("cut at %d: %v", n, err)
		}
	}
}

type failWriter struct {
	n    int
	fail bool
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.fail {
		return 0, errors.New("disk full")
	}
	w.n += len(p)
	return len(p), nil
}

func TestWriter(t *testing.T) {
	fw := &failWriter{}
	w := NewWriterV1(fw)
	ok := &Record{Revision: 5, Events: []*mvccpb.Event{del("a", 5)}}
	if err := w.Write(ok); err != nil {
		t.Fatal(err)
	}
	n := fw.n
	// Refused records write nothing and leave the Writer usable.
	for _, r := range []*Record{
		ok,
		{Revision: 4, Events: []*mvccpb.Event{del("a", 4)}},
		{Revision: 6},
		nil,
	} {
		if err := w.Write(r); err == nil {
			t.Fatalf("Write(%v) accepted", r)
		}
	}
	if fw.n != n {
		t.Fatalf("refused records wrote %d bytes", fw.n-n)
	}
	if err := w.Write(&Record{Revision: 6, Events: []*mvccpb.Event{del("a", 6)}}); err != nil {
		t.Fatal(err)
	}
	// A write error is sticky.
	fw.fail = true
	if err := w.Write(&Record{Revision: 7, Events: []*mvccpb.Event{del("a", 7)}}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
	fw.fail = false
	if err := w.Write(&Record{Revision: 8, Events: []*mvccpb.Event{del("a", 8)}}); err == nil {
		t.Fatal("Write after a failed write succeeded")
	}

	// No Write and no WriteHeader: nothing written.
	fw = &failWriter{}
	_ = NewWriterV1(fw)
	if fw.n != 0 {
		t.Fatal("NewWriter wrote")
	}
}

func TestAppendFrameAllocs(t *testing.T) {
	r := benchRecord()
	buf := make([]byte, 0, 4096)
	if a := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = AppendFrame(buf[:0], r); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("AppendFrame into a large enough buffer: %v allocs", a)
	}
	w := NewWriterV1(io.Discard)
	rev := r.Revision
	if a := testing.AllocsPerRun(100, func() {
		rev++
		r.Revision = rev
		r.Events[0].Kv.ModRevision = rev
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("Writer.Write: %v allocs", a)
	}
}

func benchRecord() *Record {
	val := make([]byte, 1024)
	rand.New(rand.NewSource(1)).Read(val)
	return &Record{
		Revision: 123456789,
		Time:     time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Events:   []*mvccpb.Event{put("/registry/pods/default/web-7d4b9c8f6d-x2x9k", string(val), 123456000, 123456789, 17, 0)},
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	r := benchRecord()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	var err error
	for b.Loop() {
		if buf, err = AppendFrame(buf[:0], r); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkReader(b *testing.B) {
	r := benchRecord()
	recs := make([]*Record, 1000)
	for i := range recs {
		c := *r
		c.Revision = int64(i + 1)
		c.Events = []*mvccpb.Event{put("/registry/k", string(r.Events[0].Kv.Value), 1, c.Revision, int64(i+1), 0)}
		recs[i] = &c
	}
	data := encodeStream(b, recs)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if got, err := decodeAll(data); err != nil || len(got) != len(recs) {
			b.Fatal(err)
		}
	}
}
