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
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"

	"filippo.io/age"
	"github.com/dustin/go-humanize"
)

const etcdVersion = "3.6.16"

type options struct {
	also     []extraBinary
	only     map[string]bool // snapshot variants to run; nil: all
	out      string
	sizes    []int64
	profiles []string
	runs     int
	timeout  time.Duration
	keep     bool
	large    int64 // size of the single large-database measurement; 0: none
	args     []string
}

func main() {
	var o options
	var sizes, profiles string
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "write the report to this file")
	flag.StringVar(&sizes, "sizes", "64MiB,256MiB,1GiB", "comma-separated etcd DB sizes to fill to")
	flag.StringVar(&profiles, "profiles", "random,k8s", "comma-separated value profiles: random, k8s")
	flag.IntVar(&o.runs, "runs", 5, "measured runs of every command per size and profile")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Hour, "bound on the whole benchmark")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (for debugging)")
	flag.Func("also", "`NAME=BINARY`: also measure this etcd-backup build (snapshot to file:// and restore), e.g. a candidate fix; repeatable", func(v string) error {
		name, bin, ok := strings.Cut(v, "=")
		if !ok || name == "" || bin == "" {
			return fmt.Errorf("want NAME=BINARY")
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		if len(o.also) == 9 {
			return fmt.Errorf("at most 9 -also binaries")
		}
		o.also = append(o.also, extraBinary{name, abs})
		return nil
	})
	var large string
	flag.StringVar(&large, "large", "8GiB", "after the regular profiles, fill a single-member etcd to this size (k8s profile) and measure backup and restore once; 0 to skip. Needs 4.5× the size free in the temporary directory")
	var only string
	flag.StringVar(&only, "variants", "", "comma-separated snapshot variants to run (a,b,c,d,e and x1... for -also); default all. (a) is always run: ratios are against it")
	flag.Parse()
	if only != "" {
		o.only = map[string]bool{"a": true}
		for _, v := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(v)] = true
		}
	}
	o.args = os.Args[1:]
	if flag.NArg() > 0 {
		fatalf("unexpected arguments %q", flag.Args())
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := humanize.ParseBytes(strings.TrimSpace(s))
		if err != nil || n < 1<<20 {
			fatalf("-sizes: bad size %q (want e.g. 64MiB, 1GiB)", s)
		}
		o.sizes = append(o.sizes, int64(n))
	}
	slices.Sort(o.sizes)
	o.sizes = slices.Compact(o.sizes)
	for _, p := range strings.Split(profiles, ",") {
		p = strings.TrimSpace(p)
		if p != "random" && p != "k8s" {
			fatalf("-profiles: unknown profile %q (want random, k8s)", p)
		}
		if !slices.Contains(o.profiles, p) {
			o.profiles = append(o.profiles, p)
		}
	}
	if o.runs < 1 {
		fatalf("-runs must be at least 1")
	}
	if large = strings.TrimSpace(large); large != "0" && large != "" {
		n, err := humanize.ParseBytes(large)
		if err != nil || n < 1<<20 {
			fatalf("-large: bad size %q (want e.g. 8GiB, or 0 to skip)", large)
		}
		o.large = int64(n)
		if err := checkLargeSpace(o.large); err != nil {
			fatalf("-large %s: %v", sizeName(o.large), err)
		}
	}
	os.Exit(run(o))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// bench holds the state shared by all measurements.
type bench struct {
	opt        options
	root       string // repository root
	tmp        string
	bin        map[string]string
	s3         *s3Server
	rcloneConf string
	recipient  string
	results    []*caseResult
	large      *largeResult
	errors     []string
	started    time.Time
	machine    benchkit.Machine
	rssFloor   int64 // peak RSS the harness reports for /bin/true
}

