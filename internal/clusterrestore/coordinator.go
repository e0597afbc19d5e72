package clusterrestore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/datadir"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Errors of the coordinator.
var (
	// ErrRefused: a member found the cluster still answering with a quorum
	// and the order did not have Force; nothing was touched.
	ErrRefused = errors.New("the cluster is still healthy")
	// ErrIncomplete: not every member is healthy (failed, or not done
	// within the timeout). Running the same command again resumes.
	ErrIncomplete = errors.New("the cluster restore did not complete")
	// ErrNoAgent: a member has no agent that published its key.
	ErrNoAgent = errors.New("no agent for a member")
	// ErrDiverged: the members came up with different revisions or hashes.
	ErrDiverged = errors.New("members differ after the restore")
)

// Request is what the operator asks restore-cluster for.
type Request struct {
	Ref            string // backup ID or "latest"
	Target         restore.Target
	InitialCluster string
	Token          string
	RevisionBump   uint64
	MarkCompacted  bool
	Force          bool
	Identities     []age.Identity
	Timeout        time.Duration // for the whole command
	Poll           time.Duration // how often the repository is read; default 1s
	TempDir        string        // where the bundle is prepared
	By             string        // coordinator host, for audit
	Logger         *slog.Logger
	// Progress is told of every member's new state as it appears.
	Progress func(Report)
}

// Outcome is what restore-cluster did.
type Outcome struct {
	Order   *Order
	Resumed bool
	Members map[string]Report // the newest report of each member
}

// Run carries out req: resolve the backup, prepare one database (journal
// replayed here, once, so members cannot diverge), encrypt it to every
// member's agent key, publish the order, let agents check in, decide go or
// cancel, and wait until every member is healthy at the same revision and
// hash, or the timeout.
func Run(ctx context.Context, r *repo.Repo, req Request) (*Outcome, error) {
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if req.Poll <= 0 {
		req.Poll = time.Second
	}
	if req.Token == "" {
		req.Token = restore.DefaultToken
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	members, canonical, err := parseMembers(req.InitialCluster)
	if err != nil {
		return nil, err
	}
	// The same command again resumes the open order, even when "latest"
	// now names a newer backup (agents may back up meanwhile).
	hash := specHash(req.Ref, req.Target.Revision, req.Target.Time, canonical, req.Token, req.RevisionBump, req.MarkCompacted)
	out := &Outcome{}
	order, err := findOpen(ctx, r, hash)
	if err != nil {
		return nil, err
	}
	if order != nil {
		log.Info("resuming the open restore order", "order", order.ID)
		out.Resumed = true
	} else {
		m, jplan, err := restore.Resolve(ctx, r, req.Ref, repo.Selector{}, req.Target)
		if err != nil {
			return nil, err
		}
		keys, err := waitKeys(ctx, r, members, req.Poll, log)
		if err != nil {
			return nil, err
		}
		order = &Order{
			FormatVersion: OrderVersion, ID: format.NewID(time.Now()), Created: time.Now().UTC(), By: req.By,
			SpecHash: hash, BackupID: m.ID, ToRevision: req.Target.Revision, ToTime: req.Target.Time,
			InitialCluster: canonical, Token: req.Token, RevisionBump: req.RevisionBump, MarkCompacted: req.MarkCompacted,
			Force: req.Force, Members: members, Recipients: map[string]string{},
		}
		if err := publish(ctx, r, order, m, jplan, keys, req, log); err != nil {
			return nil, err
		}
	}
	out.Order = order
	return out, wait(ctx, r, order, req, out, log)
}

// parseMembers validates --initial-cluster and returns the member names,
// sorted, and the canonical form.
func parseMembers(ic string) ([]string, string, error) {
	ms, err := restore.ParseInitialCluster(ic)
	if err != nil {
		return nil, "", err
	}
	if len(ms) == 0 {
		return nil, "", fmt.Errorf("%w: --initial-cluster is empty", restore.ErrBadSpec)
	}
	var names []string
	for n := range ms {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		for _, u := range ms[n] {
			parts = append(parts, n+"="+u)
		}
	}
	return names, strings.Join(parts, ","), nil
}

// findOpen returns the newest order with the same spec and no result yet.
func findOpen(ctx context.Context, r *repo.Repo, hash string) (*Order, error) {
	ids, err := r.OrderIDs(ctx)
	if err != nil {
		return nil, err
	}
	for i := len(ids) - 1; i >= 0; i-- {
		var o Order
		if err := r.GetJSON(ctx, r.OrderObject(ids[i], "order.json"), &o); err != nil {
			return nil, err
		}
		if o.SpecHash != hash {
			continue
		}
		objs, err := r.OrderObjects(ctx, o.ID, "")
		if err != nil {
			return nil, err
		}
		_, top := parseReports(objs)
		if top["result.json"] || top["cancel.json"] {
			return nil, nil // that one is over: a new order
		}
		return &o, nil
	}
	return nil, nil
}

// waitKeys waits until every member has an agent key in the repository and
// returns the newest of each.
func waitKeys(ctx context.Context, r *repo.Repo, members []string, poll time.Duration, log *slog.Logger) (map[string]AgentKey, error) {
	logged := false
	for {
		infos, err := r.AgentKeys(ctx)
		if err != nil {
			return nil, err
		}
		keys := map[string]AgentKey{}
		var missing []string
		for _, mb := range members {
			list := infos[mb]
			if len(list) == 0 {
				missing = append(missing, mb)
				continue
			}
			var k AgentKey
			if err := r.GetJSON(ctx, list[len(list)-1].Name, &k); err != nil {
				return nil, fmt.Errorf("agent key of %s: %w", mb, err)
			}
			keys[mb] = k
		}
		if len(missing) == 0 {
			return keys, nil
		}
		if !logged {
			log.Info("waiting for the agents of every member", "missing", missing)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no agent has published a key for %s (run 'etcd-backup agent --name NAME --data-dir DIR' with this --repo and --cluster on those nodes)",
				ErrNoAgent, strings.Join(missing, ", "))
		case <-time.After(poll):
		}
	}
}

