package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tar is read with archive/tar and encoding/json only, following the
// OCI image-layout and image specs, not with the library that wrote it.

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations"`
	Platform     *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Created      time.Time `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       struct {
		User       string            `json:"User"`
		Env        []string          `json:"Env"`
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		WorkingDir string            `json:"WorkingDir"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// archive is an image tar, read and checked.
type archive struct {
	files map[string][]byte
	index index
	// images by architecture: manifest, config and each layer's tar.
	images map[string]*platformImage
}

type platformImage struct {
	manifest manifest
	config   imageConfig
	layers   [][]byte // uncompressed
}

// readArchive reads an image tar and checks its structure: the layout
// files, every blob's digest and size, media types, the diff_ids.
func readArchive(t *testing.T, data []byte, created time.Time) *archive {
	t.Helper()
	a := &archive{files: map[string][]byte{}, images: map[string]*platformImage{}}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("image tar: %v", err)
		}
		if !h.ModTime.Equal(created) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, created)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		a.files[h.Name] = b
	}
	if got := string(a.files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", got)
	}
	for name, b := range a.files {
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("%s: content hashes to %x", name, sum)
			}
		}
	}
	blob := func(d descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Fatalf("%s: media type %q, want %q", d.Digest, d.MediaType, mediaType)
		}
		hexd, ok := strings.CutPrefix(d.Digest, "sha256:")
		b, found := a.files["blobs/sha256/"+hexd]
		if !ok || !found {
			t.Fatalf("descriptor %s: no blob", d.Digest)
		}
		if int64(len(b)) != d.Size {
			t.Fatalf("descriptor %s: size %d, blob has %d", d.Digest, d.Size, len(b))
		}
		return b
	}
	decode := func(b []byte, v any) {
		t.Helper()
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}

	decode(a.files["index.json"], &a.index)
	if a.index.SchemaVersion != 2 || a.index.MediaType != "application/vnd.oci.image.index.v1+json" || len(a.index.Manifests) != 1 {
		t.Fatalf("index.json: %s", a.files["index.json"])
	}
	addImage := func(d descriptor) {
		t.Helper()
		if d.ArtifactType != "" {
			t.Errorf("image descriptor %s has artifactType %q: an image is no artifact", d.Digest, d.ArtifactType)
		}
		p := &platformImage{}
		decode(blob(d, "application/vnd.oci.image.manifest.v1+json"), &p.manifest)
		if p.manifest.SchemaVersion != 2 || p.manifest.MediaType != "application/vnd.oci.image.manifest.v1+json" {
			t.Fatalf("manifest %s: schema %d, media type %q", d.Digest, p.manifest.SchemaVersion, p.manifest.MediaType)
		}
		decode(blob(p.manifest.Config, "application/vnd.oci.image.config.v1+json"), &p.config)
		if len(p.manifest.Layers) != len(p.config.RootFS.DiffIDs) || p.config.RootFS.Type != "layers" {
			t.Fatalf("manifest has %d layers, config %d diff_ids (%q)", len(p.manifest.Layers), len(p.config.RootFS.DiffIDs), p.config.RootFS.Type)
		}
		for i, l := range p.manifest.Layers {
			zr, err := gzip.NewReader(bytes.NewReader(blob(l, "application/vnd.oci.image.layer.v1.tar+gzip")))
			if err != nil {
				t.Fatal(err)
			}
			fs, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			if sum := sha256.Sum256(fs); "sha256:"+hex.EncodeToString(sum[:]) != p.config.RootFS.DiffIDs[i] {
				t.Errorf("layer %s: uncompressed sha256:%x, diff_id %s", l.Digest, sum, p.config.RootFS.DiffIDs[i])
			}
			p.layers = append(p.layers, fs)
		}
		if d.Platform != nil && (d.Platform.OS != p.config.OS || d.Platform.Architecture != p.config.Architecture) {
			t.Errorf("descriptor platform %+v, config %s/%s", *d.Platform, p.config.OS, p.config.Architecture)
		}
		if !p.config.Created.Equal(created) {
			t.Errorf("config created %v, want %v", p.config.Created, created)
		}
		if a.images[p.config.Architecture] != nil {
			t.Fatalf("two images for %s", p.config.Architecture)
		}
		a.images[p.config.Architecture] = p
	}
	top := a.index.Manifests[0]
	switch top.MediaType {
	case "application/vnd.oci.image.manifest.v1+json":
		addImage(top)
	case "application/vnd.oci.image.index.v1+json":
		var inner index
		decode(blob(top, top.MediaType), &inner)
		if inner.SchemaVersion != 2 || inner.MediaType != top.MediaType || len(inner.Manifests) == 0 {
			t.Fatalf("image index: %+v", inner)
		}
		for _, d := range inner.Manifests {
			if d.Platform == nil {
				t.Errorf("index entry %s has no platform", d.Digest)
			}
			addImage(d)
		}
	default:
		t.Fatalf("index.json points at a %q", top.MediaType)
	}
	return a
}