func run(o options) (code int) {
	b := &bench{opt: o, started: time.Now(), bin: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills at once
	}()

	defer func() {
		stopAllDaemons()
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
	for _, p := range o.profiles {
		if err := b.runProfile(ctx, p); err != nil {
			if ctx.Err() != nil {
				logf("stopped: %v (%v)", context.Cause(ctx), err)
			} else {
				logf("profile %s: %v", p, err)
			}
			return 1
		}
	}
	if o.large > 0 {
		if err := b.runLarge(ctx); err != nil {
			if ctx.Err() != nil {
				logf("stopped: %v (%v)", context.Cause(ctx), err)
				return 1
			}
			b.errors = append(b.errors, fmt.Sprintf("%s database: %v", sizeName(o.large), err))
			b.large.Err = err.Error()
			logf("FAILED: %s database: %v", sizeName(o.large), err)
		}
	}
	b.machine.LoadEnd = benchkit.LoadAvg()
	report := b.report(time.Since(b.started))
	if err := benchkit.WriteFileAtomic(o.out, []byte(report)); err != nil {
		logf("write %s: %v", o.out, err)
		return 1
	}
	logf("wrote %s in %v", o.out, time.Since(b.started).Round(time.Second))
	if len(b.errors) > 0 {
		logf("%d measurement(s) failed; see the report", len(b.errors))
		return 1
	}
	return 0
}

func (b *bench) setup(ctx context.Context) error {
	root, err := benchkit.RepoRoot()
	if err != nil {
		return err
	}
	b.root = root
	for name, file := range map[string]string{
		"etcd": "etcd-" + etcdVersion, "etcdctl": "etcdctl-" + etcdVersion, "etcdutl": "etcdutl-" + etcdVersion,
		"versitygw": "versitygw", "rclone": "rclone",
	} {
		p, err := benchkit.FindBin(root, file)
		if err != nil {
			return err
		}
		b.bin[name] = p
	}
	if b.tmp, err = os.MkdirTemp("", "etcd-backup-bench-"); err != nil {
		return err
	}
	logf("working in %s", b.tmp)

	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	b.bin["etcd-backup"] = filepath.Join(b.tmp, "etcd-backup")
	spawnerBin = filepath.Join(b.tmp, "spawner")
	for pkg, out := range map[string]string{"./cmd/etcd-backup": b.bin["etcd-backup"], "./bench/spawner": spawnerBin} {
		build := exec.CommandContext(ctx, gobin, "build", "-o", out, pkg)
		build.Dir = root
		if msg, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
	}

	b.rcloneConf = filepath.Join(b.tmp, "rclone.conf")
	if err := os.WriteFile(b.rcloneConf, []byte("[local]\ntype = local\n"), 0o600); err != nil {
		return err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	b.recipient = id.Recipient().String()

	if b.s3, err = startS3(ctx, b.bin["versitygw"], filepath.Join(b.tmp, "s3")); err != nil {
		return err
	}
	b.machine = benchkit.CollectMachine(ctx, b.root)
	b.machine.Versions = []string{
		"etcd: " + benchkit.FirstLine(ctx, b.bin["etcd"], "--version"),
		"etcdctl: " + benchkit.FirstLine(ctx, b.bin["etcdctl"], "version"),
		"etcdutl: " + benchkit.FirstLine(ctx, b.bin["etcdutl"], "version"),
		"rclone: " + benchkit.FirstLine(ctx, b.bin["rclone"], "version"),
		"versitygw: " + strings.Join(strings.Fields(benchkit.FirstLine(ctx, b.bin["versitygw"], "--version")), " ") + " (installed as v1.8.0 by scripts/install-test-deps.sh)",
		"etcd-backup: " + benchkit.FirstLine(ctx, b.bin["etcd-backup"], "version"),
	}
	if t, err := exec.LookPath("true"); err == nil {
		if s, err := measure(ctx, time.Minute, benchkit.ChildEnv(), t); err == nil {
			b.rssFloor = s.MaxRSS
		}
	}
	return nil
}

// caseResult holds every measurement of one profile at one size.
type caseResult struct {
	Profile    string
	Target     int64
	Fill       fillStats // cumulative
	DBSize     int64
	RawSize    int64            // snapshot file size written by etcdctl
	StoredSize map[string]int64 // variant -> payload size
	Snap       map[string][]sample
	Restore    map[string][]sample
	Loads      []float64
	Leaders    map[string]bool
	Analysis   *analysis
}

// extraBinary is another etcd-backup build measured with -also.
type extraBinary struct{ name, bin string }

type variantDef struct{ id, label string }

// Snapshot variants, in report order; -also adds x1, x2, ...
var snapVariants = []variantDef{
	{"a", "(a) etcdctl snapshot save"},
	{"b", "(b) etcdctl save + rclone copyto"},
	{"c", "(c) etcd-backup → file://"},
	{"d", "(d) etcd-backup → s3:// (versitygw)"},
	{"e", "(e) etcd-backup → file:// + age"},
}

// variants returns the snapshot variants of this run.
func (b *bench) variants() []variantDef {
	out := append([]variantDef(nil), snapVariants...)
	for i, x := range b.opt.also {
		out = append(out, variantDef{fmt.Sprintf("x%d", i+1), fmt.Sprintf("(x%d) %s → file://", i+1, x.name)})
	}
	if b.opt.only != nil {
		out = slices.DeleteFunc(out, func(v variantDef) bool { return !b.opt.only[v.id] })
	}
	return out
}

// restoreVariants returns the restore variants of this run.
func (b *bench) restoreVariants() []variantDef {
	out := []variantDef{{"etcdutl", "etcdutl snapshot restore ×3"}, {"etcd-backup", "etcd-backup restore ×3 from file://"},
		{"s3", "etcd-backup restore ×3 from s3://"}}
	for i, x := range b.opt.also {
		out = append(out, variantDef{fmt.Sprintf("x%d", i+1), fmt.Sprintf("(x%d) %s restore ×3", i+1, x.name)})
	}
	return out
}

// backupBin returns the etcd-backup binary of variant id.
func (b *bench) backupBin(id string) string {
	if strings.HasPrefix(id, "x") {
		var i int
		fmt.Sscanf(id, "x%d", &i)
		return b.opt.also[i-1].bin
	}
	return b.bin["etcd-backup"]
}

// snapTimeout bounds one snapshot command: generous, but finite.
func snapTimeout(size int64) time.Duration {
	return 2*time.Minute + time.Duration(size/(2<<20))*time.Second
}

func (b *bench) runProfile(ctx context.Context, profile string) error {
	dir := filepath.Join(b.tmp, "cluster-"+profile)
	defer os.RemoveAll(dir)
	logf("%s: starting a 3-member etcd %s cluster", profile, etcdVersion)
	cl, err := startCluster(ctx, b.bin["etcd"], dir, clusterOptions{})
	if err != nil {
		return err
	}
	defer cl.stop()
	f := &filler{profile: profile}
	var cum fillStats
	for i, size := range b.opt.sizes {
		cr := &caseResult{Profile: profile, Target: size, StoredSize: map[string]int64{},
			Snap: map[string][]sample{}, Restore: map[string][]sample{}, Leaders: map[string]bool{}}
		b.results = append(b.results, cr)
		logf("%s: filling to %s", profile, humanize.IBytes(uint64(size)))
		fs, err := f.fillTo(ctx, cl, size, 2*time.Minute+time.Duration(size/(1<<20))*time.Second)
		if err != nil {
			return err
		}
		cum.Keys += fs.Keys
		cum.Bytes += fs.Bytes
		cum.Duration += fs.Duration
		cr.Fill, cr.DBSize = cum, fs.DBSize
		logf("%s: db %s, %d keys, %s written in %v", profile, humanize.IBytes(uint64(fs.DBSize)), cum.Keys,
			humanize.IBytes(uint64(cum.Bytes)), fs.Duration.Round(time.Second))

		if err := b.measureSnapshots(ctx, cl, cr); err != nil {
			return err
		}
		ref := filepath.Join(b.tmp, "ref")
		if err := b.makeReference(ctx, cl, cr, ref); err != nil {
			return err
		}
		if err := b.measureRestores(ctx, cr, ref); err != nil {
			return err
		}
		if i == len(b.opt.sizes)-1 {
			logf("%s: analysing where the time goes", profile)
			an, err := b.analyse(ctx, cl, profile, ref, filepath.Join(b.tmp, "analysis"))
			if err != nil {
				return fmt.Errorf("analysis: %w", err)
			}
			cr.Analysis = an
		}
		os.RemoveAll(ref)
		if err := b.s3.removePrefix(ctx, refPrefix(cr)); err != nil {
			return fmt.Errorf("clean up s3 prefix %s: %w", refPrefix(cr), err)
		}
	}
	return nil
}

func (b *bench) fail(cr *caseResult, what string, err error) {
	msg := fmt.Sprintf("%s %s, %s: %v", cr.Profile, humanize.IBytes(uint64(cr.Target)), what, err)
	logf("FAILED: %s", msg)
	b.errors = append(b.errors, msg)
}

// order returns the variant ids of run r: rotated by r, so that every
// variant runs in every position as often, spreading machine noise.
func order(ids []string, r int) []string {
	out := make([]string, 0, len(ids))
	for i := range ids {
		out = append(out, ids[(i+r)%len(ids)])
	}
	return out
}

func (b *bench) measureSnapshots(ctx context.Context, cl *cluster, cr *caseResult) error {
	var ids []string
	for _, v := range b.variants() {
		ids = append(ids, v.id)
	}
	work := filepath.Join(b.tmp, "work")
	defer os.RemoveAll(work)
	for r := range b.opt.runs {
		lead, err := cl.settle(ctx)
		if err != nil {
			return err
		}
		cr.Leaders[lead.name] = true
		for _, id := range order(ids, r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := os.RemoveAll(work); err != nil {
				return err
			}
			if err := os.MkdirAll(work, 0o700); err != nil {
				return err
			}
			syscall.Sync() // start every command with no dirty pages of the previous one
			cr.Loads = append(cr.Loads, benchkit.LoadAvg())
			pid := lead.cmd.Process.Pid
			before := benchkit.ProcCPU(pid)
			s, err := b.snapshotVariant(ctx, cl, lead, cr, id, work, r)
			s.LeaderCPU = benchkit.ProcCPU(pid) - before
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				b.fail(cr, "snapshot "+id, err)
				continue
			}
			cr.Snap[id] = append(cr.Snap[id], s)
			logf("%s %s run %d: (%s) %.2fs, peak RSS %s", cr.Profile, humanize.IBytes(uint64(cr.Target)), r+1, id,
				s.Wall.Seconds(), humanize.IBytes(uint64(s.MaxRSS)))
		}
	}
	return nil
}

func (b *bench) etcdctlSave(ctx context.Context, lead *member, file string, size int64) (sample, error) {
	return measure(ctx, snapTimeout(size), benchkit.ChildEnv(), b.bin["etcdctl"],
		"--endpoints="+lead.clientURL, "--dial-timeout=10s", "snapshot", "save", file)
}

func (b *bench) backupArgs(cl *cluster, repo string, extra ...string) []string {
	args := []string{"snapshot", "--repo", repo, "--endpoints", strings.Join(cl.endpoints(), ","), "--quiet"}
	return append(args, extra...)
}

func (b *bench) snapshotVariant(ctx context.Context, cl *cluster, lead *member, cr *caseResult, id, work string, r int) (sample, error) {
	size := cr.DBSize
	switch id {
	case "a":
		file := filepath.Join(work, "snap.db")
		s, err := b.etcdctlSave(ctx, lead, file, size)
		if err == nil {
			if fi, err := os.Stat(file); err == nil {
				cr.RawSize = fi.Size()
			}
		}
		return s, err
	case "b":
		file := filepath.Join(work, "snap.db")
		s, err := b.etcdctlSave(ctx, lead, file, size)
		if err != nil {
			return s, err
		}
		s2, err := measure(ctx, snapTimeout(size), benchkit.ChildEnv(), b.bin["rclone"],
			"--config", b.rcloneConf, "-q", "copyto", file, "local:"+filepath.Join(work, "remote", "snap.db"))
		return s.then(s2), err
	case "c", "e", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9":
		repo := filepath.Join(work, "repo")
		var extra []string
		if id == "e" {
			extra = []string{"--encrypt-to", b.recipient}
		}
		s, err := measure(ctx, snapTimeout(size), benchkit.ChildEnv(), b.backupBin(id), b.backupArgs(cl, "file://"+repo, extra...)...)
		if err == nil {
			_, cr.StoredSize[id] = dirSize(repo)
		}
		return s, err
	case "d":
		prefix := fmt.Sprintf("%s-%d-run%d", cr.Profile, cr.Target>>20, r)
		s, err := measure(ctx, snapTimeout(size), benchkit.ChildEnv(b.s3.env()...), b.bin["etcd-backup"], b.backupArgs(cl, b.s3.url(prefix))...)
		if err == nil {
			if _, largest, lerr := b.s3.prefixSize(ctx, prefix); lerr == nil {
				cr.StoredSize[id] = largest
			}
		}
		if rerr := b.s3.removePrefix(ctx, prefix); rerr != nil && err == nil {
			err = fmt.Errorf("clean up s3 prefix %s: %w", prefix, rerr)
		}
		return s, err
	}
	return sample{}, fmt.Errorf("unknown variant %q", id)
}

// refPrefix is the s3:// repository of the reference backup of cr.
func refPrefix(cr *caseResult) string { return fmt.Sprintf("ref-%s-%d", cr.Profile, cr.Target>>20) }

// makeReference saves one snapshot with etcdctl into ref, one backup with
// etcd-backup into ref/repo and one into the s3:// repository
// refPrefix(cr), for the restores and the analysis.
func (b *bench) makeReference(ctx context.Context, cl *cluster, cr *caseResult, ref string) error {
	if err := os.MkdirAll(ref, 0o700); err != nil {
		return err
	}
	lead, err := cl.settle(ctx)
	if err != nil {
		return err
	}
	if _, err := b.etcdctlSave(ctx, lead, filepath.Join(ref, "snap.db"), cr.DBSize); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(ref, "snap.db")); err == nil {
		cr.RawSize = fi.Size()
	}
	if _, err = measure(ctx, snapTimeout(cr.DBSize), benchkit.ChildEnv(), b.bin["etcd-backup"], b.backupArgs(cl, "file://"+filepath.Join(ref, "repo"))...); err != nil {
		return err
	}
	_, err = measure(ctx, snapTimeout(cr.DBSize), benchkit.ChildEnv(b.s3.env()...), b.bin["etcd-backup"], b.backupArgs(cl, b.s3.url(refPrefix(cr)))...)
	return err
}

