package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the agent's HTTP API:
//
//	GET  /metrics  Prometheus metrics (the registry of Config)
//	GET  /healthz  200 when the repository holds a backup younger than --max-age, else 503; text
//	GET  /status   JSON: StatusReport
//	POST /backup   a backup now; JSON {"id": ...} or {"error": ...}
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", a.serveHealth)
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("/backup", a.serveBackup)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "etcd-backup agent\n  GET  /metrics\n  GET  /healthz\n  GET  /status\n  POST /backup\n")
	})
	return mux
}

func (a *Agent) serveHealth(w http.ResponseWriter, r *http.Request) {
	ok, reason := a.health()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		fmt.Fprintf(w, "ok: %s\n", reason)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, "unhealthy: %s\n", reason)
}

// BackupInfo describes one backup in /status and POST /backup answers.
type BackupInfo struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Revision   int64     `json:"revision"`
	Member     string    `json:"member"`
	Size       int64     `json:"size"`
	StoredSize int64     `json:"stored_size"`
	AgeSeconds float64   `json:"age_seconds,omitempty"`
}

// StatusReport is the JSON of GET /status.
type StatusReport struct {
	Schedule   string `json:"schedule"`
	LeaderOnly bool   `json:"leader_only"`
	// Endpoint is this agent's member (the first --endpoints entry).
	Endpoint      string     `json:"endpoint,omitempty"`
	IsLeader      *bool      `json:"is_leader,omitempty"`
	LeaderChecked *time.Time `json:"leader_checked,omitempty"`
	Running       bool       `json:"running"`
	RunningSince  *time.Time `json:"running_since,omitempty"`
	NextRun       *time.Time `json:"next_run,omitempty"`
	LastSuccess   *time.Time `json:"last_success,omitempty"`

	Healthy      bool        `json:"healthy"`
	HealthReason string      `json:"health_reason"`
	MaxAge       string      `json:"max_age"`
	Newest       *BackupInfo `json:"newest,omitempty"` // newest backup in the repository, from any member
	Repository   struct {
		Reachable bool       `json:"reachable"`
		Error     string     `json:"error,omitempty"`
		Checked   *time.Time `json:"checked,omitempty"`
	} `json:"repository"`
	Runs []RunRecord `json:"runs"` // newest first
	// Journal is set with --continuous.
	Journal *JournalStatus `json:"journal,omitempty"`
}

// JournalStatus is the state of the continuous journal (--continuous).
type JournalStatus struct {
	Active         bool       `json:"active"`          // journaling now (with --leader-only: this member leads)
	Chain          string     `json:"chain,omitempty"` // the snapshot the current chain starts from
	SealedRevision int64      `json:"sealed_revision,omitempty"`
	SealedTime     *time.Time `json:"sealed_time,omitempty"` // when the agent received that revision
	LastError      string     `json:"last_error,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Status returns what GET /status shows.
func (a *Agent) Status() StatusReport {
	v := a.view()
	s := StatusReport{
		Schedule:      a.cfg.Schedule.String(),
		LeaderOnly:    a.cfg.LeaderOnly,
		Endpoint:      a.cfg.Endpoint,
		IsLeader:      v.isLeader,
		LeaderChecked: timePtr(v.leaderChecked),
		Running:       v.running != nil,
		RunningSince:  v.running,
		NextRun:       timePtr(v.nextRun),
		LastSuccess:   timePtr(v.lastSuccess),
		MaxAge:        a.maxAge.String(),
		Runs:          v.runs,
	}
	if s.Runs == nil {
		s.Runs = []RunRecord{}
	}
	s.Healthy, s.HealthReason = a.health()
	if m := v.newest; m != nil {
		s.Newest = &BackupInfo{ID: m.ID, Time: m.Created, Revision: m.Revision, Member: m.MemberName,
			Size: m.RawSize, StoredSize: m.StoredSize, AgeSeconds: a.clock.Now().Sub(m.Created).Seconds()}
	}
	s.Repository.Reachable = v.seen && v.repoErr == nil
	if v.repoErr != nil {
		s.Repository.Error = oneLine(v.repoErr.Error())
	}
	s.Repository.Checked = timePtr(v.repoChecked)
	if a.cfg.Continuous {
		s.Journal = &v.journal
	}
	return s
}

func (a *Agent) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Status())
}

func (a *Agent) serveBackup(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use POST to start a backup"})
		return
	}
	m, err := a.BackupNow(r.Context())
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrStopping) {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]string{"error": oneLine(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, BackupInfo{ID: m.ID, Time: m.Created, Revision: m.Revision, Member: m.MemberName,
		Size: m.RawSize, StoredSize: m.StoredSize})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
