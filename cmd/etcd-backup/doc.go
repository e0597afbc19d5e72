// Command etcd-backup backs up etcd v3 clusters to storage that outlives
// them and restores a healthy multi-member cluster from those backups.
//
// This package is mostly cobra wiring: one file per command, turning flags
// into calls of the internal packages and results into output, and the
// mapping from errors to the documented exit codes (main.go). It is the only
// caller of os.Exit besides the bench commands. Some logic lives here
// because it belongs to the commands, not to a library package: the agent's
// periodic verify and drill loops ('etcd-backup verify' run as a child
// process on a timer, with their metrics, so that a drill's in-process etcd
// cannot take the agent down), its retention hook after each backup, the
// demo's whole story (cmd_demo.go), the tables and reports of list, history
// and prune, and the byte counting behind the progress line (progress.go).
// The hidden 'gen-docs' command (cmd_gendocs.go) writes the man pages and
// shell completions that 'make release' ships.
//
// It opens repositories with internal/storage/backends.Open only, never a
// concrete backend, and connects to etcd through internal/etcd (the demo
// also uses the etcd client directly, to write and check its keys).
//
// Imports: internal/agent, internal/backup, internal/clusterrestore, internal/datadir, internal/drill, internal/embedded, internal/etcd, internal/format, internal/fsutil, internal/journal/chain, internal/journal/codec, internal/journal/replay, internal/journal/rollup, internal/journal/store, internal/journal/writer, internal/progress, internal/prune, internal/repo, internal/restore, internal/retention, internal/storage, internal/storage/backends, internal/systemd, internal/transfer, internal/version, github.com/prometheus/client_golang, go.etcd.io/etcd/client/v3
package main
