package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/agent"
	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/clusterrestore"
	"github.com/etcd-backup/etcd-backup/internal/journal/rollup"
	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/systemd"
)

type agentOptions struct {
	snap         snapshotOptions // etcd connection, --encrypt-to, --compression-level: as snapshot
	Interval     time.Duration
	Schedule     string
	Jitter       time.Duration
	RetryMax     int
	RetryBackoff time.Duration
	LeaderOnly   bool
	Listen       string
	MaxAge       time.Duration
	Grace        time.Duration
	prune        pruneOptions // retention after each backup: --keep-* as prune
	DrillEvery   time.Duration
	VerifyEvery  time.Duration
	Continuous   bool
	JournalFlush time.Duration
	RollupEvery  time.Duration
	RollupAfter  time.Duration
	RollupFanout int
	JournalMax   int
	CopyTo       string
	CopyCluster  string
	CopyEvery    time.Duration
	orders       ordersOptions // restore-cluster orders carried out on this node
}

// ordersOptions say who this node is to restore-cluster and how to stop
// and start its etcd.
type ordersOptions struct {
	Name       string
	DataDir    string
	EtcdUnit   string
	StopCmd    string
	StartCmd   string
	StateDir   string
	Poll       time.Duration
	HealthyFor time.Duration
}

func (o *ordersOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Name, "name", "", "this node's etcd member name: with --data-dir, the agent carries out 'restore-cluster' orders for it")
	fs.StringVar(&o.DataDir, "data-dir", "", "this node's etcd data dir (for 'restore-cluster'; the old one is moved aside, never deleted)")
	fs.StringVar(&o.EtcdUnit, "etcd-unit", "", "systemd unit of etcd on this node: 'systemctl stop/start UNIT' during a restore-cluster order (default "+systemd.DefaultEtcdUnit+")")
	fs.StringVar(&o.StopCmd, "etcd-stop-command", "", "instead of --etcd-unit: shell command (sh -c) that stops etcd and returns once it has exited (with --etcd-start-command)")
	fs.StringVar(&o.StartCmd, "etcd-start-command", "", "instead of --etcd-unit: shell command (sh -c) that starts etcd on --data-dir and returns")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/etcd-backup", "where the agent keeps its key for restore orders (order-key.txt, 0600; it opens no backup)")
	fs.DurationVar(&o.Poll, "order-poll", 15*time.Second, "how often to look for new restore orders in the repository (one LIST request each time; once an order names this member, every second)")
	fs.DurationVar(&o.HealthyFor, "order-healthy-timeout", 10*time.Minute, "how long a restored member may take to serve before the order counts as failed on this node")
}

