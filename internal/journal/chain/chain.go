package chain

import (
	"fmt"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

// Coverage is what a chain of segments lets restore reach.
type Coverage struct {
	// Base is the revision recorded in the chain's snapshot manifest; the
	// chain starts at Base+1.
	Base int64
	// End is the last revision covered without a break from Base+1 (Base
	// when no segment does).
	End int64
	// Segments is the unbroken run of segments from Base+1 to End.
	Segments []*format.Manifest
	// FirstTime and LastTime are the receive times of the first and last
	// record of Segments (zero without segments).
	FirstTime, LastTime time.Time
	// Break is the first place the chain cannot be followed past End, if
	// any: a gap, an overlap, or a segment whose manifest is damaged.
	Break error
}

// Check follows the segments (sorted by start revision) of the chain of a
// snapshot whose manifest records revision base. Segments must follow each
// other exactly: the first starts at base+1 and each next one at the
// previous end+1. Check stops at the first break and reports it in
// Coverage.Break as an error wrapping format.ErrIntegrity.
func Check(base int64, segs []*format.Manifest) Coverage {
	c := Coverage{Base: base, End: base}
	for _, s := range segs {
		j := s.Journal
		if j == nil {
			c.Break = fmt.Errorf("%w: %s is not a journal segment", format.ErrIntegrity, s.ID)
			return c
		}
		switch {
		case j.Start > c.End+1:
			c.Break = fmt.Errorf("%w: journal gap: revisions %d..%d are missing (the segment after revision %d starts at %d)",
				format.ErrIntegrity, c.End+1, j.Start-1, c.End, j.Start)
			return c
		case j.Start < c.End+1:
			c.Break = fmt.Errorf("%w: journal overlap: segment %s starts at revision %d, inside the revisions already covered up to %d",
				format.ErrIntegrity, s.ID, j.Start, c.End)
			return c
		case j.End < j.Start:
			c.Break = fmt.Errorf("%w: journal segment %s ends (%d) before it starts (%d)", format.ErrIntegrity, s.ID, j.End, j.Start)
			return c
		}
		c.End = j.End
		c.Segments = append(c.Segments, s)
		if c.FirstTime.IsZero() && !j.FirstTime.IsZero() {
			c.FirstTime = j.FirstTime
		}
		if !j.LastTime.IsZero() {
			c.LastTime = j.LastTime
		}
	}
	return c
}
