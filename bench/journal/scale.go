package main

// Journal at scale: synthetic chains of one-second segments (1 h, 24 h)
// written with the journal's own store (framing 2) into versitygw, then
// `list` and `restore latest` through the fault proxy (0 and 20 ms per
// request) as written, after the open-chain roll-up and after the
// closed-chain packing.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/bench/internal/s3bench"
	"github.com/etcd-backup/etcd-backup/internal/faultproxy"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/codec"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
	"github.com/etcd-backup/etcd-backup/internal/journal/store"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// latencies of the list and restore measurements.
var scaleLatencies = []time.Duration{0, 20 * time.Millisecond}

// scaleOp is one command (list or restore) at one latency: N timings, the
// request counts of the first run.
type scaleOp struct {
	Walls []time.Duration
	Req   reqCount
	Err   string
}

// scaleState is a chain in one state: as written, rolled up, packed.
type scaleState struct {
	Name       string
	Objects    int
	Bytes      int64
	PUTs       int64 // every PUT spent on the chain so far (segments + roll-ups)
	Step       reqCount
	StepWall   time.Duration
	List       map[time.Duration]*scaleOp
	Restore    map[time.Duration]*scaleOp
	RestoreRun bool
}

type scaleChain struct {
	Hours     int
	Segments  int
	Revisions int64
	Snapshot  int64 // the snapshot's revision
	GenWall   time.Duration
	States    []*scaleState
	Err       string
}

// reqCount counts requests by kind: LIST (a GET of the bucket with a list
// query) apart from GETs of objects.
type reqCount struct{ List, Get, Put, Head, Delete, Other int64 }

func (r reqCount) total() int64 { return r.List + r.Get + r.Put + r.Head + r.Delete + r.Other }

// counter sits in front of the fault proxy and tells LISTs from GETs,
// which the proxy's per-method counters do not.
type counter struct {
	addr                             string
	srv                              *http.Server
	list, get, put, head, del, other atomic.Int64
}

func startCounter(target string) (*counter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &counter{addr: ln.Addr().String()}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "http", target, pr.In.Host
		pr.Out.URL.RawQuery = pr.In.URL.RawQuery
		if p, _, _ := strings.Cut(pr.In.RequestURI, "?"); strings.HasPrefix(p, "/") {
			pr.Out.URL.Opaque = p // the signed path, byte for byte
		}
	}, FlushInterval: -1}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case r.Method == http.MethodGet && (q.Has("list-type") || q.Has("prefix") || q.Has("delimiter")):
			c.list.Add(1)
		case r.Method == http.MethodGet:
			c.get.Add(1)
		case r.Method == http.MethodPut:
			c.put.Add(1)
		case r.Method == http.MethodHead:
			c.head.Add(1)
		case r.Method == http.MethodDelete:
			c.del.Add(1)
		default:
			c.other.Add(1)
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *counter) take() reqCount {
	return reqCount{c.list.Swap(0), c.get.Swap(0), c.put.Swap(0), c.head.Swap(0), c.del.Swap(0), c.other.Swap(0)}
}

// scale is the state of the measurement.
type scale struct {
	b     *bench
	dir   string
	s3    *s3bench.Server
	proxy *faultproxy.Proxy
	cnt   *counter
}