// The restored cluster: addresses only need to be valid, nothing listens.
const restoreCluster = "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380"

func (b *bench) measureRestores(ctx context.Context, cr *caseResult, ref string) error {
	out := filepath.Join(b.tmp, "restore")
	defer os.RemoveAll(out)
	var ids []string
	for _, v := range b.restoreVariants() {
		ids = append(ids, v.id)
	}
	timeout := snapTimeout(cr.DBSize)
	for r := range b.opt.runs {
		for _, id := range order(ids, r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := os.RemoveAll(out); err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			syscall.Sync()
			var total sample
			var err error
			for i := 1; i <= 3 && err == nil; i++ {
				name := fmt.Sprintf("m%d", i)
				dataDir := filepath.Join(out, name+".etcd")
				var s sample
				switch id {
				case "etcdutl":
					s, err = b.etcdutlRestore(ctx, timeout, filepath.Join(ref, "snap.db"), dataDir, i)
				case "s3":
					s, err = b.backupRestore(ctx, timeout, b.bin["etcd-backup"], b.s3.url(refPrefix(cr)), dataDir, i)
				default:
					s, err = b.backupRestore(ctx, timeout, b.backupBin(id), "file://"+filepath.Join(ref, "repo"), dataDir, i)
				}
				total = total.then(s)
			}
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				b.fail(cr, "restore "+id, err)
				continue
			}
			cr.Restore[id] = append(cr.Restore[id], total)
			logf("%s %s restore run %d: %s %.2fs, peak RSS %s", cr.Profile, humanize.IBytes(uint64(cr.Target)), r+1, id,
				total.Wall.Seconds(), humanize.IBytes(uint64(total.MaxRSS)))
		}
	}
	return nil
}

