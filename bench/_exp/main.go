package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func timeit(name string, f func() error) {
	c0, t0 := cpu(), time.Now()
	err := f()
	fmt.Printf("%-60s wall %6.2fs cpu %6.2fs err=%v\n", name, time.Since(t0).Seconds(), (cpu() - c0).Seconds(), err)
}

const ep = "http://127.0.0.1:23791"

func main() {
	ctx := context.Background()
	switch os.Args[1] {
	case "fill":
		cli, _ := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()})
		for i := 0; i < 256*1024/512; i++ {
			var ops []clientv3.Op
			for j := 0; j < 128; j++ {
				v := make([]byte, 4096)
				rand.Read(v)
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/k/%d/%d", i, j), string(v)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				panic(err)
			}
		}
	case "stream":
		for _, pool := range []string{"default", "tier64k", "default", "tier64k"} {
			cfg := clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()}
			if pool == "tier64k" {
				cfg.DialOptions = []grpc.DialOption{experimental.WithBufferPool(mem.NewTieredBufferPool(256, 4<<10, 16<<10, 32<<10, 64<<10, 1<<20))}
			}
			cli, _ := clientv3.New(cfg)
			timeit("stream "+pool, func() error {
				rc, err := cli.Snapshot(ctx)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, rc)
				return err
			})
			cli.Close()
		}
	case "zstd":
		raw, _ := os.ReadFile(os.Args[2])
		for _, lowmem := range []bool{true, false, true, false} {
			for _, conc := range []int{1, 2} {
				timeit(fmt.Sprintf("zstd lowmem=%v conc=%d", lowmem, conc), func() error {
					zw, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(conc),
						zstd.WithEncoderCRC(true), zstd.WithWindowSize(4<<20), zstd.WithLowerEncoderMem(lowmem))
					for off := 0; off < len(raw); off += 32 << 10 {
						zw.Write(raw[off:min(off+32<<10, len(raw))])
					}
					return zw.Close()
				})
			}
		}
		timeit("sha256 x1", func() error { h := sha256.New(); h.Write(raw); return nil })
		timeit("format encoder", func() error {
			e, _ := format.NewEncoder(io.Discard, format.EncoderOptions{Level: 1})
			for off := 0; off < len(raw); off += 32 << 10 {
				e.Write(raw[off:min(off+32<<10, len(raw))])
			}
			_, err := e.Close()
			return err
		})
	case "restore":
		repoDir, out := os.Args[2], os.Args[3]
		be, err := backends.Open(ctx, "file://"+repoDir, backends.Options{})
		if err != nil {
			panic(err)
		}
		r, _ := repo.Open(ctx, be, "default")
		m, err := r.Find(ctx, "latest", repo.Selector{})
		if err != nil {
			panic(err)
		}
		os.MkdirAll(out, 0o700)
		snap := filepath.Join(out, "snap.db")
		timeit("fetch (decode+verify) -> file, no fsync", func() error {
			f, _ := os.Create(snap)
			defer f.Close()
			return restore.Fetch(ctx, r, m, nil, f, nil)
		})
		timeit("fsync", func() error { f, _ := os.OpenFile(snap, os.O_RDWR, 0); defer f.Close(); return f.Sync() })
		timeit("inspect (snapshot status)", func() error { _, err := datadir.Inspect(snap); return err })
		timeit("build (etcdutl restore code)", func() error {
			return datadir.Build(snap, filepath.Join(out, "data"), datadir.Member{Name: "m1", InitialCluster: "m1=http://10.0.0.1:2380", PeerURLs: []string{"http://10.0.0.1:2380"}, Token: "etcd-cluster"})
		})
	}
}