// publish prepares the database, uploads it encrypted to the members'
// agent keys, and publishes the order (last, so an order always has its
// bundle).
func publish(ctx context.Context, r *repo.Repo, o *Order, m *format.Manifest, jplan *restore.JournalPlan, keys map[string]AgentKey, req Request, log *slog.Logger) error {
	var rcpts []format.Recipient
	for _, mb := range o.Members {
		rc, err := format.ParseRecipient(keys[mb].Recipient)
		if err != nil {
			return fmt.Errorf("agent key of %s: %w", mb, err)
		}
		rcpts = append(rcpts, rc)
		o.Recipients[mb] = rc.Fingerprint
	}
	dir, err := os.MkdirTemp(req.TempDir, "etcd-backup-restore-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	prep, err := restore.Prepare(ctx, r, m, filepath.Join(dir, "data"), restore.Options{Identities: req.Identities, Logger: log, Journal: jplan})
	if err != nil {
		return err
	}
	db := datadir.DBPath(prep.Dir)
	rev, err := datadir.Revision(db)
	if err != nil {
		return fmt.Errorf("%w: prepared database: %v", format.ErrIntegrity, err)
	}
	// Every member checks etcd's trailer of what it downloads.
	if err := appendTrailer(db); err != nil {
		return err
	}
	o.Revision = rev + int64(req.RevisionBump)
	f, err := os.Open(db)
	if err != nil {
		return err
	}
	defer f.Close()
	// The encoder writes age's header at once: it runs beside the upload
	// that reads the pipe.
	pr, pw := io.Pipe()
	type encoded struct {
		sums format.Sums
		err  error
	}
	done := make(chan encoded, 1)
	go func() {
		var res encoded
		enc, err := format.NewEncoder(pw, format.EncoderOptions{Recipients: rcpts})
		if err == nil {
			if _, err = io.Copy(enc, f); err == nil {
				res.sums, err = enc.Close()
			}
		}
		res.err = err
		pw.CloseWithError(err)
		done <- res
	}()
	log.Info("uploading the prepared database for every member", "order", o.ID, "revision", o.Revision)
	if err := r.Backend().Put(ctx, r.OrderObject(o.ID, BundleBase), pr); err != nil {
		pr.CloseWithError(err)
		<-done
		return fmt.Errorf("upload the prepared database: %w", err)
	}
	res := <-done
	if res.err != nil {
		return fmt.Errorf("encode the prepared database: %w", res.err)
	}
	sums := res.sums
	o.Bundle = &format.Manifest{
		FormatVersion: format.Version, Kind: format.KindSnapshot, ID: o.ID, Cluster: r.Cluster(),
		ClusterID: m.ClusterID, EtcdVersion: m.EtcdVersion, Revision: rev, Created: time.Now().UTC(),
		Payload: BundleBase, RawSize: sums.RawSize, RawSHA256: sums.RawSHA256, StoredSize: sums.StoredSize,
		StoredSHA256: sums.StoredSHA256, Compression: format.CompressionZstd, Encryption: format.EncryptionAge,
	}
	for _, rc := range rcpts {
		o.Bundle.Recipients = append(o.Bundle.Recipients, rc.Fingerprint)
	}
	if err := r.PutJSON(ctx, r.OrderObject(o.ID, "order.json"), o); err != nil {
		return fmt.Errorf("publish the restore order: %w", err)
	}
	log.Info("restore order published", "order", o.ID, "backup", o.BackupID, "members", o.Members)
	return nil
}

// appendTrailer appends etcd's sha256 trailer to a bare database, making
// it a snapshot stream again (what etcd's restore checks).
func appendTrailer(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if _, err := f.Write(h.Sum(nil)); err != nil {
		return err
	}
	return f.Close()
}

// wait follows the members' reports until every one is terminal (or ctx
// ends), deciding go or cancel once all have checked in.
func wait(ctx context.Context, r *repo.Repo, o *Order, req Request, out *Outcome, log *slog.Logger) error {
	seen := map[string]int{} // reports already told, per member
	out.Members = map[string]Report{}
	var ms memberStates // the last listing read: what the timeout reports
	for {
		objs, err := r.OrderObjects(ctx, o.ID, "")
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err != nil {
			return incomplete(o, ms) // the deadline cut this listing: report the last one
		}
		var top map[string]bool
		ms, top = parseReports(objs)
		for _, mb := range o.Members {
			for _, base := range ms[mb][min(seen[mb], len(ms[mb])):] {
				var rep Report
				if err := r.GetJSON(ctx, r.OrderObject(o.ID, "reports/"+mb+"/"+base), &rep); err != nil {
					if ctx.Err() != nil {
						break
					}
					return err
				}
				seen[mb]++
				out.Members[mb] = rep
				if req.Progress != nil {
					req.Progress(rep)
				}
			}
		}
		if top["cancel.json"] {
			return refused(o, ms, out)
		}
		if !top["go.json"] && allChecked(o, ms) {
			if healthy := healthyMembers(o, out); len(healthy) > 0 && !o.Force {
				d := Decision{Time: time.Now().UTC(), By: req.By, Reason: fmt.Sprintf("the cluster still answers with a quorum (seen by %s)", strings.Join(healthy, ", "))}
				if err := r.PutJSON(ctx, r.OrderObject(o.ID, "cancel.json"), d); err != nil && !errors.Is(err, storage.ErrExists) {
					return err
				}
				_ = r.PutJSON(ctx, r.OrderObject(o.ID, "result.json"), Result{Time: time.Now().UTC(), Error: d.Reason, Members: out.Members})
				return refused(o, ms, out)
			}
			if err := r.PutJSON(ctx, r.OrderObject(o.ID, "go.json"), Decision{Time: time.Now().UTC(), By: req.By}); err != nil && !errors.Is(err, storage.ErrExists) {
				return err
			}
			log.Info("every member checked in: go", "order", o.ID)
		}
		if top["go.json"] && !top["start.json"] && allBuilt(o, ms) {
			if err := r.PutJSON(ctx, r.OrderObject(o.ID, "start.json"), Decision{Time: time.Now().UTC(), By: req.By}); err != nil && !errors.Is(err, storage.ErrExists) {
				return err
			}
			log.Info("every member stopped its old etcd and built its data dir: start", "order", o.ID)
		}
		if allTerminal(o, ms) {
			return finish(ctx, r, o, out)
		}
		select {
		case <-ctx.Done():
			return incomplete(o, ms)
		case <-time.After(req.Poll):
		}
	}
}

// incomplete is the error of a timeout: who is not done, and where.
func incomplete(o *Order, ms memberStates) error {
	var pending []string
	for _, mb := range o.Members {
		if st := ms.last(mb); !Terminal(st) {
			if st == "" {
				st = "no report: is its agent running?"
			}
			pending = append(pending, mb+" ("+st+")")
		}
	}
	return fmt.Errorf("%w: after the timeout, not done: %s; run the same command again to go on waiting", ErrIncomplete, strings.Join(pending, ", "))
}

func allChecked(o *Order, ms memberStates) bool {
	for _, mb := range o.Members {
		if !ms.has(mb, StateChecked) {
			return false
		}
	}
	return true
}

// allBuilt: every member has built its data dir (or failed: the others
// go on, and the failure is reported).
func allBuilt(o *Order, ms memberStates) bool {
	for _, mb := range o.Members {
		if !ms.has(mb, StateBuilt) && ms.last(mb) != StateFailed {
			return false
		}
	}
	return true
}

func allTerminal(o *Order, ms memberStates) bool {
	for _, mb := range o.Members {
		if !Terminal(ms.last(mb)) {
			return false
		}
	}
	return true
}

// healthyMembers lists the members whose check saw a quorum.
func healthyMembers(o *Order, out *Outcome) []string {
	var hs []string
	for _, mb := range o.Members {
		if rep, ok := out.Members[mb]; ok && rep.ClusterHealthy {
			hs = append(hs, mb)
		}
	}
	return hs
}

func refused(o *Order, ms memberStates, out *Outcome) error {
	return fmt.Errorf("%w: %s found it answering with a quorum; nothing was stopped or changed (stop etcd first, or pass --force to restore over a running cluster)",
		ErrRefused, strings.Join(healthyMembers(o, out), ", "))
}

// finish checks every member is healthy with the same revision and hash,
// records the result and removes the bundle.
func finish(ctx context.Context, r *repo.Repo, o *Order, out *Outcome) error {
	var failed []string
	var rev int64
	var hash uint32
	hashSet := false
	var diverged []string
	for _, mb := range o.Members {
		rep := out.Members[mb]
		if rep.State != StateHealthy {
			failed = append(failed, fmt.Sprintf("%s: %s", mb, rep.Error))
			continue
		}
		if rev == 0 {
			rev = rep.Revision
		}
		if rep.Revision != rev || rep.Revision != o.Revision {
			diverged = append(diverged, fmt.Sprintf("%s at revision %d (want %d)", mb, rep.Revision, o.Revision))
		}
		if rep.HashNote == "" {
			if !hashSet {
				hash, hashSet = rep.HashKV, true
			} else if rep.HashKV != hash {
				diverged = append(diverged, fmt.Sprintf("%s has HashKV %08x, others %08x", mb, rep.HashKV, hash))
			}
		}
	}
	res := Result{Time: time.Now().UTC(), Revision: o.Revision, Members: out.Members}
	var err error
	switch {
	case len(failed) > 0:
		err = fmt.Errorf("%w: %s", ErrIncomplete, strings.Join(failed, "; "))
	case len(diverged) > 0:
		err = fmt.Errorf("%w: %s", ErrDiverged, strings.Join(diverged, "; "))
	default:
		res.OK = true
	}
	if err != nil {
		res.Error = err.Error()
	}
	if perr := r.PutJSON(ctx, r.OrderObject(o.ID, "result.json"), res); perr != nil && !errors.Is(perr, storage.ErrExists) && err == nil {
		err = fmt.Errorf("record the result: %w", perr)
	}
	// The order is over (a new command makes a new one): the copy the
	// agents' keys decrypt goes.
	_ = r.RemoveOrderObject(ctx, o.ID, BundleBase)
	return err
}
