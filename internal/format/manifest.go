package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Version is the repository format version this binary writes and reads.
const Version = 1

// Kinds of manifests.
const (
	KindSnapshot = "snapshot"
	KindJournal  = "journal"
)

// Compression and encryption names recorded in manifests.
const (
	CompressionZstd = "zstd"
	EncryptionNone  = "none"
	EncryptionAge   = "age"
)

// Manifest describes one backup. Field meanings are in docs/format.md.
type Manifest struct {
	FormatVersion  int       `json:"format_version"`
	Kind           string    `json:"kind"`
	ID             string    `json:"id"`
	Cluster        string    `json:"cluster"`
	ClusterID      string    `json:"cluster_id"`
	MemberID       string    `json:"member_id"`
	MemberName     string    `json:"member_name"`
	Endpoint       string    `json:"endpoint"`
	EtcdVersion    string    `json:"etcd_version"`
	StorageVersion string    `json:"storage_version,omitempty"`
	Revision       int64     `json:"revision"`
	StreamRevision int64     `json:"stream_revision"`
	RaftIndex      uint64    `json:"raft_index"`
	RaftTerm       uint64    `json:"raft_term"`
	Leader         bool      `json:"leader"`
	Created        time.Time `json:"created"`
	Finished       time.Time `json:"finished"`
	Payload        string    `json:"payload"`
	RawSize        int64     `json:"raw_size"`
	RawSHA256      string    `json:"raw_sha256"`
	StoredSize     int64     `json:"stored_size"`
	StoredSHA256   string    `json:"stored_sha256"`
	Compression    string    `json:"compression"`
	Encryption     string    `json:"encryption"`
	Recipients     []string  `json:"recipients,omitempty"`
	ToolVersion    string    `json:"tool_version"`
	// HashKV is etcd's own hash of the key space at Revision, asked of the
	// source member after the stream completed. Optional: nil when the
	// member could not answer (e.g. Revision was compacted meanwhile) and in
	// manifests written before it was recorded.
	HashKV *HashKV `json:"hash_kv,omitempty"`
	// LockedUntil is set when the backup was written locked (--lock-for):
	// the store refuses to delete or overwrite its objects before then, and
	// prune keeps it at least until then.
	LockedUntil *time.Time `json:"locked_until,omitempty"`
	LockMode    string     `json:"lock_mode,omitempty"`
	// Journal is set on journal segment manifests (Kind "journal") only.
	Journal *JournalRange `json:"journal,omitempty"`
}

// JournalRange describes one journal segment: the revisions it covers and
// the chain it belongs to (docs/format.md, "Journal segments").
type JournalRange struct {
	// Chain is the ID of the full snapshot the chain starts from.
	Chain string `json:"chain"`
	// Start and End bound the revisions the segment covers: it holds every
	// event etcd emitted with a revision in [Start, End]. The next segment of
	// the chain starts at End+1.
	Start int64 `json:"start_revision"`
	End   int64 `json:"end_revision"`
	// Records and Events count the revisions and events it holds.
	Records int `json:"records"`
	Events  int `json:"events"`
	// FirstTime and LastTime are the receive times of its first and last
	// record.
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
}

// HashKV is the answer of etcd's Maintenance.HashKV at one revision: a CRC-32C
// (Castagnoli) over every key-bucket entry of the MVCC store with a revision
// in (CompactRevision, Revision], plus the older revisions a compaction at
// CompactRevision keeps. Any member holding the same history computes the
// same value (etcd's own corruption check relies on it), so a member started
// from the restored backup must too, once compacted at CompactRevision.
type HashKV struct {
	Revision        int64  `json:"revision"`
	Hash            uint32 `json:"hash"`
	CompactRevision int64  `json:"compact_revision"`
}

// Encrypted reports whether the payload is an age file.
func (m *Manifest) Encrypted() bool { return m.Encryption == EncryptionAge }

const trailerPrefix = "sha256:"

// Marshal encodes m as indented JSON followed by its checksum line.
func (m *Manifest) Marshal() ([]byte, error) {
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	out := make([]byte, 0, len(body)+len(trailerPrefix)+65)
	out = append(out, body...)
	out = append(out, trailerPrefix...)
	out = append(out, hex.EncodeToString(sum[:])...)
	out = append(out, '\n')
	return out, nil
}

// ParseManifest checks the checksum trailer, then the format version, then
// decodes. Errors wrap ErrIntegrity or ErrVersion.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%w: manifest is truncated (no final newline)", ErrIntegrity)
	}
	i := bytes.LastIndexByte(b[:len(b)-1], '\n')
	if i < 0 {
		return nil, fmt.Errorf("%w: manifest has no checksum line", ErrIntegrity)
	}
	body, trailer := b[:i+1], string(b[i+1:len(b)-1])
	if len(trailer) != len(trailerPrefix)+64 || trailer[:len(trailerPrefix)] != trailerPrefix {
		return nil, fmt.Errorf("%w: manifest checksum line is malformed", ErrIntegrity)
	}
	want, err := hex.DecodeString(trailer[len(trailerPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: manifest checksum line is malformed", ErrIntegrity)
	}
	got := sha256.Sum256(body)
	if !bytes.Equal(got[:], want) {
		return nil, fmt.Errorf("%w: manifest checksum mismatch", ErrIntegrity)
	}
	var probe struct {
		FormatVersion int `json:"format_version"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("%w: manifest is not valid JSON: %v", ErrIntegrity, err)
	}
	if probe.FormatVersion != Version {
		return nil, fmt.Errorf("%w: manifest has format version %d, this binary reads version %d (upgrade etcd-backup)", ErrVersion, probe.FormatVersion, Version)
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest fields: %v", ErrIntegrity, err)
	}
	return &m, nil
}

// RepoMarker is the content of the repository marker object.
type RepoMarker struct {
	FormatVersion int       `json:"format_version"`
	Created       time.Time `json:"created"`
	ToolVersion   string    `json:"tool_version"`
}

// ParseRepoMarker decodes a marker and refuses unknown versions.
func ParseRepoMarker(b []byte) (*RepoMarker, error) {
	var m RepoMarker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: repository marker is not valid JSON: %v", ErrIntegrity, err)
	}
	if m.FormatVersion != Version {
		return nil, fmt.Errorf("%w: repository has format version %d, this binary reads version %d (upgrade etcd-backup)", ErrVersion, m.FormatVersion, Version)
	}
	return &m, nil
}
