package benchkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SelfCPU is this process's user and system CPU time so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Profile runs fn under the CPU profiler, writing the profile to path, and
// returns fn's wall and CPU time (this process's, every thread).
func Profile(path string, fn func()) (wall, cpu time.Duration, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	runtime.GC()
	c0, t0 := SelfCPU(), time.Now()
	if err := pprof.StartCPUProfile(f); err != nil {
		return 0, 0, err
	}
	fn()
	pprof.StopCPUProfile()
	wall, cpu = time.Since(t0), SelfCPU()-c0
	return wall, cpu, f.Close()
}

// Category groups the functions of a profile by what they do: a function
// belongs to the first category one of whose |-separated substrings its
// name contains.
type Category struct{ Name, Match string }

// Share is a category's or a function's flat CPU time in a profile.
type Share struct {
	Name    string
	Seconds float64
	Percent float64
}

// PprofTop summarises the CPU profile at path with `go tool pprof -top`:
// the flat time of each category (largest first; "other" for functions
// in none) and the ten functions with the most flat time.
func PprofTop(ctx context.Context, path string, cats []Category) (byCat, top []Share, err error) {
	gobin, lerr := exec.LookPath("go")
	if lerr != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, gobin, "tool", "pprof", "-top", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0", path)
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go tool pprof: %v", err)
	}
	byCat, top = SummarizeProfile(string(out), cats)
	return byCat, top, nil
}

func categoryOf(fn string, cats []Category) string {
	for _, c := range cats {
		for _, m := range strings.Split(c.Match, "|") {
			if strings.Contains(fn, m) {
				return c.Name
			}
		}
	}
	return "other"
}

// SummarizeProfile parses `go tool pprof -top` output (see PprofTop).
func SummarizeProfile(out string, cats []Category) (byCat, top []Share) {
	var fns []Share
	total := 0.0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		flat, err := parseSeconds(f[0])
		if err != nil {
			continue
		}
		name := strings.Join(f[5:], " ")
		fns = append(fns, Share{Name: name, Seconds: flat})
		total += flat
	}
	if total == 0 {
		return nil, nil
	}
	sums := map[string]float64{}
	for _, fn := range fns {
		sums[categoryOf(fn.Name, cats)] += fn.Seconds
	}
	for name, s := range sums {
		byCat = append(byCat, Share{Name: name, Seconds: s, Percent: 100 * s / total})
	}
	sort.Slice(byCat, func(i, j int) bool { return byCat[i].Seconds > byCat[j].Seconds })
	sort.SliceStable(fns, func(i, j int) bool { return fns[i].Seconds > fns[j].Seconds })
	for i := range min(10, len(fns)) {
		fns[i].Percent = 100 * fns[i].Seconds / total
		top = append(top, fns[i])
	}
	return byCat, top
}

// parseSeconds parses pprof durations: "1.23s", "450ms", "10us".
func parseSeconds(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"mins", 60}, {"hrs", 3600}, {"ms", 1e-3}, {"us", 1e-6}, {"µs", 1e-6}, {"ns", 1e-9}, {"s", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			x, err := strconv.ParseFloat(v, 64)
			return x * u.scale, err
		}
	}
	return 0, fmt.Errorf("not a duration: %q", s)
}

// GCMatch matches the garbage collector's and the allocator's functions.
const GCMatch = "internal/runtime/gc|runtime.gc|runtime.spanClass|runtime.scanobject|runtime.scanObject|runtime.scanSpan|runtime.tryDeferToSpanScan|runtime.(*spanInlineMarkBits)|runtime.markroot|runtime.mallocgc|runtime.greyobject|runtime.findObject|runtime.markBits|runtime.heapBits|runtime.(*mspan)|runtime.(*mheap)|runtime.(*mcache)|runtime.(*gcWork)|runtime.(*mcentral)|runtime.sweep|runtime.bgsweep|runtime.wbBuf|runtime.typePointers|runtime.scanblock|runtime.spanOf|runtime.(*gcBits)|runtime.nextFreeFast|runtime.deductAssistCredit|runtime.bulkBarrier"

// SyscallMatch matches system calls and the runtime's poller.
const SyscallMatch = "syscall.|internal/poll|internal/runtime/syscall|runtime/internal/syscall"

// ProfileMarkdown renders PprofTop's result: a table of the categories'
// flat CPU time and a line naming the top functions, each followed by a
// blank line.
func ProfileMarkdown(byCat, top []Share) string {
	var b strings.Builder
	b.WriteString("| kind | CPU, s | share |\n|---|---|---|\n")
	for _, c := range byCat {
		fmt.Fprintf(&b, "| %s | %.2f | %.0f%% |\n", c.Name, c.Seconds, c.Percent)
	}
	var fns []string
	for _, t := range top {
		fns = append(fns, fmt.Sprintf("`%s` %.0f%%", t.Name, t.Percent))
	}
	fmt.Fprintf(&b, "\nTop functions (flat): %s.\n\n", strings.Join(fns, ", "))
	return b.String()
}
