package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const usage = `usage: ociimage -o dist/etcd-backup-oci-amd64.tar -version V -binary amd64=PATH [-binary arm64=PATH ...]

Builds the etcd-backup container image from static linux binaries, with no
container engine, into an OCI image layout tar (one -binary: an image; more:
a multi-arch image index). Load it with 'podman load -i FILE', 'docker load
-i FILE', or push it with 'skopeo copy oci-archive:FILE docker://REGISTRY/etcd-backup:TAG'.

`

// binaryFlags collects -binary ARCH=PATH.
type binaryFlags []string

func (b *binaryFlags) String() string     { return strings.Join(*b, ",") }
func (b *binaryFlags) Set(v string) error { *b = append(*b, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	var (
		bins     binaryFlags
		out      = fs.String("o", "", "output tar `file` (required)")
		version  = fs.String("version", "", "image version: label org.opencontainers.image.version and tag (required)")
		name     = fs.String("name", "etcd-backup", "image `name` in the tags that load gives it (NAME:VERSION)")
		source   = fs.String("source", "https://github.com/etcd-backup/etcd-backup", "label org.opencontainers.image.source")
		created  = fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "timestamp of the image and its files, Unix `seconds` (default $SOURCE_DATE_EPOCH, else 0)")
		caBundle = fs.String("ca-bundle", "", "PEM `file` for "+caPath+" (default: the Mozilla roots of golang.org/x/crypto/x509roots/fallback)")
		zoneinfo = fs.String("zoneinfo", "", "zoneinfo.zip `file` for "+zonePath+" (default: $(go env GOROOT)/lib/time/zoneinfo.zip)")
	)
	fs.Var(&bins, "binary", "`ARCH=PATH` of a static linux etcd-backup binary (GOARCH: amd64, arm64, ...); repeat for a multi-arch index")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *out == "" || *version == "" || len(bins) == 0 {
		fs.Usage()
		return errors.New("need -o, -version and -binary, and no arguments")
	}

	o := Options{Name: *name, Version: *version, Source: *source}
	secs := int64(0)
	if *created != "" {
		var err error
		if secs, err = strconv.ParseInt(*created, 10, 64); err != nil || secs < 0 {
			return fmt.Errorf("-created %q: want Unix seconds", *created)
		}
	}
	o.Created = time.Unix(secs, 0).UTC()

	for _, b := range bins {
		arch, p, ok := strings.Cut(b, "=")
		arch = strings.TrimPrefix(arch, "linux/")
		if !ok || arch == "" || p == "" {
			return fmt.Errorf("-binary %q: want ARCH=PATH", b)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		o.Binaries = append(o.Binaries, Binary{Arch: arch, Data: data})
	}

	var err error
	if *caBundle != "" {
		o.CAPEM, err = os.ReadFile(*caBundle)
	} else {
		o.CAPEM, err = MozillaRoots()
	}
	if err != nil {
		return err
	}
	if *zoneinfo == "" {
		if *zoneinfo, err = goZoneinfo(); err != nil {
			return err
		}
	}
	if o.Zoneinfo, err = os.ReadFile(*zoneinfo); err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".ociimage-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, o); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), *out)
}

// goZoneinfo is the Go toolchain's zoneinfo.zip, the tzdata that Go
// binaries embed with time/tzdata.
func goZoneinfo() (string, error) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT (or pass -zoneinfo): %w", err)
	}
	return filepath.Join(string(bytes.TrimSpace(goroot)), "lib", "time", "zoneinfo.zip"), nil
}
