package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// What the image is; the Dockerfile says the same (the test checks it).
const (
	binaryPath = "/usr/bin/etcd-backup"
	caPath     = "/etc/ssl/certs/ca-certificates.crt"
	zonePath   = "/usr/share/zoneinfo"
	user       = "65532:65532"
	homeDir    = "/home/nonroot"
	uid        = 65532
)

var (
	entrypoint = []string{binaryPath}
	cmd        = []string{"--help"}
	env        = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=" + caPath,
	}
)

// Options say what to build.
type Options struct {
	Name     string // image name for the tags: "etcd-backup"
	Version  string // org.opencontainers.image.version, and the tag
	Source   string // org.opencontainers.image.source
	Created  time.Time
	CAPEM    []byte // /etc/ssl/certs/ca-certificates.crt
	Zoneinfo []byte // the Go toolchain's lib/time/zoneinfo.zip
	Binaries []Binary
}

// Binary is one platform's etcd-backup binary.
type Binary struct {
	Arch string // GOARCH: amd64, arm64
	Data []byte
}

// labels are the image config's labels.
func labels(o Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "etcd-backup",
		"org.opencontainers.image.description": "Back up etcd v3 clusters and restore them",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// tagRE is the grammar of an image tag.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Tag is the version as an image tag: characters a tag may not hold become
// '-' ("1.0+dirty" -> "1.0-dirty").
func Tag(version string) string {
	t := strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, version)
	t = strings.TrimLeft(t, ".-")
	if len(t) > 128 {
		t = t[:128]
	}
	if !tagRE.MatchString(t) {
		return "latest"
	}
	return t
}

// ELF machines of the supported platforms.
var machines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// CheckStatic returns an error unless bin is a static Linux ELF executable
// for arch: a scratch image has no dynamic loader and no libc, so a binary
// built with cgo would fail there with a bare "no such file or directory".
func CheckStatic(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	want, ok := machines[arch]
	if !ok {
		return fmt.Errorf("unsupported architecture %q", arch)
	}
	if f.Machine != want {
		return fmt.Errorf("binary is for %s, not %s (%s)", f.Machine, arch, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("binary is dynamically linked (it has an ELF interpreter): build it with CGO_ENABLED=0")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return fmt.Errorf("binary needs shared libraries %v: build it with CGO_ENABLED=0", libs)
	}
	return nil
}

// MozillaRoots is the PEM bundle of the NSS (Mozilla) root store that
// golang.org/x/crypto/x509roots/fallback ships, pinned by go.sum. Roots that
// NSS distrusts after a date are left out: a PEM file cannot carry that
// constraint, and trusting them unconstrained would be wider than Mozilla.
func MozillaRoots() ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		c, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			return nil, fmt.Errorf("x509roots bundle: %w", err)
		}
		fmt.Fprintf(&b, "# %s\n", c.Subject)
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("x509roots bundle: no roots")
	}
	return b.Bytes(), nil
}

