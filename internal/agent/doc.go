// Package agent is `etcd-backup agent`: a long-running process that takes
// backups on a schedule, serves its state over HTTP and talks to systemd.
//
// # Scheduling
//
// A Schedule (Every: wall-clock multiples of an interval; ParseCron: a cron
// expression) cuts time into slots: [fire time, next fire time). One run
// per slot, started at the slot's start plus a random jitter (capped at
// half a slot). Runs never overlap: the scheduler is one goroutine, and it
// shares a one-slot semaphore with on-demand runs (POST /backup). A run
// that overruns its slot is not followed by a pile of catch-up runs: the
// slot that holds "now" runs at once (late), the slots in between are
// dropped and counted (skipped_total{reason="overrun"}). A failed attempt
// is retried with exponential backoff (RetryBackoff, doubling) at most
// RetryMax times, and only while the retry still starts inside the slot.
//
// # Leader-only
//
// With LeaderOnly, every member runs an agent whose first --endpoints entry
// is its own member (Config.Endpoint). Each attempt of a scheduled run:
//
//  1. asks that member's Status afresh: not the leader: skip (not_leader);
//     no leader known (an election) or no answer: a failed, retried attempt;
//  2. lists the repository: a backup whose ID time falls in the slot
//     exists (any member's, or an on-demand one): skip (slot_taken);
//  3. backup.Run streams from that member, and BeforeUpload checks the
//     status taken right before the stream opened (after a linearizable
//     read): no longer the leader: skip (not_leader), nothing uploaded.
//
// Nothing is written into etcd. The remaining race: a duplicate for a slot
// needs agent A to pass step 3 as leader, then leadership to move to B, and
// B to pass step 2 before A's manifest is published, i.e. a leader change
// during A's upload and after A's check, while B's check in the same slot
// comes later than A's (B's jitter or a retry). Both backups are complete
// and valid; the cost is one extra backup. A missed slot needs the leader
// to change (or die) between the two agents' checks in one slot, or an
// election to last past the slot's retries; the new leader's agent takes
// over from the next slot on. Slots are computed from each machine's wall
// clock: members' clocks must agree to well within a slot (NTP).
//
// # HTTP, metrics, systemd
//
// Handler serves /metrics (the injected registry), /healthz (the newest
// backup in the repository, from any member, is younger than MaxAge; the
// repository is read every Refresh in the background, so a probe never
// waits on storage), /status (JSON) and POST /backup. Run sends READY=1
// once it listens, WATCHDOG=1 every third of the watchdog timeout, STATUS=
// after each run and STOPPING=1 when ctx ends; then a backup in flight has
// Grace to finish before its context is cancelled (backup.Run then aborts
// the upload: nothing is published).
//
// AfterBackup runs after each backup the agent published, holding the run
// semaphore: the place where prune (and, later, restore drills) hook in.
//
// Imports: internal/backup, internal/journal/rollup, internal/journal/store, internal/journal/writer, internal/etcd, internal/format, internal/repo, github.com/prometheus/client_golang
package agent
