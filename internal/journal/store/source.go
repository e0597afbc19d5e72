package store

import (
	"context"
	"io"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
)

// Source hands out the records of a plan one by one (replay.Source), read
// by Read in a goroutine of its own, so that fetching and decoding overlap
// with whatever the caller does with each record.
type Source struct {
	cancel context.CancelFunc
	ch     chan []*codec.Record
	err    error // set before ch is closed
	batch  []*codec.Record
}

// Open starts reading plan p (see Read). Close it when done.
func (s *Store) Open(ctx context.Context, p *Plan, ids []age.Identity, pf Prefetch) *Source {
	ctx, cancel := context.WithCancel(ctx)
	src := &Source{cancel: cancel, ch: make(chan []*codec.Record, 4)}
	go func() {
		defer close(src.ch)
		var batch []*codec.Record
		err := s.Read(ctx, p, ids, pf, func(r *codec.Record) error {
			batch = append(batch, r)
			if len(batch) == 256 {
				select {
				case src.ch <- batch:
				case <-ctx.Done():
					return ctx.Err()
				}
				batch = nil
			}
			return nil
		})
		if err == nil && len(batch) > 0 {
			select {
			case src.ch <- batch:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		src.err = err
	}()
	return src
}

// Next returns the next record, io.EOF at the end of the plan, or the
// error that stopped reading.
func (s *Source) Next() (*codec.Record, error) {
	for len(s.batch) == 0 {
		b, ok := <-s.ch
		if !ok {
			if s.err != nil {
				return nil, s.err
			}
			return nil, io.EOF
		}
		s.batch = b
	}
	r := s.batch[0]
	s.batch = s.batch[1:]
	return r, nil
}

// Close stops reading.
func (s *Source) Close() {
	s.cancel()
	for range s.ch {
	}
}