func (b *bench) measureScale(ctx context.Context) error {
	sc := &scale{b: b, dir: filepath.Join(b.tmp, "scale")}
	vgw, err := benchkit.FindBin(b.root, "versitygw")
	if err != nil {
		return err
	}
	spawn := func(logPath, bin string, args ...string) (func() bool, func(), error) {
		d, err := startDaemon(nil, "versitygw", logPath, bin, args...)
		if err != nil {
			return nil, nil, err
		}
		return d.exited, d.kill, nil
	}
	if sc.s3, err = s3bench.Start(ctx, spawn, vgw, filepath.Join(sc.dir, "s3"), "etcd-backup-bench-scale"); err != nil {
		return err
	}
	defer sc.s3.Stop()
	if sc.proxy, err = faultproxy.Start(sc.s3.Endpoint); err != nil {
		return err
	}
	defer sc.proxy.Close()
	if sc.cnt, err = startCounter(sc.proxy.Addr); err != nil {
		return err
	}
	defer sc.cnt.srv.Close()
	// The in-process store reads the same credentials as the commands.
	measureEnv = sc.s3.Creds()
	for _, kv := range measureEnv {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	logf("scale: versitygw on %s, fault proxy on %s, counter on %s", sc.s3.Endpoint, sc.proxy.Addr, sc.cnt.addr)
	for _, h := range b.opt.scaleHours {
		ch := &scaleChain{Hours: h, Segments: h * 3600}
		b.scale = append(b.scale, ch)
		if err := sc.chain(ctx, ch); err != nil {
			ch.Err = err.Error()
			if ctx.Err() != nil {
				return err
			}
			b.fail(fmt.Sprintf("scale %d h", h), err)
		}
	}
	return nil
}

func (sc *scale) prefix(ch *scaleChain) string { return fmt.Sprintf("scale-%dh", ch.Hours) }

// url is the repository URL through the counter and the fault proxy.
func (sc *scale) url(ch *scaleChain) string { return sc.s3.URL(sc.cnt.addr, sc.prefix(ch)) }

func (sc *scale) chain(ctx context.Context, ch *scaleChain) error {
	m, err := sc.snapshot(ctx, ch)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	ch.Snapshot = m.Revision
	bk, err := backends.Open(ctx, sc.url(ch), backends.Options{})
	if err != nil {
		return err
	}
	defer bk.Close()
	r, err := repo.Open(ctx, bk, "default")
	if err != nil {
		return err
	}
	st := store.New(r)
	sc.cnt.take()
	t0 := time.Now()
	if err := sc.write(ctx, st, m, ch); err != nil {
		return fmt.Errorf("write segments: %w", err)
	}
	ch.GenWall = time.Since(t0)
	written := &scaleState{Name: "as written", Step: sc.cnt.take(), StepWall: ch.GenWall}
	written.PUTs = written.Step.Put
	logf("scale %d h: %d segments (%d revisions) written in %v, %d PUTs", ch.Hours, ch.Segments, ch.Revisions, ch.GenWall.Round(time.Millisecond), written.PUTs)
	steps := []struct {
		name string
		opt  rollup.Options
	}{
		{"", rollup.Options{}},
		// Settle -1: the merged pieces are removed at once, not by a pass
		// a minute later; the objects held are those of the settled chain.
		{"open-chain roll-up", rollup.Options{MinAge: time.Second, Settle: -1}},
		{"closed-chain packing", rollup.Options{MinAge: time.Second, Settle: -1, Closed: true}},
	}
	puts := written.PUTs
	for i, stp := range steps {
		s := written
		if i > 0 {
			s = &scaleState{Name: stp.name}
			// Pieces are removed only once older than MinAge.
			if err := sleepCtx(ctx, 1100*time.Millisecond); err != nil {
				return err
			}
			t := time.Now()
			// The agent runs a roll-up every --rollup-every: run it until
			// it finds nothing more to merge.
			for pass := 0; pass < 8; pass++ {
				res, err := rollup.Run(ctx, st, m, stp.opt)
				if err != nil {
					return fmt.Errorf("%s: %w", stp.name, err)
				}
				logf("scale %d h: %s pass %d: %d written, %d merged, %d removed", ch.Hours, stp.name, pass+1, res.Written, res.Merged, res.Removed)
				if res.Written == 0 && !res.Pending {
					break
				}
			}
			s.StepWall = time.Since(t)
			s.Step = sc.cnt.take()
			puts += s.Step.Put
			s.PUTs = puts
		}
		l, err := st.List(ctx, m.ID)
		if err != nil {
			return err
		}
		sc.cnt.take()
		s.Objects = len(l.Objects)
		for _, o := range l.Objects {
			s.Bytes += o.Size
		}
		ch.States = append(ch.States, s)
		if err := sc.measureState(ctx, ch, s); err != nil {
			return err
		}
	}
	return nil
}

// snapshot takes a real snapshot of a small single-member etcd (a few
// hundred Kubernetes-like objects) with the CLI and returns its manifest.
func (sc *scale) snapshot(ctx context.Context, ch *scaleChain) (*format.Manifest, error) {
	dir := filepath.Join(sc.dir, fmt.Sprintf("etcd-%dh", ch.Hours))
	ms, err := newMembers(dir, "s", 1)
	if err != nil {
		return nil, err
	}
	c, err := startMembers(ctx, sc.b.etcd, dir, ms, "new", &procGroup{})
	if err != nil {
		return nil, err
	}
	defer func() { c.kill(); os.RemoveAll(dir) }()
	rng := rand.New(rand.NewPCG(uint64(ch.Hours), 1))
	for i := range 300 {
		kind := []string{"configmaps", "secrets", "serviceaccounts", "services", "deployments"}[i%5]
		k := fmt.Sprintf("/registry/%s/ns-%02d/object-%04d", kind, i%17, i)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.cli.Put(cctx, k, k8sValue(rng, kind, 200+rng.IntN(800)))
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if _, _, _, err := measure(ctx, 2*time.Minute, sc.b.eb, "snapshot", "--repo", sc.s3.URL(sc.s3.Endpoint, sc.prefix(ch)),
		"--endpoints", ms[0].clientURL, "--quiet"); err != nil {
		return nil, err
	}
	bk, err := backends.Open(ctx, sc.s3.URL(sc.s3.Endpoint, sc.prefix(ch)), backends.Options{})
	if err != nil {
		return nil, err
	}
	defer bk.Close()
	r, err := repo.Open(ctx, bk, "default")
	if err != nil {
		return nil, err
	}
	return r.Find(ctx, "latest", repo.Selector{})
}

// k8sValue is a value shaped like a stored Kubernetes object: the k8s
// protobuf magic, repetitive field names, some random bytes.
func k8sValue(rng *rand.Rand, kind string, n int) string {
	var sb strings.Builder
	sb.WriteString("k8s\x00\n\x0fcoordination.k8s.io/v1\x12\x05" + kind)
	for sb.Len() < n {
		fmt.Fprintf(&sb, "\x1a%08x\"managedFields\x12resourceVersion:%d", rng.Uint32(), rng.IntN(1<<30))
	}
	return sb.String()[:n]
}

// write seals ch.Segments one-second segments of a quiet control plane
// (-scale-rate puts per segment: node and leader-election Lease renewals,
// events, pod status updates; values 100-300 bytes) after snapshot m, each
// as one object (store.Build + store.Put), 16 PUTs at a time.
func (sc *scale) write(ctx context.Context, st *store.Store, m *format.Manifest, ch *scaleChain) error {
	rate := sc.b.opt.scaleRate
	rng := rand.New(rand.NewPCG(uint64(ch.Hours), 2))
	type kv struct{ create, version int64 }
	keys := map[string]*kv{}
	start := time.Now().Add(-time.Duration(ch.Segments)*time.Second - 10*time.Minute).Truncate(time.Second)
	rev := m.Revision
	events := 0
	next := func(t time.Time) *codec.Record {
		rev++
		var k string
		switch x := rng.IntN(100); {
		case x < 50: // node heartbeats: every node's Lease every 10 s
			k = fmt.Sprintf("/registry/leases/kube-node-lease/node-%03d", rng.IntN(200))
		case x < 60:
			k = "/registry/leases/kube-system/" + []string{"kube-controller-manager", "kube-scheduler", "cloud-controller-manager"}[rng.IntN(3)]
		case x < 65:
			k = "/registry/masterleases/10.0.0." + fmt.Sprint(1+rng.IntN(3))
		case x < 85:
			k = fmt.Sprintf("/registry/events/ns-%02d/pod-%05d.%016x", rng.IntN(17), rng.IntN(3000), rng.Uint64())
		default:
			k = fmt.Sprintf("/registry/pods/ns-%02d/pod-%05d", rng.IntN(17), rng.IntN(3000))
		}
		e := keys[k]
		if e == nil {
			e = &kv{create: rev}
			keys[k] = e
		}
		e.version++
		events++
		return &codec.Record{Revision: rev, Time: t, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{
			Key: []byte(k), Value: []byte(k8sValue(rng, "leases", 100+rng.IntN(201))),
			CreateRevision: e.create, ModRevision: rev, Version: e.version}}}}
	}
	type job struct {
		recs []*codec.Record
	}
	jobs := make(chan job, 64)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				o, data, err := store.Build(j.recs, m.ID, m.ClusterID, nil)
				if err == nil {
					err = st.Put(ctx, m.ID, o, strings.NewReader(string(data)))
				}
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
				}
			}
		}()
	}
	for i := 0; i < ch.Segments && ctx.Err() == nil; i++ {
		t := start.Add(time.Duration(i) * time.Second)
		recs := make([]*codec.Record, rate)
		for j := range recs {
			recs[j] = next(t.Add(time.Duration(j) * time.Second / time.Duration(rate)))
		}
		select {
		case jobs <- job{recs}:
		case <-ctx.Done():
		}
		if (i+1)%10000 == 0 {
			logf("scale %d h: %d of %d segments", ch.Hours, i+1, ch.Segments)
		}
	}
	close(jobs)
	wg.Wait()
	ch.Revisions = rev - m.Revision
	select {
	case err := <-errc:
		return err
	default:
	}
	return ctx.Err()
}

