package proxy

import (
	"bytes"
	"encoding/xml"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// h2specEnv names the h2spec binary (RFC 9113 and RFC 7541 conformance,
// github.com/summerwind/h2spec) that TestH2Spec runs; make test builds
// it (H2SPEC_VERSION in hack/versions.env) and sets it.
const h2specEnv = "WSGATE_H2SPEC"

// TestH2Spec runs every h2spec case, the strict ones included, against
// the gateway's own HTTP/2 on its TLS listener: a browser gives up on a
// server that breaks the protocol, so any failure fails the test.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv(h2specEnv)
	if bin == "" {
		t.Skip(h2specEnv + " is not set: make test builds h2spec and sets it")
	}
	h := startH2Gateway(t, Options{})
	host, port, err := net.SplitHostPort(h.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	var out bytes.Buffer
	cmd := exec.Command(bin, "-h", host, "-p", port, "-t", "-k", "-S", "-o", "5", "-j", report)
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no h2spec report (%v); its output:\n%s", runErr, out.String())
	}
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
			Skipped  int `xml:"skipped,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &suites); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	var tests, failed, skipped int
	for _, s := range suites.Suites {
		tests += s.Tests
		failed += s.Failures + s.Errors
		skipped += s.Skipped
	}
	t.Logf("h2spec: %d cases, %d failed, %d skipped", tests, failed, skipped)
	if tests < 140 || failed > 0 || skipped > 0 || runErr != nil {
		t.Fatalf("h2spec: %d cases, %d failed, %d skipped (%v); its output:\n%s", tests, failed, skipped, runErr, out.String())
	}
}
