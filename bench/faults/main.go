package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/bench/internal/etcdfill"
	"github.com/etcd-backup/etcd-backup/bench/internal/s3bench"
	"github.com/etcd-backup/etcd-backup/internal/faultproxy"

	"github.com/dustin/go-humanize"
)

const etcdVersion = "3.6.16"

// changeRev is the commit that stopped retention from reading the newest
// backup back in full after every backup ("newest verified" became a Stat
// of the payload); its parent is the last agent that downloaded it, the
// default -before-rev.
const (
	changeRev        = "1a553d5"
	defaultBeforeRev = changeRev + "^"
)

type options struct {
	out        string
	size       int64     // DB size of the snapshot/restore measurement
	agentSize  int64     // DB size of the agent measurement
	levels     []float64 // error levels, percent
	runs       int       // runs of snapshot and of restore per level
	cycles     int       // measured agent cycles
	warmup     int       // agent cycles before counting
	pruneRuns  int       // runs of each standalone prune
	interval   time.Duration
	beforeRev  string
	runTimeout time.Duration
	timeout    time.Duration
	sections   map[string]bool
	quick      bool
	keep       bool
	args       []string
}

func main() {
	var o options
	var size, agentSize, levels, sections string
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "write the faults section into this file (between <!-- faults:begin --> and <!-- faults:end -->, appended when absent)")
	flag.StringVar(&size, "size", "256MiB", "etcd DB size of the snapshot and restore measurement")
	flag.StringVar(&agentSize, "agent-size", "64MiB", "etcd DB size of the agent measurement")
	flag.StringVar(&levels, "levels", "0,1,5,20", "comma-separated error levels in percent: N means N% of requests answered 503 SlowDown and N/2% of response bodies cut; must include 0 (the ratios are against it)")
	flag.IntVar(&o.runs, "runs", 5, "runs of snapshot and of restore at each level")
	flag.IntVar(&o.cycles, "cycles", 6, "agent cycles measured (after the warm-up)")
	flag.IntVar(&o.warmup, "warmup", 2, "agent cycles before counting (the repository then holds --keep-last backups, so every measured cycle removes one)")
	flag.IntVar(&o.pruneRuns, "prune-runs", 3, "runs of each standalone prune (plain and --read-back)")
	flag.DurationVar(&o.interval, "interval", 5*time.Second, "the agent's --interval")
	flag.StringVar(&o.beforeRev, "before-rev", defaultBeforeRev, "also measure the agent of this git revision (built from `git archive`), whose retention read the newest backup back after every backup; \"\" to skip")
	flag.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "kill a snapshot or restore after this long (counted as a failure)")
	flag.DurationVar(&o.timeout, "timeout", 25*time.Minute, "bound on the whole benchmark")
	flag.StringVar(&sections, "sections", "transfer,agent", "comma-separated parts to measure: transfer (snapshot and restore through faults), agent (bytes per agent cycle)")
	flag.BoolVar(&o.quick, "quick", false, "sanity run (about 3 min): 2 runs per level, 3 agent cycles, 1 prune run each, no -before-rev agent")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs) for debugging")
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
		def("runs", func() { o.runs = 2 })
		def("cycles", func() { o.cycles = 3 })
		def("prune-runs", func() { o.pruneRuns = 1 })
		def("before-rev", func() { o.beforeRev = "" })
		def("timeout", func() { o.timeout = 8 * time.Minute })
	}
	for _, sz := range []struct {
		flag, v string
		p       *int64
	}{{"size", size, &o.size}, {"agent-size", agentSize, &o.agentSize}} {
		n, err := humanize.ParseBytes(strings.TrimSpace(sz.v))
		if err != nil || n < 1<<20 || n > 4<<30 {
			fatalf("-%s: bad size %q (want 1MiB to 4GiB, e.g. 64MiB)", sz.flag, sz.v)
		}
		*sz.p = int64(n)
	}
	for _, s := range strings.Split(levels, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v < 0 || v > 50 {
			fatalf("-levels: bad level %q (want 0 to 50)", s)
		}
		if !slices.Contains(o.levels, v) {
			o.levels = append(o.levels, v)
		}
	}
	slices.Sort(o.levels)
	if o.levels[0] != 0 {
		fatalf("-levels must include 0: the ratios are against it")
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		s = strings.TrimSpace(s)
		if s != "transfer" && s != "agent" {
			fatalf("-sections: unknown part %q (want transfer, agent)", s)
		}
		o.sections[s] = true
	}
	switch {
	case o.sections["agent"] && o.sections["transfer"] && o.agentSize > o.size:
		fatalf("-agent-size must not exceed -size: the fill only grows the database")
	case o.runs < 1 || o.runs > 20:
		fatalf("-runs: 1 to 20")
	case o.cycles < 1 || o.cycles > 30:
		fatalf("-cycles: 1 to 30")
	case o.warmup < 0 || o.warmup > 10:
		fatalf("-warmup: 0 to 10")
	case o.pruneRuns < 1 || o.pruneRuns > 10:
		fatalf("-prune-runs: 1 to 10")
	case o.interval < time.Second || o.interval > time.Minute:
		fatalf("-interval: 1s to 1m")
	case o.runTimeout < 10*time.Second || o.runTimeout > 30*time.Minute:
		fatalf("-run-timeout: 10s to 30m")
	case o.timeout < time.Minute || o.timeout > 2*time.Hour:
		fatalf("-timeout: 1m to 2h")
	}
	os.Exit(runBench(o))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/faults: "+format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s faults: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// bench holds the state shared by all measurements.
