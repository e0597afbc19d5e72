package chain

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// Journal objects of framing 2 (docs/format.md, "Journal objects") are named
//
//	<start>-<end>-<first>-<last>-<nonce>.jnl.zst[.age]
//
// in the chain's directory: start and end revisions and the receive times of
// the first and last record (nanoseconds since the Unix epoch, 0 when
// unknown), each 19 decimal digits so that names sort by start revision,
// and 8 random hex digits that keep the names of two writers apart. A name
// says everything a reader needs to plan a restore; the object's seal
// repeats it, and the reader checks the two agree.
const (
	// Suffix ends the name of every framing-2 journal object (before
	// ".age" when encrypted).
	Suffix = ".jnl.zst"
	// Digits is the width of revisions and times in names.
	Digits = 19
)

// Object is one journal object of a chain: a framing-2 object (a sealed
// segment or a roll-up of several, told apart only by their ranges), or a
// framing-1 segment (Legacy set: its manifest; Name is then the manifest's
// start revision form, and the payload name is Legacy.Payload).
type Object struct {
	Name                string
	Start, End          int64
	FirstTime, LastTime time.Time
	Encrypted           bool
	// Size and ModTime are the stored object's, from the listing (for a
	// framing-1 segment: its payload's size from its manifest).
	Size    int64
	ModTime time.Time
	Legacy  *format.Manifest
	// Err is set on a framing-1 segment whose manifest could not be read
	// or checked (End is then unknown): a chain cannot be followed past it
	// unless another object covers it.
	Err error
}

// Name returns the name of a framing-2 object.
func Name(start, end int64, first, last time.Time, nonce string, encrypted bool) string {
	n := fmt.Sprintf("%0*d-%0*d-%0*d-%0*d-%s%s", Digits, start, Digits, end, Digits, nanos(first), Digits, nanos(last), nonce, Suffix)
	if encrypted {
		n += ".age"
	}
	return n
}

func nanos(t time.Time) int64 {
	if t.IsZero() || t.UnixNano() < 0 {
		return 0
	}
	return t.UnixNano()
}