func (o *agentOptions) AddFlags(fs *pflag.FlagSet) {
	o.snap.AddFlags(fs)
	fs.DurationVar(&o.Interval, "interval", systemd.DefaultInterval, "back up every interval, at wall-clock multiples of it (00:00:00, 00:00:30, ...); at least 1s")
	fs.StringVar(&o.Schedule, "schedule", "", `cron schedule instead of --interval: "*/5 * * * *", with an optional leading seconds field, or @hourly, @daily, "@every 2h"; local time unless it starts with CRON_TZ=UTC`)
	fs.DurationVar(&o.Jitter, "jitter", 0, "random delay up to this added to each scheduled run (at most half the interval)")
	fs.IntVar(&o.RetryMax, "retry-max", agent.DefaultRetryMax, "retries of a failed run, with exponential backoff, while they still start within the run's interval")
	fs.DurationVar(&o.RetryBackoff, "retry-backoff", agent.DefaultBackoff, "wait before the first retry; doubles after each")
	fs.BoolVar(&o.LeaderOnly, "leader-only", false, "back up only while this member is the raft leader: run an agent on every member, each with its own member's client URL first in --endpoints")
	fs.StringVar(&o.Listen, "listen", agent.DefaultListen, `HTTP address of /metrics, /healthz, /status and POST /backup ("" to serve nothing); keep it on loopback: there is no authentication`)
	fs.DurationVar(&o.MaxAge, "max-age", 0, "/healthz fails when the newest backup in the repository is older than this (default 3 intervals)")
	fs.DurationVar(&o.Grace, "grace", agent.DefaultGrace, "on SIGTERM, how long a backup in flight may go on before it is cancelled")
	o.prune.addPolicyFlags(fs)
	o.orders.AddFlags(fs)
	fs.DurationVar(&o.DrillEvery, "drill-every", 0, "restore drill of the newest backup this often (e.g. 24h): read it back, restore it into a throwaway etcd, read every key, compare etcd's hash; 0: never")
	fs.DurationVar(&o.VerifyEvery, "verify-every", 0, "full verify of the newest backup this often (e.g. 6h), like 'etcd-backup verify latest': read back every byte and check every checksum and etcd's hash (downloads the whole backup); 0: never. Retention after each backup only checks that the newest backup's objects are there")
	fs.BoolVar(&o.Continuous, "continuous", false, "journal every change between snapshots (a watch from each snapshot's revision), sealed into the repository every --journal-flush: restore can then reach any revision or time (restore --to-revision/--to-time)")
	fs.DurationVar(&o.RollupEvery, "rollup-every", time.Minute, "with --continuous: merge the open chain's aged journal segments this often, and pack a chain into a few objects once the next starts (negative: never); encrypted chains need --identity")
	fs.StringVar(&o.CopyTo, "copy-to", "", "second site: copy every new backup and journal object to this repository URL (retention --keep-* applies there too); a second site that is down delays copies, never backups")
	fs.StringVar(&o.CopyCluster, "copy-to-cluster", "", "cluster name at the --copy-to repository (default: --cluster)")
	fs.DurationVar(&o.CopyEvery, "copy-every", time.Minute, "with --copy-to: how often to copy what is new (the second site's RPO)")
	fs.IntVar(&o.RollupFanout, "rollup-fanout", rollup.DefaultFanout, "with --continuous: how many journal objects of one size tier a roll-up merges (more: fewer PUTs, more objects kept)")
	fs.DurationVar(&o.RollupAfter, "rollup-after", rollup.DefaultMinAge, "with --continuous: journal segments received longer ago than this are merged; merged pieces are removed half of it after their roll-up appears")
	fs.DurationVar(&o.JournalFlush, "journal-flush", writer.DefaultFlush, "with --continuous: seal a journal segment at least this often while etcd changes; the most a total loss can cost")
	fs.IntVar(&o.JournalMax, "journal-max-segment", writer.DefaultMaxSegment, "with --continuous: seal earlier when this many bytes of events are buffered (bounds memory under a burst)")
	fs.StringArrayVar(&o.prune.Identity, "identity", nil, "age identity for --verify-every and --drill-every to check encrypted backups completely (--verify-every without it: stored size and sha256 only; a drill needs it)")
}

