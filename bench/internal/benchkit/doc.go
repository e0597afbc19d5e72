// Package benchkit holds what the benchmark commands (bench, bench/journal)
// share: finding the repository and its test binaries, the environment of
// the processes they start, /proc readings, CPU profiles grouped by kind,
// the machine table of BENCHMARKS.md and writing it.
//
// It imports only the standard library.
//
// Imports: none
package benchkit
