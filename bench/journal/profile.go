package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

// replayProfile is where a restore's CPU goes when it replays a journal.
type replayProfile struct {
	S          sample
	Categories []benchkit.Share
	Top        []benchkit.Share
}

// replayCategories group the functions of the replay profile by what they
// do; the first match wins.
var replayCategories = []benchkit.Category{
	{Name: "etcd's in-memory key index (mvcc treeIndex, btree)", Match: "mvcc.(*treeIndex)|mvcc.(*keyIndex)|mvcc.newKeyIndex|google/btree|mvcc.(*generation)"},
	{Name: "etcd's backend buffers and batch commits", Match: "storage/backend"},
	{Name: "bbolt (pages, commits)", Match: "go.etcd.io/bbolt"},
	{Name: "etcd's lease code", Match: "server/v3/lease"},
	{Name: "etcd's mvcc write path (revision keys, KeyValue encoding)", Match: "storage/mvcc|go.etcd.io/etcd/api|gogo/|protobuf"},
	{Name: "journal objects: zstd", Match: "klauspost/compress"},
	{Name: "sha256 (snapshot, seals)", Match: "sha256"},
	{Name: "etcd-backup (fetch, decode, checks)", Match: "etcd-backup/internal"},
	{Name: "key comparisons (bytes.Compare: key index and bbolt searches)", Match: "cmpbody|bytes.Compare"},
	{Name: "Go maps (lease and TTL tables)", Match: "internal/runtime/maps|aeshash|runtime.mapaccess|runtime.mapassign"},
	{Name: "locks, atomics, clocks", Match: "sync.|sync/atomic|time.Now|time.Since|time.runtimeNow"},
	{Name: "memmove/memclr (copies)", Match: "runtime.memmove|runtime.memclr"},
	{Name: "syscalls (read/write/fsync)", Match: benchkit.SyscallMatch},
	{Name: "GC and allocation", Match: benchkit.GCMatch},
	{Name: "scheduler, futex, other runtime", Match: "runtime."},
}

// profileReplay runs internal/restore.Execute (what `etcd-backup restore
// latest` runs for one member, journal included) from the file://
// repository repo into a fresh data dir under dir, under the CPU
// profiler, and groups the profile by kind.
func (s *steady) profileReplay(ctx context.Context, repoURL, dir string) (*replayProfile, error) {
	be, err := backends.Open(ctx, repoURL, backends.Options{})
	if err != nil {
		return nil, err
	}
	defer be.Close()
	r, err := repo.Open(ctx, be, "default")
	if err != nil {
		return nil, err
	}
	m, jp, err := restore.Resolve(ctx, r, "latest", repo.Selector{}, restore.Target{})
	if err != nil {
		return nil, err
	}
	if jp == nil {
		return nil, fmt.Errorf("the newest backup has no journal to replay")
	}
	plan, err := restore.MakePlan(restore.Spec{DataDir: filepath.Join(dir, "p1.etcd"), Name: "p1", InitialCluster: "p1=http://127.0.0.1:2380"})
	if err != nil {
		return nil, err
	}
	prof := filepath.Join(s.dir, "replay.pprof")
	var res restore.Result
	var rerr error
	wall, cpu, err := benchkit.Profile(prof, func() { res, rerr = restore.Execute(ctx, r, m, plan, restore.Options{Journal: jp}) })
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, fmt.Errorf("restore.Execute: %w", rerr)
	}
	if res.Revision != jp.End {
		return nil, fmt.Errorf("restore.Execute restored revision %d, the journal ends at %d", res.Revision, jp.End)
	}
	rp := &replayProfile{S: sample{Wall: wall, CPU: cpu}}
	rp.Categories, rp.Top, err = benchkit.PprofTop(ctx, prof, replayCategories)
	return rp, err
}

func (rp *replayProfile) write(p printer, records int64) {
	p("Where a replay's CPU goes: `restore.Execute` (what `restore latest` runs, journal included) in the benchmark's own process under Go's CPU profiler, same repository, one run: %.2f s wall, %.2f CPU-s, %.0f revisions per CPU-second. Flat time by kind:\n\n",
		rp.S.Wall.Seconds(), rp.S.CPU.Seconds(), float64(records)/rp.S.CPU.Seconds())
	p("%s", benchkit.ProfileMarkdown(rp.Categories, rp.Top))
}
