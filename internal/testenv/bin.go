package testenv

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// ModulePath is the module whose go.mod marks the repository root.
const ModulePath = "github.com/etcd-backup/etcd-backup"

// BinDirEnv names the environment variable that, when set, lists directories
// (separated like $PATH) searched first for test binaries.
const BinDirEnv = "ETCD_BACKUP_TEST_BIN"

// installHint tells people how to get missing test binaries.
const installHint = "run scripts/install-test-deps.sh (make test does)"

// Bin returns the path of the executable name, looked up in order in the
// directories of $ETCD_BACKUP_TEST_BIN, in <repo root>/.cache/test-bin, and in
// $PATH. It fails the test (it does not skip it) when the binary is missing.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p, dirs := lookBin(name)
	if p == "" {
		t.Fatalf("test binary %q not found (searched %s and $PATH): %s",
			name, strings.Join(dirs, ", "), installHint)
	}
	return p
}

// lookBin returns the path of name, or "" and the directories searched.
func lookBin(name string) (string, []string) {
	var dirs []string
	if v := os.Getenv(BinDirEnv); v != "" {
		dirs = append(dirs, filepath.SplitList(v)...)
	}
	if root, err := RepoRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, ".cache", "test-bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if isExecutable(p) {
			return p, dirs
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return p, dirs
	}
	return "", dirs
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory (then above this source file) holding the go.mod of
// ModulePath. Nested modules (tools/...) are skipped.
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		var starts []string
		if wd, err := os.Getwd(); err == nil {
			starts = append(starts, wd)
		}
		if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
			starts = append(starts, filepath.Dir(file))
		}
		for _, s := range starts {
			if d := findModuleRoot(s); d != "" {
				rootDir = d
				return
			}
		}
		rootErr = os.ErrNotExist
	})
	return rootDir, rootErr
}

func findModuleRoot(dir string) string {
	for {
		if isModuleFile(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func isModuleFile(p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == ModulePath {
			return true
		}
	}
	return false
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; callers that start servers
// should tolerate a rare bind failure.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("find a free port: close listener: %v", err)
	}
	return port
}
