package backup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

// Options for one backup.
type Options struct {
	Recipients []format.Recipient
	Level      int // zstd level, 0 = fastest
	// Endpoint forces the member to stream from; empty chooses the leader.
	Endpoint string
	Logger   *slog.Logger
	// Progress, when set, is called with the raw bytes streamed so far.
	Progress func(raw int64)
	// BeforeUpload, when set, is called with the member's status taken
	// just before its snapshot stream was opened; an error aborts the
	// backup before the payload upload starts and is returned as is.
	BeforeUpload func(member etcd.MemberStatus) error
	now          func() time.Time
}

// Run takes one full backup of the cluster behind cli into r and returns
// its manifest. On any error nothing is published: the payload upload is
// aborted and no manifest is written.
func Run(ctx context.Context, cli *etcd.Client, r *repo.Repo, opt Options) (*format.Manifest, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opt.now != nil {
		now = opt.now
	}
	ep := opt.Endpoint
	if ep == "" {
		src, err := cli.ChooseSnapshotSource(ctx)
		if err != nil {
			return nil, err
		}
		ep = src.Endpoint
	}
	if err := r.EnsureMarker(ctx, version.Version); err != nil {
		return nil, err
	}
	started := now().UTC()
	id := format.NewID(started)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snap, err := cli.OpenSnapshot(ctx, ep)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	log.Info("streaming snapshot", "id", id, "endpoint", ep, "member", snap.Member.Name,
		"leader", snap.Member.IsLeader(), "revision", snap.Revision)
	if opt.BeforeUpload != nil {
		if err := opt.BeforeUpload(snap.Member); err != nil {
			return nil, err
		}
	}

	encrypted := len(opt.Recipients) > 0
	pr, pw := io.Pipe()
	type result struct {
		sums format.Sums
		err  error
	}
	produced := make(chan result, 1)
	go func() {
		// The encoder writes age's header at once, so it is created here,
		// on the writing side of the pipe.
		sums, err := pump(snap, pw, format.EncoderOptions{Recipients: opt.Recipients, Level: opt.Level}, opt.Progress)
		if err != nil {
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		produced <- result{sums, err}
	}()
	putErr := r.PutPayload(ctx, id, encrypted, pr)
	if putErr != nil {
		cancel() // stop the etcd stream so the producer ends
		pr.CloseWithError(putErr)
	}
	res := <-produced
	switch {
	case res.err != nil:
		return nil, fmt.Errorf("backup %s aborted, nothing published: %w", id, res.err)
	case putErr != nil:
		return nil, fmt.Errorf("backup %s: upload payload: %w", id, putErr)
	}

	m := &format.Manifest{
		FormatVersion:  format.Version,
		Kind:           format.KindSnapshot,
		ID:             id,
		Cluster:        r.Cluster(),
		ClusterID:      etcd.HexID(snap.Member.ClusterID),
		MemberID:       etcd.HexID(snap.Member.ID),
		MemberName:     snap.Member.Name,
		Endpoint:       ep,
		EtcdVersion:    snap.Member.Version,
		StorageVersion: snap.StorageVersion,
		Revision:       snap.Revision,
		StreamRevision: snap.StreamRevision,
		RaftIndex:      snap.Member.RaftIndex,
		RaftTerm:       snap.Member.RaftTerm,
		Leader:         snap.Member.IsLeader(),
		Created:        started,
		Finished:       now().UTC(),
		Payload:        repo.PayloadBase(id, encrypted),
		RawSize:        res.sums.RawSize,
		RawSHA256:      res.sums.RawSHA256,
		StoredSize:     res.sums.StoredSize,
		StoredSHA256:   res.sums.StoredSHA256,
		Compression:    format.CompressionZstd,
		Encryption:     format.EncryptionNone,
		ToolVersion:    version.Version,
	}
	if encrypted {
		m.Encryption = format.EncryptionAge
		for _, rc := range opt.Recipients {
			m.Recipients = append(m.Recipients, rc.Fingerprint)
		}
	}
	// etcd's own hash of the key space at Revision, from the same member,
	// for restore drills to compare with (docs/format.md, hash_kv). Optional:
	// the backup is complete and checked without it.
	if h, err := cli.HashKV(ctx, ep, m.Revision); err != nil {
		log.Warn("HashKV not recorded in the manifest (the backup is still good; restore drills will not compare etcd's hash)",
			"id", id, "endpoint", ep, "revision", m.Revision, "error", err)
	} else {
		m.HashKV = &format.HashKV{Revision: h.Revision, Hash: h.Hash, CompactRevision: h.CompactRevision}
		log.Debug("HashKV recorded", "id", id, "revision", h.Revision, "hash", h.Hash, "compact_revision", h.CompactRevision)
	}
	if err := r.PutManifest(ctx, m); err != nil {
		return nil, err
	}
	log.Info("backup published", "id", id, "raw_bytes", m.RawSize, "stored_bytes", m.StoredSize,
		"seconds", m.Finished.Sub(m.Created).Seconds())
	return m, nil
}

// pump copies the etcd stream into the encoder and closes it, which checks
// etcd's sha256 trailer. An *etcd.Snapshot writes itself into the encoder
// (io.WriterTo): its bytes are not copied on the way.
func pump(src io.Reader, dst io.Writer, eo format.EncoderOptions, progress func(int64)) (format.Sums, error) {
	enc, err := format.NewEncoder(dst, eo)
	if err != nil {
		return format.Sums{}, err
	}
	w := &encWriter{enc: enc, progress: progress}
	if _, err := io.Copy(w, src); err != nil {
		if w.err != nil {
			return format.Sums{}, w.err
		}
		return format.Sums{}, fmt.Errorf("read snapshot stream: %w", err)
	}
	return enc.Close()
}

// encWriter feeds the encoder, reports progress and keeps the encoder's
// error apart from the stream's.
type encWriter struct {
	enc      *format.Encoder
	progress func(int64)
	err      error
}

func (w *encWriter) Write(p []byte) (int, error) {
	n, err := w.enc.Write(p)
	if err != nil {
		w.err = err
		return n, err
	}
	if w.progress != nil {
		w.progress(w.enc.RawBytes())
	}
	return n, nil
}
