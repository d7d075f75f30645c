package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The user the image runs as, 65532:65532 ("nonroot"), is the chart's
// podSecurityContext (runAsUser, runAsGroup) and the Dockerfile's USER.
const (
	imageUser = "65532:65532"
	passwd    = "nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"
	group     = "nonroot:x:65532:\n"
)

// caBundlePath is where Go's crypto/x509 (and OpenSSL's Debian build)
// looks first for the system's roots on Linux.
const caBundlePath = "etc/ssl/certs/ca-certificates.crt"

// file is a regular file of the image: its path without the leading
// slash, permission bits and contents. Its folders are made for it.
type file struct {
	Name string
	Mode int64
	Data []byte
}

// baseFiles are the image's files other than the binary: a passwd and a
// group file that name the user (for whatever looks the running user up;
// its home, /nonexistent, is Debian's name for none) and the CA bundle
// with which the gateway checks the issuers it fetches keys from over
// HTTPS.
func baseFiles() ([]file, error) {
	ca, err := caBundle()
	if err != nil {
		return nil, err
	}
	return []file{
		{Name: "etc/group", Mode: 0o644, Data: []byte(group)},
		{Name: "etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Name: caBundlePath, Mode: 0o644, Data: ca},
	}, nil
}

// caBundle returns, as PEM, Mozilla's roots (the NSS trust store) from
// golang.org/x/crypto/x509roots/fallback/bundle, whose version
// hack/tools/image/go.mod pins, so that the bundle changes only with that
// pin. A root that Mozilla trusts with a constraint a PEM file cannot
// carry (certificates issued after a distrust date are not trusted) is
// left out: kept, it would be trusted without the constraint.
func caBundle() ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		cert, err := x509.ParseCertificate(root.Certificate)
		if err != nil {
			return nil, fmt.Errorf("a root of the bundle does not parse: %w", err)
		}
		fmt.Fprintf(&b, "# %s\n", cert.Subject)
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("the root bundle has no unconstrained roots")
	}
	return b.Bytes(), nil
}

// writeRootfs writes the base files under dir (for the Dockerfile, whose
// final stage copies them to /).
func writeRootfs(dir string) error {
	files, err := baseFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// The folders' mode, like the files', is the image's, whatever the umask.
		for d := filepath.Dir(p); d != filepath.Clean(dir); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(p, f.Data, os.FileMode(f.Mode)); err != nil {
			return err
		}
		// WriteFile's mode is subject to the umask; the image's is not.
		if err := os.Chmod(p, os.FileMode(f.Mode)); err != nil {
			return err
		}
	}
	return nil
}
