package format

import (
	"io"
	"testing"
)

// BenchmarkEncoder encodes a 64 MiB snapshot (half random, half zeros) in
// the 16 KiB pieces gRPC delivers etcd's stream in, to io.Discard: zstd and
// both sha256 passes, no etcd and no disk. Run with -benchmem: the encoder
// must not allocate per write.
//
//	go test ./internal/format -run '^$' -bench Encoder -benchmem
func BenchmarkEncoder(b *testing.B) {
	raw := fakeSnapshot(64<<20, 1)
	const piece = 16 << 10
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		e, err := NewEncoder(io.Discard, EncoderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(raw); off += piece {
			if _, err := e.Write(raw[off:min(off+piece, len(raw))]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := e.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
