# etcd-backup: build, test, bench.
#   make build   static binary in bin/etcd-backup
#   make release dist/: for linux/amd64 and linux/arm64 (ARCHES) etcd-backup_<version>_linux_<arch>.tar.gz and
#                etcd-backup_<debversion>_<arch>.deb (nfpm), plus SHA256SUMS (scripts/release.sh)
#   make test    install test dependencies (etcd binaries, S3 test server, rclone) and run every test
#   make bench   measure backup/restore (file:// and s3://) against etcdctl/etcdutl, then one 8 GiB database, and write BENCHMARKS.md
#                (about 45 min on 2 CPUs; the 8 GiB database needs 36 GiB free in $TMPDIR; go run ./bench -large 0 skips it)
#   make bench-journal  measure the continuous journal (RPO, agent cost, put latency, replay, and 1 h/24 h chains at scale) into BENCHMARKS.md
#   make bench-faults   measure snapshot/restore through S3 faults (503s, cut bodies) and the agent's storage reads per cycle into BENCHMARKS.md
#   make image   container image without a Docker engine: OCI tar dist/etcd-backup-oci-<arch>.tar (ARCH=amd64 by default, ARCH=arm64)
#   make image-multiarch  one OCI tar with a multi-arch index: dist/etcd-backup-oci.tar (ARCHES="amd64 arm64")

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/etcd-backup/etcd-backup/internal/version.Version=$(VERSION)
TEST_BIN  ?= $(CURDIR)/.cache/test-bin
export ETCD_BACKUP_TEST_BIN := $(TEST_BIN)
# Images: fixed timestamps (the last commit's), so the same commit gives the same bytes.
ARCH      ?= amd64
ARCHES    ?= amd64 arm64
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: build release release-tools test test-deps vet bench bench-journal bench-faults image image-multiarch clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/etcd-backup ./cmd/etcd-backup

# tools/ociimage: FROM scratch + CA certificates, tzdata, nonroot user; the
# Dockerfile's image, loadable by podman/docker load and skopeo (docs/kubernetes.md).
image:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux-$(ARCH)/etcd-backup ./cmd/etcd-backup
	$(GO) run ./tools/ociimage -o dist/etcd-backup-oci-$(ARCH).tar -version '$(VERSION)' -created '$(SOURCE_DATE_EPOCH)' -binary $(ARCH)=bin/linux-$(ARCH)/etcd-backup

image-multiarch:
	for a in $(ARCHES); do CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux-$$a/etcd-backup ./cmd/etcd-backup || exit 1; done
	$(GO) run ./tools/ociimage -o dist/etcd-backup-oci.tar -version '$(VERSION)' -created '$(SOURCE_DATE_EPOCH)' $(foreach a,$(ARCHES),-binary $(a)=bin/linux-$(a)/etcd-backup)

# Binaries, man pages, completions, systemd units, docs; the packaging is in packaging/.
release: release-tools
	VERSION='$(VERSION)' ARCHES='$(ARCHES)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' ./scripts/release.sh

release-tools:
	./scripts/install-release-tools.sh

test-deps:
	./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

test: test-deps vet
	$(GO) test -count=1 -timeout 30m ./...

bench: build test-deps
	$(GO) run ./bench -out BENCHMARKS.md

bench-journal: test-deps
	$(GO) run ./bench/journal -out BENCHMARKS.md

bench-faults: test-deps
	$(GO) run ./bench/faults -out BENCHMARKS.md

clean:
	rm -rf bin dist
