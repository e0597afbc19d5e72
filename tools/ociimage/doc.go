// Command ociimage builds the etcd-backup container image without a
// container engine: `make image` runs it on a static binary and it writes an
// OCI image layout in a tar (dist/etcd-backup-oci-<arch>.tar) that `podman
// load`, `docker load` and `skopeo copy oci-archive:...` read.
//
// The image is FROM scratch plus what the binary needs at run time, the same
// file system as the Dockerfile's distroless/static image:
//
//	/usr/bin/etcd-backup                  the binary (checked: static ELF for the platform)
//	/etc/ssl/certs/ca-certificates.crt    Mozilla's roots from golang.org/x/crypto/x509roots/fallback (or -ca-bundle)
//	/usr/share/zoneinfo/                  tzdata from the Go toolchain's lib/time/zoneinfo.zip (CRON_TZ=)
//	/etc/passwd, /etc/group               root, nobody and nonroot (65532), the default user
//	/etc/nsswitch.conf                    hosts: files dns
//	/tmp (1777), /home/nonroot (0700, 65532), /root (0700)
//
// with ENTRYPOINT ["/usr/bin/etcd-backup"], CMD ["--help"], USER
// 65532:65532 and org.opencontainers.image.* labels. One platform gives one
// image manifest; several (-binary given more than once) give a multi-arch
// image index. Every timestamp is -created (default $SOURCE_DATE_EPOCH, else
// 0), so the same inputs give the same bytes.
//
// The tar holds the OCI layout (oci-layout, index.json, blobs/sha256/) and,
// for a single platform, a Docker manifest.json pointing at the same blobs,
// as `docker save` writes since Docker 25, so older Docker engines load it
// too.
//
// Imports: none
package main
