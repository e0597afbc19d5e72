package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/bench/internal/benchkit"
)

// agent is one `etcd-backup agent --continuous` process.
type agent struct {
	name string
	url  string // http://127.0.0.1:port
	d    *daemon
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// startAgent starts an agent for repo whose own member is endpoints[0], in
// process group pg, listening on a free loopback port, and waits until it
// serves HTTP.
func startAgent(ctx context.Context, pg *procGroup, bin, name, logDir, repo string, endpoints []string, extra ...string) (*agent, error) {
	var err error
	for range 3 { // a lost port race: another port
		var port int
		if port, err = benchkit.FreePort(); err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		args := append([]string{"agent", "--listen", addr, "--repo", repo,
			"--endpoints", strings.Join(endpoints, ","),
			"--continuous", "--journal-flush", "1s", "--interval", "1h"}, extra...)
		a := &agent{name: name, url: "http://" + addr}
		if a.d, err = startDaemon(pg, "agent-"+name, filepath.Join(logDir, "agent-"+name+".log"), bin, args...); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if a.d.exited() {
				err = fmt.Errorf("agent %s exited at start%s", name, logTail(a.d.logPath, 15))
				break
			}
			if resp, gerr := httpClient.Get(a.url + "/status"); gerr == nil {
				resp.Body.Close()
				return a, nil
			}
			if time.Now().After(deadline) {
				a.d.kill()
				return nil, fmt.Errorf("agent %s not serving HTTP within 30s%s", name, logTail(a.d.logPath, 15))
			}
			select {
			case <-ctx.Done():
				a.d.kill()
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil, err
}

// agentArgs orders eps with member i first, as --leader-only wants.
func ownFirst(eps []string, i int) []string {
	out := []string{eps[i]}
	for j, ep := range eps {
		if j != i {
			out = append(out, ep)
		}
	}
	return out
}

// metrics scrapes /metrics: series (name or name{labels}) -> value.
func (a *agent) metrics() (map[string]float64, error) {
	resp, err := httpClient.Get(a.url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// metric returns one unlabelled series, or -1.
func (a *agent) metric(name string) float64 {
	m, err := a.metrics()
	if err != nil {
		return -1
	}
	if v, ok := m[name]; ok {
		return v
	}
	return -1
}

type agentStatus struct {
	IsLeader *bool `json:"is_leader"`
	Newest   *struct {
		ID       string `json:"id"`
		Revision int64  `json:"revision"`
	} `json:"newest"`
}

func (a *agent) status() (agentStatus, error) {
	var s agentStatus
	resp, err := httpClient.Get(a.url + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}

// waitJournaling waits until one of the agents journals (etcd_backup_journal_active
// is 1: it has a snapshot to start from and watches), and returns it and the
// snapshot's revision.
func waitJournaling(ctx context.Context, agents []*agent, within time.Duration) (*agent, int64, error) {
	deadline := time.Now().Add(within)
	for {
		for _, a := range agents {
			if a.d.exited() {
				return nil, 0, fmt.Errorf("agent %s exited%s", a.name, logTail(a.d.logPath, 15))
			}
			if a.metric("etcd_backup_journal_active") == 1 {
				if s, err := a.status(); err == nil && s.Newest != nil {
					return a, s.Newest.Revision, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("no agent journaling within %v%s", within, logTail(agents[0].d.logPath, 15))
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sealed is the highest etcd_backup_journal_sealed_revision of the agents.
func sealed(agents []*agent) int64 {
	best := int64(-1)
	for _, a := range agents {
		best = max(best, int64(a.metric("etcd_backup_journal_sealed_revision")))
	}
	return best
}

// journalInfo is a backup of `list --json` with its journal.
type journalInfo struct {
	ID       string `json:"id"`
	Revision int64  `json:"revision"`
	Journal  *struct {
		Start    int64  `json:"start_revision"`
		End      int64  `json:"end_revision"`
		Segments int    `json:"segments"`
		Error    string `json:"error"`
	} `json:"journal"`
}

// listNewest runs `list --json` and returns the newest backup.
func listNewest(ctx context.Context, bin, repo string) (*journalInfo, error) {
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(lctx, bin, "list", "--repo", repo, "--json")
	cmd.Env = benchkit.ChildEnv()
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return nil, fmt.Errorf("list --json: %v %s", err, msg)
	}
	var entries []journalInfo
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, fmt.Errorf("list --json: %v", err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("list --json: no backup")
	}
	return &entries[0], nil
}

// journalEnd is the last revision the newest backup's journal reaches
// (its revision when it has no journal).
func (j *journalInfo) journalEnd() int64 {
	if j.Journal == nil || j.Journal.End == 0 {
		return j.Revision
	}
	return j.Journal.End
}
