package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/etcd-backup/etcd-backup/internal/clusterrestore"
	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/replay"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Exit codes: a stable contract, listed in `etcd-backup --help`.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNoBackup    = 3
	exitIntegrity   = 4
	exitKey         = 5
	exitUnreachable = 6
	exitInUse       = 7
)

const exitCodesHelp = `Exit codes:
  0  success
  1  error (storage down or failing after retries, disk, etcd refused the
     request or the TLS handshake, ...): the backup was not judged
  2  usage: bad or missing flag, bad URL, bad peer URL
  3  no such backup or repository
  4  integrity failure: a checksum, size or etcd hash does not match
  5  wrong or missing encryption key (--identity, --encrypt-to)
  6  etcd unreachable
  7  data dir in use by a running etcd`

// usageError marks errors in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// classify maps an error to its exit code and a hint for the operator.
func classify(err error) (int, string) {
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, storage.ErrBadURL), errors.Is(err, restore.ErrBadSpec):
		return exitUsage, "see 'etcd-backup <command> --help' for flags and examples"
	case errors.Is(err, datadir.ErrInUse):
		return exitInUse, "stop etcd on this node (systemctl stop etcd) before restoring; nothing was changed"
	case errors.Is(err, storage.ErrUnavailable):
		return exitError, "the storage kept failing (network, throttling, server errors or stalls) and the command gave up; whatever was being read was not judged, and nothing was published or changed. Check the store and the network, then run the command again (raise --storage-timeout to wait longer)"
	case errors.Is(err, storage.ErrChanged):
		return exitError, "an object was replaced while it was being read (another tool writing into the repository?); nothing was judged or changed. Run the command again"
	case errors.Is(err, clusterrestore.ErrRefused):
		return exitError, "restore-cluster does not stop a cluster that still works; stop etcd on the members first, or pass --force"
	case errors.Is(err, clusterrestore.ErrNoAgent):
		return exitError, "run 'etcd-backup agent --name NAME --data-dir DIR --etcd-unit etcd' (same --repo and --cluster) on every node named in --initial-cluster"
	case errors.Is(err, clusterrestore.ErrIncomplete), errors.Is(err, clusterrestore.ErrDiverged):
		return exitError, "each member's reports are in the repository under clusters/<cluster>/orders/; fix the named members (agent running? etcd start command?) and run the same command again to resume"
	case errors.Is(err, format.ErrKey):
		return exitKey, "restore takes an age identity file (--identity key.txt); backups take public keys (--encrypt-to age1... or --encrypt-to-file)"
	case errors.Is(err, format.ErrIntegrity):
		return exitIntegrity, "this backup is damaged and was not used; nothing was changed. Try another: 'etcd-backup list', then restore ID"
	case errors.Is(err, format.ErrVersion):
		return exitIntegrity, "this repository was written by a newer etcd-backup; upgrade etcd-backup"
	case errors.Is(err, replay.ErrNotCovered):
		return exitNoBackup, "'etcd-backup list' shows the revisions and times each journal covers; nothing was changed"
	case errors.Is(err, repo.ErrNoBackup), errors.Is(err, storage.ErrNotFound):
		return exitNoBackup, "check --repo and --cluster, and 'etcd-backup list'"
	case errors.Is(err, etcd.ErrTLS):
		return exitError, "etcd's certificate must be signed by the CA in --cacert and name the endpoint's host; with --client-cert-auth etcd wants --cert and --key signed by its --trusted-ca-file"
	case errors.Is(err, etcd.ErrUnreachable):
		return exitUnreachable, "check --endpoints, that etcd is running, and the TLS flags (--cacert --cert --key)"
	case errors.Is(err, etcd.ErrTimeout):
		return exitError, "the cluster did not accept the change in time; check 'etcdctl member list' and endpoint health, then run the command again (it is safe to repeat)"
	case errors.Is(err, context.Canceled):
		return exitError, "interrupted"
	}
	return exitError, ""
}

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT is set.
// A backup streams, so its live heap is small (zstd's window and blocks, the
// S3 part buffers); the limit makes the collector return garbage before the
// process grows, keeping peak RSS flat across database sizes.
const defaultMemoryLimit = 64 << 20

// liftMemoryLimit removes defaultMemoryLimit for a command whose live heap
// grows with the data: a restore that replays a journal holds etcd's key
// index (keys and every revision since the snapshot). Above a soft limit
// the collector runs without pause, up to half the CPU: a restore
// replaying 400k revisions (330k keys at the end) took 8 s and 14 CPU-s
// under the limit, 3 s and 4 CPU-s without it. A GOMEMLIMIT the operator
// set stays.
func liftMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code, hint := classify(err)
	fmt.Fprintf(stderr, "etcd-backup: error: %s\n", oneLine(err.Error()))
	if hint != "" {
		fmt.Fprintf(stderr, "etcd-backup: hint: %s\n", hint)
	}
	return code
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
