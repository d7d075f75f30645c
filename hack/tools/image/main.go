// Command image builds wsgate's container image without a container
// engine: a multi-platform OCI image layout, and the same layout as an OCI
// archive, holding the static binary, a CA bundle and a non-root user (no
// shell, no other files).
//
//	image build -layout DIR [-archive FILE] -version V -revision COMMIT \
//	    -source-date-epoch SECONDS -binary linux/amd64=PATH -binary linux/arm64=PATH
//	image rootfs DIR
//	image describe DIR
//
// build writes the layout (and the archive); rootfs writes the image's
// files other than the binary into DIR, for the Dockerfile; describe prints
// a layout's digests and sizes. make image runs build with the binaries it
// compiled; the release workflow pushes the layout with crane.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  image build -layout DIR [-archive FILE] -version V -revision COMMIT -source-date-epoch SECONDS -binary OS/ARCH=PATH...
  image rootfs DIR
  image describe DIR`

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "build":
		return runBuild(args[1:], stdout)
	case "rootfs":
		if len(args) != 2 {
			return fmt.Errorf("rootfs takes one folder\n%s", usage)
		}
		return writeRootfs(args[1])
	case "describe":
		if len(args) != 2 {
			return fmt.Errorf("describe takes one layout folder\n%s", usage)
		}
		return describe(stdout, args[1])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

func runBuild(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var (
		c        buildConfig
		bins     binaryFlags
		layoutTo = fs.String("layout", "", "the OCI image layout folder to write (replaced if it is one already)")
		archive  = fs.String("archive", "", "also write the layout as an OCI archive (a tar file that ctr images import reads)")
		epoch    = fs.String("source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "the image's creation time and its files' times, in seconds since 1970 (default $SOURCE_DATE_EPOCH)")
	)
	fs.StringVar(&c.Version, "version", "", "the version stamped into the binaries; the image's tag and version label")
	fs.StringVar(&c.Revision, "revision", "", "the git commit the image is built from (its revision label)")
	fs.StringVar(&c.Source, "source", "https://github.com/wsgate/wsgate", "the source repository (the image's source label)")
	fs.StringVar(&c.Repository, "repository", "ghcr.io/wsgate/wsgate", "the image's repository, which with the version names it in the layout (for ctr images import)")
	fs.Var(&bins, "binary", "OS/ARCH=PATH: the wsgate binary of a platform (repeat for each platform)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("build: unexpected arguments %q", fs.Args())
	}
	if *layoutTo == "" {
		return errors.New("build: -layout is required")
	}
	if *epoch == "" {
		return errors.New("build: -source-date-epoch (or $SOURCE_DATE_EPOCH) is required: the commit's time, git log -1 --format=%ct")
	}
	secs, err := strconv.ParseInt(*epoch, 10, 64)
	if err != nil || secs < 0 {
		return fmt.Errorf("build: -source-date-epoch %q is not a number of seconds since 1970", *epoch)
	}
	c.Created = time.Unix(secs, 0).UTC()
	c.Binaries = bins
	if err := c.validate(); err != nil {
		return fmt.Errorf("build: %w", err)
	}

	idx, err := buildIndex(c)
	if err != nil {
		return err
	}
	if err := writeLayout(*layoutTo, idx, c.refAnnotations()); err != nil {
		return err
	}
	if *archive != "" {
		if err := writeArchive(*archive, *layoutTo, c.Created); err != nil {
			return err
		}
	}
	if err := describe(stdout, *layoutTo); err != nil {
		return err
	}
	if *archive != "" {
		fi, err := os.Stat(*archive)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "archive %s: %s\n", *archive, size(fi.Size()))
	}
	return nil
}

// binaryFlags are the -binary flags: one binary per platform, kept sorted
// by platform.
type binaryFlags []platformBinary

type platformBinary struct {
	Platform v1.Platform
	Path     string
}

func (b *binaryFlags) String() string {
	var s []string
	for _, pb := range *b {
		s = append(s, pb.Platform.String()+"="+pb.Path)
	}
	return strings.Join(s, ",")
}

func (b *binaryFlags) Set(v string) error {
	plat, path, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return fmt.Errorf("%q is not OS/ARCH=PATH", v)
	}
	p, err := parsePlatform(plat)
	if err != nil {
		return err
	}
	for _, pb := range *b {
		if pb.Platform.Equals(p) {
			return fmt.Errorf("platform %s is given twice", p)
		}
	}
	*b = append(*b, platformBinary{Platform: p, Path: path})
	sort.Slice(*b, func(i, j int) bool { return (*b)[i].Platform.String() < (*b)[j].Platform.String() })
	return nil
}