// ParseName parses a framing-2 object name (a base name, no directory).
func ParseName(base string) (Object, bool) {
	o := Object{Name: base}
	rest, ok := strings.CutSuffix(base, ".age")
	o.Encrypted = ok
	if rest, ok = strings.CutSuffix(rest, Suffix); !ok {
		return Object{}, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 5 || len(parts[4]) != 8 {
		return Object{}, false
	}
	if _, err := hex.DecodeString(parts[4]); err != nil {
		return Object{}, false
	}
	var v [4]int64
	for i := range v {
		if len(parts[i]) != Digits {
			return Object{}, false
		}
		n, err := strconv.ParseInt(parts[i], 10, 64)
		if err != nil || n < 0 {
			return Object{}, false
		}
		v[i] = n
	}
	o.Start, o.End = v[0], v[1]
	if o.Start <= 0 || o.End < o.Start {
		return Object{}, false
	}
	if v[2] != 0 {
		o.FirstTime = time.Unix(0, v[2]).UTC()
	}
	if v[3] != 0 {
		o.LastTime = time.Unix(0, v[3]).UTC()
	}
	return o, true
}

// FromManifest is the object of a framing-1 segment with manifest m.
func FromManifest(name string, m *format.Manifest) Object {
	j := m.Journal
	return Object{Name: name, Start: j.Start, End: j.End, FirstTime: j.FirstTime, LastTime: j.LastTime,
		Encrypted: m.Encrypted(), Size: m.StoredSize, Legacy: m}
}

// Label names o in messages: chain/start-end.
func (o Object) Label(chain string) string {
	if o.Err != nil {
		return fmt.Sprintf("%s/%d", chain, o.Start)
	}
	return fmt.Sprintf("%s/%d-%d", chain, o.Start, o.End)
}

// Coverage is what a chain's objects let a restore reach.
type Coverage struct {
	// Base is the revision recorded in the chain's snapshot manifest; the
	// chain starts at Base+1.
	Base int64
	// End is the last revision covered without a break from Base+1 (Base
	// when nothing is).
	End int64
	// Objects are the objects a reader fetches to replay Base+1..End, in
	// order: each starts at or before the previous one's end+1 (records the
	// previous one held are skipped) and reaches further.
	Objects []Object
	// FirstTime and LastTime are the receive times of the first and last
	// record of Objects (zero without objects).
	FirstTime, LastTime time.Time
	// Break is the first place the chain cannot be followed past End, if
	// any: a gap, or a framing-1 segment whose manifest is damaged.
	Break error
}

// better reports whether a should be read rather than b when both can
// follow the same revision: it reaches further; then a framing-2 object
// over a framing-1 segment; then less to skip; then the lower name, so
// every reader chooses alike.
func better(a, b Object) bool {
	if a.End != b.End {
		return a.End > b.End
	}
	if (a.Legacy == nil) != (b.Legacy == nil) {
		return a.Legacy == nil
	}
	if a.Start != b.Start {
		return a.Start > b.Start
	}
	return a.Name < b.Name
}

// Cover follows the objects of the chain of a snapshot whose manifest
// records revision base: from base+1, it takes each time the object that
// can follow the revisions covered so far and reaches furthest. Objects
// may overlap (two writers, or a roll-up and the segments it merged):
// each holds every event of its range, so any of them is right. A gap, or
// a damaged framing-1 manifest no other object covers, ends the coverage
// with Break (an error wrapping format.ErrIntegrity).
func Cover(base int64, objs []Object) Coverage {
	// One pass over the objects sorted by start revision, with a heap of
	// those that can follow what is covered so far (best on top, see
	// better): O(n log n), where scanning every object at every step made
	// a day of one-second segments (86400 objects) take seconds of CPU.
	c := Coverage{Base: base, End: base}
	var valid []int
	damagedAt := map[int64]int{} // start -> first damaged object (input order)
	for i := range objs {
		if objs[i].Err != nil {
			if _, ok := damagedAt[objs[i].Start]; !ok {
				damagedAt[objs[i].Start] = i
			}
			continue
		}
		valid = append(valid, i)
	}
	slices.SortStableFunc(valid, func(a, b int) int { return cmp.Compare(objs[a].Start, objs[b].Start) })
	h := &coverHeap{objs: objs}
	next := 0
	for {
		for next < len(valid) && objs[valid[next]].Start <= c.End+1 {
			h.push(valid[next])
			next++
		}
		if len(h.idx) == 0 || objs[h.idx[0]].End <= c.End {
			// better orders by End first: nothing in the heap reaches
			// further than what is covered.
			h.idx = h.idx[:0]
			gapAt := int64(0)
			for next < len(valid) && gapAt == 0 {
				if o := objs[valid[next]]; o.End > c.End {
					gapAt = o.Start
				}
				next++
			}
			if i, ok := damagedAt[c.End+1]; ok {
				c.Break = fmt.Errorf("%w: journal segment at revision %d: %v", format.ErrIntegrity, objs[i].Start, objs[i].Err)
			} else if gapAt != 0 {
				c.Break = fmt.Errorf("%w: journal gap: revisions %d..%d are missing (the next journal object after revision %d starts at %d)",
					format.ErrIntegrity, c.End+1, gapAt-1, c.End, gapAt)
			}
			return c
		}
		o := objs[h.pop()]
		if len(c.Objects) == 0 {
			c.FirstTime = o.FirstTime
		}
		c.Objects = append(c.Objects, o)
		c.End = o.End
		if !o.LastTime.IsZero() {
			c.LastTime = o.LastTime
		}
	}
}

// coverHeap is a max-heap of indexes into objs by better (then the lower
// index, as a scan in input order would choose).
type coverHeap struct {
	objs []Object
	idx  []int
}

func (h *coverHeap) less(a, b int) bool { // a above b
	x, y := h.objs[h.idx[a]], h.objs[h.idx[b]]
	if better(x, y) {
		return true
	}
	if better(y, x) {
		return false
	}
	return h.idx[a] < h.idx[b]
}

func (h *coverHeap) push(i int) {
	h.idx = append(h.idx, i)
	for j := len(h.idx) - 1; j > 0; {
		p := (j - 1) / 2
		if !h.less(j, p) {
			break
		}
		h.idx[j], h.idx[p] = h.idx[p], h.idx[j]
		j = p
	}
}

func (h *coverHeap) pop() int {
	top := h.idx[0]
	n := len(h.idx) - 1
	h.idx[0] = h.idx[n]
	h.idx = h.idx[:n]
	for j := 0; ; {
		l, r, m := 2*j+1, 2*j+2, j
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == j {
			break
		}
		h.idx[j], h.idx[m] = h.idx[m], h.idx[j]
		j = m
	}
	return top
}

// Upto returns the objects of c a reader needs to reach revision rev (all
// of them when rev is 0) or, when t is not zero, the last record received
// at or before t.
func (c Coverage) Upto(rev int64, t time.Time) []Object {
	var out []Object
	prev := c.Base
	for _, o := range c.Objects {
		if rev > 0 && prev >= rev {
			break
		}
		if !t.IsZero() && len(out) > 0 && out[len(out)-1].LastTime.After(t) {
			break
		}
		out = append(out, o)
		prev = o.End
	}
	return out
}

// Redundant returns the objects of objs that another object makes
// needless: one whose range holds theirs and is larger, or equal and
// better (see Cover). Removing all of them at once keeps every revision
// any of objs covered: the order is strict, so the largest objects, which
// nothing makes redundant, stay. Damaged framing-1 segments are never
// redundant (their range is unknown).
func Redundant(objs []Object) []Object {
	// Sorted by start, then the larger end, then the better: an object is
	// redundant exactly when one before it reaches at least as far (it then
	// starts no later and is larger, or has the same range and is better).
	var sorted []Object
	for _, o := range objs {
		if o.Err == nil {
			sorted = append(sorted, o)
		}
	}
	slices.SortStableFunc(sorted, func(a, b Object) int {
		if c := cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(b.End, a.End)); c != 0 {
			return c
		}
		switch {
		case better(a, b):
			return -1
		case better(b, a):
			return 1
		}
		return 0
	})
	var out []Object
	reach := int64(-1)
	for _, o := range sorted {
		if o.End <= reach {
			out = append(out, o)
			continue
		}
		reach = o.End
	}
	return out
}