type bench struct {
	opt      options
	root     string
	tmp      string
	etcdBin  string
	eb       string // etcd-backup built from the working tree
	ebBefore string // etcd-backup of -before-rev ("" when not measured)
	beforeID string // -before-rev as a short commit hash
	s3       *s3bench.Server
	proxy    *faultproxy.Proxy
	etcd     *member
	filler   *etcdfill.Filler
	machine  benchkit.Machine
	started  time.Time

	fills     []fillStep
	transfers []*transferRun
	refBackup backupInfo // the backup restores read
	agents    []*agentRun
	prunes    []*pruneRun
	errors    []string
}

// fillStep is one fill of the member to a size.
type fillStep struct {
	Target int64
	Stats  etcdfill.Stats
}

func runBench(o options) int {
	b := &bench{opt: o, started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills at once
	}()
	defer func() {
		if b.proxy != nil {
			if err := b.proxy.Close(); err != nil {
				logf("%v", err)
			}
		}
		if b.etcd != nil {
			b.etcd.stop()
		}
		killAllDaemons()
		if b.tmp != "" {
			if o.keep {
				logf("kept %s", b.tmp)
			} else if err := os.RemoveAll(b.tmp); err != nil {
				logf("remove %s: %v", b.tmp, err)
			}
		}
	}()
	if err := b.setup(ctx); err != nil {
		logf("setup: %v", err)
		return 1
	}
	// The smaller DB first: the agent measurement, then the fill grows
	// the same member to the snapshot/restore size.
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"agent", b.measureAgents},
		{"transfer", b.measureTransfers},
	}
	for _, st := range steps {
		if !o.sections[st.name] {
			continue
		}
		if err := st.f(ctx); err != nil {
			if ctx.Err() != nil {
				logf("stopped: %v (%v); %s left unchanged", context.Cause(ctx), err, o.out)
				return 1
			}
			b.fail(st.name, err)
		}
	}
	b.machine.LoadEnd = benchkit.LoadAvg()
	section := b.report(time.Since(b.started))
	if err := writeSection(o.out, section); err != nil {
		logf("write %s: %v", o.out, err)
		return 1
	}
	logf("wrote the faults section of %s in %v", o.out, time.Since(b.started).Round(time.Second))
	if len(b.errors) > 0 {
		logf("%d measurement(s) failed; see the report", len(b.errors))
		return 1
	}
	return 0
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
	if b.etcdBin, err = benchkit.FindBin(root, "etcd-"+etcdVersion); err != nil {
		return err
	}
	vgw, err := benchkit.FindBin(root, "versitygw")
	if err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "etcd-backup-bench-faults-"); err != nil {
		return err
	}
	logf("working in %s", b.tmp)

	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	b.eb = filepath.Join(b.tmp, "etcd-backup")
	if err := goBuild(ctx, gobin, root, b.eb); err != nil {
		return err
	}
	if b.opt.beforeRev != "" && b.opt.sections["agent"] {
		if b.ebBefore, err = b.buildRev(ctx, gobin, b.opt.beforeRev); err != nil {
			// The rest of the benchmark does not depend on it.
			b.fail("build -before-rev "+b.opt.beforeRev, err)
			b.ebBefore = ""
		}
	}

	if b.s3, err = startS3(ctx, vgw, filepath.Join(b.tmp, "s3")); err != nil {
		return err
	}
	if b.proxy, err = faultproxy.Start(b.s3.Endpoint); err != nil {
		return err
	}
	logf("versitygw on %s, fault proxy on %s", b.s3.Endpoint, b.proxy.Addr)
	if b.etcd, err = startEtcd(ctx, b.etcdBin, filepath.Join(b.tmp, "etcd")); err != nil {
		return err
	}
	if b.filler, err = etcdfill.New("random"); err != nil {
		return err
	}
	b.machine = benchkit.CollectMachine(ctx, b.root)
	b.machine.Versions = []string{
		"etcd: " + benchkit.FirstLine(ctx, b.etcdBin, "--version"),
		"versitygw: " + strings.Join(strings.Fields(benchkit.FirstLine(ctx, vgw, "--version")), " ") + " (installed as v1.8.0 by scripts/install-test-deps.sh)",
		"etcd-backup: " + benchkit.FirstLine(ctx, b.eb, "version"),
	}
	return nil
}

