package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrInUse: a running etcd holds the data directory.
var ErrInUse = errors.New("data dir in use")

// CheckNotInUse returns an error wrapping ErrInUse when a live process holds
// etcd's locks in dir: the write lock etcd takes on its WAL files, or the
// lock bbolt takes on member/snap/db. A missing dir is not in use.
func CheckNotInUse(dir string) error {
	walDir := filepath.Join(dir, "member", "wal")
	wals, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	for _, w := range wals {
		lf, err := fileutil.TryLockFile(w, os.O_WRONLY, fileutil.PrivateFileMode)
		if errors.Is(err, fileutil.ErrLocked) {
			return fmt.Errorf("%w: %s is locked by a running etcd (stop etcd on this node first)", ErrInUse, w)
		}
		if err == nil {
			lf.Close()
		}
	}
	db := filepath.Join(dir, "member", "snap", "db")
	if f, err := os.Open(db); err == nil {
		defer f.Close()
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s is locked by a running etcd (stop etcd on this node first)", ErrInUse, db)
		}
		if err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
	}
	return nil
}

// Member is what etcd's restore needs to know about this member.
type Member struct {
	Name           string
	InitialCluster string   // name=peerURL,... for every member of the new cluster
	PeerURLs       []string // this member's advertised peer URLs
	Token          string   // initial cluster token
	RevisionBump   uint64
	MarkCompacted  bool
	// SkipHashCheck: the snapshot file has no sha256 trailer (it is a
	// database that journal replay wrote, checked by other means).
	SkipHashCheck bool
}

// Result tells what Install did.
type Result struct {
	DataDir    string
	MovedAside string // where the previous non-empty data dir went, if any
}

// Stamp is the time suffix used for staging and moved-aside directories.
func Stamp(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// StagingDir returns a fresh staging directory beside dataDir, on the same
// file system, so the final step is a rename. The caller removes it.
func StagingDir(dataDir string, now time.Time) (string, error) {
	parent := filepath.Dir(filepath.Clean(dataDir))
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		return "", fmt.Errorf("parent of --data-dir %s does not exist (create it first)", dataDir)
	}
	d, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-"+Stamp(now)+"-")
	if err != nil {
		return "", fmt.Errorf("create staging dir beside %s: %w", dataDir, err)
	}
	return d, nil
}

// Build makes a new data dir out (which must not exist, or be empty) for
// member m from snapshotFile: a copy of the database (its sha256 trailer
// checked unless m.SkipHashCheck), then Finish.
func Build(snapshotFile, out string, m Member) error {
	if err := CopyDB(snapshotFile, out, m.SkipHashCheck); err != nil {
		return fmt.Errorf("etcd restore into %s: %w", out, err)
	}
	if _, err := Finish(out, m); err != nil {
		return fmt.Errorf("etcd restore into %s: %w", out, err)
	}
	return nil
}

// Install moves built (a complete data dir) to dataDir. A non-empty
// existing dataDir is first renamed to <dataDir>.pre-restore-<stamp>; an
// empty one is removed. Nothing is deleted that holds data.
func Install(built, dataDir string, now time.Time) (Result, error) {
	res := Result{DataDir: dataDir}
	if err := CheckNotInUse(dataDir); err != nil {
		return res, err
	}
	if err := matchOwner(built, dataDir); err != nil {
		return res, err
	}
	aside, err := MoveAside(dataDir, "pre-restore", now)
	if err != nil {
		return res, err
	}
	res.MovedAside = aside
	if err := os.Rename(built, dataDir); err != nil {
		if res.MovedAside != "" {
			// Put the old data back where the operator expects it.
			if rerr := os.Rename(res.MovedAside, dataDir); rerr == nil {
				res.MovedAside = ""
			}
		}
		return res, fmt.Errorf("move restored data dir into place: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return res, err
	}
	if err := syncDir(filepath.Dir(dataDir)); err != nil {
		return res, fmt.Errorf("sync parent of data dir: %w", err)
	}
	return res, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SnapshotInfo is what etcd's own status reader says about a snapshot file.
type SnapshotInfo struct {
	Revision  int64
	TotalKeys int
	Hash      uint32
}

// Inspect reads a snapshot file with etcdutl's status reader.
func Inspect(snapshotFile string) (SnapshotInfo, error) {
	st, err := snapshot.NewV3(zap.NewNop()).Status(snapshotFile)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("read snapshot %s: %w", snapshotFile, err)
	}
	return SnapshotInfo{Revision: st.Revision, TotalKeys: st.TotalKey, Hash: st.Hash}, nil
}

// MoveAside renames a non-empty dir to <dir>.<why>-<stamp> and returns the
// new path; an empty dir is removed and a missing one ignored (both return
// ""). It never deletes anything that holds data. The caller has checked
// that no etcd holds dir.
func MoveAside(dir, why string, now time.Time) (string, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read data dir: %w", err)
	case len(entries) == 0:
		if err := os.Remove(dir); err != nil {
			return "", fmt.Errorf("remove empty data dir: %w", err)
		}
		return "", nil
	}
	aside := dir + "." + why + "-" + Stamp(now)
	for i := 1; exists(aside); i++ {
		aside = fmt.Sprintf("%s.%s-%s.%d", dir, why, Stamp(now), i)
	}
	if err := os.Rename(dir, aside); err != nil {
		return "", fmt.Errorf("move %s aside: %w", dir, err)
	}
	return aside, syncDir(filepath.Dir(aside))
}

// matchOwner gives the new data dir the owner of the one it replaces (or,
// when there is none, of its parent directory), so that an etcd running as
// its own user (User=etcd) can open a data dir restored by root. It does
// nothing unless running as root.
func matchOwner(built, dataDir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	ref, err := os.Stat(dataDir)
	if err != nil {
		if ref, err = os.Stat(filepath.Dir(filepath.Clean(dataDir))); err != nil {
			return nil
		}
	}
	st, ok := ref.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(built, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give restored data dir to uid %d: %w", st.Uid, err)
		}
		return nil
	})
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }
