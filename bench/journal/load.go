package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const valueSize = 256

// loadConfig is a paced write load: puts of unique keys prefix+seq.
type loadConfig struct {
	prefix   string
	rate     float64       // puts per second
	duration time.Duration // 0: until ctx is done
}

// ack is one acknowledged put.
type ack struct {
	seq int64
	rev int64
	at  int64         // wall time of the acknowledgement, Unix ns
	lat time.Duration // from sending the request to its response
}

type loadResult struct {
	cfg    loadConfig
	start  time.Time
	stop   time.Time // when issuing stopped
	acks   []ack     // by ack time
	failed int64
	issued int64
}

func (r *loadResult) key(seq int64) string { return fmt.Sprintf("%s%09d", r.cfg.prefix, seq) }

// achieved is acknowledged puts per second of the issuing window.
func (r *loadResult) achieved() float64 {
	d := r.stop.Sub(r.start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(len(r.acks)) / d
}

func (r *loadResult) lastRev() int64 {
	var m int64
	for _, a := range r.acks {
		m = max(m, a.rev)
	}
	return m
}

// latencies returns the sorted put latencies.
func (r *loadResult) latencies() []time.Duration {
	out := make([]time.Duration, len(r.acks))
	for i, a := range r.acks {
		out[i] = a.lat
	}
	slices.Sort(out)
	return out
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

var values = func() []string {
	buf := make([]byte, 64*valueSize)
	_, _ = rand.Read(buf)
	var out []string
	for i := 0; i+valueSize <= len(buf); i += valueSize / 2 {
		out = append(out, string(buf[i:i+valueSize]))
	}
	return out
}()

// runLoad issues puts at cfg.rate from a pool of workers spread over
// clients, until cfg.duration has passed or ctx is done. The schedule is
// open-loop: put i is due at start + i/rate; when every worker is busy the
// schedule falls behind, and the achieved rate says so. Latency is measured
// from sending each request to its response.
func runLoad(ctx context.Context, clis []*clientv3.Client, cfg loadConfig) *loadResult {
	workers := min(max(int(cfg.rate/5), 64), 1024)
	res := &loadResult{cfg: cfg}
	tokens := make(chan int64, workers)
	per := make([][]ack, workers)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := clis[w%len(clis)]
			acks := make([]ack, 0, int(cfg.rate*max(cfg.duration.Seconds(), 20))/workers+16)
			for seq := range tokens {
				t0 := time.Now()
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := cli.Put(octx, res.key(seq), values[seq%int64(len(values))])
				cancel()
				t1 := time.Now()
				if err != nil {
					failed.Add(1)
					continue
				}
				acks = append(acks, ack{seq: seq, rev: r.Header.Revision, at: t1.UnixNano(), lat: t1.Sub(t0)})
			}
			per[w] = acks
		}()
	}
	res.start = time.Now()
	var end <-chan time.Time
	if cfg.duration > 0 {
		t := time.NewTimer(cfg.duration)
		defer t.Stop()
		end = t.C
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var seq int64
issue:
	for {
		due := int64(time.Since(res.start).Seconds()*cfg.rate) + 1
		for seq < due {
			select {
			case tokens <- seq:
				seq++
			case <-end:
				break issue
			case <-ctx.Done():
				break issue
			}
		}
		select {
		case <-tick.C:
		case <-end:
			break issue
		case <-ctx.Done():
			break issue
		}
	}
	res.stop = time.Now()
	res.issued = seq
	close(tokens)
	wg.Wait()
	for _, p := range per {
		res.acks = append(res.acks, p...)
	}
	slices.SortFunc(res.acks, func(a, b ack) int { return int(a.at - b.at) })
	res.failed = failed.Load()
	return res
}

// prefill writes n keys under /prefill/ in Txns of 100 puts, from 8
// goroutines: data for the first snapshot, not journaled.
func prefill(ctx context.Context, clis []*clientv3.Client, n int) error {
	const per = 100
	jobs := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := clis[w%len(clis)]
			for j := range jobs {
				var ops []clientv3.Op
				for k := j * per; k < min((j+1)*per, n); k++ {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("/prefill/%09d", k), values[k%len(values)]))
				}
				tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := cli.Txn(tctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for j := 0; j*per < n; j++ {
		select {
		case jobs <- j:
		case err = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// newClients makes n clients of eps (separate connections spread the load).
func newClients(eps []string, n int) ([]*clientv3.Client, func(), error) {
	var out []*clientv3.Client
	closeAll := func() {
		for _, c := range out {
			c.Close()
		}
	}
	for range n {
		c, err := newClient(eps)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		out = append(out, c)
	}
	return out, closeAll, nil
}
