package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/internal/testenv/harness"
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
	bin := wsgateBin.Path(t)
	ns := env.Namespace(t)
	port, servers := harness.EchoPods(t, ipOf(40))
	createPod(t, ns, podSpec{name: "echo", ip: ipOf(40), labels: map[string]string{"app": "echo"}})
	createRoute(t, ns, routeSpec{name: "echo", prefix: "/" + ns, app: "echo", port: intstr.FromInt32(port)})
	path := harness.PodPath("/"+ns, ipOf(40), "/")

	gw := startWsgate(t, bin)
	// The binary's own status reconciler reports the route, and its proxy
	// serves it.
	waitRouteServes(t, ns, "echo", "echo")
	gw.waitStatus(t, path, http.StatusSwitchingProtocols)
	if got := gw.Readyz(); got != http.StatusOK {
		t.Fatalf("/readyz answers %d before SIGTERM, want 200", got)
	}
	tunnel, _ := gw.open(t, path, nil)
	mustEcho(t, tunnel, "before SIGTERM")
	if n := servers[0].Accepted(); n < 2 {
		t.Fatalf("the echo pod accepted %d handshakes, want at least 2", n)
	}

	sent := gw.SIGTERM(t)

	// Readiness turns false at once (or the probe port closes).
	harness.Eventually(t, 500*time.Millisecond, "/readyz stops answering 200 after SIGTERM", func() error {
		if got := gw.Readyz(); got == http.StatusOK {
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
	cl := harness.AwaitClose(ctx, tunnel)
	after := cl.At.Sub(sent)
	t.Logf("the tunnel got close %d %q %s after SIGTERM", cl.Code, cl.Reason, after.Round(time.Millisecond))
	if cl.Code != websocket.StatusGoingAway {
		t.Errorf("the tunnel ended with close %d %q, want 1001", cl.Code, cl.Reason)
	}
	if after < drainTimeout-100*time.Millisecond {
		t.Errorf("the tunnel was closed %s after SIGTERM, before the %s drain window ended", after, drainTimeout)
	}

	// The process exits 0 within the grace period.
	code, exitedAt, ok := gw.WaitExit(gracePeriod + 2*time.Second)
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

// wsgateProcess is the wsgate binary running against the test API server
// (see harness.StartWsgate), with a websocket client for its listener.
type wsgateProcess struct {
	*harness.Process
	wsClient
}

// startWsgate runs bin with the shutdown flags above, debug logs and
// extraArgs (later flags win), and waits up to 30s until /readyz answers
// 200. The process is killed when the test ends, if still running.
func startWsgate(t *testing.T, bin string, extraArgs ...string) *wsgateProcess {
	t.Helper()
	env.GrantEverything(t)
	args := []string{
		"--drain-timeout", drainTimeout.String(),
		"--shutdown-grace-period", gracePeriod.String(),
		"--zap-log-level", "debug",
	}
	p := harness.StartWsgate(t, bin, harness.WsgateOptions{
		Kubeconfig:   env.Kubeconfig,
		Args:         append(args, extraArgs...),
		ReadyTimeout: 30 * time.Second,
	})
	return &wsgateProcess{Process: p, wsClient: wsClient{addr: p.Addr}}
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