func newAgentCommand(g *Globals) *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Back up on a schedule, serve metrics and health, tell systemd (long-running)",
		Long: `Run until SIGTERM, taking a backup every --interval (at wall-clock multiples
of it) or on a cron --schedule, exactly like 'snapshot' does (same etcd,
--encrypt-to and --compression-level flags). Runs never overlap; a failed run
is retried with exponential backoff within its interval (--retry-max); a run
that overruns its interval delays the next one instead of piling up.

--leader-only: run one agent on every member, each given its own member's
client URL as the FIRST --endpoints entry. Before each run an agent asks its
member whether it is the raft leader and backs up only if it is, streaming
from its own member, and only if the repository has no backup of the current
interval yet. So the cluster gets one backup per interval, from the leader,
whichever member that is; nothing is written into etcd. See docs/agent.md
for the remaining races.

HTTP on --listen (default 127.0.0.1:9785, no authentication):
  GET  /metrics   Prometheus metrics (etcd_backup_*)
  GET  /healthz   200 when the newest backup in the repository is younger than
                  --max-age (default 3 intervals), 503 with the reason otherwise
  GET  /status    JSON: last runs, newest backup, leader state, next run
  POST /backup    back up now; answers {"id": ...} or {"error": ...}

After each backup it publishes, the agent applies the --keep-* retention
policy like 'prune'. The newest verified backup is always kept; "verified"
there means checked when written and still present with its recorded size,
which costs no download. --verify-every reads the newest backup back in
full (like 'verify latest') on its own schedule, --drill-every restores it
into a throwaway etcd; both run in a child process and report
etcd_backup_{verify,drill}_runs_total{result="success|failure|error"}:
failure means the backup is damaged (exit 4), error that it could not be
checked (storage down, missing key, ...).

systemd (etcd-backup-agent.service, Type=notify): READY=1 once listening,
WATCHDOG=1 when WatchdogSec= is set, STATUS= after each run, STOPPING=1 on
SIGTERM; a backup in flight then has --grace to finish, otherwise it is
cancelled and nothing is published. Every flag can be set as
ETCD_BACKUP_<FLAG> (ETCD_BACKUP_LEADER_ONLY=true, ETCD_BACKUP_INTERVAL=5m).`,
		Example: `  # on each member: this member's endpoint first
  etcd-backup agent --leader-only --interval 5m --repo 's3://backups/etcd?region=eu-west-1' \
      --endpoints https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379 \
      --cacert /etc/etcd/ca.pem --cert /etc/etcd/client.pem --key /etc/etcd/client-key.pem

  # one agent for the whole cluster (e.g. on a backup host), hourly at :17
  etcd-backup agent --schedule '17 * * * *' --repo /var/backups/etcd --endpoints http://10.0.0.1:2379

  # every change (1 s RPO), hourly snapshots, retention, and a second site a minute behind
  etcd-backup agent --leader-only --continuous --interval 1h --keep-hourly 48 --keep-daily 14 \
      --repo 's3://backups-eu/etcd' --copy-to 's3://backups-us/etcd?region=us-east-1' --endpoints ...

  curl -s localhost:9785/healthz; curl -s localhost:9785/status | jq .
  curl -s -X POST localhost:9785/backup`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAgent(cmd.Context(), g, &o, cmd.Flags())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runAgent(ctx context.Context, g *Globals, o *agentOptions, flags *pflag.FlagSet) error {
	if err := o.snap.applyLock(g); err != nil {
		return err
	}
	var sched agent.Schedule
	switch {
	case o.Schedule != "" && flags.Changed("interval"):
		return usagef("give --interval or --schedule, not both (ETCD_BACKUP_INTERVAL and ETCD_BACKUP_SCHEDULE count too)")
	case o.Schedule != "":
		s, err := agent.ParseCron(o.Schedule)
		if err != nil {
			return usagef("--schedule: %v", err)
		}
		sched = s
	case o.Interval < time.Second:
		return usagef("--interval %s: at least 1s", o.Interval)
	default:
		sched = agent.Every(o.Interval)
	}
	switch {
	case o.Jitter < 0, o.MaxAge < 0, o.Grace < 0, o.RetryBackoff < 0, o.DrillEvery < 0, o.VerifyEvery < 0:
		return usagef("--jitter, --max-age, --grace, --retry-backoff, --drill-every and --verify-every cannot be negative")
	case o.RetryMax < 0:
		return usagef("--retry-max cannot be negative")
	case o.snap.Level < 1 || o.snap.Level > 4:
		return usagef("--compression-level must be 1 to 4")
	case len(o.snap.etcd.Endpoints) == 0 || o.snap.etcd.Endpoints[0] == "":
		return usagef("--endpoints is empty")
	}
	recipients, err := parseRecipients(o.snap.EncryptTo, o.snap.EncryptToFile)
	if err != nil {
		return err
	}
	ids, err := readIdentities(o.prune.Identity)
	if err != nil {
		// Only verifies and drills use it: back up anyway; they will count
		// result="error" until the key is readable.
		g.log.Warn("cannot read --identity; verifies and drills of encrypted backups will fail", "error", err)
	}
	if g.Repo == "" {
		_, err := g.openRepo(ctx, false) // the usage error
		return err
	}
	// Storage retries and give-ups, by operation: a store that throttles
	// or drops shows here before backups fail.
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_storage_retries_total",
		Help: "Storage operations retried after a transient failure (503, dropped connection, stall), by operation."}, []string{"op"})
	giveUps := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_backup_storage_giveups_total",
		Help: "Storage operations that gave up after --storage-timeout of transient failures, by operation."}, []string{"op"})
	g.onRetry = func(op string, _ error) { retries.WithLabelValues(op).Inc() }
	g.onGiveUp = func(op string) { giveUps.WithLabelValues(op).Inc() }
	cli, err := o.snap.etcd.connect()
	if err != nil {
		return err
	}
	defer cli.Close()
	ex, err := ordersExecutor(g, &o.orders, func(ctx context.Context) (*repo.Repo, error) { return g.openRepo(ctx, false) })
	if err != nil {
		return err
	}

	// Open the repository once now: a bad URL is a usage error at start;
	// unreachable storage is not (the agent retries, /healthz says so).
	openRepo := func(ctx context.Context) (*repo.Repo, error) { return g.openRepo(ctx, true) }
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	r, err := openRepo(octx)
	cancel()
	switch {
	case errors.Is(err, storage.ErrBadURL):
		return usageError{err}
	case err != nil:
		g.log.Warn("cannot open the repository yet; retrying at each run", "error", err)
	default:
		first := r
		openRepo = func(ctx context.Context) (*repo.Repo, error) {
			if first != nil {
				r := first
				first = nil
				return r, nil
			}
			return g.openRepo(ctx, true)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), retries, giveUps)
	watchdog, err := agent.WatchdogFromEnv()
	if err != nil {
		g.log.Warn("ignoring systemd's watchdog settings", "error", err)
	}
	cfg := agent.Config{
		Schedule:     sched,
		Jitter:       o.Jitter,
		RetryMax:     o.RetryMax,
		RetryBackoff: o.RetryBackoff,
		LeaderOnly:   o.LeaderOnly,
		MaxAge:       o.MaxAge,
		Grace:        o.Grace,
		Listen:       o.Listen,
		Client:       cli,
		OpenRepo:     openRepo,
		Backup:       backup.Options{Recipients: recipients, Level: o.snap.Level},
		AfterBackup:  afterBackup(g, o),
		Logger:       g.log,
		Registry:     reg,
		Watchdog:     watchdog,

		Continuous:        o.Continuous,
		JournalFlush:      o.JournalFlush,
		RollupEvery:       o.RollupEvery,
		RollupAfter:       o.RollupAfter,
		RollupFanout:      o.RollupFanout,
		RollupIdentities:  ids,
		JournalMaxSegment: o.JournalMax,
		WriterName:        writerName(),
	}
	if o.Continuous && (o.JournalFlush < 10*time.Millisecond || o.JournalMax < 64<<10) {
		return usagef("--journal-flush must be at least 10ms and --journal-max-segment at least 64KiB")
	}
	if o.CopyTo != "" && o.CopyEvery <= 0 {
		return usagef("--copy-every must be more than 0")
	}
	if o.CopyTo != "" && o.CopyTo == g.Repo && (o.CopyCluster == "" || o.CopyCluster == g.Cluster) {
		return usagef("--copy-to is the repository the agent backs up to: give another repository or --copy-to-cluster")
	}
	if o.RollupFanout < 2 {
		return usagef("--rollup-fanout %d: a roll-up merges at least 2 objects", o.RollupFanout)
	}
	if o.LeaderOnly {
		cfg.Endpoint = o.snap.etcd.Endpoints[0]
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		mode  checkMode
		every time.Duration
	}{{verifyMode, o.VerifyEvery}, {drillMode, o.DrillEvery}} {
		if c.every <= 0 {
			continue
		}
		l := newCheckLoop(c.mode, c.every, checkArgs(g, o.prune.Identity), g.log, reg)
		if o.LeaderOnly {
			l.isLeader = leaderCheck(cli, cfg.Endpoint)
		}
		lctx, stop := context.WithCancel(ctx)
		defer stop()
		go l.run(lctx)
	}
	if o.CopyTo != "" {
		l := newCopyLoop(o.CopyEvery, g.log, reg)
		l.ids, l.policy, l.orphan = ids, o.prune.policy(), time.Duration(o.prune.OrphanAge)
		dg := *g
		dg.Repo = o.CopyTo
		if o.CopyCluster != "" {
			dg.Cluster = o.CopyCluster
		}
		l.open = func(ctx context.Context) (*repo.Repo, *repo.Repo, error) {
			src, err := g.openRepo(ctx, false)
			if err != nil {
				return nil, nil, err
			}
			dst, err := dg.openRepo(ctx, true)
			if err != nil {
				closeRepo(src)
				return nil, nil, fmt.Errorf("second site: %w", err)
			}
			return src, dst, nil
		}
		if o.LeaderOnly {
			l.isLeader = leaderCheck(cli, cfg.Endpoint)
		}
		cctx, stop := context.WithCancel(ctx)
		defer stop()
		go l.run(cctx)
	}
	if ex != nil {
		ex.Client, ex.Endpoint = cli, o.snap.etcd.Endpoints[0]
		octx, stop := context.WithCancel(ctx)
		defer stop()
		go ex.Run(octx)
	}
	return a.Run(ctx)
}