// checkConfig checks what the image runs and how.
func checkConfig(t *testing.T, c imageConfig, arch, version string) {
	t.Helper()
	if c.OS != "linux" || c.Architecture != arch {
		t.Errorf("platform %s/%s, want linux/%s", c.OS, c.Architecture, arch)
	}
	cc := c.Config
	if !slices.Equal(cc.Entrypoint, []string{"/usr/bin/etcd-backup"}) || !slices.Equal(cc.Cmd, []string{"--help"}) {
		t.Errorf("Entrypoint %q Cmd %q", cc.Entrypoint, cc.Cmd)
	}
	if cc.User != "65532:65532" || cc.WorkingDir != "/home/nonroot" {
		t.Errorf("User %q WorkingDir %q", cc.User, cc.WorkingDir)
	}
	if !slices.Contains(cc.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") || !slices.ContainsFunc(cc.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		t.Errorf("Env %q", cc.Env)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.source":   "https://github.com/etcd-backup/etcd-backup",
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.title":    "etcd-backup",
	} {
		if got := cc.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
}

// extract unpacks a layer into dir and returns its headers by path.
func extract(t *testing.T, layer []byte, dir string) map[string]*tar.Header {
	t.Helper()
	headers := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return headers
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean(h.Name)
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			t.Fatalf("layer entry %q escapes the root", h.Name)
		}
		if headers[name] != nil {
			t.Errorf("layer has %s twice", name)
		}
		headers[name] = h
		p := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if _, err := os.Stat(filepath.Dir(p)); err != nil {
				t.Errorf("%s comes before its directory", name)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode)&os.ModePerm)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("layer entry %s: type %q; want only directories and regular files", name, h.Typeflag)
		}
	}
}

// checkRootfs checks the unpacked file system, less the binary.
func checkRootfs(t *testing.T, dir string, headers map[string]*tar.Header) {
	t.Helper()
	want := []struct {
		name     string
		dir      bool
		mode     int64
		uid, gid int
	}{
		{"usr/bin/etcd-backup", false, 0o755, 0, 0},
		{"etc/ssl/certs/ca-certificates.crt", false, 0o644, 0, 0},
		{"etc/passwd", false, 0o644, 0, 0},
		{"etc/group", false, 0o644, 0, 0},
		{"usr/share/zoneinfo/Europe/Paris", false, 0o644, 0, 0},
		{"tmp", true, 0o1777, 0, 0},
		{"home/nonroot", true, 0o700, 65532, 65532},
	}
	for _, w := range want {
		h := headers[w.name]
		if h == nil {
			t.Errorf("no %s in the layer", w.name)
			continue
		}
		if (h.Typeflag == tar.TypeDir) != w.dir || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid {
			t.Errorf("%s: type %q mode %o uid %d gid %d; want dir=%v mode %o %d:%d", w.name, h.Typeflag, h.Mode, h.Uid, h.Gid, w.dir, w.mode, w.uid, w.gid)
		}
	}

	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !strings.Contains(string(read("etc/passwd")), "\nnonroot:x:65532:65532:nonroot:/home/nonroot:") {
		t.Errorf("/etc/passwd has no nonroot user 65532:\n%s", read("etc/passwd"))
	}
	if !strings.Contains(string(read("etc/group")), "\nnonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot group 65532")
	}

	// CA certificates: every block a certificate, and the roots the stores
	// that matter chain to (S3, GCS, Azure, Let's Encrypt-fronted MinIO).
	rest := read("etc/ssl/certs/ca-certificates.crt")
	var subjects []string
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || b.Type != "CERTIFICATE" || !c.IsCA {
			t.Fatalf("CA bundle: block %q: %v", b.Type, err)
		}
		subjects = append(subjects, c.Subject.CommonName)
	}
	if len(subjects) < 100 {
		t.Errorf("CA bundle has %d certificates, want the whole Mozilla store (100+)", len(subjects))
	}
	for _, cn := range []string{"Amazon Root CA 1", "GTS Root R1", "DigiCert Global Root G2", "ISRG Root X1"} {
		if !slices.Contains(subjects, cn) {
			t.Errorf("CA bundle lacks %q", cn)
		}
	}

	// tzdata: Go's time package reads these files for CRON_TZ= and TZ=.
	for _, zone := range []string{"UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"} {
		if _, err := time.LoadLocationFromTZData(zone, read("usr/share/zoneinfo/"+zone)); err != nil {
			t.Errorf("zoneinfo %s: %v", zone, err)
		}
	}
}

