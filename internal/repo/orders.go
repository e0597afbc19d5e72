package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Where restore orders live (restore-cluster; docs/format.md "Restore
// orders"). Every object is written once, create-only, like everything else
// in a repository; progress is a sequence of new objects, not updates.
//
//	clusters/<c>/agents/<name>/<fingerprint>.pub.json   an agent's public key
//	clusters/<c>/orders/<id>/order.json                  the order (written last)
//	clusters/<c>/orders/<id>/bundle.db.zst.age            the prepared database
//	clusters/<c>/orders/<id>/go.json | cancel.json        the coordinator's decision
//	clusters/<c>/orders/<id>/reports/<name>/<NN>-<state>.json   a member's progress
//	clusters/<c>/orders/<id>/result.json                  the outcome (audit)

func (r *Repo) ordersRoot() string { return path.Join("clusters", r.cluster, "orders") }
func (r *Repo) agentsRoot() string { return path.Join("clusters", r.cluster, "agents") }

// OrderObject is the name of an object of order id ("order.json",
// "bundle.db.zst.age", "go.json", ...).
func (r *Repo) OrderObject(id, base string) string { return path.Join(r.ordersRoot(), id, base) }

// ReportName is the name of member's n-th progress report in order id.
func (r *Repo) ReportName(id, member string, n int, state string) string {
	return path.Join(r.ordersRoot(), id, "reports", member, fmt.Sprintf("%02d-%s.json", n, state))
}

// AgentKeyName is where an agent publishes its public key.
func (r *Repo) AgentKeyName(member, fingerprint string) string {
	return path.Join(r.agentsRoot(), member, fingerprint+".pub.json")
}

// PutJSON writes v as JSON under name, create-only.
func (r *Repo) PutJSON(ctx context.Context, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return r.b.Put(ctx, name, bytes.NewReader(append(b, '\n')))
}

// GetJSON reads the JSON object name into v. A missing object wraps
// storage.ErrNotFound.
func (r *Repo) GetJSON(ctx context.Context, name string, v any) error {
	rc, err := r.b.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s is not valid JSON: %v", name, err)
	}
	return nil
}

// OrderIDs returns the IDs of published orders (those whose order.json
// exists), oldest first.
func (r *Repo) OrderIDs(ctx context.Context) ([]string, error) {
	var ids []string
	prefix := r.ordersRoot() + "/"
	err := r.b.List(ctx, prefix, func(i storage.Info) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(i.Name, prefix), "/order.json"); ok && !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list restore orders: %w", err)
	}
	sort.Strings(ids)
	return ids, nil
}

// OrderObjects lists the objects of order id below sub ("" for all), as
// names relative to the order's directory ("go.json",
// "reports/m1/01-accepted.json").
func (r *Repo) OrderObjects(ctx context.Context, id, sub string) ([]string, error) {
	dir := path.Join(r.ordersRoot(), id) + "/"
	var out []string
	err := r.b.List(ctx, dir+sub, func(i storage.Info) error {
		out = append(out, strings.TrimPrefix(i.Name, dir))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list restore order %s: %w", id, err)
	}
	return out, nil
}

// AgentKeys returns, per member name, the names of its published key
// objects, oldest first by modification time.
func (r *Repo) AgentKeys(ctx context.Context) (map[string][]storage.Info, error) {
	out := map[string][]storage.Info{}
	prefix := r.agentsRoot() + "/"
	err := r.b.List(ctx, prefix, func(i storage.Info) error {
		rel := strings.TrimPrefix(i.Name, prefix)
		member, base, ok := strings.Cut(rel, "/")
		if ok && strings.HasSuffix(base, ".pub.json") && !strings.Contains(base, "/") {
			out[member] = append(out[member], i)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list agent keys: %w", err)
	}
	for _, infos := range out {
		sort.SliceStable(infos, func(a, b int) bool { return infos[a].ModTime.Before(infos[b].ModTime) })
	}
	return out, nil
}

// RemoveOrderObject removes one object of an order (the bundle, once every
// member has it). A missing object is fine.
func (r *Repo) RemoveOrderObject(ctx context.Context, id, base string) error {
	err := r.b.Remove(ctx, r.OrderObject(id, base))
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	return err
}
