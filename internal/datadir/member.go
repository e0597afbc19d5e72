package datadir

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/config"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/etcdserver/cindex"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/etcd/server/v3/verify"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// DBPath is where a member's database lives in its data dir.
func DBPath(dataDir string) string { return filepath.Join(dataDir, "member", "snap", "db") }

// CreateDB creates the data dir dataDir (which must not exist, or be
// empty) with its member/snap directory, and the empty database file, open
// for writing. A restore streams the checked database straight into it and
// then calls Finish: the database is written once, where etcd will read it.
func CreateDB(dataDir string) (*os.File, error) {
	if fileutil.Exist(dataDir) && !fileutil.DirEmpty(dataDir) {
		return nil, fmt.Errorf("data dir %s is not empty", dataDir)
	}
	if err := fileutil.CreateDirAll(zap.NewNop(), filepath.Dir(DBPath(dataDir))); err != nil {
		return nil, fmt.Errorf("create %s: %w", dataDir, err)
	}
	f, err := os.OpenFile(DBPath(dataDir), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create database file: %w", err)
	}
	return f, nil
}

// Finish makes dataDir, whose member/snap/db holds a checked etcd database
// (without etcd's sha256 trailer) and nothing else, into the data dir of
// member m of a new cluster. It does what `etcdutl snapshot restore` does
// after copying the snapshot, with the same etcd packages and in the same
// order: drop the old membership from the database, optionally bump the
// revision and mark it compacted, write the new membership, the WAL with
// its bootstrap entries, the raft snapshot, and the consistent index.
// etcdutl opens and commits the database three times for these steps;
// Finish opens it once. The result is what etcdutl builds (compared in
// this package's tests: same keys, revisions, membership and HashKV).
// It returns the revision of the restored key space (after any bump).
func Finish(dataDir string, m Member) (revision int64, err error) {
	lg := zap.NewNop()
	pURLs, err := types.NewURLs(m.PeerURLs)
	if err != nil {
		return 0, err
	}
	ics, err := types.NewURLsMap(m.InitialCluster)
	if err != nil {
		return 0, err
	}
	srv := config.ServerConfig{Logger: lg, Name: m.Name, PeerURLs: pURLs, InitialPeerURLsMap: ics, InitialClusterToken: m.Token}
	if err := srv.VerifyBootstrap(); err != nil {
		return 0, err
	}
	cl, err := membership.NewClusterFromURLsMap(lg, m.Token, ics)
	if err != nil {
		return 0, err
	}
	walDir := filepath.Join(dataDir, "member", "wal")
	snapDir := filepath.Join(dataDir, "member", "snap")
	if fileutil.Exist(walDir) {
		return 0, fmt.Errorf("wal dir %s exists", walDir)
	}

	be := backend.NewDefaultBackend(lg, DBPath(dataDir))
	closed := false
	defer func() {
		if !closed {
			be.Close()
		}
	}()
	if err := schema.NewMembershipBackend(lg, be).TrimMembershipFromBackend(); err != nil {
		return 0, err
	}
	if m.MarkCompacted && m.RevisionBump > 0 {
		if err := bumpRevision(be, int64(m.RevisionBump)); err != nil {
			return 0, err
		}
	}
	hs, err := saveWALAndSnap(lg, be, cl, m.Name, walDir, snapDir)
	if err != nil {
		return 0, err
	}
	cindex.UpdateConsistentIndexForce(be.BatchTx(), hs.Commit, hs.Term)
	closed = true
	if err := be.Close(); err != nil {
		return 0, fmt.Errorf("close database: %w", err)
	}
	if err := verify.VerifyIfEnabled(verify.Config{ExactIndex: true, Logger: lg, DataDir: dataDir}); err != nil {
		return 0, err
	}
	return Revision(DBPath(dataDir))
}

