package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
)

const etcdVersion = "3.6.16"

type options struct {
	out         string
	runs        int     // RPO runs
	rpoRate     float64 // txn/s of the RPO runs and the latency comparison
	rates       []float64
	duration    time.Duration // load of each cost and latency phase
	costRuns    int           // runs of each rate of the agent cost measurement
	latencyRuns int           // runs of each mode of the latency comparison
	minEvents   int64         // journal events before the replay measurement
	prefill     int           // keys in the steady cluster before its first snapshot
	replayRuns  int
	killMin     time.Duration // RPO: kill after a random time in [killMin, killMax]
	killMax     time.Duration
	timeout     time.Duration
	seed        uint64
	sections    map[string]bool
	repoDir     string // parent of the file:// repositories ("": the temporary directory)
	quick       bool
	keep        bool
	ebBin       string
	args        []string
	// Journal at scale (scale.go)
	scaleHours    []int
	scaleRate     int
	scaleRuns     int
	scaleLongRuns int
	scaleRestore  map[int]bool
}

func main() {
	var o options
	var rates, sections, scaleHours, scaleRestore string
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "write the journal section into this file (between <!-- journal:begin --> and <!-- journal:end -->, appended when absent)")
	flag.IntVar(&o.runs, "runs", 5, "RPO runs (cluster killed and restored each time)")
	flag.Float64Var(&o.rpoRate, "rpo-rate", 1000, "txn/s of the RPO runs and of the latency comparison")
	flag.StringVar(&rates, "rates", "1000,5000", "comma-separated txn/s targets of the agent cost measurement")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "load of each agent cost and latency phase")
	flag.IntVar(&o.costRuns, "cost-runs", 2, "runs of each rate of the agent cost measurement; the order of the rates alternates")
	flag.IntVar(&o.latencyRuns, "latency-runs", 4, "runs of each mode (with, without agent) of the latency comparison; the order alternates")
	flag.Int64Var(&o.minEvents, "min-events", 100000, "journal events to reach (adding load if needed) before measuring replay")
	flag.IntVar(&o.prefill, "prefill", 50000, "keys (256-byte values) written before the first snapshot of the agent cost/latency/replay cluster")
	flag.IntVar(&o.replayRuns, "replay-runs", 2, "runs of each restore (latest, --no-journal) of the replay measurement")
	flag.DurationVar(&o.killMin, "kill-min", 10*time.Second, "RPO: earliest kill after the load starts")
	flag.DurationVar(&o.killMax, "kill-max", 20*time.Second, "RPO: latest kill after the load starts")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Minute, "bound on the whole benchmark (the scale section alone: about 15 min without the 24 h restores, which replay 4.3M events each)")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the kill times (0: from the clock; the report names it)")
	flag.StringVar(&sections, "sections", "rpo,cost,latency,replay,scale", "comma-separated sections to measure (scale: the \"Journal at scale\" section, synthetic chains in versitygw)")
	flag.StringVar(&scaleHours, "scale-hours", "1,24", "scale: comma-separated lengths in hours of the synthetic chains of one-second segments")
	flag.IntVar(&o.scaleRate, "scale-rate", 50, "scale: puts per one-second segment")
	flag.IntVar(&o.scaleRuns, "scale-runs", 5, "scale: runs of each list and of each restore of a 1 h chain (medians)")
	flag.IntVar(&o.scaleLongRuns, "scale-long-runs", 1, "scale: runs of each list and restore of a chain longer than 1 h (a 24 h chain replays 4.3M events: minutes a run)")
	flag.StringVar(&scaleRestore, "scale-restore", "1,24", "scale: the chains (hours) whose restore is measured; the others only list")
	flag.StringVar(&o.repoDir, "repo-dir", "", "put the file:// repositories under this directory (default: the temporary directory, beside the etcd data dirs)")
	flag.BoolVar(&o.quick, "quick", false, "sanity run (about 1 min): 1 RPO run killed after 5-8s, 1000 txn/s only, 6s phases, 1 latency run each, 5k keys prefilled, 10k events")
	flag.StringVar(&o.ebBin, "etcd-backup-bin", "", "measure this etcd-backup binary instead of building ./cmd/etcd-backup from the working tree")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, repositories) for debugging")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments %q", flag.Args())
	}
	o.args = os.Args[1:]
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("runs", func() { o.runs = 1 })
		def("rates", func() { rates = "1000" })
		def("duration", func() { o.duration = 6 * time.Second })
		def("latency-runs", func() { o.latencyRuns = 1 })
		def("cost-runs", func() { o.costRuns = 1 })
		def("min-events", func() { o.minEvents = 10000 })
		def("replay-runs", func() { o.replayRuns = 1 })
		def("prefill", func() { o.prefill = 5000 })
		def("kill-min", func() { o.killMin = 5 * time.Second })
		def("kill-max", func() { o.killMax = 8 * time.Second })
		def("timeout", func() { o.timeout = 6 * time.Minute })
		def("scale-hours", func() { scaleHours = "1" })
		def("scale-runs", func() { o.scaleRuns = 1 })
	}
	o.scaleRestore = map[int]bool{}
	for _, v := range []struct {
		flag, s string
		f       func(int)
	}{{"scale-hours", scaleHours, func(h int) { o.scaleHours = append(o.scaleHours, h) }}, {"scale-restore", scaleRestore, func(h int) { o.scaleRestore[h] = true }}} {
		for _, f := range strings.Split(v.s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			h, err := strconv.Atoi(f)
			if err != nil || h < 1 || h > 168 {
				fatalf("-%s: bad length %q (want 1 to 168 hours)", v.flag, f)
			}
			v.f(h)
		}
	}
	if o.scaleRate < 1 || o.scaleRate > 10000 || o.scaleRuns < 1 || o.scaleRuns > 20 || o.scaleLongRuns < 0 || o.scaleLongRuns > 20 {
		fatalf("-scale-rate: 1 to 10000; -scale-runs: 1 to 20; -scale-long-runs: 0 to 20")
	}
	for _, s := range strings.Split(rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r < 1 || r > 100000 {
			fatalf("-rates: bad rate %q (want 1 to 100000)", s)
		}
		o.rates = append(o.rates, r)
	}
	o.sections = map[string]bool{}
	for _, sec := range strings.Split(sections, ",") {
		sec = strings.TrimSpace(sec)
		switch sec {
		case "rpo", "cost", "latency", "replay", "scale":
			o.sections[sec] = true
		default:
			fatalf("-sections: unknown section %q (want rpo, cost, latency, replay, scale)", sec)
		}
	}
	switch {
	case o.runs < 1 || o.runs > 50:
		fatalf("-runs: 1 to 50")
	case o.costRuns < 1 || o.costRuns > 10:
		fatalf("-cost-runs: 1 to 10")
	case o.latencyRuns < 1 || o.latencyRuns > 20:
		fatalf("-latency-runs: 1 to 20")
	case o.replayRuns < 1 || o.replayRuns > 10:
		fatalf("-replay-runs: 1 to 10")
	case o.rpoRate < 1 || o.rpoRate > 100000:
		fatalf("-rpo-rate: 1 to 100000")
	case o.duration < time.Second || o.duration > 10*time.Minute:
		fatalf("-duration: 1s to 10m")
	case o.killMin < time.Second || o.killMax < o.killMin || o.killMax > 10*time.Minute:
		fatalf("-kill-min/-kill-max: 1s <= min <= max <= 10m")
	case o.prefill < 0 || o.prefill > 10_000_000:
		fatalf("-prefill: 0 to 10000000")
	case o.minEvents < 0 || o.minEvents > 10_000_000:
		fatalf("-min-events: 0 to 10000000")
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	os.Exit(run(o))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/journal: "+format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s journal: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// bench holds the state shared by all measurements.
type bench struct {
	opt     options
	root    string
	tmp     string
	repos   string // parent of the file:// repositories
	etcd    string // etcd binary
	eb      string // etcd-backup binary, built from the working tree
	rng     *rand.Rand
	machine benchkit.Machine
	started time.Time

	rpo     []*rpoRun
	cost    []*costRun
	latency []*latencyRun
	replay  *replayResult
	scale   []*scaleChain
	errors  []string
}

func run(o options) int {
	b := &bench{opt: o, started: time.Now(), rng: rand.New(rand.NewPCG(o.seed, 0x6a6f75726e616c))}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills at once
	}()
	defer func() {
		killAllDaemons()
		if b.tmp != "" {
			if o.keep {
				logf("kept %s", b.tmp)
			} else if err := os.RemoveAll(b.tmp); err != nil {
				logf("remove %s: %v", b.tmp, err)
			}
		}
		if b.repos != "" && b.repos != b.tmp {
			if o.keep {
				logf("kept %s", b.repos)
			} else if err := os.RemoveAll(b.repos); err != nil {
				logf("remove %s: %v", b.repos, err)
			}
		}
	}()
	if err := b.setup(ctx); err != nil {
		logf("setup: %v", err)
		return 1
	}
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"rpo", b.measureRPO},
		{"steady", b.measureSteady},
		{"scale", b.measureScale},
	}
	for _, st := range steps {
		if st.name == "rpo" && !o.sections["rpo"] || st.name == "steady" && !b.journalSections() || st.name == "scale" && !o.sections["scale"] {
			continue
		}
		if err := st.f(ctx); err != nil {
			if ctx.Err() != nil {
				logf("stopped: %v (%v)", context.Cause(ctx), err)
				if o.sections["scale"] && len(b.scale) > 0 {
					// What was measured of the scale section, marked as cut short.
					b.machine.LoadEnd = benchkit.LoadAvg()
					if werr := writeScaleSection(o.out, b.scaleReport()); werr != nil {
						logf("write %s: %v", o.out, werr)
					}
				}
				return 1
			}
			b.fail(st.name, err)
		}
	}
	b.machine.LoadEnd = benchkit.LoadAvg()
	if b.journalSections() || o.sections["rpo"] {
		section := b.report(time.Since(b.started))
		if err := writeSection(o.out, section); err != nil {
			logf("write %s: %v", o.out, err)
			return 1
		}
		logf("wrote the journal section of %s in %v", o.out, time.Since(b.started).Round(time.Second))
	}
	if o.sections["scale"] {
		b.machine.LoadEnd = benchkit.LoadAvg()
		if err := writeScaleSection(o.out, b.scaleReport()); err != nil {
			logf("write %s: %v", o.out, err)
			return 1
		}
		logf("wrote the journal-scale section of %s in %v", o.out, time.Since(b.started).Round(time.Second))
	}
	if len(b.errors) > 0 {
		logf("%d measurement(s) failed; see the report", len(b.errors))
		return 1
	}
	return 0
}

