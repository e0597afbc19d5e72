package codec

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// sealedStream writes recs as a framing-2 stream with its seal.
func sealedStream(t testing.TB, recs []*Record) ([]byte, Seal) {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	s, err := w.Seal("20261122T044847.123Z-3f9a1c0b", "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), s
}

func readSealed(data []byte) ([]*Record, *Seal, error) {
	rd := NewReader(bytes.NewReader(data))
	var recs []*Record
	for {
		r, err := rd.Next()
		if err != nil {
			if err.Error() == "EOF" {
				return recs, rd.Sealed(), nil
			}
			return recs, nil, err
		}
		recs = append(recs, r)
	}
}

func TestSealRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 50; i++ {
		recs := randRecords(rng, 1+rng.Intn(30))
		data, want := sealedStream(t, recs)
		got, seal, err := readSealed(data)
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, got, recs)
		if seal == nil {
			t.Fatal("no seal after a clean end")
		}
		if seal.Start != recs[0].Revision || seal.End != recs[len(recs)-1].Revision || seal.Records != int64(len(recs)) {
			t.Fatalf("seal %+v does not describe the records", seal)
		}
		if seal.Chain != want.Chain || seal.ClusterID != want.ClusterID || seal.RawSHA256 != want.RawSHA256 || seal.Events != want.Events {
			t.Fatalf("seal read back %+v, written %+v", seal, want)
		}
		if sum := sha256.Sum256(data[:len(data)-sealLen(t, data)]); sum != seal.RawSHA256 {
			t.Fatal("raw_sha256 is not the sha256 of the bytes before the seal")
		}
	}
}

// sealLen is the length of the seal at the end of a sealed stream.
func sealLen(t *testing.T, data []byte) int {
	t.Helper()
	recs, _, err := readSealed(data)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, r := range recs {
		w.Write(r)
	}
	return len(data) - b.Len()
}

func TestSealTruncateEveryOffset(t *testing.T) {
	recs, _, _ := threeRecords(t)
	data, _ := sealedStream(t, recs)
	for n := 0; n < len(data); n++ {
		_, _, err := readSealed(data[:n])
		if !errors.Is(err, format.ErrIntegrity) {
			t.Fatalf("prefix %d of %d: err %v, want an integrity error (a framing-2 stream ends only with its seal)", n, len(data), err)
		}
	}
}

func TestSealFlipEveryByte(t *testing.T) {
	recs, _, _ := threeRecords(t)
	data, _ := sealedStream(t, recs)
	for i := range data {
		for _, mask := range []byte{0x01, 0x80} {
			b := bytes.Clone(data)
			b[i] ^= mask
			if _, _, err := readSealed(b); !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
				t.Fatalf("byte %d ^ %#x: err %v, want an integrity error", i, mask, err)
			}
		}
	}
}

func TestSealRejects(t *testing.T) {
	recs, _, _ := threeRecords(t)
	data, _ := sealedStream(t, recs)
	if _, _, err := readSealed(append(bytes.Clone(data), 0)); err == nil || !strings.Contains(err.Error(), "after the seal") {
		t.Fatalf("a byte after the seal: %v", err)
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	if _, err := w.Seal("c", "x"); err == nil {
		t.Fatal("sealed a stream without records")
	}
	if err := w.Write(recs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Seal("c", "x"); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(recs[1]); err == nil {
		t.Fatal("wrote a record after the seal")
	}
	// A framing-1 writer has no seal.
	if _, err := NewWriterV1(&b).Seal("c", "x"); err == nil {
		t.Fatal("sealed a framing-1 stream")
	}
	// A seal that lies about the records: rewrite the counts.
	data2, _ := sealedStream(t, recs[:2])
	if _, _, err := readSealed(append(data2[:len(data2)-sealLen(t, data2)], data[len(data)-sealLen(t, data):]...)); !errors.Is(err, format.ErrIntegrity) {
		t.Fatalf("a seal of another stream: %v", err)
	}
}