// measureState times list and restore latest of ch in state s at each
// latency, alternating the latencies: list, and restore (chains named by
// -scale-restore), -scale-runs times for 1 h, -scale-long-runs times for
// longer chains (listing 86400 objects from versitygw alone takes a minute).
func (sc *scale) measureState(ctx context.Context, ch *scaleChain, s *scaleState) error {
	b := sc.b
	s.List = map[time.Duration]*scaleOp{}
	s.Restore = map[time.Duration]*scaleOp{}
	restoreRuns := 0
	if b.opt.scaleRestore[ch.Hours] {
		restoreRuns = b.opt.scaleRuns
		if ch.Hours > 1 {
			restoreRuns = b.opt.scaleLongRuns
		}
	}
	s.RestoreRun = restoreRuns > 0
	for _, lat := range scaleLatencies {
		s.List[lat], s.Restore[lat] = &scaleOp{}, &scaleOp{}
	}
	listRuns := b.opt.scaleRuns
	if ch.Hours > 1 {
		listRuns = max(b.opt.scaleLongRuns, 1)
	}
	for run := 0; run < max(listRuns, restoreRuns); run++ {
		for k := range scaleLatencies {
			lat := scaleLatencies[(k+run)%len(scaleLatencies)]
			sc.proxy.Set(faultproxy.Faults{Latency: lat})
			if run < listRuns {
				err := sc.timed(s.List[lat], run, func() (sample, error) {
					smp, _, _, err := measure(ctx, 10*time.Minute, b.eb, "list", "--repo", sc.url(ch), "--quiet")
					return smp, err
				})
				if err != nil {
					return err
				}
			}
			if run < restoreRuns {
				dir := filepath.Join(sc.dir, "restore")
				os.RemoveAll(dir)
				ms, err := newMembers(dir, "r", 1)
				if err != nil {
					return err
				}
				err = sc.timed(s.Restore[lat], run, func() (sample, error) {
					smp, _, _, err := b.restore(ctx, sc.url(ch), ms[0], "latest")
					return smp, err
				})
				os.RemoveAll(dir)
				if err != nil {
					return err
				}
			}
		}
		logf("scale %d h, %s: run %d done", ch.Hours, s.Name, run+1)
	}
	sc.proxy.Set(faultproxy.Faults{})
	return nil
}