// etcdutlRestore restores member i (1-3) of restoreCluster from an etcdctl
// snapshot file with etcdutl.
func (b *bench) etcdutlRestore(ctx context.Context, timeout time.Duration, snap, dataDir string, i int) (sample, error) {
	name := fmt.Sprintf("m%d", i)
	return measure(ctx, timeout, benchkit.ChildEnv(), b.bin["etcdutl"], "snapshot", "restore", snap,
		"--data-dir", dataDir, "--name", name, "--initial-cluster", restoreCluster,
		"--initial-advertise-peer-urls", fmt.Sprintf("http://10.0.0.%d:2380", i))
}

// backupRestore restores member i (1-3) of restoreCluster from the latest
// backup of repository repo with etcd-backup binary bin (with the S3
// server's credentials in its environment for an s3:// repository).
func (b *bench) backupRestore(ctx context.Context, timeout time.Duration, bin, repo, dataDir string, i int) (sample, error) {
	env := benchkit.ChildEnv()
	if strings.HasPrefix(repo, "s3://") {
		env = benchkit.ChildEnv(b.s3.env()...)
	}
	return measure(ctx, timeout, env, bin, "restore", "latest", "--repo", repo, "--quiet",
		"--data-dir", dataDir, "--name", fmt.Sprintf("m%d", i), "--initial-cluster", restoreCluster)
}
