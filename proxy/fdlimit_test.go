//go:build linux

package proxy

import (
	"bufio"
	"context"
	"errors"
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

	"github.com/wsgate/wsgate/proxy/internal/evloop"
)

// The gateway child process of TestDescriptorLimit takes its echo pod's
// address, its engine and one more descriptor or not from the
// environment.
const (
	fdChildEnv       = "WSGATE_TEST_FD_CHILD_POD"
	fdChildExtraEnv  = "WSGATE_TEST_FD_CHILD_EXTRA"
	fdChildEngineEnv = "WSGATE_TEST_FD_CHILD_ENGINE"
)

// fdChildRoom is how many descriptors the child's limit leaves beyond
// those it holds once it listens, with its event loops (two descriptors
// each, one loop per processor) started: room for about that many
// tunnels, two descriptors each, and the Go runtime's own needs.
const fdChildRoom = 32

// fdChildDialTimeout is the child's dial timeout: how long a client
// accepted with the last descriptor waits for one for its pod.
const fdChildDialTimeout = 4 * time.Second

// TestDescriptorLimit runs gateways in child processes with a low
// descriptor limit, fills them with tunnels and checks that at the limit
// they neither spin nor fail: accepting pauses, open tunnels carry on, a
// client accepted with the last descriptor waits for another for its pod
// and is answered 503 with Retry-After when none frees up in time, and
// clients are served again once descriptors free up. Each engine runs at
// two limits one apart, so that the descriptors left beside the tunnels
// are even at one (accepting pauses) and odd at the other (the last one
// is taken by a client).
func TestDescriptorLimit(t *testing.T) {
	if pod := os.Getenv(fdChildEnv); pod != "" {
		runFDChild(t, pod)
		return
	}
	pod := echoPod(t, "127.0.0.2")
	for _, engine := range []string{"loops", "nethttp"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			var answered [2]bool
			t.Run("room", func(t *testing.T) {
				for extra := range 2 {
					t.Run(strconv.Itoa(fdChildRoom+extra), func(t *testing.T) {
						t.Parallel()
						answered[extra] = fillToLimit(t, pod.Addr, engine, extra)
					})
				}
			})
			if !answered[0] && !answered[1] {
				t.Error("at neither limit was the client that found the last descriptor answered 503")
			}
		})
	}
}

// fillToLimit starts a gateway child with engine and extra descriptors of
// room, fills it with tunnels and checks it at its limit; it reports
// whether the client that found it full was answered 503 (rather than
// left waiting).
func fillToLimit(t *testing.T, pod, engine string, extra int) (answered503 bool) {
	addr, limit, pid := startFDChild(t, pod, engine, extra)

	// Open tunnels until the child runs out of descriptors. The client
	// that finds it full waits in the listen backlog, or is accepted with
	// the last descriptor and is answered 503 once the dial timeout has
	// passed without a descriptor for its pod.
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	for len(open) < fdChildRoom {
		c, status, err := probeTunnel(addr, fdChildDialTimeout+time.Second)
		if err == nil && status == http.StatusSwitchingProtocols {
			open = append(open, c)
			continue
		}
		var ne net.Error
		switch {
		case err == nil && status == http.StatusServiceUnavailable:
			answered503 = true
		case errors.As(err, &ne) && ne.Timeout():
		default:
			t.Fatalf("at the limit: status %d, error %v; want 503, or no answer while waiting", status, err)
		}
		break
	}
	// The runtime's own descriptors come and go by one or two.
	if len(open) < fdChildRoom/4 || len(open) > fdChildRoom/2+2 {
		t.Fatalf("%d tunnels opened before the limit, want %d to %d", len(open), fdChildRoom/4, fdChildRoom/2+2)
	}
	t.Logf("%d tunnels at a limit of %d descriptors; the next client answered 503: %v", len(open), limit, answered503)

	// At the limit, with clients waiting: the gateway must not spin.
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
	cpu0 := processCPU(t, pid)
	time.Sleep(time.Second)
	if used := processCPU(t, pid) - cpu0; used > 300*time.Millisecond {
		t.Errorf("the gateway used %v of CPU in 1s at the descriptor limit, want it idle", used)
	}
	// The open tunnels carry on.
	for i, c := range open[:3] {
		if err := echoOnce(c, fmt.Sprintf("still here %d", i)); err != nil {
			t.Errorf("tunnel %d at the limit: %v", i, err)
		}
	}
	// Freed descriptors, within the dial timeout of a waiting client that
	// holds the last one: the waiting clients and new ones are served.
	for _, c := range open[:8] {
		_ = c.Close()
	}
	open = open[8:]
	for i, c := range waiting {
		_ = c.SetDeadline(time.Now().Add(fdChildDialTimeout))
		status, _, err := readAnswer(c)
		if err != nil || status != http.StatusSwitchingProtocols {
			t.Errorf("waiting client %d: status %d, error %v; want 101", i, status, err)
		}
	}
	c, status, err := probeTunnel(addr, 5*time.Second)
	if err != nil || status != http.StatusSwitchingProtocols {
		t.Fatalf("after descriptors were freed: status %d, error %v; want 101", status, err)
	}
	open = append(open, c)
	return answered503
}

