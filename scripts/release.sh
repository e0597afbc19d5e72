#!/usr/bin/env bash
# Builds the release into $DIST (default <repo>/dist), for each arch in $ARCHES
# (default "amd64 arm64"):
#
#   etcd-backup_<version>_linux_<arch>.tar.gz   etcd-backup_<version>_linux_<arch>/ holding
#       etcd-backup                static (CGO_ENABLED=0, -trimpath)
#       README.md LICENSE docs/
#       man/man1/*.1               'etcd-backup gen-docs': a page per command
#       completions/               etcd-backup.bash, _etcd-backup (zsh), etcd-backup.fish
#       systemd/                   'etcd-backup systemd --package': lib/systemd/system/...
#                                  and etc/etcd-backup/etcd-backup.env, laid out as under /
#       deploy/prometheus/ deploy/grafana/   when the repository has them
#   etcd-backup_<debversion>_<arch>.deb         the same, installed like a package (nfpm,
#                                               packaging/nfpm.yaml)
#   SHA256SUMS                                   of the files above
#
# <version> is $VERSION (default: git describe --tags --always --dirty, as the
# Makefile computes it) without a leading v; it is also what 'etcd-backup
# version' prints. <debversion> is deb_version $VERSION: v1.2.3 -> 1.2.3,
# v1.2.3-rc.1 -> 1.2.3~rc.1, v1.2.3-4-gabc1234 -> 1.2.3+git4.abc1234,
# 176c939 -> 0.0.0~git176c939; -dirty adds +dirty (or .dirty).
#
# Reproducible: file times are $SOURCE_DATE_EPOCH (default: the last
# commit's time), owners root, order sorted, gzip without names or times.
#
# Needs: Go, GNU tar, gzip, sha256sum, and nfpm at $NFPM (default
# .cache/tools/nfpm: scripts/install-release-tools.sh; 'make release' runs it).
# Sourcing this file only defines its functions (the tests use deb_version).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE=github.com/etcd-backup/etcd-backup

