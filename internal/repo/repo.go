package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// MarkerName is the repository marker object.
const MarkerName = "etcd-backup.repo.json"

// ErrNoBackup: no backup matches the reference given.
var ErrNoBackup = errors.New("no such backup")

// Repo is one cluster's view of a repository.
type Repo struct {
	b       storage.Backend
	cluster string
}

// Open checks the repository marker (when present) and returns the view of
// cluster. It does not create anything.
func Open(ctx context.Context, b storage.Backend, cluster string) (*Repo, error) {
	if !format.ValidCluster(cluster) {
		return nil, fmt.Errorf("bad cluster name %q: use 1-63 of a-z 0-9 . _ - (not starting with .)", cluster)
	}
	r := &Repo{b: b, cluster: cluster}
	rc, err := b.Get(ctx, MarkerName)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("read repository marker: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("read repository marker: %w", err)
	}
	if _, err := format.ParseRepoMarker(data); err != nil {
		return nil, fmt.Errorf("repository %s: %w", b.Location(), err)
	}
	return r, nil
}

// Backend returns the underlying backend.
func (r *Repo) Backend() storage.Backend { return r.b }

// Cluster returns the cluster name.
func (r *Repo) Cluster() string { return r.cluster }

// EnsureMarker creates the repository marker if it is absent.
func (r *Repo) EnsureMarker(ctx context.Context, toolVersion string) error {
	if _, err := r.b.Stat(ctx, MarkerName); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("stat repository marker: %w", err)
	}
	body := fmt.Sprintf("{\"format_version\": %d, \"created\": %q, \"tool_version\": %q}\n",
		format.Version, time.Now().UTC().Format(time.RFC3339Nano), toolVersion)
	err := r.b.Put(ctx, MarkerName, strings.NewReader(body))
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("write repository marker: %w", err)
	}
	return nil
}

func (r *Repo) snapDir() string { return path.Join("clusters", r.cluster, "snapshots") }

// ManifestName is the object name of a backup's manifest.
func (r *Repo) ManifestName(id string) string {
	return path.Join(r.snapDir(), id+".manifest.json")
}

// PayloadName is the object name of a backup's payload.
func (r *Repo) PayloadName(id string, encrypted bool) string {
	return path.Join(r.snapDir(), PayloadBase(id, encrypted))
}

// PayloadBase is the payload's name relative to the snapshot directory, as
// recorded in the manifest.
func PayloadBase(id string, encrypted bool) string {
	if encrypted {
		return id + ".db.zst.age"
	}
	return id + ".db.zst"
}

// PutPayload streams a payload object (create-only).
func (r *Repo) PutPayload(ctx context.Context, id string, encrypted bool, src io.Reader) error {
	return r.b.Put(ctx, r.PayloadName(id, encrypted), src)
}

// PutManifest publishes a backup by writing its manifest (create-only).
// In a repository written locked (storage.Locked), the manifest records
// until when: the manifest is the backup's last object, so its lock ends
// last.
func (r *Repo) PutManifest(ctx context.Context, m *format.Manifest) error {
	m.LockedUntil, m.LockMode = nil, "" // a copy from a locked repository is not locked here
	if l, ok := storage.As[*storage.Locked](r.b); ok {
		until := l.Until()
		m.LockedUntil, m.LockMode = &until, l.Mode
		ctx = storage.WithRetention(ctx, storage.Retention{Until: until, Mode: l.Mode})
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := r.b.Put(ctx, r.ManifestName(m.ID), strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("write manifest %s: %w", m.ID, err)
	}
	return nil
}

// OpenPayload opens the stored payload of m for reading.
func (r *Repo) OpenPayload(ctx context.Context, m *format.Manifest) (io.ReadCloser, error) {
	if m.Payload == "" || strings.Contains(m.Payload, "/") {
		return nil, fmt.Errorf("%w: backup %s: manifest names a bad payload %q", format.ErrIntegrity, m.ID, m.Payload)
	}
	rc, err := r.b.Get(ctx, path.Join(r.snapDir(), m.Payload))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: backup %s: its payload %s is missing from the repository", format.ErrIntegrity, m.ID, m.Payload)
	}
	return rc, err
}