// TestImage builds the image as `make image` does for the host's
// architecture, reads the tar, unpacks the layer and runs the binary from
// it.
func TestImage(t *testing.T) {
	const version = "0.0.0-imagetest"
	created := time.Unix(1700000000, 0).UTC()
	dir := t.TempDir()
	arch := runtime.GOARCH

	// The Makefile's build flags (make build, make image). On a fresh CI
	// machine -trimpath also lets this build reuse about half of what
	// scripts/install-test-deps.sh compiled for the etcd binaries (same
	// flags): about 50 s of CPU instead of 110.
	bin := filepath.Join(dir, "etcd-backup")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/etcd-backup/etcd-backup/internal/version.Version="+version,
		"-o", bin, "github.com/etcd-backup/etcd-backup/cmd/etcd-backup")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out := filepath.Join(dir, "dist", "etcd-backup-oci-"+arch+".tar")
	if err := run([]string{"-o", out, "-version", version, "-created", strconv.FormatInt(created.Unix(), 10), "-binary", arch + "=" + bin}); err != nil {
		t.Fatalf("ociimage: %v", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	a := readArchive(t, data, created)

	top := a.index.Manifests[0]
	if top.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("one platform: want an image manifest in index.json, got %q", top.MediaType)
	}
	if got := top.Annotations["org.opencontainers.image.ref.name"]; got != version {
		t.Errorf("ref.name %q, want %q", got, version)
	}
	img := a.images[arch]
	if img == nil || len(img.layers) != 1 {
		t.Fatalf("want one %s image with one layer", arch)
	}
	checkConfig(t, img.config, arch, version)

	// docker load (before Docker 25) reads manifest.json.
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(a.files["manifest.json"], &dm); err != nil || len(dm) != 1 {
		t.Fatalf("manifest.json: %v: %s", err, a.files["manifest.json"])
	}
	wantLayer := "blobs/sha256/" + strings.TrimPrefix(img.manifest.Layers[0].Digest, "sha256:")
	if dm[0].Config != "blobs/sha256/"+strings.TrimPrefix(img.manifest.Config.Digest, "sha256:") ||
		!slices.Equal(dm[0].Layers, []string{wantLayer}) || !slices.Equal(dm[0].RepoTags, []string{"etcd-backup:" + version}) {
		t.Errorf("manifest.json %+v does not match the OCI manifest", dm[0])
	}

	root := filepath.Join(dir, "rootfs")
	headers := extract(t, img.layers[0], root)
	checkRootfs(t, root, headers)
	for name, h := range headers {
		if !h.ModTime.Equal(created) {
			t.Errorf("layer %s: mtime %v, want %v", name, h.ModTime, created)
		}
	}

	// Run the binary from the unpacked layer, with an environment like
	// the image's and nothing of the host's.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"version"}, []string{"etcd-backup " + version + "\n", "repository format:"}},
		{[]string{"--help"}, []string{"Usage:", "snapshot", "restore", "agent"}},
	} {
		cmd := exec.CommandContext(ctx, filepath.Join(root, "usr", "bin", "etcd-backup"), tc.args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + filepath.Join(root, "home", "nonroot"), "SSL_CERT_FILE=" + filepath.Join(root, "etc", "ssl", "certs", "ca-certificates.crt")}
		cmd.Dir = root
		got, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("etcd-backup %s from the image layer: %v\n%s", strings.Join(tc.args, " "), err, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(got), w) {
				t.Errorf("etcd-backup %s: output lacks %q:\n%s", strings.Join(tc.args, " "), w, got)
			}
		}
	}
}

// fakeELF is an ELF header for arch, enough for CheckStatic: a static
// executable with no program headers, or a dynamic one (PT_INTERP).
func fakeELF(t *testing.T, arch string, dynamic bool) []byte {
	t.Helper()
	m, ok := machines[arch]
	if !ok {
		t.Fatalf("no ELF machine for %s", arch)
	}
	b := make([]byte, 64, 64+56)
	copy(b, "\x7fELF\x02\x01\x01") // 64-bit, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2) // ET_EXEC
	le.PutUint16(b[18:], uint16(m))
	le.PutUint32(b[20:], 1)
	le.PutUint16(b[52:], 64) // ehsize
	le.PutUint16(b[54:], 56) // phentsize
	if dynamic {
		le.PutUint64(b[32:], 64) // phoff
		le.PutUint16(b[56:], 1)  // phnum
		ph := make([]byte, 56)
		le.PutUint32(ph[0:], 3) // PT_INTERP
		b = append(b, ph...)
	}
	return b
}

