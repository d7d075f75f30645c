package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/internal/testenv"
)

// Shutdown flags the binary runs with.
const (
	drainTimeout = time.Second
	gracePeriod  = 5 * time.Second
)

// TestSIGTERMClosesTunnelsWith1001 runs the real wsgate binary against the
// API server and stops it as the kubelet would: readiness turns false,
// new handshakes are refused, open tunnels keep working for the drain
// window and then get a Close 1001, and the process exits 0 within the
// grace period.
func TestSIGTERMClosesTunnelsWith1001(t *testing.T) {
	bin := buildWsgate(t)
	ns := env.Namespace(t)
	port, servers := echoPods(t, ipOf(40))
	createPod(t, ns, podSpec{name: "echo", ip: ipOf(40), labels: map[string]string{"app": "echo"}})
	createRoute(t, ns, routeSpec{name: "echo", prefix: "/" + ns, app: "echo", port: intstr.FromInt32(port)})
	path := podPath("/"+ns, ipOf(40), "/")

	gw := startWsgate(t, bin)
	// The binary's own status reconciler reports the route, and its proxy
	// serves it.
	waitRouteServes(t, ns, "echo", "echo")
	gw.waitStatus(t, path, http.StatusSwitchingProtocols)
	if got := gw.readyz(); got != http.StatusOK {
		t.Fatalf("/readyz answers %d before SIGTERM, want 200", got)
	}
	tunnel, _ := gw.open(t, path, nil)
	mustEcho(t, tunnel, "before SIGTERM")
	if n := servers[0].Accepted(); n < 2 {
		t.Fatalf("the echo pod accepted %d handshakes, want at least 2", n)
	}

	sent := gw.sigterm(t)

	// Readiness turns false at once (or the probe port closes).
	eventually(t, 500*time.Millisecond, "/readyz stops answering 200 after SIGTERM", func() error {
		if got := gw.readyz(); got == http.StatusOK {
			return errors.New("/readyz still answers 200")
		}
		return nil
	})
	t.Logf("/readyz turned not ready %s after SIGTERM", time.Since(sent).Round(time.Millisecond))

	// New handshakes are refused: the listener is closed, or 503.
	if how, err := gw.refusesHandshakes(path); err != nil {
		t.Error(err)
	} else {
		t.Logf("a new handshake during the drain window: %s", how)
	}

	// The open tunnel works during the drain window...
	mustEcho(t, tunnel, "during the drain window")
	if in := time.Since(sent); in >= drainTimeout {
		t.Fatalf("the drain-window echo finished %s after SIGTERM, past the %s window: the test is too slow to tell", in, drainTimeout)
	}

	// ...then gets a Close 1001.
	ctx, cancel := context.WithTimeout(context.Background(), gracePeriod+time.Second)
	defer cancel()
	cl := awaitClose(ctx, tunnel)
	after := cl.at.Sub(sent)
	t.Logf("the tunnel got close %d %q %s after SIGTERM", cl.code, cl.reason, after.Round(time.Millisecond))
	if cl.code != websocket.StatusGoingAway {
		t.Errorf("the tunnel ended with close %d %q, want 1001", cl.code, cl.reason)
	}
	if after < drainTimeout-100*time.Millisecond {
		t.Errorf("the tunnel was closed %s after SIGTERM, before the %s drain window ended", after, drainTimeout)
	}

	// The process exits 0 within the grace period.
	code, exitedAt, ok := gw.waitExit(gracePeriod + 2*time.Second)
	if !ok {
		t.Fatalf("wsgate still runs %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	}
	t.Logf("wsgate exited with status %d %s after SIGTERM", code, exitedAt.Sub(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("wsgate exited with status %d, want 0", code)
	}
	if took := exitedAt.Sub(sent); took > gracePeriod {
		t.Errorf("wsgate exited %s after SIGTERM, beyond the %s grace period", took, gracePeriod)
	}
}

// buildWsgate builds cmd/wsgate into a temporary folder.
func buildWsgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsgate")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/wsgate")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/wsgate: %v\n%s", err, out)
	}
	return bin
}

// wsgateProcess is the wsgate binary running against the test API server.
type wsgateProcess struct {
	wsClient
	probeAddr string
	logPath   string
	cmd       *exec.Cmd

	exited   chan struct{}
	exitedAt time.Time
	exitErr  error
}

// startWsgate runs the binary on loopback ports and waits until /readyz
// answers 200. Its output goes to a file that is printed if the test
// fails; the process is killed when the test ends, if still running.
func startWsgate(t *testing.T, bin string, extraArgs ...string) *wsgateProcess {
	t.Helper()
	p := &wsgateProcess{wsClient: wsClient{addr: freeAddr(t)}, probeAddr: freeAddr(t), exited: make(chan struct{})}
	logPath := filepath.Join(t.TempDir(), "wsgate.log")
	p.logPath = logPath
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--kubeconfig", env.Kubeconfig,
		"--listen-address", p.addr,
		"--tls-listen-address", "",
		"--admin-bind-address", "",
		"--health-probe-bind-address", p.probeAddr,
		"--metrics-bind-address", "0",
		"--drain-timeout", drainTimeout.String(),
		"--shutdown-grace-period", gracePeriod.String(),
		"--zap-log-level", "debug",
	}
	// Later flags win.
	p.cmd = exec.Command(bin, append(args, extraArgs...)...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start wsgate: %v", err)
	}
	go func() {
		err := p.cmd.Wait()
		p.exitedAt, p.exitErr = time.Now(), err
		_ = logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("wsgate output:\n%s", out)
		}
	})
	eventually(t, 30*time.Second, "wsgate's /readyz answers 200", func() error {
		select {
		case <-p.exited:
			t.Fatalf("wsgate exited during start-up: %v", p.exitErr)
		default:
		}
		if got := p.readyz(); got != http.StatusOK {
			return fmt.Errorf("/readyz: %d", got)
		}
		return nil
	})
	return p
}

// readyz returns the status of GET /readyz, or 0 when the probe port
// does not answer.
func (p *wsgateProcess) readyz() int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.probeAddr + "/readyz")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// sigterm sends SIGTERM and returns when it was sent.
func (p *wsgateProcess) sigterm(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	return at
}

// refusesHandshakes checks that a handshake for path is refused: the
// connection is refused, or the gateway answers 503. It says which.
func (p *wsgateProcess) refusesHandshakes(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, status, _, err := p.handshake(ctx, path, nil)
	switch {
	case err == nil:
		_ = conn.CloseNow()
		return "", errors.New("a new handshake opened a tunnel while wsgate shuts down")
	case status == http.StatusServiceUnavailable:
		return "503", nil
	case status != 0:
		return "", fmt.Errorf("a new handshake during shutdown got %d, want 503 or a refused connection", status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", nil
	default:
		return "", fmt.Errorf("a new handshake during shutdown failed with %w, want 503 or a refused connection", err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its
// exit status and when it exited.
func (p *wsgateProcess) waitExit(timeout time.Duration) (code int, at time.Time, ok bool) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
		return 0, time.Time{}, false
	}
	var ee *exec.ExitError
	switch {
	case p.exitErr == nil:
		return 0, p.exitedAt, true
	case errors.As(p.exitErr, &ee):
		return ee.ExitCode(), p.exitedAt, true
	default:
		return -1, p.exitedAt, true
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
