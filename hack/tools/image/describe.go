package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// describe prints the layout at dir: its name, the index's digest, and for
// each platform the manifest's digest and each layer's digest, sizes and
// files; then the size of the layout's blobs (a layer that several
// platforms share is stored once).
func describe(w io.Writer, dir string) error {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	top, err := ii.IndexManifest()
	if err != nil {
		return err
	}
	if len(top.Manifests) != 1 || !top.Manifests[0].MediaType.IsIndex() {
		return fmt.Errorf("%s/index.json: want one entry, an image index", dir)
	}
	d := top.Manifests[0]
	fmt.Fprintf(w, "layout %s: %s\n", dir, d.Annotations[annotationImageName])
	fmt.Fprintf(w, "  index           %s\n", d.Digest)
	idx, err := ii.ImageIndex(d.Digest)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, m := range im.Manifests {
		if m.Platform == nil {
			return fmt.Errorf("manifest %s has no platform", m.Digest)
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var lines []string
		var packed, unpacked int64
		for _, l := range layers {
			digest, err := l.Digest()
			if err != nil {
				return err
			}
			sz, err := l.Size()
			if err != nil {
				return err
			}
			names, usz, err := layerContents(l)
			if err != nil {
				return fmt.Errorf("layer %s: %w", digest, err)
			}
			packed += sz
			unpacked += usz
			lines = append(lines, fmt.Sprintf("    layer %s  %s (unpacked %s): %s", digest, size(sz), size(usz), strings.Join(names, " ")))
		}
		fmt.Fprintf(w, "  %-15s %s  layers %s (unpacked %s)\n", m.Platform, m.Digest, size(packed), size(unpacked))
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
	var blobs, n int64
	err = filepath.WalkDir(filepath.Join(dir, "blobs"), func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		blobs += fi.Size()
		n++
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  blobs           %d files, %s\n", n, size(blobs))
	return nil
}

// layerContents returns the paths of a layer's regular files and the
// unpacked size (the uncompressed tar's).
func layerContents(l v1.Layer) ([]string, int64, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	tr := tar.NewReader(cr)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if hdr.Typeflag == tar.TypeReg {
			names = append(names, "/"+hdr.Name)
		}
	}
	// The tar's end-of-archive padding is part of its size.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, 0, err
	}
	return names, cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// size formats a byte count in binary units, with the exact count.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d B)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d B)", float64(n)/(1<<10), n)
	default:
		return fmt.Sprintf("%d B", n)
	}
}
