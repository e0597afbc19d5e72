package prune_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/prune"
	"github.com/etcd-backup/etcd-backup/internal/retention"
	"github.com/etcd-backup/etcd-backup/internal/storage"
)

func backupIDs(bs []prune.Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func reasonsOf(t *testing.T, rep *prune.Report, id string) []string {
	t.Helper()
	for _, b := range rep.Backups {
		if b.ID == id {
			return b.Reasons
		}
	}
	t.Fatalf("backup %s not in the report", id)
	return nil
}

// TestPolicy prunes a local repository with a daily policy and checks what
// is left, the reasons, the order of removals and the bytes freed.
func TestPolicy(t *testing.T) {
	t.Parallel()
	r0, _ := localRepo(t)
	rec := &recorder{Backend: r0.Backend()}
	r := wrapRepo(t, rec)
	b1 := writeBackup(t, r, day(1, 10, 0))
	b2 := writeBackup(t, r, day(1, 22, 0))
	b3 := writeBackup(t, r, day(2, 10, 0))
	b4 := writeBackup(t, r, day(3, 9, 0))
	b5 := writeBackup(t, r, day(3, 21, 0))
	b6 := writeBackup(t, r, day(5, 12, 0))
	sizes := map[string]int64{}
	if err := rec.List(t.Context(), "", func(i storage.Info) error { sizes[i.Name] = i.Size; return nil }); err != nil {
		t.Fatal(err)
	}

	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1, Daily: 2}, prune.Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(t, r), []string{b6.ID, b5.ID}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	if got, want := objects(t, r), objectsOf(b5, b6); !slices.Equal(got, want) {
		t.Errorf("objects left %v, want %v (payloads must go with their manifests)", got, want)
	}
	if got, want := backupIDs(rep.Doomed()), []string{b4.ID, b3.ID, b2.ID, b1.ID}; !slices.Equal(got, want) {
		t.Errorf("report: removed %v, want %v", got, want)
	}
	for _, b := range rep.Doomed() {
		if !b.Removed {
			t.Errorf("report: %s not marked removed", b.ID)
		}
	}
	if got, want := reasonsOf(t, rep, b6.ID), []string{"last 1/1", "daily 2026-01-05", "newest verified"}; !slices.Equal(got, want) {
		t.Errorf("reasons of the newest: %q, want %q", got, want)
	}
	if got, want := reasonsOf(t, rep, b5.ID), []string{"daily 2026-01-03"}; !slices.Equal(got, want) {
		t.Errorf("reasons of %s: %q, want %q", b5.ID, got, want)
	}
	if rep.Verified != b6.ID || rep.VerifiedStoredOnly || len(rep.VerifyFailed) != 0 {
		t.Errorf("verified %q (stored only %v, failed %v), want %s fully", rep.Verified, rep.VerifiedStoredOnly, rep.VerifyFailed, b6.ID)
	}

	// Oldest backup first; for each, the manifest before the payload.
	var want []string
	var freed int64
	for _, m := range []*format.Manifest{b1, b2, b3, b4} {
		mn, pn := r.ManifestName(m.ID), "clusters/default/snapshots/"+m.Payload
		want = append(want, mn, pn)
		freed += sizes[mn] + sizes[pn]
	}
	if !slices.Equal(rec.removes, want) {
		t.Errorf("removals:\n%s\nwant:\n%s", strings.Join(rec.removes, "\n"), strings.Join(want, "\n"))
	}
	if rep.BytesFreed != freed || freed == 0 {
		t.Errorf("bytes freed %d, want %d", rep.BytesFreed, freed)
	}
}

