package format

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"
	"time"

	"filippo.io/age"
)

// fakeSnapshot returns bytes shaped like etcd's stream: data ‖ sha256(data).
func fakeSnapshot(n int, seed int64) []byte {
	data := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(data[:n/2]) // half random, half zeros
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

func encode(t *testing.T, raw []byte, rs []Recipient) ([]byte, *Manifest) {
	t.Helper()
	var out bytes.Buffer
	e, err := NewEncoder(&out, EncoderOptions{Recipients: rs})
	if err != nil {
		t.Fatal(err)
	}
	// Feed in uneven chunks to exercise the trailer bookkeeping.
	for i := 0; i < len(raw); {
		n := 1 + (i*7919)%70000
		if i+n > len(raw) {
			n = len(raw) - i
		}
		if _, err := e.Write(raw[i : i+n]); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	s, err := e.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{FormatVersion: Version, ID: "x", Compression: CompressionZstd, Encryption: EncryptionNone,
		RawSize: s.RawSize, RawSHA256: s.RawSHA256, StoredSize: s.StoredSize, StoredSHA256: s.StoredSHA256}
	if len(rs) > 0 {
		m.Encryption = EncryptionAge
	}
	if s.StoredSize != int64(out.Len()) {
		t.Fatalf("stored size %d, buffer %d", s.StoredSize, out.Len())
	}
	return out.Bytes(), m
}

func decode(stored []byte, m *Manifest, ids []age.Identity) ([]byte, error) {
	return decodeWith(stored, m, ids, DecoderOptions{})
}

// readAheads are the decoder options every damage test runs with: reading
// in line, and reading ahead on another goroutine (restores).
var readAheads = []DecoderOptions{{}, {ReadAhead: 2}}

func decodeWith(stored []byte, m *Manifest, ids []age.Identity, opt DecoderOptions) ([]byte, error) {
	d, err := NewDecoderWith(bytes.NewReader(stored), m, ids, opt)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}

func TestPayloadRoundTrip(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	r, err := ParseRecipient(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		rs   []Recipient
	}{{"plain", nil}, {"age", []Recipient{r}}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fakeSnapshot(3<<20+17, 1)
			stored, m := encode(t, raw, tc.rs)
			got, err := decode(stored, m, []age.Identity{id})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatal("round trip changed the bytes")
			}
		})
	}
}

func TestEncoderRejectsBadEtcdTrailer(t *testing.T) {
	raw := fakeSnapshot(100000, 2)
	raw[len(raw)-1] ^= 1
	e, _ := NewEncoder(io.Discard, EncoderOptions{})
	e.Write(raw)
	if _, err := e.Close(); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("want ErrIntegrity, got %v", err)
	}
}

func TestDecoderDetectsEveryKindOfDamage(t *testing.T) {
	raw := fakeSnapshot(200000, 3)
	stored, m := encode(t, raw, nil)
	for _, opt := range readAheads {
		decode := func(stored []byte, m *Manifest, ids []age.Identity) ([]byte, error) {
			return decodeWith(stored, m, ids, opt)
		}
		for _, off := range []int{0, 5, len(stored) / 2, len(stored) - 1} {
			bad := bytes.Clone(stored)
			bad[off] ^= 0x40
			if _, err := decode(bad, m, nil); !errors.Is(err, ErrIntegrity) {
				t.Errorf("flip at %d: want ErrIntegrity, got %v", off, err)
			}
		}
		if _, err := decode(stored[:len(stored)-3], m, nil); !errors.Is(err, ErrIntegrity) {
			t.Errorf("truncated: want ErrIntegrity, got %v", err)
		}
		if _, err := decode(append(bytes.Clone(stored), 0), m, nil); !errors.Is(err, ErrIntegrity) {
			t.Errorf("appended byte: want ErrIntegrity, got %v", err)
		}
		m2 := *m
		m2.RawSHA256 = m2.StoredSHA256
		if _, err := decode(stored, &m2, nil); !errors.Is(err, ErrIntegrity) {
			t.Errorf("wrong raw sha: want ErrIntegrity, got %v", err)
		}
	}
}

