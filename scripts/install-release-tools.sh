#!/usr/bin/env bash
# Installs the tools 'make release' (scripts/release.sh) needs into
#   ${ETCD_BACKUP_TOOLS:-<repo>/.cache/tools}
#
#   nfpm   NFPM_VERSION, builds the .deb packages (go install from the Go
#          module proxy; its go.sum pins every dependency)
#
# Idempotent: a binary that reports the pinned module version is kept, so a
# warm run takes well under a second. A cold one downloads and builds nfpm
# (about a minute and a half on 2 cores). scripts/install-test-deps.sh runs
# this too (the release test builds a .deb).
#
# Needs: Go (on PATH or at /usr/local/go/bin) and access to the Go module proxy.
set -euo pipefail

NFPM_VERSION=v2.48.0

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=${ETCD_BACKUP_TOOLS:-$REPO_ROOT/.cache/tools}
mkdir -p "$TOOLS_DIR"
TOOLS_DIR=$(cd "$TOOLS_DIR" && pwd)

log() { printf 'install-release-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		die "go not found on PATH or at /usr/local/go/bin/go"
	fi
fi
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# module_version BIN MODULE: the version of MODULE that BIN was built from.
module_version() {
	[[ -x $1 ]] || return 0
	go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

NFPM_MODULE=github.com/goreleaser/nfpm/v2
if [[ $(module_version "$TOOLS_DIR/nfpm" "$NFPM_MODULE") == "$NFPM_VERSION" ]]; then
	log "nfpm $NFPM_VERSION: up to date"
else
	log "nfpm $NFPM_VERSION: go install"
	GOBIN="$TOOLS_DIR" go install -trimpath "$NFPM_MODULE/cmd/nfpm@$NFPM_VERSION"
	[[ $(module_version "$TOOLS_DIR/nfpm" "$NFPM_MODULE") == "$NFPM_VERSION" ]] ||
		die "nfpm install did not produce $NFPM_VERSION"
fi
echo "release tools in $TOOLS_DIR: nfpm $NFPM_VERSION"
