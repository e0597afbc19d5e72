package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

const modulePath = "github.com/etcd-backup/etcd-backup"

// ChildEnv is this process's environment without what would change the
// behaviour of the commands measured (etcd's, etcd-backup's, the S3 and
// rclone settings, Go runtime tuning, systemd's notify socket), plus extra.
func ChildEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ETCD_BACKUP_"), strings.HasPrefix(k, "ETCDCTL_"), strings.HasPrefix(k, "ETCDUTL_"),
			strings.HasPrefix(k, "ETCD_"), strings.HasPrefix(k, "AWS_"), strings.HasPrefix(k, "RCLONE_"),
			strings.HasPrefix(k, "VGW_"), strings.HasPrefix(k, "ROOT_"),
			k == "GOGC", k == "GOMEMLIMIT", k == "GODEBUG", k == "GOMAXPROCS", k == "NOTIFY_SOCKET", k == "WATCHDOG_USEC":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot is the root of the etcd-backup module, found upwards from the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the etcd-backup repository (module " + modulePath + ")")
		}
		dir = parent
	}
}

// FindBin finds a test binary: $ETCD_BACKUP_TEST_BIN, then
// <root>/.cache/test-bin (scripts/install-test-deps.sh), then $PATH.
func FindBin(root, name string) (string, error) {
	var dirs []string
	if v := os.Getenv("ETCD_BACKUP_TEST_BIN"); v != "" {
		dirs = append(dirs, filepath.SplitList(v)...)
	}
	dirs = append(dirs, filepath.Join(root, ".cache", "test-bin"))
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s not found in %s or $PATH: run scripts/install-test-deps.sh (make bench and make bench-journal do)", name, strings.Join(dirs, ", "))
}

// LoadAvg is the 1-minute load average (0 when unknown).
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// ProcCPU is the user+sys CPU time of a live process, from /proc/<pid>/stat.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// ProcField is the value of "key:" in a /proc file such as /proc/meminfo
// ("unknown" when absent).
func ProcField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// FirstLine runs bin with args (in ChildEnv) and returns the first line of
// its output, e.g. a version.
func FirstLine(ctx context.Context, bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = ChildEnv()
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// Median of v (0 when empty); v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MemGiB turns a /proc/meminfo size ("24576000 kB") into GiB.
func MemGiB(s string) string {
	var kb float64
	if _, err := fmt.Sscanf(s, "%f kB", &kb); err != nil {
		return s
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

// WriteFileAtomic replaces path with data through a temporary file in the
// same directory and a rename.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Machine describes where a benchmark ran.
type Machine struct {
	Date      time.Time
	CPUs      int
	CPUModel  string
	MemTotal  string // as /proc/meminfo says it
	Kernel    string
	GoVersion string
	Versions  []string // "name: version" of the programs measured, set by the caller
	Commit    string   // git describe of the repository
	LoadStart float64
	LoadEnd   float64 // set by the caller at the end
}

// CollectMachine reads the machine's facts and the repository's commit.
func CollectMachine(ctx context.Context, root string) Machine {
	m := Machine{
		Date:      time.Now().UTC(),
		CPUs:      runtime.NumCPU(),
		CPUModel:  ProcField("/proc/cpuinfo", "model name"),
		MemTotal:  ProcField("/proc/meminfo", "MemTotal"),
		GoVersion: runtime.Version(),
		LoadStart: LoadAvg(),
	}
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(k))
	}
	git := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty")
	if out, err := git.Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

// Rows is the Markdown table of m (header and rows, no blank line after),
// for callers to append their own rows to.
func (m Machine) Rows() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("| | |\n|---|---|\n")
	p("| date | %s |\n", m.Date.Format("2006-01-02 15:04 UTC"))
	p("| CPUs (nproc) | %d |\n", m.CPUs)
	p("| CPU model | %s |\n", m.CPUModel)
	p("| memory | %s |\n", MemGiB(m.MemTotal))
	p("| kernel | %s |\n", m.Kernel)
	p("| Go | %s |\n", m.GoVersion)
	for _, v := range m.Versions {
		k, val, _ := strings.Cut(v, ": ")
		p("| %s | %s |\n", k, val)
	}
	if m.Commit != "" {
		p("| repository | %s |\n", m.Commit)
	}
	p("| load average (1 min) | %.2f at start, %.2f at end |\n", m.LoadStart, m.LoadEnd)
	return b.String()
}

// WriteSection puts section between the begin and end markers in the file
// at path: in place of the old marked block when there is one, appended
// otherwise. Each benchmark keeps its own section of BENCHMARKS.md this way.
func WriteSection(path, begin, end, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	block := begin + "\n" + strings.TrimRight(section, "\n") + "\n" + end + "\n"
	s := string(old)
	var out string
	i := strings.Index(s, begin)
	j := strings.Index(s, end)
	if i >= 0 && j > i {
		rest := strings.TrimPrefix(s[j+len(end):], "\n")
		out = s[:i] + block + rest
	} else {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		if s != "" {
			s += "\n"
		}
		out = s + block
	}
	return WriteFileAtomic(path, []byte(out))
}
