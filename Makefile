# etcd-backup: build, test, bench.
#   make build   static binary in bin/etcd-backup
#   make test    install test dependencies (etcd binaries, S3 test server, rclone) and run every test
#   make bench   measure backup/restore against etcdctl/etcdutl and write BENCHMARKS.md
#   make bench-journal  measure the continuous journal (RPO, agent cost, put latency, replay) into BENCHMARKS.md

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/etcd-backup/etcd-backup/internal/version.Version=$(VERSION)
TEST_BIN  ?= $(CURDIR)/.cache/test-bin
export ETCD_BACKUP_TEST_BIN := $(TEST_BIN)

.PHONY: build test test-deps vet bench bench-journal clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/etcd-backup ./cmd/etcd-backup

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

clean:
	rm -rf bin
