// Package packaging holds what 'make release' packs besides the binary, and
// the test of the release itself.
//
//	nfpm.yaml        the .deb, built by nfpm (scripts/install-release-tools.sh)
//	deb/postinst     daemon-reload (and an agent that runs restarts on upgrade); nothing is enabled or started
//	deb/prerm        on removal: stop the timer, the agent and a snapshot in flight
//	deb/postrm       drop the enablement links of the package's units (etcd-join's on removal,
//	                 since etcd requires it; all on purge); on purge /etc/etcd-backup once empty
//	deb/copyright    /usr/share/doc/etcd-backup/copyright
//
// scripts/release.sh builds dist/: for linux/amd64 and linux/arm64 a
// tarball (binary, README.md, LICENSE, docs/, man pages and completions from
// 'etcd-backup gen-docs', the units of 'etcd-backup systemd --package',
// deploy/prometheus and deploy/grafana) and a .deb, plus SHA256SUMS.
//
// The test (release_test.go) builds the release for this machine's
// architecture, checks the tarball's contents, then installs the .deb on
// this machine with dpkg, checks every file, runs the binary, man and
// systemd-analyze verify on what was installed, removes the package (the
// configuration stays) and purges it (nothing stays). It needs root, dpkg,
// man and systemd-analyze, and fails without them: it never skips.
//
// Imports: none
package packaging
