package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// These tests read back the image that make image built; make image-test
// runs them with these variables set to what it built the image from.
var (
	layoutDir  = os.Getenv("WSGATE_IMAGE_LAYOUT")
	archive    = os.Getenv("WSGATE_IMAGE_ARCHIVE")
	version    = os.Getenv("WSGATE_IMAGE_VERSION")
	revision   = os.Getenv("WSGATE_IMAGE_REVISION")
	repository = os.Getenv("WSGATE_IMAGE_REPOSITORY")
	epoch      = os.Getenv("SOURCE_DATE_EPOCH")
	created    time.Time
)

// wantPlatforms are the platforms a release is built for, in the index's
// order.
var wantPlatforms = []string{"linux/amd64", "linux/arm64/v8"}

func TestMain(m *testing.M) {
	var missing []string
	for k, v := range map[string]string{
		"WSGATE_IMAGE_LAYOUT": layoutDir, "WSGATE_IMAGE_ARCHIVE": archive, "WSGATE_IMAGE_VERSION": version,
		"WSGATE_IMAGE_REVISION": revision, "WSGATE_IMAGE_REPOSITORY": repository, "SOURCE_DATE_EPOCH": epoch,
	} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		fmt.Fprintf(os.Stderr, "these tests check the image that make image builds: run make image-test (%s not set)\n", strings.Join(missing, ", "))
		os.Exit(2)
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "SOURCE_DATE_EPOCH=%q: %v\n", epoch, err)
		os.Exit(2)
	}
	created = time.Unix(secs, 0).UTC()
	os.Exit(m.Run())
}

func wantAnnotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   "https://github.com/wsgate/wsgate",
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
	}
}

// entry is a tar entry: its header's fields that matter, and its contents.
type entry struct {
	Name    string
	Type    byte
	Mode    int64
	UID     int
	GID     int
	ModTime time.Time
	Data    []byte
}

// wantLayers are the layers of every platform's image, file by file: the
// base files, then the binary (whose contents are checked apart).
var wantLayers = [][]struct {
	name string
	typ  byte
	mode int64
}{
	{
		{"etc/", tar.TypeDir, 0o755},
		{"etc/group", tar.TypeReg, 0o644},
		{"etc/passwd", tar.TypeReg, 0o644},
		{"etc/ssl/", tar.TypeDir, 0o755},
		{"etc/ssl/certs/", tar.TypeDir, 0o755},
		{"etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644},
	},
	{
		{"wsgate", tar.TypeReg, 0o755},
	},
}

// readImage is one platform's image of the index, read back.
type readImage struct {
	platform string
	desc     v1.Descriptor
	img      v1.Image
	manifest *v1.Manifest
	config   *v1.ConfigFile
	layers   []v1.Layer
	entries  [][]entry
}

// readIndex reads the layout's index.json and the image index it names.
func readIndex(t *testing.T) (*v1.IndexManifest, v1.ImageIndex) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want 1", len(top.Manifests))
	}
	l, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatalf("the index of index.json: %v", err)
	}
	return &top, idx
}

func readImages(t *testing.T) []readImage {
	t.Helper()
	_, idx := readIndex(t)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []readImage
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("manifest %s has no platform", d.Digest)
		}
		pi := readImage{platform: d.Platform.String(), desc: d}
		if pi.img, err = idx.Image(d.Digest); err != nil {
			t.Fatal(err)
		}
		if pi.manifest, err = pi.img.Manifest(); err != nil {
			t.Fatal(err)
		}
		if pi.config, err = pi.img.ConfigFile(); err != nil {
			t.Fatal(err)
		}
		if pi.layers, err = pi.img.Layers(); err != nil {
			t.Fatal(err)
		}
		for _, l := range pi.layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			es, err := readTar(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("%s: a layer: %v", pi.platform, err)
			}
			pi.entries = append(pi.entries, es)
		}
		out = append(out, pi)
	}
	return out
}

func readTar(r io.Reader) ([]entry, error) {
	tr := tar.NewReader(r)
	var out []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{Name: hdr.Name, Type: hdr.Typeflag, Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime.UTC(), Data: data})
	}
}

func typeName(typ byte) string {
	switch typ {
	case tar.TypeReg:
		return "file"
	case tar.TypeDir:
		return "folder"
	default:
		return fmt.Sprintf("type %q", typ)
	}
}

