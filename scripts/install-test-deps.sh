#!/usr/bin/env bash
# Installs every external binary the etcd-backup test suite needs into
#   ${ETCD_BACKUP_TEST_BIN:-<repo>/.cache/test-bin}
#
#   etcd-X / etcdctl-X / etcdutl-X  for X in ETCD_VERSIONS, built from the
#                                    tools/etcd/vX modules (see tools/README.md)
#   versitygw                        S3 gateway (go install)
#   minio                            MinIO server, the second S3 server (go install)
#   fake-gcs-server                  Google Cloud Storage emulator (go install)
#   promtool                         Prometheus's rule checker (go install), for deploy/prometheus
#   etcd-3.4, etcdctl-3.4            symlinks to Debian's etcd-server/etcd-client
#   rclone                           symlink to Debian's rclone
#   azurite-blob                     symlink to Azurite's Blob emulator, installed with
#                                    npm into ${ETCD_BACKUP_AZURITE_DIR:-<BIN_DIR>/../azurite}
#
# and, through scripts/install-release-tools.sh, nfpm into .cache/tools (the
# release test builds a .deb).
#
# Idempotent: binaries that already exist with the right version (and were
# built from the same tools module contents with the same Go) are kept, and
# apt is not touched when the Debian packages are already installed, so a
# warm run takes well under a second.
#
# Needs: Go (on PATH or at /usr/local/go/bin), access to the Go module proxy,
# Node.js 20 or later with npm and access to the npm registry (Azurite), and
# apt (as root, or via sudo) for the Debian packages.
set -euo pipefail

ETCD_VERSIONS=(3.5.35 3.6.16 3.7.3)
VERSITYGW_VERSION=v1.8.0
# MinIO tags its releases RELEASE.<date>, which Go does not take as module
# versions: this is the pseudo-version "go install github.com/minio/minio@latest"
# resolved to (the commit of 2026-02-12). Keep in step with
# internal/testenv.MinIOVersion.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
FAKE_GCS_VERSION=v1.56.1
# Prometheus's Go module is tagged v0.3XX.Y for Prometheus 3.XX.Y.
PROMTOOL_MODULE_VERSION=v0.316.0
PROMTOOL_VERSION=3.16.0
AZURITE_VERSION=3.37.0
APT_PACKAGES=(etcd-server rclone)
APT_OPTIONAL_PACKAGES=(etcd-client)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${ETCD_BACKUP_TEST_BIN:-$REPO_ROOT/.cache/test-bin}
mkdir -p "$BIN_DIR"
BIN_DIR=$(cd "$BIN_DIR" && pwd)

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- Go setup
if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		die "go not found on PATH or at /usr/local/go/bin/go"
	fi
fi
# A reproducible, self-contained Go environment for the builds below: no
# go.work (the tools modules are standalone), static binaries, and no
# inherited GOFLAGS (e.g. -mod=mod would let a build rewrite go.mod/go.sum).
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false
GO_VERSION=$(go env GOVERSION)

