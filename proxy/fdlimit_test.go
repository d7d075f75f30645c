//go:build linux

package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/routing"
)

// fdChildEnv carries the echo pod's address to the gateway child process
// of TestDescriptorLimitPausesAcceptingOnly.
const fdChildEnv = "WSGATE_TEST_FD_CHILD_POD"

// fdChildLimit is the child's descriptor limit: room for the runtime, the
// loops and a dozen tunnels.
const fdChildLimit = 48

// TestDescriptorLimitPausesAcceptingOnly runs a gateway in a child process
// with a low descriptor limit, fills it with tunnels and checks that at the
// limit the loops neither spin nor fail: accepting pauses, open tunnels
// carry on, and new connections are served again once descriptors free up.
func TestDescriptorLimitPausesAcceptingOnly(t *testing.T) {
	if pod := os.Getenv(fdChildEnv); pod != "" {
		runFDChild(t, pod)
		return
	}
	pod := echoPod(t, "127.0.0.2")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDescriptorLimitPausesAcceptingOnly$", "-test.v")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+pod.Addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway child: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("the gateway child did not exit")
		}
	})
	lines := bufio.NewScanner(stdout)
	addr := ""
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "listening "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("the gateway child did not start")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	// Open tunnels until the child runs out of descriptors.
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	for len(open) < fdChildLimit {
		c, ok := tryTunnel(t, addr, time.Second)
		if !ok {
			break
		}
		open = append(open, c)
	}
	if len(open) == 0 || len(open) >= fdChildLimit/2 {
		t.Fatalf("%d tunnels opened before the limit, want some and fewer than %d", len(open), fdChildLimit/2)
	}
	t.Logf("%d tunnels at a limit of %d descriptors", len(open), fdChildLimit)

	// At the limit, with clients waiting: the loops must not spin.
	waiting := make([]net.Conn, 0, 3)
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, handshake("/127.0.0.2/"))
		waiting = append(waiting, c)
	}
	cpu0 := processCPU(t, cmd.Process.Pid)
	time.Sleep(time.Second)
	if used := processCPU(t, cmd.Process.Pid) - cpu0; used > 300*time.Millisecond {
		t.Errorf("the gateway used %v of CPU in 1s at the descriptor limit, want it idle", used)
	}
	// The open tunnels carry on.
	for i, c := range open[:3] {
		if err := echoOnce(c, fmt.Sprintf("still here %d", i)); err != nil {
			t.Errorf("tunnel %d at the limit: %v", i, err)
		}
	}
	// Freed descriptors: the waiting clients and new ones are served.
	for _, c := range open[:8] {
		_ = c.Close()
	}
	open = open[8:]
	for i, c := range waiting {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Errorf("waiting client %d: %v", i, err)
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("waiting client %d: status %q, want 101", i, resp.Status)
		}
	}
	c, ok := tryTunnel(t, addr, 5*time.Second)
	if !ok {
		t.Fatal("no tunnel after descriptors were freed")
	}
	open = append(open, c)
}

// runFDChild is the gateway of TestDescriptorLimitPausesAcceptingOnly: it
// serves pod under /<ip>/ with a low descriptor limit until its standard
// input closes.
func runFDChild(t *testing.T, pod string) {
	ap := netip.MustParseAddrPort(pod)
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{{
		Key: routing.RouteKey{Namespace: "ns", Name: "r"}, PathPrefix: "/", BackendPath: "/",
		Backends: []routing.Backend{{Pod: "p", Addr: ap}},
	}}))
	srv := New(tables, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = fdChildLimit
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	fmt.Printf("listening %s\n", l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx, 0); err != nil {
		t.Error(err)
	}
}

// tryTunnel opens a tunnel through addr, or reports false when the
// gateway did not answer 101 within d.
func tryTunnel(t *testing.T, addr string, d time.Duration) (net.Conn, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return nil, false
	}
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, handshake("/127.0.0.2/")); err != nil {
		_ = c.Close()
		return nil, false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		_ = c.Close()
		return nil, false
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = c.Close()
		return nil, false
	}
	_ = c.SetDeadline(time.Time{})
	return c, true
}

// echoOnce sends a text message on a raw tunnel to an echo pod and reads
// it back.
func echoOnce(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(maskedFrame(1, msg)); err != nil {
		return err
	}
	got := make([]byte, 2+len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got[2:]) != msg {
		return fmt.Errorf("echo %q, want %q", got[2:], msg)
	}
	return nil
}

// processCPU is the CPU time a process has used (user and system).
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis: utime and
	// stime are the 12th and 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // clock ticks (USER_HZ = 100)
}
