package rollup

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
)

// Source supplies the records of revisions held outside the repository.
type Source interface {
	// Has reports whether every revision of start..end is held.
	Has(start, end int64) bool
	// Read calls fn with the records of start..end, in order.
	Read(start, end int64, fn func(*codec.Record) error) error
}

// Spool is a local file of the records a writer sealed (framing-1 frames,
// each CRC-checked when read back), so that its roll-ups read them there:
// no GET, and no key for an encrypted chain (the writer had the records in
// the clear when it sealed them). It holds one contiguous run of revisions;
// beyond Max bytes it takes no more (roll-ups past that read the
// repository). Safe for concurrent use.
type Spool struct {
	mu    sync.Mutex
	f     *os.File
	size  int64
	max   int64
	first int64   // first revision held (0: none)
	ends  []int64 // end revision of each batch
	offs  []int64 // file offset of each batch
	full  bool
	buf   []byte
}

// NewSpool makes a spool file in dir (os.TempDir() when empty) that takes
// up to max bytes. Close removes it.
func NewSpool(dir string, max int64) (*Spool, error) {
	f, err := os.CreateTemp(dir, "etcd-backup-journal-spool-*")
	if err != nil {
		return nil, fmt.Errorf("journal spool: %w", err)
	}
	return &Spool{f: f, max: max}, nil
}

// Add appends a batch of records that follows the ones held (a batch that
// does not is refused by starting over: the spool holds one run).
func (s *Spool) Add(recs []*codec.Record) {
	if len(recs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full || s.f == nil {
		return
	}
	if len(s.ends) > 0 && recs[0].Revision != s.ends[len(s.ends)-1]+1 {
		// Not a continuation (another writer sealed in between): start
		// over from this batch.
		s.first, s.ends, s.offs, s.size = 0, nil, nil, 0
		if err := s.f.Truncate(0); err != nil {
			s.full = true
			return
		}
	}
	b := s.buf[:0]
	var err error
	for _, r := range recs {
		if b, err = codec.AppendFrame(b, r); err != nil {
			s.full = true
			return
		}
	}
	if s.size+int64(len(b)) > s.max {
		s.full = true
		return
	}
	if _, err := s.f.WriteAt(b, s.size); err != nil {
		s.full = true
		return
	}
	if s.first == 0 {
		s.first = recs[0].Revision
	}
	s.offs = append(s.offs, s.size)
	s.ends = append(s.ends, recs[len(recs)-1].Revision)
	s.size += int64(len(b))
	if cap(b) <= 1<<20 {
		s.buf = b[:0]
	}
}

// Has implements Source.
func (s *Spool) Has(start, end int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f != nil && s.first > 0 && start >= s.first && end <= s.ends[len(s.ends)-1]
}

// Read implements Source.
func (s *Spool) Read(start, end int64, fn func(*codec.Record) error) error {
	s.mu.Lock()
	if s.f == nil || s.first == 0 || start < s.first || end > s.ends[len(s.ends)-1] {
		s.mu.Unlock()
		return fmt.Errorf("journal spool does not hold revisions %d..%d", start, end)
	}
	// The batch holding start, and the end of the spool's bytes.
	i := 0
	for s.ends[i] < start {
		i++
	}
	sec := io.NewSectionReader(s.f, s.offs[i], s.size-s.offs[i])
	s.mu.Unlock()
	rd := codec.NewReader(io.MultiReader(strings.NewReader(codec.MagicV1), sec))
	want := start
	for want <= end {
		r, err := rd.Next()
		if err == io.EOF {
			return fmt.Errorf("%w: journal spool ends before revision %d", format.ErrIntegrity, want)
		}
		if err != nil {
			return fmt.Errorf("journal spool: %w", err)
		}
		if r.Revision < want {
			continue
		}
		if r.Revision != want {
			return fmt.Errorf("%w: journal spool: revision %d, want %d", format.ErrIntegrity, r.Revision, want)
		}
		if err := fn(r); err != nil {
			return err
		}
		want++
	}
	return nil
}

// Close removes the spool file.
func (s *Spool) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
		s.f = nil
	}
}
