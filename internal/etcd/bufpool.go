package etcd

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// dirtyPool is the buffer pool of the client's gRPC connections: gRPC's
// default pool, tiered by powers of two the same way, but without clearing
// a buffer when it is handed out again. gRPC fills every buffer it takes
// from the pool (an HTTP/2 frame is read into one buffer of its exact length,
// a socket read uses only the bytes read) before anything reads it, so the
// clearing only costs: a memclr of every byte of a snapshot stream.
type dirtyPool struct {
	tiers [len(poolTiers)]sync.Pool
}

// poolTiers are the capacities of the pooled buffers: those of gRPC's
// default pool (mem.DefaultBufferPool).
var poolTiers = [...]int{1 << 8, 1 << 12, 1 << 14, 1 << 15, 1 << 20}

var grpcBufferPool mem.BufferPool = &dirtyPool{}

func (p *dirtyPool) Get(n int) *[]byte {
	for i, size := range poolTiers {
		if n <= size {
			if b, ok := p.tiers[i].Get().(*[]byte); ok {
				*b = (*b)[:n]
				return b
			}
			b := make([]byte, n, size)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	for i := len(poolTiers) - 1; i >= 0; i-- {
		if c >= poolTiers[i] {
			*b = (*b)[:poolTiers[i]]
			p.tiers[i].Put(b)
			return
		}
	}
}
