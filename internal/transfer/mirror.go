package transfer

import (
	"context"
	"fmt"
	"log/slog"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/repo"
)

// MirrorResult tells what Mirror did.
type MirrorResult struct {
	Backups        int   // backups copied
	BackupBytes    int64 // their stored bytes
	JournalObjects int   // journal objects copied
	JournalBytes   int64
}

// Mirror keeps dst a copy of src for a second site: it copies every
// intact backup of src that dst lacks (Copy), and the journal objects dst
// lacks of the newest journals chains (CopyJournal) — journals other
// chains were copied when they were the newest. known remembers the
// backups already in dst between calls, so a steady run costs a LIST of
// each repository's snapshots and of the newest chains, not a GET per
// backup. It stops at the first error; what was copied stays.
func Mirror(ctx context.Context, src, dst *repo.Repo, ids []age.Identity, known map[string]bool, chains int, log *slog.Logger) (MirrorResult, error) {
	var res MirrorResult
	srcIDs, err := src.IDs(ctx)
	if err != nil {
		return res, err
	}
	dstIDs, err := dst.IDs(ctx)
	if err != nil {
		return res, fmt.Errorf("destination: %w", err)
	}
	for _, id := range dstIDs {
		known[id] = true
	}
	var newest []*format.Manifest
	for i, id := range srcIDs {
		recent := i >= len(srcIDs)-chains
		if known[id] && !recent {
			continue
		}
		m, err := src.ReadManifest(ctx, id)
		if err != nil {
			log.Warn("second site: skipping a backup that cannot be read", "id", id, "error", err)
			continue
		}
		if !known[id] {
			r, err := Copy(ctx, src, dst, m, ids)
			if err != nil {
				return res, err
			}
			known[id] = true
			if !r.Skipped {
				res.Backups++
				res.BackupBytes += m.StoredSize
				log.Info("second site: backup copied", "id", id, "bytes", m.StoredSize, "checked", r.Verified)
			}
		}
		if recent {
			newest = append(newest, m)
		}
	}
	for _, m := range newest {
		jr, err := CopyJournal(ctx, src, dst, m, ids)
		res.JournalObjects += jr.Copied
		res.JournalBytes += jr.Bytes
		if err != nil {
			return res, err
		}
	}
	return res, nil
}