log() { printf 'release: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# deb_version VERSION: a Debian version (it must start with a digit) that
# sorts like the git versions do.
deb_version() {
	local v=${1#v} dirty="" out
	if [[ $v == *-dirty ]]; then
		dirty=1
		v=${v%-dirty}
	fi
	local semver='([0-9]+\.[0-9]+\.[0-9]+)(-([0-9A-Za-z.]+))?'
	if [[ $v =~ ^${semver}-([0-9]+)-g([0-9a-f]+)$ ]]; then
		# N commits after a tag: after the tag, before the next one.
		out=${BASH_REMATCH[1]}${BASH_REMATCH[3]:+~${BASH_REMATCH[3]}}+git${BASH_REMATCH[4]}.${BASH_REMATCH[5]}
	elif [[ $v =~ ^${semver}$ ]]; then
		# A pre-release sorts before its release: 1.2.3~rc.1 < 1.2.3.
		out=${BASH_REMATCH[1]}${BASH_REMATCH[3]:+~${BASH_REMATCH[3]}}
	elif [[ $v =~ ^[0-9a-f]{4,40}$ ]]; then
		# No tag yet: a bare commit.
		out=0.0.0~git$v
	else
		# Anything else (dev, a tag like v1.2): only the characters Debian
		# allows in a version without a revision, after a digit.
		out=$(printf '%s' "$v" | tr -c 'A-Za-z0-9.+~' '.')
		[[ $out =~ ^[0-9] ]] || out=0.0.0~$out
	fi
	if [[ -n $dirty ]]; then
		if [[ $out == *+* ]]; then out+=.dirty; else out+=+dirty; fi
	fi
	printf '%s\n' "$out"
}

# deploy_dirs ROOT: the directories of ROOT/deploy that ship (printed on
# one line): deploy/prometheus and deploy/grafana, when there. Once one is
# there, its main file must be too: fails otherwise.
deploy_dirs() {
	local d main out=()
	for d in prometheus:etcd-backup-rules.yml grafana:etcd-backup.json; do
		main=deploy/${d%%:*}/${d#*:}
		[[ -d $1/deploy/${d%%:*} ]] || continue
		if [[ ! -f $1/$main ]]; then
			log "ERROR: deploy/${d%%:*}/ exists but $main does not: the release ships it (the name is in scripts/release.sh)"
			return 1
		fi
		out+=("deploy/${d%%:*}")
	done
	printf '%s\n' "${out[*]}"
}

# ---------------------------------------------------------------- main
main() {
	cd "$REPO_ROOT"
	if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	local version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
	local arches=${ARCHES:-amd64 arm64}
	local dist=${DIST:-$REPO_ROOT/dist}
	local nfpm=${NFPM:-$REPO_ROOT/.cache/tools/nfpm}
	local maintainer=${DEB_MAINTAINER:-The etcd-backup Authors <maintainers@etcd-backup.invalid>}
	export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
	local fileversion=${version#v} debversion
	debversion=$(deb_version "$version")
	[[ $fileversion =~ ^[A-Za-z0-9._+~-]+$ ]] || die "VERSION '$version' has characters that do not belong in a file name"
	[[ -x $nfpm ]] || die "nfpm not found at $nfpm: run scripts/install-release-tools.sh (make release and make test do)"

	# What ships besides the binary.
	local f
	for f in README.md LICENSE docs packaging/deb/copyright; do
		[[ -e $f ]] || die "$f is missing"
	done
	local deploy=() d
	d=$(deploy_dirs .) || exit 1
	read -r -a deploy <<<"$d"

	work=$(mktemp -d "${TMPDIR:-/tmp}/etcd-backup-release.XXXXXX") # global: the trap runs after main
	trap 'rm -rf "$work"' EXIT
	# The generated files are the same for every architecture: made once,
	# by a binary that runs here, in an empty environment (no ETCD_BACKUP_*
	# from this shell, no $HOME) so that they do not depend on who builds.
	local ldflags="-s -w -X $MODULE/internal/version.Version=$version"
	local arch
	for arch in $arches; do
		log "building linux/$arch"
		mkdir -p "$work/bin/$arch"
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" \
			-o "$work/bin/$arch/etcd-backup" ./cmd/etcd-backup
	done
	local host="$work/bin/$(go env GOHOSTARCH)/etcd-backup"
	if [[ $(go env GOHOSTOS) != linux || ! -x $host ]]; then
		log "building etcd-backup for this machine (to generate docs and units)"
		host="$work/bin/host/etcd-backup"
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$host" ./cmd/etcd-backup
	fi
	local gen="$work/gen"
	run_clean() { env -i PATH=/usr/bin:/bin SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@" >/dev/null; }
	run_clean "$host" gen-docs --out "$gen" || die "etcd-backup gen-docs failed"
	run_clean "$host" systemd --package --out "$gen/systemd" || die "etcd-backup systemd --package failed"

	mkdir -p "$dist"
	rm -f "$dist"/etcd-backup_*.tar.gz "$dist"/etcd-backup_*.deb "$dist/SHA256SUMS"
	local artifacts=()
	for arch in $arches; do
		# ---- tarball
		local name="etcd-backup_${fileversion}_linux_${arch}"
		local t="$work/tar/$name"
		mkdir -p "$t"
		install -m 0755 "$work/bin/$arch/etcd-backup" "$t/etcd-backup"
		install -m 0644 README.md LICENSE "$t/"
		copy_tree docs "$t/docs"
		copy_tree "$gen/man" "$t/man"
		copy_tree "$gen/completions" "$t/completions"
		for d in "${deploy[@]}"; do copy_tree "$d" "$t/$d"; done
		cp -r "$gen/systemd" "$t/systemd"
		normalize_modes "$t" "$t/systemd/etc/etcd-backup/etcd-backup.env"
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
			-C "$work/tar" -cf - "$name" | gzip -9n >"$dist/$name.tar.gz"
		artifacts+=("$name.tar.gz")

		# ---- .deb: stage the root it installs
		local r="$work/deb/$arch"
		install -D -m 0755 "$work/bin/$arch/etcd-backup" "$r/usr/bin/etcd-backup"
		local page
		mkdir -p "$r/usr/share/man/man1"
		for page in "$gen"/man/man1/*.1; do
			gzip -9n <"$page" >"$r/usr/share/man/man1/$(basename "$page").gz"
		done
		install -D -m 0644 "$gen/completions/etcd-backup.bash" "$r/usr/share/bash-completion/completions/etcd-backup"
		install -D -m 0644 "$gen/completions/_etcd-backup" "$r/usr/share/zsh/vendor-completions/_etcd-backup"
		install -D -m 0644 "$gen/completions/etcd-backup.fish" "$r/usr/share/fish/vendor_completions.d/etcd-backup.fish"
		local doc="$r/usr/share/doc/etcd-backup"
		install -D -m 0644 README.md "$doc/README.md"
		install -m 0644 packaging/deb/copyright "$doc/copyright"
		copy_tree docs "$doc/docs"
		for d in "${deploy[@]}"; do copy_tree "$d" "$doc/examples/${d#deploy/}"; done
		cp -r "$gen/systemd/lib" "$r/lib"
		install -D -m 0600 "$gen/systemd/etc/etcd-backup/etcd-backup.env" "$r/etc/etcd-backup/etcd-backup.env"
		normalize_modes "$r" "$r/etc/etcd-backup/etcd-backup.env"
		find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} + # nfpm takes the files' times
		local deb="etcd-backup_${debversion}_${arch}.deb"
		log "packaging $deb"
		STAGE=$r DEB_VERSION=$debversion DEB_ARCH=$arch DEB_MAINTAINER=$maintainer \
			"$nfpm" package --config packaging/nfpm.yaml --packager deb --target "$dist/$deb" >/dev/null ||
			die "nfpm failed for $arch"
		artifacts+=("$deb")
	done
	(cd "$dist" && sha256sum "${artifacts[@]}" >SHA256SUMS)
	log "version $version (deb $debversion), in $dist:"
	(cd "$dist" && ls -l "${artifacts[@]}" SHA256SUMS) >&2
}

# copy_tree SRC DST: SRC's files (no Go files: tests of the manifests).
copy_tree() {
	mkdir -p "$2"
	tar -C "$1" --exclude='*.go' -cf - . | tar -C "$2" -xf - --no-same-owner
}

# normalize_modes DIR SECRET: whatever the umask, directories 0755, files
# 0644 (0755 when executable), and SECRET 0600.
normalize_modes() {
	chmod -R u=rwX,go=rX "$1"
	chmod 0600 "$2"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