// TestNewestFailsVerification: when the newest backup fails verification,
// the newest one that passes is kept too, whatever the policy says. By
// default verification is the presence check (the payload exists with the
// stored size the manifest records), so a payload missing or of the wrong
// size fails it, while bytes damaged in place (size intact) pass it and are
// only caught by ReadBack.
func TestNewestFailsVerification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, root, payload string)
		readBack bool
		fails    bool // b3 fails verification
	}{
		{"flipped byte", flipByte, false, false},
		{"flipped byte, read back", flipByte, true, true},
		{"truncated", truncate, false, true},
		{"truncated, read back", truncate, true, true},
		{"longer", func(t *testing.T, root, payload string) {
			f, err := os.OpenFile(snapPath(root, payload), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("trailing garbage"))
			f.Close()
		}, false, true},
		{"missing", remove, false, true},
		{"missing, read back", remove, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r0, root := localRepo(t)
			cnt := &getCounter{Backend: r0.Backend()}
			r := wrapRepo(t, cnt)
			b1 := writeBackup(t, r, day(1, 0, 0))
			b2 := writeBackup(t, r, day(2, 0, 0))
			b3 := writeBackup(t, r, day(3, 0, 0))
			tc.damage(t, root, b3.Payload)

			rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{Now: fixedNow, ReadBack: tc.readBack})
			if err != nil {
				t.Fatal(err)
			}
			if rep.ReadBack != tc.readBack {
				t.Errorf("report: read back %v, want %v", rep.ReadBack, tc.readBack)
			}
			if n := cnt.payloadGets(); (n > 0) != tc.readBack {
				t.Errorf("%d payload reads, read back %v: a read-back reads payloads, the presence check none", n, tc.readBack)
			}
			if !tc.fails {
				// Bytes damaged in place, size intact: written and checked,
				// still present, so the presence check keeps it as the
				// newest verified backup.
				if got, want := ids(t, r), []string{b3.ID}; !slices.Equal(got, want) {
					t.Fatalf("left %v, want %v", got, want)
				}
				if rep.Verified != b3.ID || len(rep.VerifyFailed) != 0 {
					t.Errorf("verified %q, failed %v; want %s verified", rep.Verified, rep.VerifyFailed, b3.ID)
				}
				if got, want := reasonsOf(t, rep, b3.ID), []string{"last 1/1", prune.ReasonNewestVerified}; !slices.Equal(got, want) {
					t.Errorf("reasons of %s: %q, want %q", b3.ID, got, want)
				}
				return
			}
			if got, want := ids(t, r), []string{b3.ID, b2.ID}; !slices.Equal(got, want) {
				t.Fatalf("left %v, want %v: the newest by policy and the newest verified", got, want)
			}
			if rep.Verified != b2.ID {
				t.Errorf("verified %q, want %s", rep.Verified, b2.ID)
			}
			if got, want := reasonsOf(t, rep, b2.ID), []string{prune.ReasonNewestVerified}; !slices.Equal(got, want) {
				t.Errorf("reasons of %s: %q, want %q", b2.ID, got, want)
			}
			if len(rep.VerifyFailed) != 1 || rep.VerifyFailed[0].ID != b3.ID || !errors.Is(rep.VerifyFailed[0].Err, format.ErrIntegrity) {
				t.Errorf("verify failures %v, want %s with an integrity error", rep.VerifyFailed, b3.ID)
			}
			if got := backupIDs(rep.Doomed()); !slices.Equal(got, []string{b1.ID}) {
				t.Errorf("removed %v, want [%s]", got, b1.ID)
			}
		})
	}
}

func flipByte(t *testing.T, root, payload string) { corruptFile(t, snapPath(root, payload)) }

func truncate(t *testing.T, root, payload string) {
	if err := os.Truncate(snapPath(root, payload), 100); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, root, payload string) {
	if err := os.Remove(snapPath(root, payload)); err != nil {
		t.Fatal(err)
	}
}

// TestNothingVerifies: no backup passes verification, so nothing at all is
// removed, not even orphans or stale temporary files.
func TestNothingVerifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, root, payload string)
		readBack bool
	}{
		{"presence check", truncate, false},
		{"read back", flipByte, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, root := localRepo(t)
			for d := 1; d <= 3; d++ {
				m := writeBackup(t, r, day(d, 0, 0))
				tc.damage(t, root, m.Payload)
			}
			// A damaged manifest does not count as a verified backup either.
			dm := writeBackup(t, r, day(4, 0, 0))
			corruptFile(t, snapPath(root, dm.ID+".manifest.json"))
			orphan := format.NewID(day(5, 0, 0))
			if err := r.PutPayload(t.Context(), orphan, false, strings.NewReader("orphan")); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-3 * time.Hour)
			tmp := snapPath(root, ".tmp-stale")
			for _, p := range []string{snapPath(root, orphan+".db.zst"), tmp} {
				if err := os.WriteFile(p, []byte("x"), 0o600); err != nil && p == tmp {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
			before := digest(t, root)

			rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{ReadBack: tc.readBack})
			if !errors.Is(err, prune.ErrNoVerifiedBackup) || !errors.Is(err, format.ErrIntegrity) {
				t.Fatalf("Run = %v, want ErrNoVerifiedBackup and ErrIntegrity", err)
			}
			if after := digest(t, root); after != before {
				t.Error("the repository changed although no backup verifies")
			}
			if len(rep.VerifyFailed) != 3 || len(rep.Damaged) != 1 || rep.Verified != "" {
				t.Errorf("report: %d verify failures, %d damaged, verified %q; want 3, 1, none", len(rep.VerifyFailed), len(rep.Damaged), rep.Verified)
			}
		})
	}
}

