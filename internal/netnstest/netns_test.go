//go:build linux

package netnstest_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/netnstest"
)

var (
	addrA = netip.MustParsePrefix("fd00:5::1/64")
	addrB = netip.MustParsePrefix("fd00:5::2/64")
)

// outerNSEnv carries the network namespace the test binary started in
// to the run inside.
const outerNSEnv = "NETNSTEST_OUTER_NS"

func TestNetnsIsolatesTheTest(t *testing.T) {
	if !netnstest.Inside() {
		ns, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(outerNSEnv, ns)
	}
	if !netnstest.InNamespace(t, netnstest.Config{Addrs: []netip.Prefix{addrA, addrB}}) {
		// The namespace's addresses are not this side's.
		if l, err := net.Listen("tcp", net.JoinHostPort(addrA.Addr().String(), "0")); err == nil {
			_ = l.Close()
			t.Errorf("%s is an address outside the namespace too", addrA.Addr())
		}
		return
	}
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if outer := os.Getenv(outerNSEnv); outer == "" || outer == ns {
		t.Fatalf("inside %s, the test binary started in %q: want another namespace", ns, outer)
	}

	// Connections between the namespace's addresses, with the source
	// chosen, and over both loopback addresses.
	cases := []struct{ server, client string }{
		{addrA.Addr().String(), addrB.Addr().String()},
		{addrB.Addr().String(), addrA.Addr().String()},
		{"::1", "::1"},
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.9", "127.0.0.9"},
	}
	for _, tc := range cases {
		l, err := net.Listen("tcp", net.JoinHostPort(tc.server, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", tc.server, err)
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.client)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("%s to %s: %v", tc.client, l.Addr(), err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := netip.MustParseAddrPort(s.RemoteAddr().String()).Addr().String(); got != tc.client {
			t.Errorf("the server on %s sees %s, want %s", tc.server, got, tc.client)
		}
		_ = s.Close()
		_ = c.Close()
		_ = l.Close()
	}

	// Nothing beyond the namespace has a route: a connect fails at once,
	// without a packet sent.
	for _, far := range []string{"192.0.2.1:80", "[2001:db8::1]:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", far)
		cancel()
		if err == nil {
			_ = c.Close()
			t.Errorf("connected to %s from inside the namespace", far)
		} else if !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("connect to %s: %v, want ENETUNREACH", far, err)
		}
	}
}

func TestNetnsRunsSubtestsAndCleansUp(t *testing.T) {
	t.Run("inside", func(t *testing.T) {
		if !netnstest.InNamespace(t, netnstest.Config{Addrs: []netip.Prefix{addrA}}) {
			return
		}
		l, err := net.Listen("tcp", "[fd00:5::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
	})
	if netnstest.Inside() {
		return
	}
	// The subtest's namespace is gone.
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	mine := "wsgate-netnstest-" + strconv.Itoa(os.Getpid()) + "-"
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), mine) {
			t.Errorf("namespace %s is left after its test", e.Name())
		}
	}
}

// outcomeEnv makes TestNetnsOutcomeHelper end the way it names.
const outcomeEnv = "NETNSTEST_OUTCOME"

// TestNetnsOutcomeHelper is run by TestNetnsReportsTheRunInside only.
func TestNetnsOutcomeHelper(t *testing.T) {
	outcome := os.Getenv(outcomeEnv)
	if outcome == "" {
		t.Skip("run by TestNetnsReportsTheRunInside")
	}
	if !netnstest.InNamespace(t, netnstest.Config{Addrs: []netip.Prefix{addrA}}) {
		return
	}
	switch outcome {
	case "fail":
		t.Error("failing inside, as asked")
	case "skip":
		t.Skip("skipping inside, as asked")
	}
}

func TestNetnsReportsTheRunInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	if netnstest.Inside() {
		t.Fatal("not meant to run inside a namespace")
	}
	cases := []struct {
		outcome  string
		exitCode int
		want     string
	}{
		{"pass", 0, "--- PASS: TestNetnsOutcomeHelper"},
		{"fail", 1, "the test failed inside network namespace"},
		{"skip", 0, "the test skipped inside network namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.outcome, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestNetnsOutcomeHelper$", "-test.v")
			cmd.Env = append(os.Environ(), outcomeEnv+"="+tc.outcome)
			out, err := cmd.CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.exitCode || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit code %d, want %d, and output with %q:\n%s", code, tc.exitCode, tc.want, out)
			}
			// The run inside's own lines are in the log.
			if n := strings.Count(string(out), "=== RUN   TestNetnsOutcomeHelper"); n != 2 {
				t.Errorf("%d lines start TestNetnsOutcomeHelper, want 2 (outside, and inside in the log):\n%s", n, out)
			}
		})
	}
}
