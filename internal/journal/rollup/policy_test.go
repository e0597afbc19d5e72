package rollup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/journal/chain"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
)

// TestPolicyDay plays the agent's roll-up policy over a day of one-second
// segments (4.4 KiB each, as the bench's Kubernetes-like load stores them)
// with a pass every minute, on names and sizes only: the objects a chain
// keeps stay few all day, roll-ups add few PUTs, and packing the closed
// chain leaves a handful. Exact counts, not timings: they follow from the
// policy alone.
func TestPolicyDay(t *testing.T) {
	const seg = 4500
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	var objs []chain.Object
	rev := int64(1)
	puts, maxKept := 0, 0
	nonce := 0
	mk := func(start, end int64, first, last time.Time, size int64) chain.Object {
		nonce++
		o, ok := chain.ParseName(chain.Name(start, end, first, last, fmt.Sprintf("%08x", nonce), false))
		if !ok {
			t.Fatal("bad name")
		}
		o.Size = size
		return o
	}
	for s := 0; s < 86400; s++ {
		at := t0.Add(time.Duration(s) * time.Second)
		objs = append(objs, mk(rev, rev+49, at, at.Add(980*time.Millisecond), seg))
		rev += 50
		puts++
		if s%60 != 59 {
			continue
		}
		now := at.Add(time.Second)
		for _, run := range rollup.Plan(0, objs, rollup.Options{Now: func() time.Time { return now }}) {
			var size int64
			for _, o := range run {
				size += o.Size
			}
			merged := mk(run[0].Start, run[len(run)-1].End, run[0].FirstTime, run[len(run)-1].LastTime, size*9/10)
			objs = replace(objs, run, merged)
			puts++
		}
		maxKept = max(maxKept, len(objs))
	}
	perSeg := float64(puts) / 86400
	t.Logf("a day: %d objects kept at the end, at most %d during the day; %d PUTs, %.4f per segment", len(objs), maxKept, puts, perSeg)
	if maxKept > 500 {
		t.Errorf("the open chain kept up to %d objects in a day, want at most 500", maxKept)
	}
	if perSeg > 1.05 {
		t.Errorf("%.4f PUTs per sealed segment, roll-ups included; want at most 1.05", perSeg)
	}
	var stored int64
	for _, o := range objs {
		stored += o.Size
	}
	for _, run := range rollup.Plan(0, objs, rollup.Options{Closed: true}) {
		var size int64
		for _, o := range run {
			size += o.Size
		}
		objs = replace(objs, run, mk(run[0].Start, run[len(run)-1].End, run[0].FirstTime, run[len(run)-1].LastTime, size))
	}
	per100 := float64(len(objs)) / (float64(stored) / (100 << 20))
	t.Logf("closed: %d objects for %.0f MiB (%.1f per 100 MiB)", len(objs), float64(stored)/(1<<20), per100)
	if per100 > 4 {
		t.Errorf("a closed chain keeps %.1f objects per 100 MiB, want at most 4", per100)
	}
	if c := chain.Cover(0, objs); c.End != rev-1 || c.Break != nil {
		t.Fatalf("the simulated chain covers to %d (%v), want %d", c.End, c.Break, rev-1)
	}
}

// replace puts merged in place of run (consecutive objects of objs).
func replace(objs, run []chain.Object, merged chain.Object) []chain.Object {
	gone := map[string]bool{}
	for _, o := range run {
		gone[o.Name] = true
	}
	out := objs[:0:0]
	placed := false
	for _, o := range objs {
		if gone[o.Name] {
			if !placed {
				out = append(out, merged)
				placed = true
			}
			continue
		}
		out = append(out, o)
	}
	return out
}
