package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The OCI annotations (and labels) the image carries.
const (
	annotationSource   = "org.opencontainers.image.source"
	annotationVersion  = "org.opencontainers.image.version"
	annotationRevision = "org.opencontainers.image.revision"
	annotationCreated  = "org.opencontainers.image.created"
	// annotationRefName names an entry of a layout's index.json (its tag).
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is containerd's full name of an entry of
	// index.json; ctr images import names the image it imports after it.
	annotationImageName = "io.containerd.image.name"
)

// The image's command, and the main package that the binary must be.
const (
	binaryName  = "wsgate"
	mainPackage = "github.com/wsgate/wsgate/cmd/wsgate"
)

// imageEnv is the image's environment, the Dockerfile's too: PATH, the
// usual default (there is no shell, nor any other program to find).
var imageEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}

// elfMachines are the platforms the image can be built for, with the ELF
// machine of their binaries.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// buildConfig is what the image is built from.
type buildConfig struct {
	Version    string
	Revision   string
	Source     string
	Repository string
	// Created is the image's creation time and its files' modification
	// time: with the same inputs, the same layout, byte for byte.
	Created  time.Time
	Binaries []platformBinary
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

func (c buildConfig) validate() error {
	if c.Version == "" {
		return errors.New("-version is required")
	}
	if _, err := name.NewTag(c.Repository+":"+c.Version, name.StrictValidation); err != nil {
		return fmt.Errorf("-repository %q with -version %q is not an image name with a tag: %w", c.Repository, c.Version, err)
	}
	if !commitRE.MatchString(c.Revision) {
		return fmt.Errorf("-revision %q is not a full git commit hash (git rev-parse HEAD)", c.Revision)
	}
	if u, err := url.Parse(c.Source); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("-source %q is not an https URL", c.Source)
	}
	if len(c.Binaries) == 0 {
		return errors.New("no -binary: give one per platform, e.g. -binary linux/amd64=bin/image/linux-amd64/wsgate")
	}
	return nil
}

// annotations are the image's OCI annotations, on the index and on each
// platform's manifest, and its config's labels.
func (c buildConfig) annotations() map[string]string {
	return map[string]string{
		annotationSource:   c.Source,
		annotationVersion:  c.Version,
		annotationRevision: c.Revision,
		annotationCreated:  c.Created.Format(time.RFC3339),
	}
}

// refAnnotations name the image in the layout's index.json.
func (c buildConfig) refAnnotations() map[string]string {
	return map[string]string{
		annotationRefName:   c.Version,
		annotationImageName: c.Repository + ":" + c.Version,
	}
}

// parsePlatform parses OS/ARCH[/VARIANT] for a platform the image can be
// built for; linux/arm64 is linux/arm64/v8, as container engines name it.
func parsePlatform(s string) (v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}, err
	}
	if _, ok := elfMachines[p.Architecture]; p.OS != "linux" || !ok || p.OSVersion != "" {
		return v1.Platform{}, fmt.Errorf("platform %q: the image is built for linux/amd64 and linux/arm64 only", s)
	}
	if p.Architecture == "arm64" && p.Variant == "" {
		p.Variant = "v8"
	}
	if (p.Architecture == "arm64" && p.Variant != "v8") || (p.Architecture == "amd64" && p.Variant != "") {
		return v1.Platform{}, fmt.Errorf("platform %q: unknown variant %q", s, p.Variant)
	}
	return *p, nil
}

// buildIndex builds the image index: one image per platform, each of two
// layers, the base files (the same layer, so the same blob, for every
// platform) and the binary.
func buildIndex(c buildConfig) (v1.ImageIndex, error) {
	files, err := baseFiles()
	if err != nil {
		return nil, err
	}
	base, err := newLayer(files, c.Created)
	if err != nil {
		return nil, err
	}
	var adds []mutate.IndexAddendum
	for _, b := range c.Binaries {
		img, err := platformImage(c, base, b)
		if err != nil {
			return nil, err
		}
		p := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	idx, ok := mutate.Annotations(idx, c.annotations()).(v1.ImageIndex)
	if !ok {
		return nil, errors.New("annotating the index did not give an index")
	}
	return idx, nil
}

func platformImage(c buildConfig, base v1.Layer, b platformBinary) (v1.Image, error) {
	data, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, err
	}
	if err := checkBinary(data, b.Platform, c.Version); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Path, err)
	}
	bin, err := newLayer([]file{{Name: binaryName, Mode: 0o755, Data: data}}, c.Created)
	if err != nil {
		return nil, err
	}

	created := v1.Time{Time: c.Created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: b.Platform.Architecture,
		OS:           b.Platform.OS,
		Variant:      b.Platform.Variant,
		Created:      created,
		Config: v1.Config{
			User:       imageUser,
			Entrypoint: []string{"/" + binaryName},
			Env:        imageEnv,
			Labels:     c.annotations(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "wsgate image: /etc/passwd, /etc/group, /" + caBundlePath}},
		mutate.Addendum{Layer: bin, History: v1.History{Created: created, CreatedBy: "wsgate image: /" + binaryName + " " + c.Version + " (" + b.Platform.String() + ")"}},
	)
	if err != nil {
		return nil, err
	}
	img, ok := mutate.Annotations(img, c.annotations()).(v1.Image)
	if !ok {
		return nil, errors.New("annotating an image did not give an image")
	}
	return img, nil
}