// startFDChild starts a gateway child process and returns its address,
// descriptor limit and process id; the child stops at the end of the
// test.
func startFDChild(t *testing.T, pod, engine string, extra int) (addr string, limit, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDescriptorLimit$", "-test.v")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+pod, fdChildEngineEnv+"="+engine,
		fdChildExtraEnv+"="+strconv.Itoa(extra))
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
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "listening %s limit %d", &addr, &limit); err == nil {
			break
		}
	}
	if addr == "" {
		t.Fatal("the gateway child did not start")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addr, limit, cmd.Process.Pid
}

// runFDChild is the gateway of TestDescriptorLimit: it serves pod under
// /<ip>/, with a descriptor limit fdChildRoom (plus extra) above the
// descriptors it holds, until its standard input closes. The
// "nethttp" engine hides the listener's type, so that net/http's server
// accepts and reads the heads, as it does for TLS.
func runFDChild(t *testing.T, pod string) {
	ap := netip.MustParseAddrPort(pod)
	extra, err := strconv.Atoi(os.Getenv(fdChildExtraEnv))
	if err != nil {
		t.Fatal(err)
	}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{{
		Key: routing.RouteKey{Namespace: "ns", Name: "r"}, PathPrefix: "/", BackendPath: "/",
		Backends: []routing.Backend{{Pod: "p", Addr: ap}},
	}}))
	srv := New(tables, Options{DialTimeout: fdChildDialTimeout, RetryAfter: 2 * time.Second})
	var l net.Listener
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(fdChildEngineEnv) == "nethttp" {
		l = struct{ net.Listener }{l}
	}
	evloop.Loops()
	held, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	limit := len(held) - 1 + fdChildRoom + extra // ReadDir's own descriptor is gone
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(limit)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	fmt.Printf("listening %s limit %d\n", l.Addr(), limit)
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx, 0); err != nil {
		t.Error(err)
	}
}

// probeTunnel sends a handshake to addr and reads the answer within d:
// the connection, open, with a 101; closed otherwise. A 503 must carry
// Retry-After.
func probeTunnel(addr string, d time.Duration) (net.Conn, int, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return nil, 0, err
	}
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, handshake("/127.0.0.2/")); err != nil {
		_ = c.Close()
		return nil, 0, err
	}
	status, _, err := readAnswer(c)
	if err != nil || status != http.StatusSwitchingProtocols {
		_ = c.Close()
		return nil, status, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, status, nil
}

// readAnswer reads a handshake's answer from c. A 503 must say why and
// carry Retry-After.
func readAnswer(c net.Conn) (int, string, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, "", nil
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		if resp.Header.Get("Retry-After") != "2" || !strings.Contains(string(body), "file descriptors") {
			return resp.StatusCode, string(body), fmt.Errorf("503 with Retry-After %q and %q, want 2 s and the reason",
				resp.Header.Get("Retry-After"), body)
		}
	}
	return resp.StatusCode, string(body), nil
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
