package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/bench/internal/etcdfill"

	"github.com/dustin/go-humanize"
)

// The large database is filled by a single member with larger Txns than the
// regular profiles (fewer raft entries for the same bytes), so that 8 GiB
// fills in minutes; etcd's request limits are raised to match.
const (
	largeWriters  = 4
	largeTxnOps   = 1000
	largeTxnBytes = 4 << 20
	// largeSpace is the free space -large needs, in multiples of its size:
	// the member's data dir, etcdctl's snapshot and a restored data dir
	// (each about the size), the file:// and s3:// backups, and headroom.
	largeSpace = 4.5
	// etcd keeps up to --snapshot-count + --snapshot-catchup-entries raft
	// entries in memory (10000 + 5000 by default): with 4 MiB Txns that
	// would be tens of GiB. A single member has no follower to catch up.
	largeSnapCount = 50
	largeCatchUp   = 10
	// largeFillRate bounds the fill: it fails if slower than this.
	largeFillRate = 8 << 20 // bytes/s
)

// largeResult is the one-off measurement of a single large database.
type largeResult struct {
	Target     int64
	Fill       fillStats
	DBSize     int64
	RawSize    int64  // etcdctl's snapshot file
	StoredSize int64  // etcd-backup's payload on file://
	Free       int64  // free bytes in the temporary directory before the fill
	MemberRSS  string // the etcd member's peak RSS (VmHWM) after the fill
	Runs       map[string]sample
	Order      []string // ids in the order measured
	Err        string
}

// largeSteps are the commands measured once on the large database, in order.
var largeSteps = []variantDef{
	{"a", "etcdctl snapshot save"},
	{"c", "etcd-backup snapshot → file://"},
	{"d", "etcd-backup snapshot → s3:// (versitygw)"},
	{"etcdutl", "etcdutl snapshot restore (1 member)"},
	{"etcd-backup", "etcd-backup restore latest from file:// (1 member)"},
}

// freeSpace returns the bytes available to this user in dir's file system.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkLargeSpace refuses a large run the temporary directory cannot hold.
func checkLargeSpace(size int64) error {
	dir := os.TempDir()
	free, err := freeSpace(dir)
	if err != nil {
		return err
	}
	if need := int64(largeSpace * float64(size)); free < need {
		return fmt.Errorf("needs %s free in %s (%.1f× the size: the etcd member, etcdctl's snapshot, a restored member and the backups), only %s is: free some space, set TMPDIR to a larger file system, pass a smaller -large or -large 0 to skip it",
			sizeName(need), dir, largeSpace, sizeName(free))
	}
	return nil
}

