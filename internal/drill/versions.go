package drill

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// ErrTooNew: the backup was written by an etcd whose storage this binary's
// in-process etcd cannot open. Not an integrity failure: restore it with
// that etcd's own etcdutl, or drill it with a newer etcd-backup.
var ErrTooNew = errors.New("backup written by a newer etcd than this etcd-backup runs in-process")

// sameSchema lists etcd minor versions newer than the in-process etcd whose
// storage schema is the in-process one's: etcd 3.7 made no storage schema
// change over 3.6 (server/storage/schema, schemaChanges[V3_7] is empty), so
// lowering the recorded versions is etcd's own downgrade migration.
var sameSchema = map[string]map[string]bool{
	"3.6": {"3.7": true},
}

type minor struct{ major, minor int }

func (m minor) String() string { return fmt.Sprintf("%d.%d", m.major, m.minor) }
func (m minor) less(o minor) bool {
	return m.major < o.major || m.major == o.major && m.minor < o.minor
}

func parseMinor(s string) (minor, bool) {
	var m minor
	_, err := fmt.Sscanf(s, "%d.%d", &m.major, &m.minor)
	return m, err == nil
}

// fitVersions lets the in-process etcd start on the drill's data dir when
// the backup was written by a newer etcd of the same storage schema: it
// lowers the storage version and the cluster version recorded in the
// throwaway copy (the in-process etcd refuses a newer storage version, and
// panics, taking the whole process with it, on a newer cluster version).
// The key bucket, all that HashKV covers, is not touched. It returns a
// note for the report when it changed something, and ErrTooNew when the
// versions are newer and not known to share the schema.
func fitVersions(dataDir string) (string, error) {
	local, _ := parseMinor(version.Version)
	db, err := bolt.Open(filepath.Join(dataDir, "member", "snap", "db"), 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return "", fmt.Errorf("open the restored database: %w", err)
	}
	defer db.Close()
	var note string
	err = db.Update(func(tx *bolt.Tx) error {
		type field struct {
			what   string
			bucket []byte
			key    []byte
		}
		var newer []field
		var found minor
		for _, f := range []field{
			{"storage version", schema.Meta.Name(), schema.MetaStorageVersionName},
			{"cluster version", schema.Cluster.Name(), schema.ClusterClusterVersionKeyName},
		} {
			b := tx.Bucket(f.bucket)
			if b == nil {
				continue
			}
			v, ok := parseMinor(string(b.Get(f.key)))
			if !ok || !local.less(v) {
				continue
			}
			if !sameSchema[local.String()][v.String()] {
				return fmt.Errorf("%w: its %s is %s, this etcd-backup runs etcd %s in-process; restore it with etcd %s's etcdutl, or drill it with an etcd-backup built on etcd %s",
					ErrTooNew, f.what, v, local, v, v)
			}
			newer, found = append(newer, f), v
		}
		if len(newer) == 0 {
			return nil
		}
		to := []byte(local.String() + ".0")
		for _, f := range newer {
			if err := tx.Bucket(f.bucket).Put(f.key, to); err != nil {
				return err
			}
		}
		note = fmt.Sprintf("written by etcd %s, drilled on etcd %s (same storage schema; versions lowered in the throwaway copy only)", found, local)
		return nil
	})
	return note, err
}
