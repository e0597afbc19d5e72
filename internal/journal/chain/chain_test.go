package chain

import (
	"errors"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/format"
)

func seg(start, end int64) *format.Manifest {
	return &format.Manifest{ID: "s", Kind: format.KindJournal, Journal: &format.JournalRange{Start: start, End: end}}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		base int64
		segs []*format.Manifest
		end  int64
		n    int
		brk  string
	}{
		{"empty", 10, nil, 10, 0, ""},
		{"contiguous", 10, []*format.Manifest{seg(11, 15), seg(16, 16), seg(17, 30)}, 30, 3, ""},
		{"gap", 10, []*format.Manifest{seg(11, 15), seg(18, 20)}, 15, 1, "revisions 16..17 are missing"},
		{"gap at start", 10, []*format.Manifest{seg(12, 15)}, 10, 0, "revisions 11..11 are missing"},
		{"overlap", 10, []*format.Manifest{seg(11, 15), seg(14, 20)}, 15, 1, "overlap"},
		{"inverted", 10, []*format.Manifest{seg(11, 9)}, 10, 0, "ends (9) before it starts (11)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Check(tc.base, tc.segs)
			if c.End != tc.end || len(c.Segments) != tc.n {
				t.Fatalf("end %d, %d segments; want %d, %d", c.End, len(c.Segments), tc.end, tc.n)
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