// goBuild builds ./cmd/etcd-backup of the module in dir into out.
func goBuild(ctx context.Context, gobin, dir, out string) error {
	build := exec.CommandContext(ctx, gobin, "build", "-o", out, "./cmd/etcd-backup")
	build.Dir = dir
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/etcd-backup in %s: %v\n%s", dir, err, msg)
	}
	return nil
}

// buildRev builds etcd-backup as of git revision rev, from `git archive`.
func (b *bench) buildRev(ctx context.Context, gobin, rev string) (string, error) {
	src := filepath.Join(b.tmp, "src-before")
	if err := os.MkdirAll(src, 0o700); err != nil {
		return "", err
	}
	tarball := filepath.Join(b.tmp, "src-before.tar")
	if out, err := exec.CommandContext(ctx, "git", "-C", b.root, "archive", "--format=tar", "-o", tarball, rev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v: %s", rev, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar: %v: %s", err, strings.TrimSpace(string(out)))
	}
	os.Remove(tarball)
	if out, err := exec.CommandContext(ctx, "git", "-C", b.root, "rev-parse", "--short", rev+"^{commit}").Output(); err == nil {
		b.beforeID = strings.TrimSpace(string(out))
	}
	bin := filepath.Join(b.tmp, "etcd-backup-before")
	logf("building etcd-backup %s (%s)", rev, b.beforeID)
	if err := goBuild(ctx, gobin, src, bin); err != nil {
		return "", err
	}
	os.RemoveAll(src)
	return bin, nil
}

// fillTo grows the member's DB to target bytes.
func (b *bench) fillTo(ctx context.Context, target int64) error {
	logf("filling etcd to %s", humanize.IBytes(uint64(target)))
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(target/(1<<20))*time.Second)
	defer cancel()
	st, err := b.filler.FillTo(fctx, b.etcd.clientURL, target, b.etcd.dbSize)
	if err != nil {
		return fmt.Errorf("fill to %s: %w", humanize.IBytes(uint64(target)), err)
	}
	b.fills = append(b.fills, fillStep{Target: target, Stats: st})
	logf("db %s, %d keys, %s written in %v", humanize.IBytes(uint64(st.DBSize)), st.Keys, humanize.IBytes(uint64(st.Bytes)), st.Duration.Round(time.Second))
	return nil
}

// backupInfo describes one backup taken for a measurement.
type backupInfo struct {
	ID     string
	DBSize int64 // the member's DB size when it was taken
	Stored int64 // payload size in the bucket
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
