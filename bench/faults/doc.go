// Command faults measures etcd-backup against S3 through storage faults and
// what the agent reads from storage, and writes the "Storage faults, and
// what the agent reads" section of BENCHMARKS.md (between the markers
// <!-- faults:begin --> and <!-- faults:end -->; the rest of the file is
// left alone):
//
//  1. Time and success rate of `etcd-backup snapshot` and `etcd-backup
//     restore` (one member) of a 256 MiB database, through a fault proxy
//     (internal/faultproxy) in front of versitygw, at 0, 1, 5 and 20 %
//     errors: N % of requests answered 503 SlowDown plus N/2 % of response
//     bodies cut. Medians over 5 runs per level and their ratio to the 0 %
//     median.
//
//  2. Bytes (and requests by method) the agent reads from storage per
//     cycle with retention (`agent --interval 5s --keep-last 2`, 64 MiB
//     database, no faults): now (retention checks the newest backup with a
//     Stat), and before, when retention read the newest backup back after
//     every backup: derived as the cycle plus a standalone `prune
//     --read-back`, and measured with the agent of the last commit that
//     did so (-before-rev, default 1a553d5^, built from `git archive`).
//
//     go run ./bench/faults -out BENCHMARKS.md      # everything (about 10 min on 2 CPUs)
//     go run ./bench/faults -quick -out /tmp/f.md   # sanity run (about 3 min)
//
// It needs etcd 3.6.16 and versitygw from scripts/install-test-deps.sh
// (.cache/test-bin) and builds etcd-backup itself. Everything listens on
// 127.0.0.1.
//
// It drives etcd-backup, etcd and versitygw as processes; of this module it
// imports only bench/internal/benchkit, bench/internal/etcdfill,
// bench/internal/s3bench and internal/faultproxy.
//
// Imports: bench/internal/benchkit, bench/internal/etcdfill, bench/internal/s3bench, internal/faultproxy, github.com/minio/minio-go/v7, go.etcd.io/etcd/client/v3
package main