func fileOf(t *testing.T, entries []entry, name string) []byte {
	t.Helper()
	for _, e := range entries {
		if e.Name == name {
			return e.Data
		}
	}
	t.Fatalf("no %s in the layer", name)
	return nil
}

// index.json names the image (its tag, and the full name ctr images
// import gives it); the index lists the two platforms and carries the
// labels.
func TestIndex(t *testing.T) {
	top, idx := readIndex(t)
	if top.SchemaVersion != 2 || top.MediaType != types.OCIImageIndex {
		t.Errorf("index.json: schemaVersion %d, mediaType %q", top.SchemaVersion, top.MediaType)
	}
	d := top.Manifests[0]
	if d.MediaType != types.OCIImageIndex {
		t.Errorf("index.json's entry is a %s, want an OCI image index", d.MediaType)
	}
	if want := map[string]string{
		"org.opencontainers.image.ref.name": version,
		"io.containerd.image.name":          repository + ":" + version,
	}; !maps.Equal(d.Annotations, want) {
		t.Errorf("index.json's entry's annotations = %v, want %v", d.Annotations, want)
	}

	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index mediaType = %q", im.MediaType)
	}
	if !maps.Equal(im.Annotations, wantAnnotations()) {
		t.Errorf("index annotations = %v, want %v", im.Annotations, wantAnnotations())
	}
	var got []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			t.Fatalf("manifest %s has no platform", m.Digest)
		}
		got = append(got, m.Platform.String())
		if m.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: mediaType %q", m.Platform, m.MediaType)
		}
	}
	if !slices.Equal(got, wantPlatforms) {
		t.Errorf("platforms = %v, want %v", got, wantPlatforms)
	}
	t.Logf("index %s: %v", d.Digest, got)
}

// Each platform's image: its manifest and config (user, entrypoint,
// environment, labels, platform, time), and its layers, every entry of
// which is listed.
func TestImages(t *testing.T) {
	images := readImages(t)
	if len(images) != len(wantPlatforms) {
		t.Fatalf("%d images, want %d (%v)", len(images), len(wantPlatforms), wantPlatforms)
	}
	for _, pi := range images {
		t.Run(pi.platform, func(t *testing.T) {
			m, c := pi.manifest, pi.config
			if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
				t.Errorf("manifest %q with config %q, want OCI types", m.MediaType, m.Config.MediaType)
			}
			if !maps.Equal(m.Annotations, wantAnnotations()) {
				t.Errorf("manifest annotations = %v, want %v", m.Annotations, wantAnnotations())
			}
			p := v1.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
			if p.String() != pi.platform || !p.Equals(*pi.desc.Platform) {
				t.Errorf("config's platform %s, the index's %s", p, pi.desc.Platform)
			}
			if !c.Created.Equal(created) {
				t.Errorf("created %s, want %s (SOURCE_DATE_EPOCH)", c.Created.Time, created)
			}
			cfg := c.Config
			if cfg.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532", cfg.User)
			}
			if !slices.Equal(cfg.Entrypoint, []string{"/wsgate"}) || len(cfg.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want [/wsgate] and none", cfg.Entrypoint, cfg.Cmd)
			}
			if want := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}; !slices.Equal(cfg.Env, want) {
				t.Errorf("env %q, want %q", cfg.Env, want)
			}
			if !maps.Equal(cfg.Labels, wantAnnotations()) {
				t.Errorf("labels = %v, want %v", cfg.Labels, wantAnnotations())
			}
			if cfg.WorkingDir != "" || len(cfg.ExposedPorts) != 0 || len(cfg.Volumes) != 0 || cfg.StopSignal != "" || cfg.Healthcheck != nil {
				t.Errorf("unexpected settings in the config: %+v", cfg)
			}

			if len(pi.layers) != len(wantLayers) || len(m.Layers) != len(wantLayers) || len(c.RootFS.DiffIDs) != len(wantLayers) || len(c.History) != len(wantLayers) {
				t.Fatalf("%d layers (%d diff IDs, %d history entries), want %d", len(pi.layers), len(c.RootFS.DiffIDs), len(c.History), len(wantLayers))
			}
			var packed, unpacked int64
			var sizes []string
			for i, l := range pi.layers {
				if m.Layers[i].MediaType != types.OCILayer {
					t.Errorf("layer %d: mediaType %q, want %q", i, m.Layers[i].MediaType, types.OCILayer)
				}
				if diffID, err := l.DiffID(); err != nil || diffID != c.RootFS.DiffIDs[i] {
					t.Errorf("layer %d: diff ID %s (%v), the config's %s", i, diffID, err, c.RootFS.DiffIDs[i])
				}
				var got []string
				var u int64
				for _, e := range pi.entries[i] {
					got = append(got, fmt.Sprintf("%s %s %o", e.Name, typeName(e.Type), e.Mode))
					if e.UID != 0 || e.GID != 0 || !e.ModTime.Equal(created) {
						t.Errorf("%s: owner %d:%d, time %s; want 0:0, %s", e.Name, e.UID, e.GID, e.ModTime, created)
					}
					u += int64(len(e.Data))
				}
				var want []string
				for _, w := range wantLayers[i] {
					want = append(want, fmt.Sprintf("%s %s %o", w.name, typeName(w.typ), w.mode))
				}
				if !slices.Equal(got, want) {
					t.Errorf("layer %d holds\n  %s\nwant\n  %s", i, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
				}
				packed += m.Layers[i].Size
				unpacked += u
				sizes = append(sizes, fmt.Sprintf("%s %s (files %s)", m.Layers[i].Digest, size(m.Layers[i].Size), size(u)))
			}
			t.Logf("manifest %s: layers %s compressed, files %s:\n  %s", pi.desc.Digest, size(packed), size(unpacked), strings.Join(sizes, "\n  "))

			base := pi.entries[0]
			if got := string(fileOf(t, base, "etc/passwd")); got != "nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n" {
				t.Errorf("/etc/passwd = %q", got)
			}
			if got := string(fileOf(t, base, "etc/group")); got != "nonroot:x:65532:\n" {
				t.Errorf("/etc/group = %q", got)
			}
			checkCABundle(t, fileOf(t, base, "etc/ssl/certs/ca-certificates.crt"))
		})
	}
	// The base files are one layer, stored once, for every platform.
	if a, b := images[0].manifest.Layers[0].Digest, images[1].manifest.Layers[0].Digest; a != b {
		t.Errorf("the platforms' base layers differ: %s, %s", a, b)
	}
	var blobs int64
	err := filepath.WalkDir(filepath.Join(layoutDir, "blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		blobs += fi.Size()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the layout's blobs: %s", size(blobs))
}