func TestDecoderKeys(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	r, _ := ParseRecipient(id.Recipient().String())
	stored, m := encode(t, fakeSnapshot(1000, 4), []Recipient{r})
	if _, err := decode(stored, m, nil); !errors.Is(err, ErrKey) {
		t.Errorf("no identity: want ErrKey, got %v", err)
	}
	if _, err := decode(stored, m, []age.Identity{other}); !errors.Is(err, ErrKey) {
		t.Errorf("wrong identity: want ErrKey, got %v", err)
	}
}

func TestParseRecipientErrors(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	for _, s := range []string{"", "age1notakey", "hello", id.String()} {
		if _, err := ParseRecipient(s); !errors.Is(err, ErrKey) {
			t.Errorf("%q: want ErrKey, got %v", s, err)
		}
	}
}

func TestManifestEveryByteFlipIsDetected(t *testing.T) {
	m := &Manifest{FormatVersion: Version, Kind: KindSnapshot, ID: NewID(time.Now()), Cluster: "default",
		Revision: 42, RawSize: 10, Compression: CompressionZstd, Encryption: EncryptionNone}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b)
	if err != nil || got.ID != m.ID || got.Revision != 42 {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x01
		if _, err := ParseManifest(bad); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("flip at byte %d (%q) not detected: %v", i, b[i], err)
		}
	}
}

func TestManifestRefusesUnknownVersion(t *testing.T) {
	m := &Manifest{FormatVersion: 2, ID: "x"}
	b, _ := m.Marshal()
	if _, err := ParseManifest(b); !errors.Is(err, ErrVersion) {
		t.Fatalf("want ErrVersion, got %v", err)
	}
	if _, err := ParseRepoMarker([]byte(`{"format_version":7}`)); !errors.Is(err, ErrVersion) {
		t.Fatalf("marker: want ErrVersion, got %v", err)
	}
}

func TestIDsSortByTimeAndAreUnique(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	a, b := NewID(t0), NewID(t0.Add(time.Millisecond))
	if !(a < b) || !ValidID(a) {
		t.Fatalf("ids %q %q", a, b)
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID(t0)
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
	if got, _ := IDTime(a); !got.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("IDTime %v", got)
	}
}

// failingReader returns the first n bytes of b, then err.
type failingReader struct {
	b   []byte
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := copy(p, f.b[:min(f.n, len(f.b))])
	f.b, f.n = f.b[k:], f.n-k
	return k, nil
}

// A payload whose reading fails (the storage, not the data) is not judged:
// the error is the source's, never ErrIntegrity, wherever it happens.
func TestDecoderSourceErrorIsNotIntegrity(t *testing.T) {
	raw := fakeSnapshot(300000, 4)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRecipient(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	cut := errors.New("connection reset by peer")
	for _, enc := range []struct {
		name string
		rs   []Recipient
	}{{"plain", nil}, {"age", []Recipient{r}}} {
		stored, m := encode(t, raw, enc.rs)
		for _, n := range []int{0, 10, len(stored) / 2, len(stored) - 1} {
			_, err := func() ([]byte, error) {
				for _, opt := range readAheads {
					d, err := NewDecoderWith(&failingReader{b: stored, n: n, err: cut}, m, []age.Identity{id}, opt)
					if err != nil {
						return nil, err
					}
					_, err = io.ReadAll(d)
					d.Close()
					if !errors.Is(err, cut) || errors.Is(err, ErrIntegrity) {
						return nil, fmt.Errorf("read ahead %d: %w", opt.ReadAhead, err)
					}
				}
				return nil, cut
			}()
			if !errors.Is(err, cut) || errors.Is(err, ErrIntegrity) {
				t.Errorf("%s, source fails after %d of %d bytes: got %v, want the source's error and not ErrIntegrity", enc.name, n, len(stored), err)
			}
		}
	}
}
