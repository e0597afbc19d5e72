// Package systemd renders the systemd units that run etcd-backup on a
// member (or backup host) and writes them to a file system root. It knows
// nothing about flags or cobra: the command (cmd/etcd-backup/cmd_systemd.go)
// turns flags into a Config, Render turns a Config into Files, Write puts
// them under a root ("/" for install, a staging directory for --out).
//
// # Files
//
// Paths are relative to the root, so one rendering can be reviewed in a
// directory, packed with tar, or written straight to "/":
//
//	etc/systemd/system/etcd-backup.service        oneshot: etcd-backup snapshot
//	etc/systemd/system/etcd-backup.timer          starts it every --interval
//	etc/systemd/system/etcd-backup-agent.service  Type=notify: etcd-backup agent (alternative to the timer)
//	etc/systemd/system/etcd-restore.service       oneshot, started by hand: etcd-backup restore latest
//	etc/systemd/system/etcd-join.service          oneshot before etcd: etcd-backup join --env-file ...
//	etc/systemd/system/<each of the 4 services>.d/30-etcd-backup.conf   Environment=ETCD_BACKUP_...
//	etc/systemd/system/etcd.service.d/30-etcd-backup.conf              EnvironmentFile=-/run/etcd-backup/etcd-join.env
//	etc/etcd-backup/secrets.env                   (0600) only when there are secrets
//	etc/etcd-backup/etcd-backup.env               (0600) only with Config.Package, which puts the units in lib/systemd/system
//
// # The package's units
//
// With Config.Package ('etcd-backup systemd --package') the same units are
// rendered for the .deb, before any setting is known: under
// lib/systemd/system/, running /usr/bin/etcd-backup, and each service's
// 30-etcd-backup.conf holds EnvironmentFile=-/etc/etcd-backup/etcd-backup.env
// instead of Environment= lines. That file is rendered too, as a commented
// template (0600): the administrator's one place for settings and secrets.
// What the hardening needs to know in advance is fixed instead: a local
// repository goes under /var/lib/etcd-backup (StateDirectory=), the data
// dir under /var/lib (restore and join may write there), and join checks
// $ETCD_BACKUP_DATA_DIR/member itself (a shell test in ExecStart=, since
// ConditionPathExists= cannot read the environment). Files written by
// 'etcd-backup systemd install' to /etc/systemd/system take precedence over
// the package's (same names), so one machine can move from one to the other.
//
// # Settings: one drop-in, copied into each service
//
// Every setting given to 'etcd-backup systemd' becomes an
// Environment=ETCD_BACKUP_<FLAG>= line in 30-etcd-backup.conf, and the same
// file is written into the drop-in directory of each of the four etcd-backup
// services. Each command reads only the variables of its own flags, so one
// file serves all of them. Per-unit drop-ins are what systemd expects
// ('systemctl cat' shows everything, 'systemctl edit' overrides one unit
// with a later drop-in), they work on every systemd version (prefix
// drop-ins such as etcd-.service.d/ need v246 and would also hit foreign
// units), and the copies are generated, so they cannot drift unless edited.
//
// # Secrets
//
// Environment= values are readable by every local user ('systemctl show
// -p Environment'), whatever the mode of the file they come from. So
// secrets (--password, a --user with name:password, every --env KEY=VALUE,
// e.g. AWS_SECRET_ACCESS_KEY) go to /etc/etcd-backup/secrets.env, mode
// 0600, referenced with EnvironmentFile= (read by PID 1 at start, never
// exported over D-Bus). Values there are double-quoted with \ " ` $
// escaped: systemd parses that exactly like a POSIX shell, so the file can
// also be sourced by sh. Every file holding a secret is 0600, all others
// 0644.
//
// # Triggers
//
//   - etcd-backup.timer (WantedBy=timers.target) starts etcd-backup.service
//     OnBootSec= and OnUnitActiveSec= --interval, AccuracySec=1s. It
//     Conflicts= with etcd-backup-agent.service: enable one or the other.
//   - etcd-backup-agent.service (WantedBy=multi-user.target): Restart=always,
//     WatchdogSec=, never gives up (StartLimitIntervalSec=0).
//   - etcd-restore.service has no [Install] section: it is never started by
//     the system, only by 'systemctl start etcd-restore' during disaster
//     recovery, after 'systemctl stop etcd' (restore refuses a data dir that
//     a running etcd holds). Before=etcd.service orders
//     'systemctl start etcd-restore etcd' correctly.
//   - etcd-join.service: RequiredBy=etcd.service once enabled
//     ('systemctl enable etcd-join' on a node that should join), Before=
//     etcd, RemainAfterExit=yes. If join fails etcd is not started, so a new
//     node never forms a cluster of its own. With a known --data-dir it has
//     ConditionPathExists=!<data-dir>/member: once the member has data,
//     join is skipped (a skipped unit does not fail etcd), so a cold boot
//     of the whole cluster does not wait for a cluster that is not there.
//     It writes /run/etcd-backup/etcd-join.env (RuntimeDirectory=,
//     preserved), which the etcd.service drop-in loads with
//     EnvironmentFile=- (optional: absent on every later boot).
//
// # Hardening
//
// The services run as root (they read etcd's client key and build its data
// dir) with NoNewPrivileges, ProtectSystem=strict, ProtectHome,
// PrivateTmp, PrivateDevices, kernel/cgroup/clock/hostname protection,
// RestrictNamespaces, RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6,
// MemoryDenyWriteExecute and UMask=0077. Writable paths: a local
// repository directory (snapshot, agent; created by ExecStartPre=+mkdir,
// since a missing ReadWritePaths= entry fails the unit), and the parent of
// the data dir (restore and join build the new data dir beside the old one
// and rename). ProtectHome=read-only instead of yes when a configured path
// is under /home, /root or /run/user, and no PrivateTmp when one is under
// /tmp or /var/tmp, so hardening never hides a file the service needs.
//
// Imports: internal/fsutil
package systemd
