package main

import (
	"context"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/etcdfill"
)

// Fill parameters, for the report (bench/internal/etcdfill writes the data).
const (
	fillWriters = etcdfill.Writers
	txnMaxOps   = etcdfill.TxnMaxOps
)

// fillStats describes one fill step.
type fillStats = etcdfill.Stats

// filler writes one profile's data into a cluster, in steps of growing
// target size; keys never repeat across steps.
type filler struct {
	profile string
	f       *etcdfill.Filler
}

// fillTo writes through the leader until its backend reaches target bytes.
func (f *filler) fillTo(ctx context.Context, c *cluster, target int64, timeout time.Duration) (fillStats, error) {
	if f.f == nil {
		var err error
		if f.f, err = etcdfill.New(f.profile); err != nil {
			return fillStats{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lead, err := c.settle(ctx)
	if err != nil {
		return fillStats{}, err
	}
	return f.f.FillTo(ctx, lead.clientURL, target, func(ctx context.Context) (int64, error) { return c.dbSize(ctx, lead) })
}
