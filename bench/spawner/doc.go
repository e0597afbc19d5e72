// Command spawner runs one command and writes its wall time and rusage, as
// JSON, to the file named by $ETCD_BACKUP_BENCH_SPAWN_RESULT. The benchmark
// (../) starts every measured command through it.
//
// Why: Go starts children with vfork (CLONE_VM), and at exec Linux carries
// the starting process's RSS high-water mark into the child's ru_maxrss. A
// command started directly by the benchmark process (hundreds of MiB after
// the in-process analysis) would report the benchmark's peak RSS instead of
// its own. This program only uses the standard library and stays a few MiB,
// which is then the smallest peak RSS a command can report.
//
// Imports: none
package main
