package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"golang.org/x/term"

	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// startProgress shows the progress of one byte stream on stderr: a status
// line when stderr is a terminal, a log line every 10 s otherwise, nothing
// with --quiet (the returned meter is nil then; its methods do nothing). It
// also returns the logger to use while the meter runs: on a terminal, log
// lines must go through the meter so they do not mix with the status line.
// The caller closes the meter.
func (g *Globals) startProgress(label string, total int64, estimate bool) (*progress.Meter, *slog.Logger) {
	if g.Quiet {
		return nil, g.log
	}
	opt := progress.Options{Label: label, Total: total, Estimate: estimate, Log: g.log}
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		opt.TTY = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			opt.Width = w
		}
	}
	m := progress.New(g.stderr, opt)
	if opt.TTY {
		return m, newLogger(g, m)
	}
	return m, g.log
}

// countingBackend counts the bytes read from every object it opens into the
// meter set at the time (copy shows progress this way: the transfer package
// has no progress callback). Close is the caller's on the wrapped backend.
type countingBackend struct {
	storage.Backend
	meter atomic.Pointer[progress.Meter]
}

func (b *countingBackend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := b.Backend.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	m := b.meter.Load()
	if m == nil {
		return rc, nil
	}
	return &countingReader{ReadCloser: rc, m: m}, nil
}

type countingReader struct {
	io.ReadCloser
	m *progress.Meter
	n int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n += int64(n)
	r.m.Update(r.n)
	return n, err
}
