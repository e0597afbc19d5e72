// Command journal measures the continuous journal (`etcd-backup agent
// --continuous`) on a real 3-member etcd cluster with a file:// repository,
// and writes the "Continuous journal" section of BENCHMARKS.md (between the
// markers <!-- journal:begin --> and <!-- journal:end -->; the rest of the
// file is left alone):
//
//  1. RPO: steady acknowledged writes at 1000 txn/s with an agent per member
//     (--leader-only --journal-flush 1s), then every etcd member and every
//     agent SIGKILLed at once; `restore latest` into a fresh member; how many
//     acknowledged writes are missing, and how many seconds of them.
//
//  2. Agent cost: the leader's agent's CPU and peak RSS under 1000 and 5000
//     txn/s (or what the machine sustains), and whether it keeps up.
//
//  3. etcd put latency (p50, p99) at 1000 txn/s with and without the agent.
//
//  4. Replay speed: `restore latest` of a journal of ≥ 100k events vs
//     `restore --no-journal`, then internal/restore.Execute of the same
//     restore in process under the CPU profiler, grouped by kind.
//
//  5. Journal at scale (section "Journal at scale", its own markers
//     <!-- journal-scale:begin/end --> right after the journal section):
//     synthetic chains of one-second segments (1 h, 24 h; -scale-hours)
//     written with internal/journal/store into versitygw, as written,
//     after the open-chain roll-up and after closed-chain packing
//     (internal/journal/rollup): objects, PUTs spent, and `list` and
//     `restore latest` through internal/faultproxy at 0 and 20 ms per
//     request, with LIST and GET counts.
//
//     go run ./bench/journal -out BENCHMARKS.md          # everything
//     go run ./bench/journal -sections scale             # only the scale section
//     go run ./bench/journal -quick -out /tmp/j.md       # sanity run (about 1 min)
//
// It needs etcd 3.6.16 from scripts/install-test-deps.sh (.cache/test-bin)
// and builds etcd-backup and ../spawner itself.
//
// It drives etcd-backup and etcd as processes; of this module it imports
// bench/internal/benchkit and bench/internal/s3bench, and, for the scale
// section only (writing synthetic chains and rolling them up in process),
// internal/faultproxy, internal/format, internal/journal/codec,
// internal/journal/rollup, internal/journal/store, internal/repo and
// internal/storage/backends; for the replay profile, internal/restore
// (with internal/repo and internal/storage/backends). The scale section
// also needs versitygw.
//
// Imports: bench/internal/benchkit, bench/internal/s3bench, internal/faultproxy, internal/format, internal/journal/codec, internal/journal/rollup, internal/journal/store, internal/repo, internal/restore, internal/storage/backends, go.etcd.io/etcd/client/v3
package main