// ReadManifest reads and checks the manifest of id.
func (r *Repo) ReadManifest(ctx context.Context, id string) (*format.Manifest, error) {
	rc, err := r.b.Get(ctx, r.ManifestName(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s in cluster %q of %s", ErrNoBackup, id, r.cluster, r.b.Location())
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", id, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", id, err)
	}
	m, err := format.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: manifest %s holds ID %q", format.ErrIntegrity, id, m.ID)
	}
	return m, nil
}

// Entry is one manifest found by List: either M or Err is set.
type Entry struct {
	ID  string
	M   *format.Manifest
	Err error
}

// IDs returns the IDs of every published backup of the cluster, newest first.
func (r *Repo) IDs(ctx context.Context) ([]string, error) {
	var ids []string
	prefix := r.snapDir() + "/"
	err := r.b.List(ctx, prefix, func(i storage.Info) error {
		base := strings.TrimPrefix(i.Name, prefix)
		if id, ok := strings.CutSuffix(base, ".manifest.json"); ok && format.ValidID(id) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	return ids, nil
}

// List reads every manifest of the cluster, newest first. A manifest that
// fails its checks is returned with Err set rather than hidden.
func (r *Repo) List(ctx context.Context) ([]Entry, error) {
	ids, err := r.IDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ids))
	for _, id := range ids {
		m, err := r.ReadManifest(ctx, id)
		if err != nil && !errors.Is(err, format.ErrIntegrity) && !errors.Is(err, format.ErrVersion) {
			return nil, err
		}
		out = append(out, Entry{ID: id, M: m, Err: err})
	}
	return out, nil
}

// Selector narrows which backups a reference may resolve to.
type Selector struct {
	Member string // only backups taken from this member name
	// OnSkip, if set, is told about each damaged manifest "latest" skips.
	OnSkip func(id string, err error)
}

// Find resolves ref ("latest", "", a full ID or a unique ID prefix) to a
// manifest. "latest" skips manifests that fail their checks, so one damaged
// manifest never blocks a restore; an explicit ID reports the damage.
func (r *Repo) Find(ctx context.Context, ref string, sel Selector) (*format.Manifest, error) {
	ids, err := r.IDs(ctx)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("cluster %q of %s", r.cluster, r.b.Location())
	if sel.Member != "" {
		where = fmt.Sprintf("member %q in %s", sel.Member, where)
	}
	if ref == "" || ref == "latest" {
		var firstErr error
		for _, id := range ids {
			m, err := r.ReadManifest(ctx, id)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				if sel.OnSkip != nil {
					sel.OnSkip(id, err)
				}
				continue
			}
			if sel.Member == "" || m.MemberName == sel.Member {
				return m, nil
			}
		}
		if firstErr != nil {
			return nil, fmt.Errorf("%w: no intact backup of %s (first damaged one: %v)", ErrNoBackup, where, firstErr)
		}
		return nil, fmt.Errorf("%w: no backup of %s yet", ErrNoBackup, where)
	}
	var match []string
	for _, id := range ids {
		if strings.HasPrefix(id, ref) {
			match = append(match, id)
		}
	}
	switch {
	case len(match) == 0:
		return nil, fmt.Errorf("%w: no backup %q in %s (see 'etcd-backup list')", ErrNoBackup, ref, where)
	case len(match) > 1:
		return nil, fmt.Errorf("%w: %q matches %d backups; give more of the ID", ErrNoBackup, ref, len(match))
	}
	id := match[0]
	m, err := r.ReadManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	if sel.Member != "" && m.MemberName != sel.Member {
		return nil, fmt.Errorf("%w: backup %s was taken from member %q, not %q", ErrNoBackup, id, m.MemberName, sel.Member)
	}
	return m, nil
}