// bumpRevision is etcdutl's --bump-revision with --mark-compacted: a key
// at the latest revision plus amount, and that revision scheduled for
// compaction, so no client watching from an older revision misses a
// change unnoticed.
func bumpRevision(be backend.Backend, amount int64) error {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	var latest mvcc.Revision
	err := tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest = rev
		}
		return nil
	})
	if err != nil {
		return err
	}
	latest.Main += amount
	latest.Sub = 0
	tx.UnsafePut(schema.Key, mvcc.RevToBytes(latest, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(tx, latest.Main)
	return nil
}

// saveWALAndSnap writes the new cluster's membership into the database and
// the WAL and raft snapshot that bootstrap it, as etcdutl does.
func saveWALAndSnap(lg *zap.Logger, be backend.Backend, cl *membership.RaftCluster, name, walDir, snapDir string) (raftpb.HardState, error) {
	var hs raftpb.HardState
	if err := fileutil.CreateDirAll(lg, walDir); err != nil {
		return hs, err
	}
	cl.SetBackend(schema.NewMembershipBackend(lg, be))
	for _, mb := range cl.Members() {
		cl.AddMember(mb, true)
	}
	self := cl.MemberByName(name)
	if self == nil {
		return hs, fmt.Errorf("member %q is not in --initial-cluster", name)
	}
	md := &etcdserverpb.Metadata{NodeID: uint64(self.ID), ClusterID: uint64(cl.ID())}
	metadata, err := md.Marshal()
	if err != nil {
		return hs, err
	}
	w, err := wal.Create(lg, walDir, metadata)
	if err != nil {
		return hs, err
	}
	defer w.Close()

	ids := cl.MemberIDs()
	peers := make([]raft.Peer, len(ids))
	for i, id := range ids {
		ctx, err := json.Marshal(cl.Member(id))
		if err != nil {
			return hs, err
		}
		peers[i] = raft.Peer{ID: uint64(id), Context: ctx}
	}
	ents := make([]raftpb.Entry, len(peers))
	nodeIDs := make([]uint64, len(peers))
	for i, p := range peers {
		nodeIDs[i] = p.ID
		cc := raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: p.ID, Context: p.Context}
		d, err := cc.Marshal()
		if err != nil {
			return hs, err
		}
		ents[i] = raftpb.Entry{Type: raftpb.EntryConfChange, Term: 1, Index: uint64(i + 1), Data: d}
	}
	commit, term := uint64(len(ents)), uint64(1)
	hs = raftpb.HardState{Term: term, Vote: peers[0].ID, Commit: commit}
	if err := w.Save(hs, ents); err != nil {
		return hs, err
	}
	cs := raftpb.ConfState{Voters: nodeIDs}
	rs := raftpb.Snapshot{
		Data:     etcdserver.GetMembershipInfoInV2Format(lg, cl),
		Metadata: raftpb.SnapshotMetadata{Index: commit, Term: term, ConfState: cs},
	}
	if err := snap.New(lg, snapDir).SaveSnap(rs); err != nil {
		return hs, err
	}
	return hs, w.SaveSnapshot(walpb.Snapshot{Index: commit, Term: term, ConfState: &cs})
}

// Revision reads the newest revision of the key space of the etcd database
// (or snapshot) file at path, from its last revision key: no walk, no hash.
func Revision(path string) (int64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("open database %s: %w", path, err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(schema.Key.Name())
		if b == nil {
			return errors.New("no key bucket: not an etcd v3 database")
		}
		if k, _ := b.Cursor().Last(); k != nil {
			rev = mvcc.BytesToRev(k).Main
		}
		return nil
	})
	return rev, err
}

// CopyDB copies the snapshot file src (as etcd sends it: the database and
// etcd's sha256 trailer) into dataDir's database file, checking the
// trailer unless skipHashCheck (then src is a bare database), as etcdutl
// does before its restore steps.
func CopyDB(src, dataDir string, skipHashCheck bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	var want []byte
	if !skipHashCheck {
		if size < sha256.Size {
			return fmt.Errorf("snapshot %s is shorter than etcd's sha256 trailer", src)
		}
		size -= sha256.Size
		want = make([]byte, sha256.Size)
		if _, err := in.ReadAt(want, size); err != nil {
			return fmt.Errorf("read snapshot trailer: %w", err)
		}
	}
	out, err := CreateDB(dataDir)
	if err != nil {
		return err
	}
	defer out.Close()
	var w io.Writer = out
	h := sha256.New()
	if !skipHashCheck {
		w = io.MultiWriter(out, h)
	}
	if _, err := io.Copy(w, io.NewSectionReader(in, 0, size)); err != nil {
		return fmt.Errorf("copy snapshot: %w", err)
	}
	if !skipHashCheck && !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("snapshot %s: etcd's sha256 trailer does not match the data", src)
	}
	return out.Close()
}
