package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

func TestMessagesPassThroughUnchanged(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	g := startGateway(t, Options{}, testRoute("echo", "/rooms", backendOf("p", pod)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cases := []struct {
		name string
		opts *websocket.DialOptions
	}{
		{"plain", nil},
		{"with permessage-deflate", &websocket.DialOptions{CompressionMode: websocket.CompressionContextTakeover}},
		{"with a subprotocol", &websocket.DialOptions{Subprotocols: []string{"echo.v2"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := g.mustDial(t, "/rooms/127.0.0.2/game", tc.opts)
			big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 256<<10) // 1 MiB, many reads
			for _, m := range []struct {
				typ websocket.MessageType
				msg []byte
			}{{websocket.MessageText, []byte("hello")}, {websocket.MessageBinary, []byte{0, 1, 2, 3}}, {websocket.MessageBinary, big}, {websocket.MessageText, []byte("")}} {
				if err := echo(ctx, c, m.typ, m.msg); err != nil {
					t.Fatal(err)
				}
			}
			if tc.opts != nil && len(tc.opts.Subprotocols) > 0 && c.Subprotocol() != "echo.v2" {
				t.Errorf("subprotocol %q, want echo.v2", c.Subprotocol())
			}
			if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Errorf("clean close through the gateway: %v", err)
			}
		})
	}
}

func TestRequestReachesThePodRewritten(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	rt := testRoute("echo", "/rooms", backendOf("p", pod))
	rt.BackendPath = "/api/ws"
	g := startGateway(t, Options{}, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c := g.mustDial(t, "/rooms/127.0.0.2/game/7?token=a%20b&x=1", &websocket.DialOptions{
		HTTPHeader: map[string][]string{
			"Cookie":          {"session=s1"},
			"Authorization":   {"Bearer t"},
			"X-Forwarded-For": {"6.6.6.6"},
			"Forwarded":       {"for=6.6.6.6"},
			"Keep-Alive":      {"timeout=5"},
		},
	})
	if err := c.Write(ctx, websocket.MessageText, []byte(echopod.InfoRequest)); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seen echopod.Seen
	if err := json.Unmarshal(msg, &seen); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"path", seen.Path, "/api/ws/game/7"},
		{"query", seen.RawQuery, "token=a%20b&x=1"},
		{"host", seen.Host, "ws.example.com"},
		{"cookie", seen.Header.Get("Cookie"), "session=s1"},
		{"authorization", seen.Header.Get("Authorization"), "Bearer t"},
		{"X-Forwarded-For (overwritten)", strings.Join(seen.Header.Values("X-Forwarded-For"), ","), "127.0.0.1"},
		{"X-Forwarded-Proto", seen.Header.Get("X-Forwarded-Proto"), "http"},
		{"X-Forwarded-Host", seen.Header.Get("X-Forwarded-Host"), "ws.example.com"},
		{"Forwarded (dropped)", seen.Header.Get("Forwarded"), ""},
		{"Keep-Alive (dropped)", seen.Header.Get("Keep-Alive"), ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q, want %q", ch.what, ch.got, ch.want)
		}
	}
}

func TestRevokedPodsGetClose1008WhileOthersCarryOn(t *testing.T) {
	podA, podB := echoPod(t, "127.0.0.2"), echoPod(t, "127.0.0.3")
	podC := echoPod(t, "127.0.0.4")
	routeAB := testRoute("ab", "/ab", backendOf("a", podA), backendOf("b", podB))
	other := testRoute("other", "/other", backendOf("c", podC))
	g := startGateway(t, Options{}, routeAB, other)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	toA := []*websocket.Conn{g.mustDial(t, "/ab/127.0.0.2", nil), g.mustDial(t, "/ab/127.0.0.2", nil)}
	toB := g.mustDial(t, "/ab/127.0.0.3", nil)
	toC := g.mustDial(t, "/other/127.0.0.4", nil)

	// Keep messages flowing on the untouched tunnels during the swap.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, c := range []*websocket.Conn{toB, toC} {
		wg.Add(1)
		go func(c *websocket.Conn) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := echo(ctx, c, websocket.MessageText, []byte(strings.Repeat("m", i%100))); err != nil {
					errs <- err
					return
				}
			}
		}(c)
	}

	revokeAt := time.Now()
	g.publish(testRoute("ab", "/ab", backendOf("b", podB)), other)
	for i, c := range toA {
		code, reason := closeStatus(ctx, c)
		if code != websocket.StatusPolicyViolation {
			t.Errorf("tunnel %d to the revoked pod: close %d %q, want 1008", i, code, reason)
		}
	}
	if took := time.Since(revokeAt); took > time.Second {
		t.Errorf("revocation took %s, want under 1s", took)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("an untouched tunnel failed during the table swap: %v", err)
	default:
	}
	if err := echo(ctx, toB, websocket.MessageText, []byte("still here")); err != nil {
		t.Errorf("tunnel to the kept pod: %v", err)
	}

	// New handshakes to the revoked pod are refused without a dial.
	dials := g.dials.Load()
	if status, _ := g.rawRequest(t, handshake("/ab/127.0.0.2")); status != 404 {
		t.Errorf("handshake to the revoked pod: %d, want 404", status)
	}
	if g.dials.Load() != dials {
		t.Error("a handshake to a revoked pod dialled")
	}
}

func TestRevokedMidFrameClosesAtTheFrameBoundary(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	rt := testRoute("echo", "/e", backendOf("p", pod))
	g := startGateway(t, Options{}, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := g.mustDial(t, "/e/127.0.0.2", nil)

	// Start a large message, revoke while it is in flight, and check that
	// the client still gets a well-formed stream ending in Close 1008.
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("x"), 64<<10)); err != nil {
		t.Fatal(err)
	}
	g.publish(testRoute("echo", "/e"))
	code, reason := closeStatus(ctx, c)
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("close %d %q, want 1008 after a revocation mid-message", code, reason)
	}
}