// runLarge fills a single-member cluster to -large and measures each
// backup and restore command once, deleting each output right after.
func (b *bench) runLarge(ctx context.Context) error {
	size := b.opt.large
	lr := &largeResult{Target: size, Runs: map[string]sample{}}
	b.large = lr
	if err := checkLargeSpace(size); err != nil {
		return err
	}
	lr.Free, _ = freeSpace(os.TempDir())
	dir := filepath.Join(b.tmp, "large")
	defer os.RemoveAll(dir)
	logf("large: starting a 1-member etcd %s for %s", etcdVersion, sizeName(size))
	cl, err := startCluster(ctx, b.bin["etcd"], filepath.Join(dir, "cluster"), clusterOptions{
		members: 1,
		quota:   size + 1<<30,
		extra: []string{fmt.Sprintf("--max-txn-ops=%d", largeTxnOps), fmt.Sprintf("--max-request-bytes=%d", 2*largeTxnBytes),
			fmt.Sprintf("--snapshot-count=%d", largeSnapCount), fmt.Sprintf("--snapshot-catchup-entries=%d", largeCatchUp)},
	})
	if err != nil {
		return err
	}
	stopped := false
	stopCluster := func() {
		if !stopped {
			cl.stop()
			stopped = true
		}
	}
	defer stopCluster()

	ef, err := etcdfill.New("k8s")
	if err != nil {
		return err
	}
	ef.Writers, ef.TxnMaxOps, ef.TxnMaxBytes = largeWriters, largeTxnOps, largeTxnBytes
	f := &filler{profile: "k8s", f: ef}
	fillTimeout := 2*time.Minute + time.Duration(size/largeFillRate)*time.Second
	logf("large: filling to %s (k8s profile; bounded by %v)", sizeName(size), fillTimeout)
	fs, err := f.fillTo(ctx, cl, size, fillTimeout)
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	lr.Fill, lr.DBSize = fs, fs.DBSize
	lr.MemberRSS = benchkit.ProcField(fmt.Sprintf("/proc/%d/status", cl.members[0].cmd.Process.Pid), "VmHWM")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(lr.MemberRSS, " kB"), 10, 64); err == nil {
		lr.MemberRSS = fmt.Sprintf("%.0f MiB (mostly the database's pages, mapped)", float64(kb)/1024)
	}
	logf("large: db %s, %d keys, %s written in %v", humanize.IBytes(uint64(fs.DBSize)), fs.Keys,
		humanize.IBytes(uint64(fs.Bytes)), fs.Duration.Round(time.Second))

	work := filepath.Join(dir, "work")
	snap := filepath.Join(work, "snap.db")
	repo := filepath.Join(work, "repo")
	out := filepath.Join(dir, "restore")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	timeout := snapTimeout(size)
	record := func(id string, s sample, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		lr.Runs[id] = s
		lr.Order = append(lr.Order, id)
		logf("large %s: (%s) %.2fs, CPU %.2fs, peak RSS %s", sizeName(size), id, s.Wall.Seconds(), s.CPU.Seconds(),
			humanize.IBytes(uint64(s.MaxRSS)))
		return nil
	}
	lead, err := cl.settle(ctx)
	if err != nil {
		return err
	}
	pid := lead.cmd.Process.Pid
	withLeader := func(run func() (sample, error)) (sample, error) {
		syscall.Sync()
		before := benchkit.ProcCPU(pid)
		s, err := run()
		s.LeaderCPU = benchkit.ProcCPU(pid) - before
		return s, err
	}

	// Backups. etcdctl's snapshot and the file:// repository are kept for
	// the restores below; the s3:// one is removed at once.
	s, err := withLeader(func() (sample, error) { return b.etcdctlSave(ctx, lead, snap, size) })
	if err := record("a", s, err); err != nil {
		return err
	}
	if fi, err := os.Stat(snap); err == nil {
		lr.RawSize = fi.Size()
	}
	s, err = withLeader(func() (sample, error) {
		return measure(ctx, timeout, benchkit.ChildEnv(), b.bin["etcd-backup"], b.backupArgs(cl, "file://"+repo)...)
	})
	if err := record("c", s, err); err != nil {
		return err
	}
	_, lr.StoredSize = dirSize(repo)
	prefix := fmt.Sprintf("large-%d", size>>20)
	s, err = withLeader(func() (sample, error) {
		return measure(ctx, timeout, benchkit.ChildEnv(b.s3.env()...), b.bin["etcd-backup"], b.backupArgs(cl, b.s3.url(prefix))...)
	})
	if rerr := b.s3.removePrefix(ctx, prefix); rerr != nil && err == nil {
		err = fmt.Errorf("clean up s3 prefix %s: %w", prefix, rerr)
	}
	if err := record("d", s, err); err != nil {
		return err
	}

	// The member is no longer needed: free its disk and memory for the
	// restores.
	stopCluster()
	os.RemoveAll(cl.dir)

	restoreOne := func(id string, run func(dataDir string) (sample, error)) error {
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		if err := os.MkdirAll(out, 0o700); err != nil {
			return err
		}
		defer os.RemoveAll(out)
		syscall.Sync()
		s, err := run(filepath.Join(out, "m1.etcd"))
		return record(id, s, err)
	}
	if err := restoreOne("etcdutl", func(dataDir string) (sample, error) {
		return b.etcdutlRestore(ctx, timeout, snap, dataDir, 1)
	}); err != nil {
		return err
	}
	os.Remove(snap)
	return restoreOne("etcd-backup", func(dataDir string) (sample, error) {
		return b.backupRestore(ctx, timeout, b.bin["etcd-backup"], "file://"+repo, dataDir, 1)
	})
}