// timed runs f for run run of op: its wall time, and the requests of the
// first run.
func (sc *scale) timed(op *scaleOp, run int, f func() (sample, error)) error {
	sc.cnt.take()
	smp, err := f()
	req := sc.cnt.take()
	if err != nil {
		op.Err = err.Error()
		return err
	}
	op.Walls = append(op.Walls, smp.Wall)
	if run == 0 {
		op.Req = req
	}
	return nil
}

// The markers of the "Journal at scale" section of BENCHMARKS.md, placed
// right after the journal section.
const (
	scaleBegin = "<!-- journal-scale:begin -->"
	scaleEnd   = "<!-- journal-scale:end -->"
)

// writeScaleSection writes section between the scale markers of path;
// the first time, the empty markers are put right after the journal
// section (or at the end).
func writeScaleSection(path, section string) error {
	if old, err := os.ReadFile(path); err == nil && !strings.Contains(string(old), scaleBegin) {
		if i := strings.Index(string(old), endMarker); i >= 0 {
			i += len(endMarker)
			s := string(old[:i]) + "\n\n" + scaleBegin + "\n" + scaleEnd + string(old[i:])
			if err := benchkit.WriteFileAtomic(path, []byte(s)); err != nil {
				return err
			}
		}
	}
	return benchkit.WriteSection(path, scaleBegin, scaleEnd, section)
}