// ordersExecutor checks the restore-cluster flags and returns the
// executor that carries out orders on this node (nil without --name and
// --data-dir).
func ordersExecutor(g *Globals, o *ordersOptions, openRepo func(context.Context) (*repo.Repo, error)) (*clusterrestore.Executor, error) {
	if o.Name == "" && o.DataDir == "" {
		if o.StopCmd != "" || o.StartCmd != "" {
			return nil, usagef("--etcd-stop-command/--etcd-start-command need --name and --data-dir")
		}
		return nil, nil
	}
	if o.Name == "" || o.DataDir == "" {
		return nil, usagef("restore orders need both --name (this member's etcd name) and --data-dir")
	}
	ex := &clusterrestore.Executor{OpenRepo: openRepo, Name: o.Name, DataDir: o.DataDir, Agent: writerName(),
		Poll: o.Poll, Healthy: o.HealthyFor, Logger: g.log}
	switch {
	case o.StopCmd != "" || o.StartCmd != "":
		// Commands win over a unit (the units 'etcd-backup systemd'
		// renders name etcd's unit; a drop-in may give commands instead).
		if o.StopCmd == "" || o.StartCmd == "" {
			return nil, usagef("give both --etcd-stop-command and --etcd-start-command")
		}
		ex.Stop, ex.Start = clusterrestore.ShellCommand(o.StopCmd), clusterrestore.ShellCommand(o.StartCmd)
	default:
		unit := o.EtcdUnit
		if unit == "" {
			unit = systemd.DefaultEtcdUnit
		}
		ex.Stop, ex.Start = clusterrestore.SystemdUnit("stop", unit), clusterrestore.SystemdUnit("start", unit)
	}
	key, err := clusterrestore.LoadOrCreateKey(filepath.Join(o.StateDir, "order-key.txt"))
	if err != nil {
		return nil, fmt.Errorf("restore orders: agent key in --state-dir: %w", err)
	}
	ex.Key = key
	return ex, nil
}

// afterBackup applies the retention policy (--keep-*) after each backup
// this agent published, like 'etcd-backup prune' (without --read-back)
// would. nil when no policy is set.
func afterBackup(g *Globals, o *agentOptions) func(context.Context) error {
	policy := o.prune.policy()
	if policy.Empty() {
		return nil
	}
	return func(ctx context.Context) error {
		r, err := g.openRepo(ctx, false)
		if err != nil {
			return err
		}
		defer closeRepo(r)
		// Not ReadBack: the newest verified backup is the newest whose
		// payload is present with its recorded size, which reads no
		// payload byte. Reading backups back is --verify-every's job.
		rep, err := prune.Run(ctx, r, policy, prune.Options{Logger: g.log, OrphanAge: time.Duration(o.prune.OrphanAge)})
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		removed := 0
		for _, b := range rep.Backups {
			if b.Removed {
				removed++
			}
		}
		g.log.Info("retention applied", "removed", removed, "kept", len(rep.Backups)-removed, "bytes_freed", rep.BytesFreed)
		return nil
	}
}

// writerName identifies this agent in journal manifests: host name and pid.
func writerName() string {
	h, err := os.Hostname()
	if err != nil {
		h = "unknown"
	}
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}
