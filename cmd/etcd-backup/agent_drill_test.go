package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCheckLoopResults runs the agent's verify and drill loops against a
// stand-in program that exits with each code 'verify' can return, and
// checks the result each one counts: only exit 4 says the backup is
// damaged ("failure"); any other failure did not judge it ("error"); no
// backup yet counts nothing.
func TestCheckLoopResults(t *testing.T) {
	for _, mode := range []checkMode{verifyMode, drillMode} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "etcd-backup")
			argsFile, codeFile := filepath.Join(dir, "args"), filepath.Join(dir, "code")
			script := "#!/bin/sh\necho \"$@\" > " + argsFile + "\necho 'storage error after 7 tries: get x: 503'\nexit $(cat " + codeFile + ")\n"
			if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			g := &Globals{Repo: "s3://b/p", Cluster: "prod", StorageTimeout: 2 * time.Minute}
			l := newCheckLoop(mode, time.Hour, checkArgs(g, []string{"/k/id.txt"}), slog.New(slog.DiscardHandler), reg)
			l.exe = exe

			runs := func(result string) float64 { return testutil.ToFloat64(l.runs.WithLabelValues(result)) }
			for _, tc := range []struct {
				code                    int
				success, failure, error float64
			}{
				{exitNoBackup, 0, 0, 0},
				{exitOK, 1, 0, 0},
				{exitIntegrity, 1, 1, 0},
				{exitError, 1, 1, 1},
				{exitKey, 1, 1, 2},
				{exitUnreachable, 1, 1, 3},
			} {
				if err := os.WriteFile(codeFile, []byte(strconv.Itoa(tc.code)), 0o600); err != nil {
					t.Fatal(err)
				}
				l.once(t.Context())
				if s, f, e := runs(checkSuccess), runs(checkFailure), runs(checkError); s != tc.success || f != tc.failure || e != tc.error {
					t.Errorf("after exit %d: success %v, failure %v, error %v; want %v, %v, %v", tc.code, s, f, e, tc.success, tc.failure, tc.error)
				}
			}
			if testutil.ToFloat64(l.lastSuccess) == 0 {
				t.Error("no last success timestamp after a passed check")
			}
			args, _ := os.ReadFile(argsFile)
			want := strings.Join(mode.args, " ") + " --repo s3://b/p --cluster prod --storage-timeout 2m0s --identity /k/id.txt"
			if got := strings.TrimSpace(string(args)); got != want {
				t.Errorf("ran %q, want %q", got, want)
			}
			n, err := testutil.GatherAndCount(reg, "etcd_backup_"+mode.name+"_runs_total", "etcd_backup_last_"+mode.name+"_success_timestamp_seconds")
			if err != nil || n != 4 {
				t.Errorf("metrics: %d series (%v), want 3 results and the timestamp", n, err)
			}
		})
	}
}

// TestCheckLoopShutdown: a check cut short by the agent's shutdown is not
// a result.
func TestCheckLoopShutdown(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "etcd-backup")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := newCheckLoop(verifyMode, time.Hour, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	l.exe = exe
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	l.once(ctx)
	for _, r := range []string{checkSuccess, checkFailure, checkError} {
		if n := testutil.ToFloat64(l.runs.WithLabelValues(r)); n != 0 {
			t.Errorf("result %s counted %v times for a check cut by shutdown", r, n)
		}
	}
}