// entry is one file system entry of the layer.
type entry struct {
	name     string // absolute, no trailing slash
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

// rootfs returns the image's file system as an uncompressed tar.
func rootfs(o Options, bin []byte) ([]byte, error) {
	entries := map[string]entry{}
	add := func(e entry) { entries[e.name] = e }
	file := func(name string, mode int64, data []byte) { add(entry{name: name, mode: mode, data: data}) }
	dir := func(name string, mode int64, owner int) {
		add(entry{name: name, dir: true, mode: mode, uid: owner, gid: owner})
	}

	file(binaryPath, 0o755, bin)
	file(caPath, 0o644, o.CAPEM)
	file("/etc/passwd", 0o644, []byte(
		"root:x:0:0:root:/root:/sbin/nologin\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	file("/etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"))
	file("/etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	dir("/tmp", 0o1777, 0)
	dir("/root", 0o700, 0)
	dir(homeDir, 0o700, uid)

	zr, err := zip.NewReader(bytes.NewReader(o.Zoneinfo), int64(len(o.Zoneinfo)))
	if err != nil {
		return nil, fmt.Errorf("zoneinfo: %w", err)
	}
	zones := 0
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/") {
			continue
		}
		if path.Clean("/"+zf.Name) != "/"+zf.Name {
			return nil, fmt.Errorf("zoneinfo: bad name %q", zf.Name)
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("zoneinfo %s: %w", zf.Name, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("zoneinfo %s: %w", zf.Name, err)
		}
		file(path.Join(zonePath, zf.Name), 0o644, data)
		zones++
	}
	if zones == 0 {
		return nil, errors.New("zoneinfo: no zones in the zip")
	}

	// Every parent directory, root-owned 0755 unless listed above.
	for _, name := range sortedNames(entries) {
		for d := path.Dir(name); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				dir(d, 0o755, 0)
			}
		}
	}

	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range sortedNames(entries) { // a parent sorts before its children
		e := entries[n]
		h := &tar.Header{
			Name:    strings.TrimPrefix(n, "/"),
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: o.Created,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// sortedNames returns the keys of m, sorted.
func sortedNames(m map[string]entry) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// image builds one platform's image.
func image(o Options, b Binary) (v1.Image, error) {
	if err := CheckStatic(b.Data, b.Arch); err != nil {
		return nil, fmt.Errorf("linux/%s binary: %w", b.Arch, err)
	}
	fs, err := rootfs(o, b.Data)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression) // no name, no mtime in the header
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(fs); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	created := v1.Time{Time: o.Created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: b.Arch,
		OS:           "linux",
		Created:      created,
		Config: v1.Config{
			User:       user,
			Env:        env,
			Entrypoint: entrypoint,
			Cmd:        cmd,
			WorkingDir: homeDir,
			Labels:     labels(o),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "tools/ociimage: etcd-backup " + o.Version + ", CA certificates, tzdata, nonroot user",
		},
	})
}

// plainImage is an image whose descriptors carry no artifactType: gcr
// sets it to the config's media type, which the image spec asks for
// artifacts only, and which tools that predate OCI 1.1 (skopeo 1.9) drop,
// changing the index's digest on the way to the registry.
type plainImage struct{ v1.Image }

func (plainImage) ArtifactType() (string, error) { return "", nil }

// blob is one file of blobs/sha256/.
type blob struct {
	digest v1.Hash
	data   func() ([]byte, error)
}

// Write writes the OCI layout tar of the image (one binary) or the
// multi-arch image index (several) to w.
func Write(w io.Writer, o Options) error {
	if len(o.Binaries) == 0 {
		return errors.New("no binary")
	}
	tag := Tag(o.Version)
	var blobs []blob
	seen := map[v1.Hash]bool{}
	addBlob := func(h v1.Hash, data func() ([]byte, error)) {
		if !seen[h] {
			seen[h] = true
			blobs = append(blobs, blob{h, data})
		}
	}
	addImage := func(img v1.Image) error {
		d, err := img.Digest()
		if err != nil {
			return err
		}
		addBlob(d, img.RawManifest)
		cd, err := img.ConfigName()
		if err != nil {
			return err
		}
		addBlob(cd, img.RawConfigFile)
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			ld, err := l.Digest()
			if err != nil {
				return err
			}
			addBlob(ld, func() ([]byte, error) {
				rc, err := l.Compressed()
				if err != nil {
					return nil, err
				}
				defer rc.Close()
				return io.ReadAll(rc)
			})
		}
		return nil
	}

	refAnnotations := map[string]string{
		"org.opencontainers.image.ref.name": tag,
		"io.containerd.image.name":          o.Name + ":" + tag,
	}
	var top mutate.IndexAddendum
	var dockerManifest []byte
	if len(o.Binaries) == 1 {
		img, err := image(o, o.Binaries[0])
		if err != nil {
			return err
		}
		if err := addImage(img); err != nil {
			return err
		}
		top = mutate.IndexAddendum{Add: plainImage{img}, Descriptor: v1.Descriptor{
			Annotations: refAnnotations,
			Platform:    &v1.Platform{OS: "linux", Architecture: o.Binaries[0].Arch},
		}}
		dockerManifest, err = dockerManifestJSON(img, o.Name+":"+tag)
		if err != nil {
			return err
		}
	} else {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		archs := map[string]bool{}
		for _, b := range o.Binaries {
			if archs[b.Arch] {
				return fmt.Errorf("two binaries for linux/%s", b.Arch)
			}
			archs[b.Arch] = true
			img, err := image(o, b)
			if err != nil {
				return err
			}
			if err := addImage(img); err != nil {
				return err
			}
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: plainImage{img}, Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: "linux", Architecture: b.Arch},
			}})
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		addBlob(d, idx.RawManifest)
		top = mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{Annotations: refAnnotations}}
	}
	layout := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, top), types.OCIImageIndex)
	indexJSON, err := layout.RawManifest()
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: o.Created, Format: tar.FormatPAX,
		}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	putDir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: o.Created, Format: tar.FormatPAX})
	}
	if err := putDir("blobs/"); err != nil {
		return err
	}
	if err := putDir("blobs/sha256/"); err != nil {
		return err
	}
	for _, b := range blobs {
		data, err := b.data()
		if err != nil {
			return err
		}
		if got, _, err := v1.SHA256(bytes.NewReader(data)); err != nil || got != b.digest {
			return fmt.Errorf("blob %s: content hashes to %s (%v)", b.digest, got, err)
		}
		if err := put("blobs/sha256/"+b.digest.Hex, data); err != nil {
			return err
		}
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", indexJSON); err != nil {
		return err
	}
	if dockerManifest != nil {
		if err := put("manifest.json", dockerManifest); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dockerManifestJSON is the manifest.json of `docker save`, pointing at the
// OCI layout's blobs, for Docker engines before 25 (which read no
// index.json).
func dockerManifestJSON(img v1.Image, repoTag string) ([]byte, error) {
	cd, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		paths = append(paths, "blobs/sha256/"+d.Hex)
	}
	return json.Marshal([]struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{"blobs/sha256/" + cd.Hex, []string{repoTag}, paths}})
}
