// Command bench measures etcd-backup's snapshot and restore against the
// tools people use today (etcdctl snapshot save, rclone, etcdutl snapshot
// restore) on a real 3-member etcd cluster, and writes BENCHMARKS.md.
//
//	go run ./bench -out BENCHMARKS.md                   # everything, with one 8 GiB database (about 45 min on 2 CPUs, needs 36 GiB free in $TMPDIR)
//	go run ./bench -sizes 64MiB -runs 2 -large 0 -out /tmp/b.md  # quick check (about 1 min)
//
// To weigh a candidate change, build it elsewhere and measure it side by
// side with the current code:
//
//	go run ./bench -sizes 1GiB -runs 3 -variants c,x1 -also fix=/tmp/etcd-backup-fix -out /tmp/fix.md
//
// It needs the binaries of scripts/install-test-deps.sh (etcd, etcdctl and
// etcdutl 3.6.16, versitygw, rclone) and builds etcd-backup itself.
//
// Besides the binaries, it runs the library in-process for the "where the
// time goes" analysis (backup.Run and restore.Execute under the CPU
// profiler). Like the command, it opens repositories with
// internal/storage/backends only, never a concrete backend.
//
// Imports: bench/internal/benchkit, bench/internal/etcdfill, bench/internal/s3bench, internal/backup, internal/etcd, internal/format, internal/repo, internal/restore, internal/storage/backends, github.com/minio/minio-go/v7, go.etcd.io/etcd/client/v3
package main