// TestMultiArch: several binaries give an image index (one image per
// platform) under one ref.name, with no manifest.json, and the same inputs
// give the same bytes.
func TestMultiArch(t *testing.T) {
	created := time.Unix(1234567890, 0).UTC()
	ca, err := MozillaRoots()
	if err != nil {
		t.Fatal(err)
	}
	zp, err := goZoneinfo()
	if err != nil {
		t.Fatal(err)
	}
	zi, err := os.ReadFile(zp)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Name: "etcd-backup", Version: "v1.2.3+dirty", Source: "https://github.com/etcd-backup/etcd-backup", Created: created, CAPEM: ca, Zoneinfo: zi,
		Binaries: []Binary{{"amd64", fakeELF(t, "amd64", false)}, {"arm64", fakeELF(t, "arm64", false)}}}
	var b1, b2 bytes.Buffer
	if err := Write(&b1, o); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b2, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Error("two builds of the same inputs differ")
	}
	a := readArchive(t, b1.Bytes(), created)
	if top := a.index.Manifests[0]; top.MediaType != "application/vnd.oci.image.index.v1+json" || top.Annotations["org.opencontainers.image.ref.name"] != "v1.2.3-dirty" {
		t.Errorf("index.json entry: %+v", top)
	}
	if a.files["manifest.json"] != nil {
		t.Error("a multi-arch tar has a manifest.json (docker load cannot take an index)")
	}
	for _, arch := range []string{"amd64", "arm64"} {
		img := a.images[arch]
		if img == nil {
			t.Fatalf("no %s image", arch)
		}
		checkConfig(t, img.config, arch, o.Version)
		root := filepath.Join(t.TempDir(), arch)
		headers := extract(t, img.layers[0], root)
		checkRootfs(t, root, headers)
		if got, _ := os.ReadFile(filepath.Join(root, "usr", "bin", "etcd-backup")); !bytes.Equal(got, o.Binaries[slices.IndexFunc(o.Binaries, func(b Binary) bool { return b.Arch == arch })].Data) {
			t.Errorf("%s image has another binary", arch)
		}
	}
}

func TestCheckStatic(t *testing.T) {
	if err := CheckStatic(fakeELF(t, "arm64", false), "arm64"); err != nil {
		t.Errorf("static arm64: %v", err)
	}
	if err := CheckStatic(fakeELF(t, "amd64", true), "amd64"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic binary: %v", err)
	}
	if err := CheckStatic(fakeELF(t, "amd64", false), "arm64"); err == nil {
		t.Error("amd64 binary accepted as arm64")
	}
	if err := CheckStatic([]byte("#!/bin/sh\n"), "amd64"); err == nil {
		t.Error("a script accepted")
	}
}

func TestTag(t *testing.T) {
	for in, want := range map[string]string{
		"0.1.0":                    "0.1.0",
		"v0.1.0-3-gabc1234-dirty":  "v0.1.0-3-gabc1234-dirty",
		"1.0+build.5":              "1.0-build.5",
		"-x":                       "x",
		"":                         "latest",
		strings.Repeat("a", 200):   strings.Repeat("a", 128),
		"feature/ociimage@2026-01": "feature-ociimage-2026-01",
	} {
		if got := Tag(in); got != want {
			t.Errorf("Tag(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDockerfile: the Dockerfile (for those with a Docker engine) builds
// the same image: same binary path, entrypoint, command, user and labels.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	js := func(v []string) string { j, _ := json.Marshal(v); return string(j) }
	for _, want := range []string{
		"COPY --from=build /out/etcd-backup " + binaryPath + "\n",
		"USER " + user + "\n",
		"ENTRYPOINT " + js(entrypoint) + "\n",
		"CMD " + js(cmd) + "\n",
		"CGO_ENABLED=0",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", strings.TrimSpace(want))
		}
	}
	o := Options{Version: "${VERSION}", Source: "https://github.com/etcd-backup/etcd-backup"}
	for k, v := range labels(o) {
		if !regexp.MustCompile(regexp.QuoteMeta(k) + `="` + regexp.QuoteMeta(v) + `"`).MatchString(df) {
			t.Errorf("Dockerfile lacks LABEL %s=%q", k, v)
		}
	}
}
