package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestLiftMemoryLimit: the restore commands drop the default soft limit
// (a replay's heap holds etcd's key index) but keep the operator's.
func TestLiftMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(defaultMemoryLimit)
	liftMemoryLimit()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("without GOMEMLIMIT: limit %d after liftMemoryLimit, want none (%d)", got, int64(math.MaxInt64))
	}

	t.Setenv("GOMEMLIMIT", "64MiB")
	debug.SetMemoryLimit(64 << 20)
	liftMemoryLimit()
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("with GOMEMLIMIT=64MiB: limit %d after liftMemoryLimit, want %d", got, 64<<20)
	}
}