// checkBinary fails unless data is a static wsgate binary for platform p,
// built with -trimpath, that holds version.
func checkBinary(data []byte, p v1.Platform, version string) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	if want := elfMachines[p.Architecture]; f.Machine != want {
		return fmt.Errorf("built for %s, not %s (%s)", f.Machine, want, p)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			return errors.New("dynamically linked (the image has no libc: build with CGO_ENABLED=0)")
		}
	}
	bi, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("no Go build information: %w", err)
	}
	if bi.Path != mainPackage {
		return fmt.Errorf("built from %s, not %s", bi.Path, mainPackage)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"GOOS": p.OS, "GOARCH": p.Architecture, "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			return fmt.Errorf("built with %s=%q, want %q", k, settings[k], want)
		}
	}
	// With -trimpath, Go leaves -ldflags out of the build information, so
	// the version stamped with -X main.version is looked for as a string.
	if !bytes.Contains(data, []byte(version)) {
		return fmt.Errorf("not stamped with version %s (-ldflags \"-X main.version=%s\")", version, version)
	}
	return nil
}

// newLayer returns a gzip-compressed OCI layer of files and their folders,
// owned by root, with modTime as every entry's time.
func newLayer(files []file, modTime time.Time) (v1.Layer, error) {
	data, err := layerTar(files, modTime)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithCompressedCaching)
}

func layerTar(files []file, modTime time.Time) ([]byte, error) {
	type entry struct {
		name string
		f    *file
	}
	dirs := map[string]bool{}
	var entries []entry
	for i := range files {
		f := &files[i]
		if f.Name == "" || path.IsAbs(f.Name) || path.Clean(f.Name) != f.Name || strings.HasPrefix(f.Name, "../") {
			return nil, fmt.Errorf("file name %q is not a clean relative path", f.Name)
		}
		entries = append(entries, entry{name: f.Name, f: f})
		for d := path.Dir(f.Name); d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				entries = append(entries, entry{name: d})
			}
		}
	}
	// A folder's path is a prefix of its files' paths, so it comes first.
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: modTime}
		if e.f != nil {
			hdr = &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: e.f.Mode, Size: int64(len(e.f.Data)), ModTime: modTime}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if e.f != nil {
			if _, err := tw.Write(e.f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayout writes idx as the only entry of a new OCI image layout at
// dir, named by ref. The layout is written beside dir and then moved
// there; an existing dir is replaced only if it is an OCI image layout.
func writeLayout(dir string, idx v1.ImageIndex, ref map[string]string) error {
	if err := checkReplaceable(dir); err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(ref)); err != nil {
		return fmt.Errorf("writing the layout: %w", err)
	}
	// The layout is written with modes that vary from file to file (and
	// with the umask); make them those of the archive.
	err = filepath.WalkDir(tmp, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(name, 0o755)
		}
		return os.Chmod(name, 0o644)
	})
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func checkReplaceable(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("%s exists and is not an OCI image layout (no oci-layout file): not replacing it", dir)
	}
	return nil
}

// writeArchive writes the layout at dir as a tar file (an OCI archive):
// its files in name order, owned by root, with modTime as their time.
func writeArchive(archive, dir string, modTime time.Time) error {
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		return err
	}
	out, err := os.CreateTemp(filepath.Dir(archive), ".archive-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	tw := tar.NewWriter(out)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: modTime})
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: modTime}); err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		default:
			return fmt.Errorf("%s: not a regular file or folder", p)
		}
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := out.Chmod(0o644); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(out.Name(), archive)
}
