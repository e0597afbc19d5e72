package agent

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus metrics, registered in the registry
// given to New (never the global one).
type metrics struct {
	lastSuccess    prometheus.Gauge
	lastAttempt    prometheus.Gauge
	duration       prometheus.Histogram
	size           *prometheus.GaugeVec
	failures       prometheus.Counter
	runs           *prometheus.CounterVec
	skipped        *prometheus.CounterVec
	latestRevision prometheus.Gauge
	isLeader       prometheus.Gauge
	repoUp         prometheus.Gauge
	nextRun        prometheus.Gauge
	hookFailures   *prometheus.CounterVec
}

// Label values, created up front so that every series exists from the start.
var (
	runResults  = []string{"success", "failure", "skipped"}
	skipReasons = []string{reasonNotLeader, reasonSlotTaken, reasonOverrun}
	sizeKinds   = []string{"raw", "stored"}
)

func newMetrics(reg prometheus.Registerer, a *Agent) *metrics {
	m := &metrics{
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_last_success_timestamp_seconds",
			Help: "Unix time when this agent last published a backup (0: never).",
		}),
		lastAttempt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_last_attempt_timestamp_seconds",
			Help: "Unix time when this agent last started a backup attempt, whatever its outcome.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_backup_duration_seconds",
			Help:    "Duration of the backups this agent attempted (snapshot stream and upload), failed ones included.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcd_backup_size_bytes",
			Help: "Size of the last backup this agent published: raw (etcd's snapshot) or stored (compressed, encrypted).",
		}, []string{"kind"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_backup_failures_total",
			Help: "Failed backup attempts of this agent, retries included.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_backup_runs_total",
			Help: "Finished runs of this agent (scheduled and on-demand) by result: success, failure (after the retries), skipped.",
		}, []string{"result"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_backup_skipped_total",
			Help: "Scheduled slots this agent did not back up, by reason: not_leader (--leader-only), slot_taken (a backup of the slot exists already), overrun (a run took so long that the slot passed).",
		}, []string{"reason"}),
		latestRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_latest_revision",
			Help: "etcd revision of the newest backup in the repository, from any member (0: none known).",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_is_leader",
			Help: "1 when, at its last check, this agent's member (first --endpoints entry) was the raft leader; 0 otherwise and without --leader-only.",
		}),
		repoUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_repository_up",
			Help: "1 when the last look at the repository succeeded.",
		}),
		nextRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_backup_next_run_timestamp_seconds",
			Help: "Unix time of the next scheduled run (jitter included).",
		}),
		hookFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_backup_hook_failures_total",
			Help: "Failures of the work run after a published backup (after_backup: e.g. prune).",
		}, []string{"hook"}),
	}
	for _, k := range sizeKinds {
		m.size.WithLabelValues(k)
	}
	for _, r := range runResults {
		m.runs.WithLabelValues(r)
	}
	for _, r := range skipReasons {
		m.skipped.WithLabelValues(r)
	}
	m.hookFailures.WithLabelValues("after_backup")
	reg.MustRegister(m.lastSuccess, m.lastAttempt, m.duration, m.size, m.failures, m.runs, m.skipped,
		m.latestRevision, m.isLeader, m.repoUp, m.nextRun, m.hookFailures, ageCollector{a})
	return m
}

// ageCollector reports etcd_backup_latest_age_seconds at scrape time, from
// the newest backup the agent last saw in the repository: absent until the
// repository was read once, +Inf when it holds no backup.
type ageCollector struct{ a *Agent }

var ageDesc = prometheus.NewDesc("etcd_backup_latest_age_seconds",
	"Age of the newest backup in the repository, from any member, at scrape time (+Inf: the repository holds none).", nil, nil)

func (c ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- ageDesc }

func (c ageCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.a.view()
	if !v.seen {
		return
	}
	age := math.Inf(1)
	if v.newest != nil {
		age = max(0, c.a.clock.Now().Sub(v.newest.Created).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age)
}