// TestStorageErrorIsNotAFailure: a Stat that fails for a storage reason
// (not "not found"), after the storage layer's retries, is not a failed
// verification: prune stops before it removes anything, and the error is
// not an integrity error.
func TestStorageErrorIsNotAFailure(t *testing.T) {
	t.Parallel()
	r0, root := localRepo(t)
	down := &statFailer{Backend: r0.Backend(), err: errors.New("storage error after 7 tries: stat: 503 Slow Down")}
	r := wrapRepo(t, down)
	for d := 1; d <= 3; d++ {
		writeBackup(t, r, day(d, 0, 0))
	}
	orphan := format.NewID(day(5, 0, 0))
	if err := r.PutPayload(t.Context(), orphan, false, strings.NewReader("orphan")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(snapPath(root, orphan+".db.zst"), old, old); err != nil {
		t.Fatal(err)
	}
	before := digest(t, root)
	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{Now: fixedNow})
	if !errors.Is(err, down.err) || errors.Is(err, format.ErrIntegrity) || errors.Is(err, prune.ErrNoVerifiedBackup) {
		t.Fatalf("Run = %v, want the storage error, not an integrity error", err)
	}
	if !strings.Contains(err.Error(), "nothing removed") {
		t.Errorf("error %q does not say that nothing was removed", err)
	}
	if digest(t, root) != before {
		t.Error("the repository changed after a storage error")
	}
	if len(rep.VerifyFailed) != 0 || rep.Verified != "" {
		t.Errorf("report: failed %v, verified %q; a storage error judges no backup", rep.VerifyFailed, rep.Verified)
	}
}