# stamp_of DIR: fingerprint of a tools module's inputs plus the Go version.
stamp_of() {
	(cd "$1" && cat go.mod go.sum ./*.go && echo "$GO_VERSION") | sha256sum | cut -d' ' -f1
}

# first_line CMD...: first line of CMD's stdout (empty on failure).
first_line() { { "$@" 2>/dev/null || true; } | head -n1; }

# etcd_bin_version KIND PATH: the version the binary reports, e.g. 3.6.16.
etcd_bin_version() {
	local kind=$1 bin=$2 line
	[[ -x $bin ]] || return 0
	case $kind in
	etcd) line=$(first_line "$bin" --version) ;;    # etcd Version: 3.6.16
	*) line=$(first_line "$bin" version) ;;         # etcdctl version: 3.6.16
	esac
	printf '%s\n' "${line##*: }"
}

# ---------------------------------------------------------------- etcd 3.5+
build_etcd() {
	local v=$1 mod="$REPO_ROOT/tools/etcd/v$1"
	[[ -f $mod/go.mod ]] || die "missing tools module $mod"
	local stamp stampfile="$BIN_DIR/.etcd-$v.stamp" uptodate=1 kind
	stamp=$(stamp_of "$mod")
	[[ -f $stampfile && $(cat "$stampfile") == "$stamp" ]] || uptodate=0
	for kind in etcd etcdctl etcdutl; do
		[[ $(etcd_bin_version "$kind" "$BIN_DIR/$kind-$v") == "$v" ]] || uptodate=0
	done
	if ((uptodate)); then
		log "etcd $v: up to date"
		return
	fi

	log "etcd $v: building from tools/etcd/v$v"
	local tmp
	rm -rf "$BIN_DIR/.build-$v".* # leftovers of an interrupted run
	tmp=$(mktemp -d "$BIN_DIR/.build-$v.XXXXXX")
	(
		cd "$mod"
		go build -trimpath -mod=readonly -o "$tmp/etcd" .
		go build -trimpath -mod=readonly -o "$tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3
		go build -trimpath -mod=readonly -o "$tmp/etcdutl" go.etcd.io/etcd/etcdutl/v3
	)
	for kind in etcd etcdctl etcdutl; do
		local got
		got=$(etcd_bin_version "$kind" "$tmp/$kind")
		[[ $got == "$v" ]] || die "built $kind reports version '$got', want $v"
		mv -f "$tmp/$kind" "$BIN_DIR/$kind-$v"
	done
	rmdir "$tmp"
	printf '%s\n' "$stamp" >"$stampfile"
}

for v in "${ETCD_VERSIONS[@]}"; do
	build_etcd "$v"
done

# ---------------------------------------------------------------- versitygw
versitygw_module_version() {
	# "go version -m" reads the build info embedded in the binary:
	#   <tab>mod<tab>github.com/versity/versitygw<tab>v1.8.0<tab>h1:...
	[[ -x $BIN_DIR/versitygw ]] || return 0
	go version -m "$BIN_DIR/versitygw" 2>/dev/null |
		awk '$1 == "mod" && $2 == "github.com/versity/versitygw" { print $3 }'
}
if [[ $(versitygw_module_version) == "$VERSITYGW_VERSION" ]]; then
	log "versitygw $VERSITYGW_VERSION: up to date"
else
	log "versitygw $VERSITYGW_VERSION: go install"
	GOBIN="$BIN_DIR" go install -trimpath \
		-ldflags "-X main.Version=$VERSITYGW_VERSION" \
		"github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
	[[ $(versitygw_module_version) == "$VERSITYGW_VERSION" ]] ||
		die "versitygw install did not produce $VERSITYGW_VERSION"
fi

# ---------------------------------------------------------------- minio
minio_module_version() {
	#   <tab>mod<tab>github.com/minio/minio<tab>v0.0.0-2026...<tab>h1:...
	[[ -x $BIN_DIR/minio ]] || return 0
	go version -m "$BIN_DIR/minio" 2>/dev/null |
		awk '$1 == "mod" && $2 == "github.com/minio/minio" { print $3 }'
}
# The longest build of this script: it runs in the background while the
# ones below build (their module downloads and links overlap with it), and
# the script waits for it before the summary.
install_minio() {
	if [[ $(minio_module_version) == "$MINIO_VERSION" ]]; then
		log "minio $MINIO_VERSION: up to date"
		return 0
	fi
	# A cold build (module downloads included) took 16.5 minutes of wall
	# time on a 2-core machine shared with other builds (395 s of CPU,
	# 1.5 GiB resident): some 4-6 minutes on 2 idle cores. The binary is
	# 150 MB.
	log "minio $MINIO_VERSION: go install (a cold build takes minutes; in the background)"
	GOBIN="$BIN_DIR" go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
	[[ $(minio_module_version) == "$MINIO_VERSION" ]] ||
		die "minio install did not produce $MINIO_VERSION"
}
install_minio &
minio_pid=$!
# ---------------------------------------------------------------- fake-gcs-server
fake_gcs_module_version() {
	#   <tab>mod<tab>github.com/fsouza/fake-gcs-server<tab>v1.56.1<tab>h1:...
	[[ -x $BIN_DIR/fake-gcs-server ]] || return 0
	go version -m "$BIN_DIR/fake-gcs-server" 2>/dev/null |
		awk '$1 == "mod" && $2 == "github.com/fsouza/fake-gcs-server" { print $3 }'
}
if [[ $(fake_gcs_module_version) == "$FAKE_GCS_VERSION" ]]; then
	log "fake-gcs-server $FAKE_GCS_VERSION: up to date"
else
	# A cold build (downloads included) takes about 90 s of CPU.
	log "fake-gcs-server $FAKE_GCS_VERSION: go install"
	GOBIN="$BIN_DIR" go install -trimpath \
		"github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
	[[ $(fake_gcs_module_version) == "$FAKE_GCS_VERSION" ]] ||
		die "fake-gcs-server install did not produce $FAKE_GCS_VERSION"
fi

# ---------------------------------------------------------------- promtool
promtool_module_version() {
	#   <tab>mod<tab>github.com/prometheus/prometheus<tab>v0.316.0<tab>h1:...
	[[ -x $BIN_DIR/promtool ]] || return 0
	go version -m "$BIN_DIR/promtool" 2>/dev/null |
		awk '$1 == "mod" && $2 == "github.com/prometheus/prometheus" { print $3 }'
}
if [[ $(promtool_module_version) == "$PROMTOOL_MODULE_VERSION" ]]; then
	log "promtool $PROMTOOL_VERSION: up to date"
else
	# remove_all_sd leaves out the service-discovery plugins (AWS, Azure,
	# GCE, ...), which 'check rules' and 'test rules' never use: a cold
	# build (downloads included) takes about 280 s of CPU instead of 740,
	# some 5 minutes on 2 cores.
	log "promtool $PROMTOOL_VERSION: go install (a cold build takes minutes)"
	GOBIN="$BIN_DIR" go install -trimpath -tags remove_all_sd \
		-ldflags "-X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
		"github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_MODULE_VERSION"
	[[ $(promtool_module_version) == "$PROMTOOL_MODULE_VERSION" ]] ||
		die "promtool install did not produce $PROMTOOL_MODULE_VERSION"
fi

# ---------------------------------------------------------------- Azurite
# Azure Blob Storage emulator for the azblob backend's tests. npm installs it
# (with the exact dependency versions of its own lock file) into a directory
# of its own; a version stamp written after a complete install keeps warm runs
# from touching the network.
AZURITE_DIR=${ETCD_BACKUP_AZURITE_DIR:-$(dirname "$BIN_DIR")/azurite}
azurite_stamp="$AZURITE_DIR/.installed-version"
if [[ -f $azurite_stamp && $(cat "$azurite_stamp") == "$AZURITE_VERSION" &&
	-x $AZURITE_DIR/node_modules/.bin/azurite-blob ]]; then
	log "azurite $AZURITE_VERSION: up to date"
else
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
		die "node and npm are needed for Azurite (Debian: apt-get install nodejs npm)"
	node_major=$(node -p 'process.versions.node.split(".")[0]')
	((node_major >= 20)) || die "Azurite $AZURITE_VERSION needs Node.js 20 or later, found $(node --version)"
	log "azurite $AZURITE_VERSION: npm install into $AZURITE_DIR"
	mkdir -p "$AZURITE_DIR"
	rm -f "$azurite_stamp"
	[[ -f $AZURITE_DIR/package.json ]] || printf '{"private": true}\n' >"$AZURITE_DIR/package.json"
	npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --omit=dev --save-exact \
		--loglevel=error "azurite@$AZURITE_VERSION" >&2
	got=$(node -p "require('$AZURITE_DIR/node_modules/azurite/package.json').version")
	[[ $got == "$AZURITE_VERSION" ]] || die "npm installed azurite $got, want $AZURITE_VERSION"
	printf '%s\n' "$AZURITE_VERSION" >"$azurite_stamp"
fi
AZURITE_DIR=$(cd "$AZURITE_DIR" && pwd)

# ---------------------------------------------------------------- Debian packages
pkg_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}
pkg_available() {
	# Has a real installation candidate in the current package lists.
	local c
	c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')
	[[ -n $c && $c != "(none)" ]]
}

apt_missing=()
for p in "${APT_PACKAGES[@]}"; do
	pkg_installed "$p" || apt_missing+=("$p")
done

if ((${#apt_missing[@]})); then
	SUDO=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${apt_missing[*]}"
		SUDO=(sudo)
	fi

	# Keep maintainer scripts from starting services (Debian's etcd-server
	# would start an etcd on 127.0.0.1:2379): policy-rc.d exiting 101 makes
	# invoke-rc.d / deb-systemd-invoke refuse every start.
	POLICY=/usr/sbin/policy-rc.d
	POLICY_BACKUP=""
	if [[ -e $POLICY ]]; then
		POLICY_BACKUP="$POLICY.etcd-backup-saved"
		"${SUDO[@]}" mv -f "$POLICY" "$POLICY_BACKUP"
	fi
	restore_policy() {
		"${SUDO[@]}" rm -f "$POLICY"
		if [[ -n $POLICY_BACKUP ]]; then "${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY"; fi
	}
	trap restore_policy EXIT
	printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 755 "$POLICY"

	apt_install() {
		local pkgs=("${apt_missing[@]}") p
		for p in "${APT_OPTIONAL_PACKAGES[@]}"; do
			if ! pkg_installed "$p" && pkg_available "$p"; then pkgs+=("$p"); fi
		done
		log "apt-get install ${pkgs[*]}"
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends "${pkgs[@]}"
	}
	if ! apt_install; then
		log "apt-get install failed; running apt-get update and retrying"
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
		apt_install
	fi

	restore_policy
	trap - EXIT

	# Leave no etcd service enabled or running (policy-rc.d prevented the
	# start; the package still enables the unit / init script for boot).
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
		"${SUDO[@]}" systemctl disable --now etcd.service >/dev/null 2>&1 || true
	else
		if command -v deb-systemd-helper >/dev/null 2>&1; then
			"${SUDO[@]}" deb-systemd-helper disable etcd.service >/dev/null 2>&1 || true
		fi
		if [[ -x /etc/init.d/etcd ]]; then
			"${SUDO[@]}" /etc/init.d/etcd stop >/dev/null 2>&1 || true
			"${SUDO[@]}" update-rc.d etcd disable >/dev/null 2>&1 || true
		fi
	fi
fi

# Debian's etcd 3.4 and rclone, under the same names as everything else.
link() { # link TARGET NAME
	if [[ -x $1 ]]; then
		[[ $(readlink "$BIN_DIR/$2" 2>/dev/null || true) == "$1" ]] || ln -sfn "$1" "$BIN_DIR/$2"
	else
		rm -f "$BIN_DIR/$2"
	fi
}
link /usr/bin/etcd etcd-3.4
link /usr/bin/etcdctl etcdctl-3.4
link /usr/bin/rclone rclone
link "$AZURITE_DIR/node_modules/.bin/azurite-blob" azurite-blob
[[ -x $BIN_DIR/azurite-blob ]] || die "azurite-blob not found in $AZURITE_DIR/node_modules/.bin"
[[ -x $BIN_DIR/etcd-3.4 ]] || die "Debian etcd-server did not provide /usr/bin/etcd"
[[ -x $BIN_DIR/rclone ]] || die "rclone not found at /usr/bin/rclone"

# ---------------------------------------------------------------- release tools
# nfpm, which the release test (packaging/) builds a .deb with.
"$REPO_ROOT/scripts/install-release-tools.sh"

wait "$minio_pid" || die "minio install failed (see above)"

# ---------------------------------------------------------------- summary
report() { # report NAME LINE
	printf '%-16s %s\n' "$1" "$2"
}
echo "test binaries in $BIN_DIR:"
for v in "${ETCD_VERSIONS[@]}"; do
	report "etcd-$v" "$(first_line "$BIN_DIR/etcd-$v" --version)"
	report "etcdctl-$v" "$(first_line "$BIN_DIR/etcdctl-$v" version)"
	report "etcdutl-$v" "$(first_line "$BIN_DIR/etcdutl-$v" version)"
done
report etcd-3.4 "$(first_line "$BIN_DIR/etcd-3.4" --version)"
if [[ -e $BIN_DIR/etcdctl-3.4 ]]; then
	report etcdctl-3.4 "$(first_line "$BIN_DIR/etcdctl-3.4" version)"
fi
report versitygw "versitygw $(versitygw_module_version)"
report minio "minio $(minio_module_version)"
report fake-gcs-server "fake-gcs-server $(fake_gcs_module_version)"
report promtool "$(first_line "$BIN_DIR/promtool" --version)"
report rclone "$(first_line "$BIN_DIR/rclone" version)"
# (from the stamp: starting Node to ask azurite-blob takes seconds)
report azurite-blob "azurite $(cat "$azurite_stamp")"