// checkCABundle checks that the bundle holds exactly Mozilla's roots that
// a PEM file can carry: those of the pinned x509roots/fallback module
// without a constraint (a distrust date).
func checkCABundle(t *testing.T, data []byte) {
	t.Helper()
	got := map[[32]byte]*x509.Certificate{}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			t.Fatalf("the CA bundle has a %q block", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("the CA bundle: %v", err)
		}
		if !bytes.Equal(cert.RawSubject, cert.RawIssuer) {
			t.Errorf("the CA bundle holds %s, issued by %s: not a root", cert.Subject, cert.Issuer)
		}
		got[sha256.Sum256(block.Bytes)] = cert
	}
	// Between and after the certificates: only comment lines.
	sc := bufio.NewScanner(bytes.NewReader(data))
	in := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "-----BEGIN "):
			in = true
		case strings.HasPrefix(line, "-----END "):
			in = false
		case !in && !strings.HasPrefix(line, "# "):
			t.Errorf("the CA bundle has a line outside its certificates: %q", line)
		}
	}

	want := map[[32]byte]bool{}
	constrained := 0
	for r := range bundle.Roots() {
		sum := sha256.Sum256(r.Certificate)
		if r.Constraint != nil {
			constrained++
			if c := got[sum]; c != nil {
				t.Errorf("the CA bundle holds %s, which Mozilla trusts only with a constraint", c.Subject)
			}
			continue
		}
		want[sum] = true
		if got[sum] == nil {
			c, _ := x509.ParseCertificate(r.Certificate)
			t.Errorf("the CA bundle lacks Mozilla's root %s", c.Subject)
		}
	}
	for sum, c := range got {
		if !want[sum] {
			t.Errorf("the CA bundle holds %s, not one of Mozilla's roots", c.Subject)
		}
	}
	isrg := false
	for _, c := range got {
		isrg = isrg || c.Subject.CommonName == "ISRG Root X1"
	}
	if !isrg {
		t.Error("the CA bundle lacks ISRG Root X1 (Let's Encrypt)")
	}
	if len(got) == 0 {
		t.Fatal("the CA bundle is empty")
	}
	t.Logf("CA bundle: %d roots (%d of Mozilla's left out for their constraints), %s", len(got), constrained, size(int64(len(data))))
}

