# syntax=docker/dockerfile:1
#
# etcd-backup container image: a static binary on distroless/static.
#
#   docker build -t registry.example.com/etcd-backup:0.1.0 --build-arg VERSION=0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# Without a Docker engine, `make image` builds the same image (same paths,
# user, entrypoint and labels; tools/ociimage checks this file) into an OCI
# tar in dist/ from scratch: see docs/kubernetes.md, "Image".
#
# The final image has no shell and no package manager: the binary, CA
# certificates (for S3 over https), tzdata (for CRON_TZ= schedules) and
# /etc/passwd with the "nonroot" user (65532), which is the default user.
# Reading kubeadm's etcd client key (0600 root) needs uid 0: the Kubernetes
# example (deploy/kubernetes/daemonset.yaml) overrides the user to 0 with no
# capabilities; see docs/kubernetes.md. rclone: repositories need the rclone
# binary, which this image does not have.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/etcd-backup/etcd-backup/internal/version.Version=${VERSION}" \
      -o /out/etcd-backup ./cmd/etcd-backup

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="etcd-backup" \
      org.opencontainers.image.description="Back up etcd v3 clusters and restore them" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/etcd-backup/etcd-backup" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/etcd-backup /usr/bin/etcd-backup
USER 65532:65532
ENTRYPOINT ["/usr/bin/etcd-backup"]
CMD ["--help"]