// journalSections reports whether a section of the steady cluster runs.
func (b *bench) journalSections() bool {
	return b.opt.sections["cost"] || b.opt.sections["latency"] || b.opt.sections["replay"]
}

func (b *bench) fail(what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	logf("FAILED: %s", msg)
	b.errors = append(b.errors, msg)
}

func (b *bench) setup(ctx context.Context) error {
	root, err := benchkit.RepoRoot()
	if err != nil {
		return err
	}
	b.root = root
	if b.etcd, err = benchkit.FindBin(root, "etcd-"+etcdVersion); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "etcd-backup-bench-journal-"); err != nil {
		return err
	}
	logf("working in %s (seed %d)", b.tmp, b.opt.seed)
	b.repos = b.tmp
	if b.opt.repoDir != "" {
		if b.repos, err = os.MkdirTemp(b.opt.repoDir, "etcd-backup-bench-journal-repos-"); err != nil {
			return err
		}
		logf("repositories in %s", b.repos)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	b.eb = filepath.Join(b.tmp, "etcd-backup")
	spawnerBin = filepath.Join(b.tmp, "spawner")
	builds := map[string]string{"./cmd/etcd-backup": b.eb, "./bench/spawner": spawnerBin}
	if b.opt.ebBin != "" {
		if b.eb, err = filepath.Abs(b.opt.ebBin); err != nil {
			return err
		}
		delete(builds, "./cmd/etcd-backup")
	}
	for pkg, out := range builds {
		build := exec.CommandContext(ctx, gobin, "build", "-o", out, pkg)
		build.Dir = root
		if msg, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
	}
	b.machine = benchkit.CollectMachine(ctx, b.root)
	b.machine.Versions = []string{
		"etcd: " + benchkit.FirstLine(ctx, b.etcd, "--version"),
		"etcd-backup: " + benchkit.FirstLine(ctx, b.eb, "version"),
	}
	return nil
}

// sleepCtx sleeps d unless ctx is done first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
