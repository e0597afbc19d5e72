package clusterrestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Executor is the agent's side: it publishes the agent's key, watches the
// repository for orders naming Name, and carries them out on this node,
// whether or not etcd answers.
type Executor struct {
	OpenRepo func(ctx context.Context) (*repo.Repo, error)
	Name     string // this node's etcd member name
	DataDir  string // this node's etcd data dir
	// Stop and Start stop and start etcd on this node (systemctl, or the
	// operator's commands). Stop must return once etcd has exited.
	Stop, Start func(ctx context.Context) error
	Client      *etcd.Client // this node's etcd (its endpoint first)
	Endpoint    string
	Key         *age.X25519Identity
	Agent       string // host/pid
	Poll        time.Duration
	// Healthy bounds how long a restored member may take to serve.
	Healthy time.Duration
	Logger  *slog.Logger

	done   map[string]bool // orders this agent is through with
	active bool            // an order names this member and is not done: poll fast
}

// activePoll is how often an agent reads an order it takes part in: each
// step of the coordinator waits for it.
const activePoll = time.Second

// ShellCommand runs cmd with sh -c; for --etcd-stop-command and
// --etcd-start-command.
func ShellCommand(cmd string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		c := exec.CommandContext(ctx, "sh", "-c", cmd)
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%q: %v: %s", cmd, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

// SystemdUnit stops or starts a systemd unit.
func SystemdUnit(verb, unit string) func(ctx context.Context) error {
	return ShellCommand("systemctl " + verb + " " + shellQuote(unit))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Run publishes the key, then polls for orders until ctx ends.
func (e *Executor) Run(ctx context.Context) {
	log := e.log()
	if e.Poll <= 0 {
		e.Poll = 5 * time.Second
	}
	e.done = map[string]bool{}
	published := false
	for {
		r, err := e.OpenRepo(ctx)
		if err == nil {
			if !published {
				if err = e.publishKey(ctx, r); err == nil {
					published = true
					log.Info("restore orders: watching the repository", "member", e.Name, "key", format.Fingerprint(e.Key.Recipient().String()))
				}
			}
			if published {
				err = e.poll(ctx, r)
			}
			r.Backend().Close()
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("restore orders: cannot read the repository; trying again", "error", err)
		}
		wait := e.Poll
		if e.active {
			wait = min(wait, activePoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (e *Executor) log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// publishKey publishes this agent's public key (create-only; an existing
// object of the same fingerprint is this key).
func (e *Executor) publishKey(ctx context.Context, r *repo.Repo) error {
	pub := e.Key.Recipient().String()
	k := AgentKey{Member: e.Name, Recipient: pub, Agent: e.Agent, Created: time.Now().UTC()}
	err := r.PutJSON(ctx, r.AgentKeyName(e.Name, format.Fingerprint(pub)), k)
	if errors.Is(err, storage.ErrExists) {
		return nil
	}
	return err
}

// poll looks at every order not done yet.
func (e *Executor) poll(ctx context.Context, r *repo.Repo) error {
	e.active = false
	ids, err := r.OrderIDs(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if e.done[id] {
			continue
		}
		if err := e.handle(ctx, r, id); err != nil {
			return fmt.Errorf("order %s: %w", id, err)
		}
	}
	return nil
}

// handle moves order id forward as far as it can now.
func (e *Executor) handle(ctx context.Context, r *repo.Repo, id string) error {
	var o Order
	if err := r.GetJSON(ctx, r.OrderObject(id, "order.json"), &o); err != nil {
		return err
	}
	if o.FormatVersion > OrderVersion || !o.Has(e.Name) {
		e.done[id] = true
		return nil
	}
	objs, err := r.OrderObjects(ctx, id, "")
	if err != nil {
		return err
	}
	ms, top := parseReports(objs)
	if Terminal(ms.last(e.Name)) || top["result.json"] {
		e.done[id] = true
		return nil
	}
	rep := &reporter{r: r, o: &o, e: e, n: len(ms[e.Name])}
	if top["cancel.json"] {
		e.done[id] = true
		return rep.put(ctx, Report{State: StateFailed, Error: "cancelled: the cluster still answered with a quorum"})
	}
	log := e.log().With("order", id, "member", e.Name)
	if !ms.has(e.Name, StateAccepted) {
		log.Info("restore order received", "backup", o.BackupID, "revision", o.Revision)
		if err := rep.put(ctx, Report{State: StateAccepted, DataDir: e.DataDir}); err != nil {
			return err
		}
	}
	if !ms.has(e.Name, StateChecked) {
		healthy := e.quorum(ctx)
		if err := rep.put(ctx, Report{State: StateChecked, ClusterHealthy: healthy, Endpoint: e.Endpoint}); err != nil {
			return err
		}
	}
	if !top["go.json"] {
		e.active = true
		return nil // the coordinator decides once every member checked in
	}
	e.done[id] = true
	final := e.carryOut(ctx, r, &o, rep, log)
	if final.State == StateFailed {
		log.Error("restore order failed", "error", final.Error)
	} else {
		log.Info("restore order carried out: etcd serves the restored data", "revision", final.Revision)
	}
	return rep.put(context.WithoutCancel(ctx), final)
}

// quorum reports whether this node's etcd answers a linearizable read,
// i.e. the cluster it belongs to still has a quorum.
func (e *Executor) quorum(ctx context.Context) bool {
	if e.Client == nil {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := e.Client.Get(qctx, "etcd-backup-quorum-check")
	return err == nil
}

// carryOut stops etcd, restores the data dir from the order's bundle and
// starts etcd; it returns the final report.
func (e *Executor) carryOut(ctx context.Context, r *repo.Repo, o *Order, rep *reporter, log *slog.Logger) Report {
	fail := func(step string, err error) Report {
		return Report{State: StateFailed, Error: fmt.Sprintf("%s: %v", step, err), DataDir: e.DataDir}
	}
	plan, err := restore.MakePlan(restore.Spec{DataDir: e.DataDir, Name: e.Name, InitialCluster: o.InitialCluster,
		Token: o.Token, RevisionBump: o.RevisionBump, MarkCompacted: o.MarkCompacted})
	if err != nil {
		return fail("plan", err)
	}
	staging, err := datadir.StagingDir(e.DataDir, time.Now())
	if err != nil {
		return fail("staging", err)
	}
	defer os.RemoveAll(staging)
	// Fetch while etcd still runs: the downtime is the build and start.
	_ = rep.put(ctx, Report{State: StateFetching})
	built := filepath.Join(staging, "data")
	if err := e.fetch(ctx, r, o, built); err != nil {
		return fail("fetch the prepared database", err)
	}
	_ = rep.put(ctx, Report{State: StateStopping})
	if err := e.Stop(ctx); err != nil {
		return fail("stop etcd", err)
	}
	if err := waitNotInUse(ctx, e.DataDir, time.Minute); err != nil {
		return fail("stop etcd", err)
	}
	_ = rep.put(ctx, Report{State: StateBuilding})
	res, err := restore.Install(restore.Prepared{Dir: built}, plan, restore.Options{Logger: log})
	if err != nil {
		return fail("build the data dir", err)
	}
	// No member starts before every member's old etcd has stopped: an old
	// member still running would talk to the new ones (same member and
	// cluster IDs) and mix two histories.
	_ = rep.put(ctx, Report{State: StateBuilt, MovedAside: res.MovedAside, DataDir: e.DataDir})
	if err := e.waitStart(ctx, r, o); err != nil {
		return fail("wait for every member to stop its old etcd", err)
	}
	_ = rep.put(ctx, Report{State: StateStarting})
	if err := e.Start(ctx); err != nil {
		return fail("start etcd", err)
	}
	final, err := e.waitHealthy(ctx, o)
	if err != nil {
		return fail("wait for etcd", err)
	}
	final.MovedAside, final.DataDir = res.MovedAside, e.DataDir
	return final
}

// waitStart waits for the coordinator's start.json, written once every
// member has built its data dir (so every old etcd has stopped).
func (e *Executor) waitStart(ctx context.Context, r *repo.Repo, o *Order) error {
	d := e.Healthy
	if d <= 0 {
		d = 10 * time.Minute
	}
	deadline := time.Now().Add(d)
	for {
		objs, err := r.OrderObjects(ctx, o.ID, "start.json")
		if err == nil && len(objs) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no start within %s (another member did not stop or build)", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(activePoll):
		}
	}
}

// fetch decrypts and checks the order's bundle into path.
func (e *Executor) fetch(ctx context.Context, r *repo.Repo, o *Order, dataDir string) error {
	if o.Bundle == nil {
		return fmt.Errorf("the order has no bundle")
	}
	rc, err := r.Backend().Get(ctx, r.OrderObject(o.ID, BundleBase))
	if err != nil {
		return err
	}
	defer rc.Close()
	return restore.DecodeInto(ctx, rc, o.Bundle, []age.Identity{e.Key}, dataDir, nil)
}

// waitHealthy waits until this node's etcd serves linearizable reads at
// the order's revision (or later), and reports its revision and hash.
func (e *Executor) waitHealthy(ctx context.Context, o *Order) (Report, error) {
	d := e.Healthy
	if d <= 0 {
		d = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		st := e.Client.Status(ctx, e.Endpoint)
		if st.Err == nil && st.Leader != 0 && e.quorum(ctx) {
			rep := Report{State: StateHealthy, Revision: st.Revision, MemberID: etcd.HexID(st.ID), ClusterID: etcd.HexID(st.ClusterID), Endpoint: e.Endpoint}
			if st.Revision >= o.Revision {
				rep.Revision = o.Revision
				h, err := e.Client.HashKV(ctx, e.Endpoint, o.Revision)
				if err != nil {
					rep.HashNote = err.Error()
				} else {
					rep.HashKV = h.Hash
				}
				return rep, nil
			}
			last = fmt.Errorf("etcd is at revision %d, the order's is %d", st.Revision, o.Revision)
		} else if st.Err != nil {
			last = st.Err
		} else {
			last = errors.New("no leader yet (the other members are not up)")
		}
		select {
		case <-ctx.Done():
			return Report{}, fmt.Errorf("not healthy within %s: %v", d, last)
		case <-time.After(time.Second):
		}
	}
}

// waitNotInUse polls until no process holds dir (etcd has exited).
func waitNotInUse(ctx context.Context, dir string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := datadir.CheckNotInUse(dir)
		if err == nil || !errors.Is(err, datadir.ErrInUse) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd still holds %s %s after the stop command", dir, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reporter writes a member's numbered reports.
type reporter struct {
	r *repo.Repo
	o *Order
	e *Executor
	n int
}

func (p *reporter) put(ctx context.Context, rep Report) error {
	rep.Member, rep.Agent = p.e.Name, p.e.Agent
	if rep.Time.IsZero() {
		rep.Time = time.Now().UTC()
	}
	for {
		p.n++
		err := p.r.PutJSON(ctx, p.r.ReportName(p.o.ID, p.e.Name, p.n, rep.State), rep)
		if errors.Is(err, storage.ErrExists) {
			continue // a report of a run of this agent before a restart
		}
		return err
	}
}

// LoadOrCreateKey reads the agent's order key from file, creating it (mode
// 0600) on first use. Only restore orders are encrypted to it: it cannot
// open backups.
func LoadOrCreateKey(file string) (*age.X25519Identity, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, "AGE-SECRET-KEY-") {
				return age.ParseX25519Identity(line)
			}
		}
		return nil, fmt.Errorf("%s holds no age identity", file)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, err
	}
	content := fmt.Sprintf("# etcd-backup agent key for restore orders (restore-cluster); it opens no backup\n# public key: %s\n%s\n", id.Recipient(), id)
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return id, f.Close()
}
