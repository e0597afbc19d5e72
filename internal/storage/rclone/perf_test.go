package rclone

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// perfEnv, when set, makes TestPutMemory stream 200 MiB instead of 64 MiB
// and runs TestLatency, which only logs.
const perfEnv = "ETCD_BACKUP_RCLONE_PERF"

// TestPutMemory streams a large object through Put and checks that neither
// rclone nor this process holds it in memory. It logs rclone's peak RSS per
// subcommand and this process's peak Go heap and RSS. By default it uses a
// local remote and 128 MiB; with $ETCD_BACKUP_RCLONE_PERF set, 200 MiB on
// both a local and an S3 remote.
func TestPutMemory(t *testing.T) {
	t.Parallel()
	size := int64(128 << 20)
	conf := writeConf(t, localConf)
	remotes := []string{"loc:" + t.TempDir()}
	if os.Getenv(perfEnv) != "" {
		size = 200 << 20
		srv := testenv.StartS3(t)
		conf = writeConf(t, s3Conf(srv)+localConf)
		remotes = append(remotes, "s3t:"+srv.Bucket+"/mem")
	}
	for _, remote := range remotes {
		r := open(t, Config{Remote: remote, ConfigFile: conf}, false)
		var mu sync.Mutex
		maxRSS := map[string]int64{} // KiB
		r.onExit = func(sub string, st *os.ProcessState) {
			if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
				mu.Lock()
				maxRSS[sub] = max(maxRSS[sub], ru.Maxrss)
				mu.Unlock()
			}
		}
		// rclone's own footprint, for comparison: a Stat.
		if _, err := r.Stat(t.Context(), "nothing"); !isNotFound(err) {
			t.Fatalf("Stat: %v", err)
		}

		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		resetPeakRSS()
		peakHeap, stop := sampleHeap()
		start := time.Now()
		g := storagetest.NewGen(7, size)
		if err := r.Put(t.Context(), "big", g); err != nil {
			t.Fatalf("%s: Put: %v", remote, err)
		}
		putTime := time.Since(start)
		stop()
		rss := peakRSS()
		start = time.Now()
		rc, err := r.Get(t.Context(), "big")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != size {
			t.Fatalf("Get: %d bytes, %v", n, err)
		}
		getTime := time.Since(start)
		heapGrowth := int64(*peakHeap) - int64(before.HeapInuse)
		t.Logf("%s: Put %d MiB in %v (%.0f MiB/s), Get in %v; rclone peak RSS (MiB): %s; this process: Go heap +%.1f MiB over %.1f MiB, peak RSS %.1f MiB",
			remote, size>>20, putTime.Round(time.Millisecond), float64(size)/(1<<20)/putTime.Seconds(), getTime.Round(time.Millisecond),
			fmtRSS(maxRSS), float64(heapGrowth)/(1<<20), float64(before.HeapInuse)/(1<<20), float64(rss)/(1<<20))
		if grow := (maxRSS["rcat"] - maxRSS["lsjson"]) << 10; grow > size/2 {
			t.Errorf("%s: rclone rcat peak RSS %d MiB above a Stat's for a %d MiB object: does it buffer the stream?", remote, grow>>20, size>>20)
		}
		if heapGrowth > 32<<20 {
			t.Errorf("%s: Go heap grew by %d MiB during Put", remote, heapGrowth>>20)
		}
	}
}

func fmtRSS(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(m[k])/1024))
	}
	return strings.Join(parts, ", ")
}

// sampleHeap records the peak of runtime HeapInuse every 5 ms until stop.
func sampleHeap() (*uint64, func()) {
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return &peak, func() { close(done); wg.Wait() }
}

// resetPeakRSS resets this process's VmHWM (Linux; ignored elsewhere).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns this process's VmHWM in bytes, or 0.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestLatency logs what each operation costs: mostly rclone's start-up.
func TestLatency(t *testing.T) {
	if os.Getenv(perfEnv) == "" {
		t.Skipf("set %s=1 to measure", perfEnv)
	}
	srv := testenv.StartS3(t)
	conf := writeConf(t, s3Conf(srv)+localConf)
	bin := testenv.Bin(t, "rclone")
	ctx := t.Context()

	// The floor: starting rclone to print its version.
	var version []time.Duration
	for range 5 {
		start := time.Now()
		cmd := exec.CommandContext(ctx, bin, "version")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		version = append(version, time.Since(start))
	}
	t.Logf("rclone version: median %v", median(version))

	for _, remote := range []string{"loc:" + t.TempDir(), "s3t:" + srv.Bucket + "/lat"} {
		r := open(t, Config{Remote: remote, ConfigFile: conf}, false)
		var mu sync.Mutex
		procs := 0
		r.onExit = func(string, *os.ProcessState) { mu.Lock(); procs++; mu.Unlock() }
		ops := []struct {
			name string
			fn   func(i int) error
		}{
			{"Put 1 KiB", func(i int) error {
				return r.Put(ctx, fmt.Sprintf("o/%d", i), bytes.NewReader(make([]byte, 1024)))
			}},
			{"Stat", func(i int) error { _, err := r.Stat(ctx, fmt.Sprintf("o/%d", i)); return err }},
			{"Stat missing", func(i int) error {
				if _, err := r.Stat(ctx, fmt.Sprintf("o/missing%d", i)); !isNotFound(err) {
					return fmt.Errorf("want ErrNotFound, got %v", err)
				}
				return nil
			}},
			{"Get 1 KiB", func(i int) error {
				rc, err := r.Get(ctx, fmt.Sprintf("o/%d", i))
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			}},
			{"Get resumed", func(i int) error {
				// What storage.Wrap runs to resume a cut read: stat, then cat --offset.
				rc, _, err := r.GetRange(ctx, fmt.Sprintf("o/%d", i), 512, "")
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			}},
			{"Get missing", func(i int) error {
				if _, err := r.Get(ctx, fmt.Sprintf("o/missing%d", i)); !isNotFound(err) {
					return fmt.Errorf("want ErrNotFound, got %v", err)
				}
				return nil
			}},
			{"List o/", func(int) error { return r.List(ctx, "o/", func(storage.Info) error { return nil }) }},
			{"Put existing", func(i int) error {
				if err := r.Put(ctx, fmt.Sprintf("o/%d", i), strings.NewReader("x")); !isExists(err) {
					return fmt.Errorf("want ErrExists, got %v", err)
				}
				return nil
			}},
			{"Remove", func(i int) error { return r.Remove(ctx, fmt.Sprintf("o/%d", i)) }},
			{"Remove missing", func(i int) error {
				if err := r.Remove(ctx, fmt.Sprintf("o/%d", i)); !isNotFound(err) {
					return fmt.Errorf("want ErrNotFound, got %v", err)
				}
				return nil
			}},
		}
		var lines []string
		for _, op := range ops {
			var d []time.Duration
			mu.Lock()
			procs = 0
			mu.Unlock()
			const n = 5
			for i := range n {
				start := time.Now()
				if err := op.fn(i); err != nil {
					t.Fatalf("%s %s: %v", remote, op.name, err)
				}
				d = append(d, time.Since(start))
			}
			mu.Lock()
			lines = append(lines, fmt.Sprintf("%-14s median %6v  (%d rclone runs each)", op.name, median(d).Round(time.Millisecond), procs/n))
			mu.Unlock()
		}
		t.Logf("%s:\n  %s", filepath.Base(remote), strings.Join(lines, "\n  "))
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, storage.ErrNotFound) }
func isExists(err error) bool   { return err != nil && errors.Is(err, storage.ErrExists) }