func medianSec(ds []time.Duration) float64 {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = d.Seconds()
	}
	return benchkit.Median(v)
}

// cell is "median s (n runs) [LIST l, GET g]" of op.
func (op *scaleOp) cell() string {
	switch {
	case op == nil || len(op.Walls) == 0 && op.Err == "":
		return "–"
	case len(op.Walls) == 0:
		return "failed"
	}
	return fmt.Sprintf("%.2f s (n=%d); LIST %d, GET %d", medianSec(op.Walls), len(op.Walls), op.Req.List, op.Req.Get)
}

func ratio(a, b *scaleOp) string {
	if a == nil || b == nil || len(a.Walls) == 0 || len(b.Walls) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", medianSec(a.Walls)/medianSec(b.Walls))
}

func (b *bench) scaleReport() string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	o := b.opt
	p("### Journal at scale\n\n")
	p("Reproduce: `go run ./bench/journal -sections scale -out BENCHMARKS.md` (part of `make bench-journal`)")
	if len(o.args) > 0 {
		p("; this run: `go run ./bench/journal %s`", strings.Join(o.args, " "))
	}
	p(".\n\n")
	p("Synthetic chains of one-second framing-2 segments after one real snapshot (a single etcd %s member holding 300 Kubernetes-like objects, `etcd-backup snapshot`), each segment %d puts shaped like a quiet Kubernetes control plane (node and leader-election Lease renewals, events, pod status updates under `/registry/...`, values 100–300 B), sealed with the journal's own `store.Build` and stored with `store.Put` (one PUT each, 16 at a time) into versitygw through the fault proxy. ", etcdVersion, o.scaleRate)
	p("Then three states of the same chain: *as written*; after the *open-chain roll-up* (`rollup.Run`, MinAge 1 s so every segment qualifies, Settle -1 so the merged pieces go at once, default fanout %d and 64 MiB cap, run again until it merges nothing, as the agent's `--rollup-every` would); after *closed-chain packing* (`rollup.Run` with `Closed`, applied to the rolled-up chain). ", rollup.DefaultFanout)
	p("In each state `etcd-backup list` and `etcd-backup restore latest` (one member, fresh data dir) through the fault proxy at 0 and 20 ms added per request; times are medians of n runs (latencies alternate), request counts exact from the first run (LIST told from GET by a counter in front of the proxy). PUTs spent are cumulative: segments, then the roll-ups' PUTs.\n\n")
	for _, ch := range b.scale {
		p("#### %d h: %d segments, %d revisions after snapshot revision %d\n\n", ch.Hours, ch.Segments, ch.Revisions, ch.Snapshot)
		if ch.Err != "" {
			p("**Failed:** %s\n\n", strings.ReplaceAll(tailString(ch.Err, 3), "\n", " "))
		} else if len(ch.States) < 3 {
			p("**Cut short** (-timeout or interrupt): only the states below were measured.\n\n")
		}
		if len(ch.States) > 0 {
			p("Writing the %d segments took %.1f s (%.0f PUTs/s, 16 concurrent, 2 CPUs shared with versitygw).\n\n", ch.Segments, ch.GenWall.Seconds(), float64(ch.Segments)/ch.GenWall.Seconds())
		}
		p("| state | objects | stored MiB | PUTs spent | PUTs per sealed segment | step (wall; requests) | list, 0 ms | list, 20 ms | restore latest, 0 ms | restore latest, 20 ms | restore 20 ms / 0 ms |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range ch.States {
			step := fmt.Sprintf("%.1f s; PUT %d", s.StepWall.Seconds(), s.Step.Put)
			if s.Name != "as written" {
				step = fmt.Sprintf("%.1f s; GET %d, PUT %d, DELETE %d, LIST %d", s.StepWall.Seconds(), s.Step.Get, s.Step.Put, s.Step.Delete, s.Step.List)
			}
			rest0, rest20 := "not measured", "not measured"
			if s.RestoreRun {
				rest0, rest20 = s.Restore[0].cell(), s.Restore[20*time.Millisecond].cell()
			}
			p("| %s | %d | %s | %d | %.3f | %s | %s | %s | %s | %s | %s |\n", s.Name, s.Objects, mibOf(s.Bytes), s.PUTs,
				float64(s.PUTs)/float64(ch.Segments), step, s.List[0].cell(), s.List[20*time.Millisecond].cell(),
				rest0, rest20, ratio(s.Restore[20*time.Millisecond], s.Restore[0]))
		}
		// Framing 1, from its request pattern (not measured).
		n := float64(ch.Segments)
		p("| framing 1 (derived, not measured) | %d | – | %d | 2 | – | LIST ≈ %d pages, GET %d (a manifest per segment, 16 at a time: ≥ %.1f s of round trips at 20 ms) | | GET %d (2 sequential per segment: ≥ %.0f s of round trips at 20 ms) | | |\n\n",
			2*ch.Segments, 2*ch.Segments, (2*ch.Segments+999)/1000, ch.Segments, n/16*0.020, 2*ch.Segments, 2*n*0.020)
		for _, s := range ch.States {
			r0, r20 := s.Restore[0], s.Restore[20*time.Millisecond]
			if !s.RestoreRun || len(r0.Walls) == 0 || len(r20.Walls) == 0 || medianSec(r20.Walls) <= 1.2*medianSec(r0.Walls) {
				continue
			}
			// restore makes its LISTs and the snapshot's GETs (manifest,
			// payload, the chain's head) one after the other, then fetches
			// the chain's objects store.DefaultRequests at a time
			// (store.Read): at 20 ms each, that many round trips at least.
			n := store.DefaultRequests
			objs := max(r20.Req.Get-3, 0)
			serial := float64(r20.Req.List+min(r20.Req.Get, 3)) * 0.020
			fetch := float64((int(objs)+n-1)/n) * 0.020
			p("Where the time goes (%s, %d h): restore at 20 ms takes %.2f s against %.2f s at 0 ms (%s). It makes %d LISTs and %d GETs, %d of them journal objects; the proxy delays each request once, before forwarding it. At 20 ms, the LISTs and the snapshot's GETs, made one after the other, take at least %.2f s, and the journal objects, fetched %d at a time (store.Read's prefetch), at least %.2f s: a floor of %.2f s of round trips under the %.2f s measured, the replay running meanwhile",
				s.Name, ch.Hours, medianSec(r20.Walls), medianSec(r0.Walls), ratio(r20, r0), r20.Req.List, r20.Req.Get, objs, serial, n, fetch, serial+fetch, medianSec(r20.Walls))
			if objs > int64(4*n) {
				p("; fewer, larger objects (the roll-up rows) remove most of them")
			}
			p(".\n\n")
		}
	}
	p("Framing 1 wrote a payload and a manifest per segment (2 PUTs); `list` read every manifest (one GET each) and restore fetched each segment's manifest and payload one after the other; its row above is that pattern's arithmetic, not a measurement.\n\n")
	p("Machine: %d CPUs (nproc), load average %.2f at start and %.2f at end of the whole run (the machine is shared: versitygw, the fault proxy, the benchmark and the measured command run on the same CPUs).\n", b.machine.CPUs, b.machine.LoadStart, b.machine.LoadEnd)
	return w.String()
}