// TestDryRun changes nothing and announces exactly what a real run does.
func TestDryRun(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	for _, at := range []time.Time{day(1, 1, 0), day(1, 2, 0), day(2, 1, 0), day(8, 1, 0), day(9, 1, 0), day(9, 5, 0)} {
		writeBackup(t, r, at)
	}
	orphan := format.NewID(day(10, 0, 0))
	if err := r.PutPayload(t.Context(), orphan, false, strings.NewReader("orphan payload")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(snapPath(root, orphan+".db.zst"), old, old); err != nil {
		t.Fatal(err)
	}
	tmp := snapPath(root, ".tmp-killed")
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	policy := retention.Policy{Daily: 2}
	before := digest(t, root)

	dry, err := prune.Run(t.Context(), r, policy, prune.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := digest(t, root); after != before {
		t.Fatal("dry run changed the repository")
	}
	doomed := backupIDs(dry.Doomed())
	if len(doomed) != 4 {
		t.Errorf("dry run: would remove %v, want 4 backups", doomed)
	}
	for _, b := range dry.Backups {
		if b.Removed {
			t.Errorf("dry run reports %s as removed", b.ID)
		}
	}
	if len(dry.Orphans) != 1 || dry.Orphans[0].Young || dry.Orphans[0].Removed || !strings.HasSuffix(dry.Orphans[0].Name, orphan+".db.zst") {
		t.Errorf("dry run orphans %+v, want one old orphan, not removed", dry.Orphans)
	}
	if !dry.StaleSkipped || len(dry.Stale) != 0 {
		t.Errorf("dry run ran the janitor: %v", dry.Stale)
	}

	real, err := prune.Run(t.Context(), r, policy, prune.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := backupIDs(real.Doomed()); !slices.Equal(got, doomed) {
		t.Errorf("real run removed %v, dry run announced %v", got, doomed)
	}
	if real.BytesFreed != dry.BytesFreed {
		t.Errorf("real run freed %d bytes, dry run announced %d", real.BytesFreed, dry.BytesFreed)
	}
	if len(real.Orphans) != 1 || !real.Orphans[0].Removed {
		t.Errorf("real run orphans %+v", real.Orphans)
	}
	if len(real.Stale) != 1 || real.Stale[0] != "clusters/default/snapshots/.tmp-killed" {
		t.Errorf("real run janitor removed %q", real.Stale)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("stale temporary file left: %v", err)
	}
}

// TestOrphans: payloads without manifest go once older than OrphanAge
// (by the backend's modification time); younger ones and the payloads of
// damaged manifests stay.
func TestOrphans(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	b1 := writeBackup(t, r, day(1, 0, 0))
	dm := writeBackup(t, r, day(2, 0, 0))
	corruptFile(t, snapPath(root, dm.ID+".manifest.json"))
	old := time.Now().Add(-90 * time.Minute)
	if err := os.Chtimes(snapPath(root, dm.Payload), old, old); err != nil {
		t.Fatal(err)
	}
	mk := func(at time.Time, encrypted bool, mtime time.Time) string {
		id := format.NewID(at)
		if err := r.PutPayload(t.Context(), id, encrypted, strings.NewReader("partial backup")); err != nil {
			t.Fatal(err)
		}
		name := id + ".db.zst"
		if encrypted {
			name += ".age"
		}
		if err := os.Chtimes(snapPath(root, name), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return name
	}
	oldPlain := mk(day(3, 0, 0), false, old)
	oldAge := mk(day(4, 0, 0), true, old)
	young := mk(day(5, 0, 0), false, time.Now().Add(-50*time.Minute))
	// Not a payload: left alone whatever its age.
	if err := r.Backend().Put(t.Context(), "clusters/default/snapshots/README", strings.NewReader("hand-written")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(snapPath(root, "README"), old, old); err != nil {
		t.Fatal(err)
	}

	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 5}, prune.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{b1.ID + ".db.zst", b1.ID + ".manifest.json", dm.Payload, dm.ID + ".manifest.json", young, "README"}
	slices.Sort(want)
	if got := objects(t, r); !slices.Equal(got, want) {
		t.Errorf("objects left:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var removed, kept []string
	for _, o := range rep.Orphans {
		base := o.Name[strings.LastIndex(o.Name, "/")+1:]
		if o.Removed {
			removed = append(removed, base)
		} else if o.Young {
			kept = append(kept, base)
		}
	}
	if w := []string{oldPlain, oldAge}; !slices.Equal(removed, w) {
		t.Errorf("report: orphans removed %v, want %v", removed, w)
	}
	if !slices.Equal(kept, []string{young}) {
		t.Errorf("report: young orphans %v, want [%s]", kept, young)
	}
	if len(rep.Damaged) != 1 || rep.Damaged[0].ID != dm.ID {
		t.Errorf("report: damaged %v, want %s", rep.Damaged, dm.ID)
	}

	// A shorter OrphanAge takes the young one too.
	rep, err = prune.Run(t.Context(), r, retention.Policy{Last: 5}, prune.Options{OrphanAge: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 1 || !rep.Orphans[0].Removed || slices.Contains(objects(t, r), young) {
		t.Errorf("OrphanAge 30m: orphans %+v", rep.Orphans)
	}
}

// TestDamagedManifestNeverRemoved: a manifest that fails its checks stays,
// with its payload, whatever the policy; it does not count for the policy.
func TestDamagedManifestNeverRemoved(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	b1 := writeBackup(t, r, day(1, 0, 0))
	b2 := writeBackup(t, r, day(2, 0, 0))
	b3 := writeBackup(t, r, day(3, 0, 0))
	b4 := writeBackup(t, r, day(4, 0, 0))
	corruptFile(t, snapPath(root, b4.ID+".manifest.json"))
	b0 := writeBackup(t, r, day(0, 12, 0)) // 2025-12-31
	corruptFile(t, snapPath(root, b0.ID+".manifest.json"))

	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(t, r), []string{b4.ID, b3.ID, b0.ID}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if got, want := objects(t, r), objectsOf(b0, b3, b4); !slices.Equal(got, want) {
		t.Errorf("objects left %v, want %v", got, want)
	}
	if got := backupIDs(rep.Doomed()); !slices.Equal(got, []string{b2.ID, b1.ID}) {
		t.Errorf("removed %v", got)
	}
	if len(rep.Damaged) != 2 || rep.Damaged[0].ID != b4.ID || rep.Damaged[1].ID != b0.ID || !errors.Is(rep.Damaged[0].Err, format.ErrIntegrity) {
		t.Errorf("damaged %v, want %s and %s", rep.Damaged, b4.ID, b0.ID)
	}
}

// TestEncrypted: the presence check needs no key; a read-back without a
// matching identity verifies encrypted backups by their stored size and
// sha256, with one completely.
func TestEncrypted(t *testing.T) {
	t.Parallel()
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	rcpt, err := format.ParseRecipient(key.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	rcpts := []format.Recipient{rcpt}

	r, root := localRepo(t)
	writeBackup(t, r, day(1, 0, 0), rcpt)
	b2 := writeBackup(t, r, day(2, 0, 0), rcpt)
	// b3's stored bytes match its manifest, but the manifest's raw sha256
	// does not match what they decrypt to: only full verification sees it.
	b3 := writeBackupWith(t, r, day(3, 0, 0), rcpts, func(m *format.Manifest) {
		m.RawSHA256 = strings.Repeat("0", 64)
	})
	dry := prune.Options{DryRun: true, Now: fixedNow}
	policy := retention.Policy{Last: 1}

	for _, tc := range []struct {
		name       string
		ids        []age.Identity
		readBack   bool
		verified   string
		storedOnly bool
	}{
		{"presence check", []age.Identity{key}, false, b3.ID, false},
		{"no identity", nil, true, b3.ID, true},
		{"other identity", []age.Identity{other}, true, b3.ID, true},
		{"matching identity", []age.Identity{other, key}, true, b2.ID, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := dry
			o.Identities, o.ReadBack = tc.ids, tc.readBack
			rep, err := prune.Run(t.Context(), r, policy, o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Verified != tc.verified || rep.VerifiedStoredOnly != tc.storedOnly {
				t.Errorf("verified %s (stored only %v), want %s (%v)", rep.Verified, rep.VerifiedStoredOnly, tc.verified, tc.storedOnly)
			}
		})
	}

	// Damaged stored bytes fail a read-back even without a key.
	corruptFile(t, snapPath(root, b3.Payload))
	rep, err := prune.Run(t.Context(), r, policy, prune.Options{Now: fixedNow, ReadBack: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != b2.ID || len(rep.VerifyFailed) != 1 || rep.VerifyFailed[0].ID != b3.ID {
		t.Errorf("verified %s, failed %v; want %s verified, %s failed", rep.Verified, rep.VerifyFailed, b2.ID, b3.ID)
	}
	if got, want := ids(t, r), []string{b3.ID, b2.ID}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
}

// TestBadPolicy: an empty or invalid policy is refused before anything.
func TestBadPolicy(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	writeBackup(t, r, day(1, 0, 0))
	writeBackup(t, r, day(2, 0, 0))
	before := digest(t, root)
	if _, err := prune.Run(t.Context(), r, retention.Policy{}, prune.Options{}); !errors.Is(err, retention.ErrEmptyPolicy) {
		t.Errorf("empty policy: %v, want ErrEmptyPolicy", err)
	}
	if _, err := prune.Run(t.Context(), r, retention.Policy{Last: -3}, prune.Options{}); err == nil {
		t.Error("keep-last -3 accepted")
	}
	if digest(t, root) != before {
		t.Error("a refused policy changed the repository")
	}
}

// TestPayloadRemovalFails: the manifest goes first, so a failure leaves an
// orphan payload (never a manifest without payload), which a later run
// removes once it is old enough.
func TestPayloadRemovalFails(t *testing.T) {
	t.Parallel()
	r0, _ := localRepo(t)
	rec := &recorder{Backend: r0.Backend(), failPayload: true}
	r := wrapRepo(t, rec)
	b1 := writeBackup(t, r, day(1, 0, 0))
	b2 := writeBackup(t, r, day(2, 0, 0))
	b3 := writeBackup(t, r, day(3, 0, 0))

	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{Now: fixedNow})
	if !errors.Is(err, errInjected) {
		t.Fatalf("Run = %v, want the injected error", err)
	}
	if got, want := ids(t, r), []string{b3.ID, b2.ID}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v: stop at the first failure, after b1's manifest", got, want)
	}
	if !slices.Contains(objects(t, r), b1.Payload) {
		t.Error("b1's payload is gone although its removal failed")
	}
	if rep == nil || len(rep.Doomed()) != 2 || rep.Doomed()[1].Removed {
		t.Errorf("report after failure: %+v", rep)
	}

	// Next run, with a working backend, an hour and more later.
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	rep, err = prune.Run(t.Context(), r0, retention.Policy{Last: 1}, prune.Options{Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := objects(t, r0), objectsOf(b3); !slices.Equal(got, want) {
		t.Errorf("objects left %v, want %v", got, want)
	}
	if len(rep.Orphans) != 1 || !rep.Orphans[0].Removed || !strings.HasSuffix(rep.Orphans[0].Name, b1.Payload) {
		t.Errorf("orphans %+v, want %s removed", rep.Orphans, b1.Payload)
	}
}

// TestNoBackups: an empty cluster is not an integrity failure; old orphans
// of failed backups still go.
func TestNoBackups(t *testing.T) {
	t.Parallel()
	r, root := localRepo(t)
	id := format.NewID(day(1, 0, 0))
	if err := r.PutPayload(context.Background(), id, false, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(snapPath(root, id+".db.zst"), old, old); err != nil {
		t.Fatal(err)
	}
	rep, err := prune.Run(t.Context(), r, retention.Policy{Last: 1}, prune.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != "" || len(rep.Orphans) != 1 || !rep.Orphans[0].Removed || len(objects(t, r)) != 0 {
		t.Errorf("report %+v, objects %v", rep, objects(t, r))
	}
}