// The binaries are static, for their platform, built with -trimpath from
// cmd/wsgate and stamped with the version; the one for this machine's
// platform prints it with --version.
func TestBinaries(t *testing.T) {
	ran := false
	for _, pi := range readImages(t) {
		t.Run(pi.platform, func(t *testing.T) {
			data := fileOf(t, pi.entries[1], "wsgate")
			f, err := elf.NewFile(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[pi.config.Architecture]
			if f.Machine != want {
				t.Errorf("ELF machine %s, want %s", f.Machine, want)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("the binary has a %s program header: it is not static", p.Type)
				}
			}
			bi, err := buildinfo.Read(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if bi.Path != "github.com/wsgate/wsgate/cmd/wsgate" {
				t.Errorf("built from %s", bi.Path)
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			for k, v := range map[string]string{"GOOS": "linux", "GOARCH": pi.config.Architecture, "CGO_ENABLED": "0", "-trimpath": "true"} {
				if settings[k] != v {
					t.Errorf("built with %s=%q, want %q", k, settings[k], v)
				}
			}
			if !bytes.Contains(data, []byte(version)) {
				t.Errorf("the binary does not hold its version %q", version)
			}
			t.Logf("%s, %s", bi.GoVersion, size(int64(len(data))))

			if pi.config.OS != runtime.GOOS || pi.config.Architecture != runtime.GOARCH {
				return
			}
			bin := filepath.Join(t.TempDir(), "wsgate")
			if err := os.WriteFile(bin, data, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--version").CombinedOutput()
			if err != nil || string(out) != version+"\n" {
				t.Errorf("wsgate --version = %q, %v; want %q", out, err, version+"\n")
			}
			ran = true
		})
	}
	if !ran && runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") {
		t.Errorf("the %s/%s binary did not run", runtime.GOOS, runtime.GOARCH)
	}
}

// The archive is the layout, file for file.
func TestArchive(t *testing.T) {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := readTar(f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, e := range entries {
		if e.UID != 0 || e.GID != 0 || !e.ModTime.Equal(created) {
			t.Errorf("%s: owner %d:%d, time %s; want 0:0, %s", e.Name, e.UID, e.GID, e.ModTime, created)
		}
		switch e.Type {
		case tar.TypeDir:
			if e.Mode != 0o755 || !strings.HasSuffix(e.Name, "/") {
				t.Errorf("folder %s: mode %o", e.Name, e.Mode)
			}
		case tar.TypeReg:
			if e.Mode != 0o644 {
				t.Errorf("%s: mode %o", e.Name, e.Mode)
			}
			got[e.Name] = e.Data
		default:
			t.Errorf("%s: type %c", e.Name, e.Type)
		}
	}
	want := map[string][]byte{}
	err = filepath.WalkDir(layoutDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(layoutDir, p)
		if err != nil {
			return err
		}
		want[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := want["oci-layout"]; !ok {
		t.Fatal("the layout has no oci-layout file")
	}
	if !maps.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("the archive's files %v differ from the layout's %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	t.Logf("%s: %d files, %s", archive, len(got), size(fileSize(t, archive)))
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// The index pushes to a registry (as crane push does) under the same
// digests, and each platform's image resolves from the tag.
func TestPush(t *testing.T) {
	_, idx := readIndex(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, err := name.NewTag(strings.TrimPrefix(srv.URL, "http://")+"/wsgate/wsgate:"+version, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != want || desc.MediaType != types.OCIImageIndex {
		t.Errorf("pushed %s (%s), want %s", desc.Digest, desc.MediaType, want)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		img, err := remote.Image(ref, remote.WithPlatform(*m.Platform))
		if err != nil {
			t.Fatalf("%s: %v", m.Platform, err)
		}
		if d, err := img.Digest(); err != nil || d != m.Digest {
			t.Errorf("%s resolves to %s (%v), want %s", m.Platform, d, err, m.Digest)
		}
	}
}

// Built again from the same binaries and inputs, the image is the same,
// byte for byte: the same digests and the same archive.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	c := buildConfig{Version: version, Revision: revision, Source: "https://github.com/wsgate/wsgate", Repository: repository, Created: created}
	for _, pi := range readImages(t) {
		bin := filepath.Join(dir, strings.ReplaceAll(pi.platform, "/", "-"))
		if err := os.WriteFile(bin, fileOf(t, pi.entries[1], "wsgate"), 0o755); err != nil {
			t.Fatal(err)
		}
		c.Binaries = append(c.Binaries, platformBinary{Platform: *pi.desc.Platform, Path: bin})
	}
	idx, err := buildIndex(c)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "oci")
	if err := writeLayout(out, idx, c.refAnnotations()); err != nil {
		t.Fatal(err)
	}
	if err := writeArchive(filepath.Join(dir, "wsgate.oci.tar"), out, created); err != nil {
		t.Fatal(err)
	}
	for _, f := range [][2]string{
		{filepath.Join(layoutDir, "index.json"), filepath.Join(out, "index.json")},
		{archive, filepath.Join(dir, "wsgate.oci.tar")},
	} {
		a, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs when built again (%x, %x)", filepath.Base(f[0]), sha256.Sum256(a), sha256.Sum256(b))
		}
	}
}

// The Dockerfile builds the same image: its final stage is empty but for
// the files the rootfs command writes (the base layer's, byte for byte)
// and the binary, with the same user, environment, entrypoint and labels.
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile(filepath.Join("..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]string
	var cur strings.Builder
	for line := range strings.SplitSeq(string(df), "\n") {
		if trimmed := strings.TrimSpace(line); cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		ins := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		if strings.HasPrefix(strings.ToUpper(ins), "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %q before FROM", ins)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], ins)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages", len(stages))
	}
	if !slices.ContainsFunc(stages[0], func(s string) bool {
		return strings.HasPrefix(s, "RUN ") && strings.HasSuffix(s, "cd hack/tools/image && go run . rootfs /out/rootfs")
	}) {
		t.Error("the Dockerfile's build stage does not run the rootfs command into /out/rootfs")
	}

	pi := readImages(t)[0]
	cfg := pi.config.Config
	final := stages[len(stages)-1]
	var env []string
	labels := map[string]bool{}
	var copies []string
	for _, ins := range final[1:] {
		kw, rest, _ := strings.Cut(ins, " ")
		switch kw {
		case "ARG":
		case "COPY":
			copies = append(copies, rest)
		case "USER":
			if rest != cfg.User {
				t.Errorf("Dockerfile USER %s, the image's %s", rest, cfg.User)
			}
		case "ENV":
			env = append(env, rest)
		case "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(rest), &ep); err != nil || !slices.Equal(ep, cfg.Entrypoint) {
				t.Errorf("Dockerfile ENTRYPOINT %s (%v), the image's %q", rest, err, cfg.Entrypoint)
			}
		case "LABEL":
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = true
				if k == "org.opencontainers.image.source" && v != cfg.Labels[k] {
					t.Errorf("Dockerfile's source label %s, the image's %s", v, cfg.Labels[k])
				}
			}
		default:
			t.Errorf("Dockerfile's final stage: unexpected %s", ins)
		}
	}
	if final[0] != "FROM scratch" {
		t.Errorf("Dockerfile's final stage: %s, want FROM scratch", final[0])
	}
	if want := []string{"--from=build /out/rootfs/ /", "--from=build /out/wsgate /wsgate"}; !slices.Equal(copies, want) {
		t.Errorf("Dockerfile's final stage copies %q, want %q", copies, want)
	}
	if !slices.Equal(env, cfg.Env) {
		t.Errorf("Dockerfile ENV %q, the image's %q", env, cfg.Env)
	}
	if !maps.Equal(labels, map[string]bool{
		"org.opencontainers.image.source": true, "org.opencontainers.image.version": true,
		"org.opencontainers.image.revision": true, "org.opencontainers.image.created": true,
	}) || len(labels) != len(cfg.Labels) {
		t.Errorf("Dockerfile LABELs %v, the image's %v", slices.Sorted(maps.Keys(labels)), cfg.Labels)
	}

	// What the rootfs command writes is the base layer.
	dir := t.TempDir()
	if err := run([]string{"rootfs", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			got = append(got, fmt.Sprintf("%s/ %o", filepath.ToSlash(rel), fi.Mode().Perm()))
			return nil
		}
		data, err := os.ReadFile(p)
		got = append(got, fmt.Sprintf("%s %o %x", filepath.ToSlash(rel), fi.Mode().Perm(), sha256.Sum256(data)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range pi.entries[0] {
		if e.Type == tar.TypeDir {
			want = append(want, fmt.Sprintf("%s %o", e.Name, e.Mode))
		} else {
			want = append(want, fmt.Sprintf("%s %o %x", e.Name, e.Mode, sha256.Sum256(e.Data)))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("rootfs writes\n  %s\nthe base layer holds\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
