//go:build linux

package netnstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Config is what a test's namespace holds besides its loopback's
// 127.0.0.1/8 and ::1.
type Config struct {
	// Addrs are added to the namespace's loopback, IPv6 ones without
	// duplicate address detection (usable at once), e.g.
	// fd00:5::1/64.
	Addrs []netip.Prefix
}

// insideEnv marks the process that runs inside a namespace:
// "<namespace>/<test name>".
const insideEnv = "WSGATE_NETNSTEST"

// namePrefix starts the name of every namespace this package creates,
// followed by the creating process's id and a sequence number.
const namePrefix = "wsgate-netnstest-"

// runDir is where ip keeps its named namespaces.
const runDir = "/var/run/netns"

var seq atomic.Int64

// Inside reports whether this process is a test run inside a namespace.
func Inside() bool { return os.Getenv(insideEnv) != "" }

// InNamespace runs the calling test inside a network namespace of its
// own, as the package comment says. It returns true in the process that
// runs inside the namespace, where the test goes on; in the calling
// process it returns false once the run inside has passed, and ends the
// test otherwise (failed or skipped like the run inside). Call it first
// in the test: what the test did before runs twice.
func InNamespace(t *testing.T, cfg Config) bool {
	t.Helper()
	for _, p := range cfg.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" {
			t.Fatalf("netnstest: invalid address %v", p)
		}
	}
	if marker := os.Getenv(insideEnv); marker != "" {
		checkInside(t, marker, cfg)
		return true
	}
	runInside(t, cfg)
	return false
}

// checkInside fails t unless this process is in the namespace that
// marker names, for this test, with no interface up but the loopback and
// with cfg's addresses on it.
func checkInside(t *testing.T, marker string, cfg Config) {
	t.Helper()
	ns, test, _ := strings.Cut(marker, "/")
	if test != t.Name() {
		t.Fatalf("netnstest: this process runs %s inside namespace %s, not %s", test, ns, t.Name())
	}
	self, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	want, err := os.Stat(filepath.Join(runDir, ns))
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	if !os.SameFile(self, want) {
		t.Fatalf("netnstest: this process is not in network namespace %s", ns)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	var lo *net.Interface
	for i := range ifs {
		switch in := &ifs[i]; {
		case in.Flags&net.FlagLoopback != 0:
			lo = in
		case in.Flags&net.FlagUp != 0:
			t.Fatalf("netnstest: interface %s is up in namespace %s: traffic could leave it", in.Name, ns)
		}
	}
	if lo == nil || lo.Flags&net.FlagUp == 0 {
		t.Fatalf("netnstest: the loopback is not up in namespace %s", ns)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	have := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			have[netip.PrefixFrom(ip.Unmap(), ones)] = true
		}
	}
	for _, p := range append([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}, cfg.Addrs...) {
		if !have[p] {
			t.Fatalf("netnstest: %v is not on the loopback of namespace %s (it has %v)", p, ns, addrs)
		}
	}
}

// runInside creates a namespace for t, runs t inside it and reports the
// outcome as t's.
func runInside(t *testing.T, cfg Config) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netnstest: creating a network namespace needs root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("netnstest: creating a network namespace needs the ip command (iproute2), which is not installed")
	}
	for _, p := range cfg.Addrs {
		if p.Addr().Is6() {
			if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
				t.Skip("netnstest: the kernel has no IPv6")
			}
			break
		}
	}
	removeStale(ip)

	ns := fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), seq.Add(1))
	if out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("netnstest: the system refused a network namespace (ip netns add %s: %v: %s)", ns, err, bytesTrim(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("netnstest: ip netns delete %s: %v: %s", ns, err, bytesTrim(out))
		}
	})
	setup := [][]string{{"link", "set", "lo", "up"}}
	for _, p := range cfg.Addrs {
		args := []string{"addr", "add", p.String(), "dev", "lo"}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		setup = append(setup, args)
	}
	for _, args := range setup {
		args = append([]string{"-n", ns}, args...)
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("netnstest: ip %s: %v: %s", strings.Join(args, " "), err, bytesTrim(out))
		}
	}

	bin, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	args := []string{"netns", "exec", ns, bin, "-test.run=" + runPattern(t.Name()), "-test.v=true", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	ctx := context.Background()
	if deadline, ok := t.Deadline(); ok {
		// The run inside times out first, and says where it was.
		left := time.Until(deadline)
		args = append(args, "-test.timeout="+(left*9/10).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-left/20))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, ip, args...)
	cmd.Env = append(os.Environ(), insideEnv+"="+ns+"/"+t.Name())
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("netnstest: ip netns exec: %v", err)
	}
	passed, skipped := relay(t, out)
	err = cmd.Wait()
	switch {
	case ctx.Err() != nil:
		t.Fatalf("netnstest: the run inside network namespace %s was stopped at the test's deadline: %v", ns, err)
	case err != nil:
		t.Fatalf("netnstest: the test failed inside network namespace %s: %v", ns, err)
	case skipped:
		t.Skipf("netnstest: the test skipped inside network namespace %s (see its log above)", ns)
	case !passed:
		t.Fatalf("netnstest: the test did not run inside network namespace %s", ns)
	}
}

// relay logs the run's output line by line as it comes, and reports
// whether it says that t passed or was skipped.
func relay(t *testing.T, out io.Reader) (passed, skipped bool) {
	t.Helper()
	br := bufio.NewReader(out)
	for {
		line, err := br.ReadString('\n')
		if line = strings.TrimRight(line, "\r\n"); line != "" {
			t.Log(line)
			switch s := strings.TrimSpace(line); {
			case strings.HasPrefix(s, "--- PASS: "+t.Name()+" "):
				passed = true
			case strings.HasPrefix(s, "--- SKIP: "+t.Name()+" "):
				skipped = true
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("netnstest: reading the run's output: %v", err)
			}
			return passed, skipped
		}
	}
}

// runPattern is the -test.run pattern that selects the test named name
// (a subtest's name holds its parents', separated by '/') and nothing
// else.
func runPattern(name string) string {
	elems := strings.Split(name, "/")
	for i, e := range elems {
		elems[i] = "^" + regexp.QuoteMeta(e) + "$"
	}
	return strings.Join(elems, "/")
}

// removeStale deletes the namespaces of this package whose creating
// process is gone (killed before its cleanup ran).
func removeStale(ip string) {
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidText); errors.Is(err, os.ErrNotExist) {
			_ = exec.Command(ip, "netns", "delete", e.Name()).Run()
		}
	}
}

func bytesTrim(b []byte) string { return strings.TrimSpace(string(b)) }