func TestDrainRouteKeepsRevokedTunnels(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	rt := testRoute("echo", "/e", backendOf("p", pod))
	rt.DrainOnRevoke = true
	g := startGateway(t, Options{}, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := g.mustDial(t, "/e/127.0.0.2", nil)

	empty := testRoute("echo", "/e")
	empty.DrainOnRevoke = true
	g.publish(empty)
	time.Sleep(300 * time.Millisecond)
	if err := echo(ctx, c, websocket.MessageText, []byte("draining")); err != nil {
		t.Fatalf("a draining route's tunnel was closed: %v", err)
	}
	if status, _ := g.rawRequest(t, handshake("/e/127.0.0.2")); status != 404 {
		t.Errorf("new handshake to a revoked pod of a draining route: %d, want 404", status)
	}
}

func TestShutdownDrainsThenSendsClose1001(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	g := startGateway(t, Options{}, testRoute("echo", "/e", backendOf("p", pod)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := g.mustDial(t, "/e/127.0.0.2", nil)

	shutdownDone := make(chan error, 1)
	start := time.Now()
	go func() { shutdownDone <- g.srv.Shutdown(ctx, 300*time.Millisecond) }()
	time.Sleep(100 * time.Millisecond)
	if !g.srv.Draining() {
		t.Error("Draining is false during shutdown")
	}
	if err := echo(ctx, c, websocket.MessageText, []byte("during the drain window")); err != nil {
		t.Errorf("tunnel closed before the drain window ended: %v", err)
	}
	code, reason := closeStatus(ctx, c)
	if code != websocket.StatusGoingAway {
		t.Errorf("close %d %q, want 1001", code, reason)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("shutdown took %s, want the 300ms drain window plus a close", took)
	}
}

func TestIdleAndLifetimeLimitsCloseWith1001(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	idle := testRoute("idle", "/idle", backendOf("p", pod))
	idle.Timeouts.Idle = 300 * time.Millisecond
	life := testRoute("life", "/life", backendOf("p", pod))
	life.Timeouts.MaxLifetime = 500 * time.Millisecond
	g := startGateway(t, Options{}, idle, life)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("idle", func(t *testing.T) {
		c := g.mustDial(t, "/idle/127.0.0.2", nil)
		// Traffic keeps it open past the idle timeout.
		for range 4 {
			time.Sleep(150 * time.Millisecond)
			if err := echo(ctx, c, websocket.MessageText, []byte("ping")); err != nil {
				t.Fatalf("an active tunnel was closed: %v", err)
			}
		}
		start := time.Now()
		code, reason := closeStatus(ctx, c)
		if code != websocket.StatusGoingAway || !strings.Contains(reason, "idle") {
			t.Errorf("close %d %q, want 1001 idle", code, reason)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("idle close after %s, want about 300ms", took)
		}
	})
	t.Run("lifetime", func(t *testing.T) {
		start := time.Now()
		c := g.mustDial(t, "/life/127.0.0.2", nil)
		// One goroutine writes, the test reads: echoes stream back until
		// the Close frame, which must arrive between two of them.
		go func() {
			for ctx.Err() == nil {
				if c.Write(ctx, websocket.MessageText, []byte("busy")) != nil {
					return
				}
			}
		}()
		code, reason := closeStatus(ctx, c)
		if code != websocket.StatusGoingAway || !strings.Contains(reason, "lifetime") {
			t.Errorf("close %d %q, want 1001 lifetime", code, reason)
		}
		if took := time.Since(start); took < 500*time.Millisecond || took > 2*time.Second {
			t.Errorf("lifetime close after %s, want about 500ms", took)
		}
	})
}

func TestConnectionCapsAnswer503WithRetryAfter(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	rt := testRoute("echo", "/e", backendOf("p", pod))
	rt.MaxConnectionsPerPod = 2
	g := startGateway(t, Options{MaxTunnels: 3}, rt, testRoute("other", "/o", backendOf("p", pod)))

	g.mustDial(t, "/e/127.0.0.2", nil)
	second := g.mustDial(t, "/e/127.0.0.2", nil)
	status, answer := g.rawRequest(t, handshake("/e/127.0.0.2"))
	if status != 503 || !strings.Contains(answer, "Retry-After: ") {
		t.Errorf("third tunnel to a pod capped at 2: %d %q, want 503 with Retry-After", status, answer)
	}
	g.mustDial(t, "/o/127.0.0.2", nil) // the gateway's third and last slot
	if status, _ := g.rawRequest(t, handshake("/o/127.0.0.2")); status != 503 {
		t.Errorf("tunnel past the global cap: %d, want 503", status)
	}
	// A closed tunnel frees its slot.
	_ = second.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(3 * time.Second)
	for g.srv.OpenTunnels() > 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	g.mustDial(t, "/e/127.0.0.2", nil)
}

func TestNoTableYetAnswers503(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	var dials atomic.Int64
	// A fresh publisher has only the empty start-up table.
	srv := New(routing.NewPublisher(), Options{Dial: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("no dial expected")
	}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer func() { _ = srv.Shutdown(context.Background(), 0) }()
	g := &testGateway{srv: srv, addr: l.Addr().String()}
	status, answer := g.rawRequest(t, handshake("/127.0.0.2"))
	if status != 503 || !strings.Contains(answer, "Retry-After: 1") {
		t.Errorf("before the first table: %d %q, want 503 with Retry-After", status, answer)
	}
	if dials.Load() != 0 || pod.Accepted() != 0 {
		t.Error("a handshake before the first table dialled")
	}
}
