package chain

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

func obj(start, end int64) Object {
	return Object{Name: Name(start, end, time.Time{}, time.Time{}, fmt.Sprintf("%08x", start*1000+end), false), Start: start, End: end}
}

func TestNameRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 123456789, time.UTC)
	n := Name(1043, 1187, t0, t0.Add(time.Second), "5be0c1a2", true)
	if n != "0000000000000001043-0000000000000001187-1796299200123456789-1796299201123456789-5be0c1a2.jnl.zst.age" {
		t.Fatalf("name %s", n)
	}
	o, ok := ParseName(n)
	if !ok || o.Start != 1043 || o.End != 1187 || !o.FirstTime.Equal(t0) || !o.LastTime.Equal(t0.Add(time.Second)) || !o.Encrypted {
		t.Fatalf("parsed %+v, %v", o, ok)
	}
	for _, bad := range []string{
		"0000000000000001043.manifest.json",
		"0000000000000001043-0000000000000001187-5be0c1a2.jrnl.zst", // framing 1 payload
		strings.Replace(n, "5be0c1a2", "5be0c1ax", 1),
		strings.Replace(n, "0000000000000001187", "0000000000000001000", 1), // ends before it starts
		strings.Replace(n, ".jnl.zst", ".jnl.zs", 1),
		"tmp-" + n,
	} {
		if _, ok := ParseName(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestCover(t *testing.T) {
	for _, tc := range []struct {
		name string
		base int64
		objs []Object
		end  int64
		read [][2]int64
		brk  string
	}{
		{"empty", 10, nil, 10, nil, ""},
		{"contiguous", 10, []Object{obj(11, 15), obj(16, 16), obj(17, 30)}, 30, [][2]int64{{11, 15}, {16, 16}, {17, 30}}, ""},
		{"unsorted", 10, []Object{obj(17, 30), obj(11, 15), obj(16, 16)}, 30, [][2]int64{{11, 15}, {16, 16}, {17, 30}}, ""},
		{"gap", 10, []Object{obj(11, 15), obj(18, 20)}, 15, [][2]int64{{11, 15}}, "revisions 16..17 are missing"},
		{"gap at start", 10, []Object{obj(12, 15)}, 10, nil, "revisions 11..11 are missing"},
		{"overlap of two writers", 10, []Object{obj(11, 15), obj(14, 20), obj(21, 22)}, 22, [][2]int64{{11, 15}, {14, 20}, {21, 22}}, ""},
		{"roll-up preferred", 10, []Object{obj(11, 15), obj(16, 20), obj(11, 20), obj(21, 25)}, 25, [][2]int64{{11, 20}, {21, 25}}, ""},
		{"roll-up and a longer tail", 10, []Object{obj(11, 13), obj(11, 20), obj(14, 30)}, 30, [][2]int64{{11, 20}, {14, 30}}, ""},
		{"before base ignored", 10, []Object{obj(5, 8), obj(9, 12)}, 12, [][2]int64{{9, 12}}, ""},
		{"damaged manifest", 10, []Object{obj(11, 15), {Start: 16, Err: errors.New("checksum")}, obj(20, 25)}, 15, [][2]int64{{11, 15}}, "revision 16: checksum"},
		{"damaged manifest covered", 10, []Object{obj(11, 15), {Start: 16, Err: errors.New("checksum")}, obj(11, 25)}, 25, [][2]int64{{11, 25}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Cover(tc.base, tc.objs)
			var read [][2]int64
			for _, o := range c.Objects {
				read = append(read, [2]int64{o.Start, o.End})
			}
			if c.End != tc.end || fmt.Sprint(read) != fmt.Sprint(tc.read) {
				t.Fatalf("end %d, read %v; want %d, %v", c.End, read, tc.end, tc.read)
			}
			if tc.brk == "" {
				if c.Break != nil {
					t.Fatalf("unexpected break: %v", c.Break)
				}
				return
			}
			if c.Break == nil || !errors.Is(c.Break, format.ErrIntegrity) || !strings.Contains(c.Break.Error(), tc.brk) {
				t.Fatalf("break %v, want one containing %q", c.Break, tc.brk)
			}
		})
	}
}

func TestUpto(t *testing.T) {
	t0 := time.Unix(1000, 0)
	objs := []Object{obj(11, 15), obj(16, 20), obj(21, 25)}
	for i := range objs {
		objs[i].FirstTime = t0.Add(time.Duration(i) * 10 * time.Second)
		objs[i].LastTime = objs[i].FirstTime.Add(5 * time.Second)
	}
	c := Cover(10, objs)
	if n := len(c.Upto(0, time.Time{})); n != 3 {
		t.Fatalf("all: %d", n)
	}
	if n := len(c.Upto(16, time.Time{})); n != 2 {
		t.Fatalf("to 16: %d", n)
	}
	if n := len(c.Upto(15, time.Time{})); n != 1 {
		t.Fatalf("to 15: %d", n)
	}
	if n := len(c.Upto(0, t0.Add(3*time.Second))); n != 1 {
		t.Fatalf("to t0+3s: %d", n)
	}
	if n := len(c.Upto(0, t0.Add(12*time.Second))); n != 2 {
		t.Fatalf("to t0+12s: %d", n)
	}
}

// TestRedundantKeepsCoverage: removing every redundant object of a random
// heap of overlapping objects never shrinks what the chain covers, and
// leaves no object inside another.
func TestRedundantKeepsCoverage(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		var objs []Object
		for j := rng.Intn(12); j >= 0; j-- {
			s := 11 + rng.Int63n(30)
			o := obj(s, s+rng.Int63n(15))
			if rng.Intn(4) == 0 {
				o.Name = objs0(objs, o)
			}
			if !slices.ContainsFunc(objs, func(p Object) bool { return p.Name == o.Name }) { // names in a listing are unique
				objs = append(objs, o)
			}
		}
		before := Cover(10, objs)
		red := Redundant(objs)
		var kept []Object
	next:
		for _, o := range objs {
			for _, r := range red {
				if r.Name == o.Name && r.Start == o.Start && r.End == o.End {
					continue next
				}
			}
			kept = append(kept, o)
		}
		after := Cover(10, kept)
		if after.End != before.End {
			t.Fatalf("%v: removing %v shrank the coverage from %d to %d", objs, red, before.End, after.End)
		}
		if len(Redundant(kept)) != 0 {
			t.Fatalf("%v: after removing %v, %v are still redundant", objs, red, Redundant(kept))
		}
	}
}

// objs0 gives o the name of an existing object with the same range, if
// any (two writers' objects of one range differ only by nonce; equal names
// are impossible, but equal ranges are not).
func objs0(objs []Object, o Object) string {
	for _, p := range objs {
		if p.Start == o.Start && p.End == o.End {
			return p.Name[:len(p.Name)-len(Suffix)-1] + "f" + Suffix
		}
	}
	return o.Name
}

// BenchmarkDay: a day of one-second segments, with every tenth written
// twice (two writers), covered and judged for redundancy.
func BenchmarkDay(b *testing.B) {
	var objs []Object
	for i := int64(0); i < 86400; i++ {
		objs = append(objs, obj(11+i*5, 15+i*5))
		if i%10 == 0 {
			o := obj(11+i*5, 15+i*5)
			o.Name = "x" + o.Name
			objs = append(objs, o)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if c := Cover(10, objs); c.End != 15+86399*5 {
			b.Fatal(c.End)
		}
		if n := len(Redundant(objs)); n != 8640 {
			b.Fatal(n)
		}
	}
}
