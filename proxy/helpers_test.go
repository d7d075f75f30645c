package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

// testGateway is a proxy serving a table given directly, on a loopback
// listener, with every dial counted.
type testGateway struct {
	srv    *Server
	tables *routing.Publisher
	addr   string
	dials  atomic.Int64
	gen    uint64

	dialMu sync.Mutex
	dialed []string // every address dialled, in order
}

// dialedAddrs returns the addresses dialled so far.
func (g *testGateway) dialedAddrs() []string {
	g.dialMu.Lock()
	defer g.dialMu.Unlock()
	return append([]string(nil), g.dialed...)
}

func startGateway(t *testing.T, opts Options, routes ...*routing.Route) *testGateway {
	t.Helper()
	g := &testGateway{tables: routing.NewPublisher()}
	g.publish(routes...)
	// Every address is counted and checked before any connect: through
	// the default dialer's hook (which the event loops stand in for), or
	// around the test's own dialer.
	hook := func(address string) error {
		g.dials.Add(1)
		g.dialMu.Lock()
		g.dialed = append(g.dialed, address)
		g.dialMu.Unlock()
		if a, err := netip.ParseAddrPort(address); err != nil || !a.Addr().IsLoopback() {
			return fmt.Errorf("test dialer refuses non-loopback address %q", address)
		}
		return nil
	}
	if dial := opts.Dial; dial != nil {
		opts.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			if err := hook(address); err != nil {
				return nil, err
			}
			return dial(ctx, network, address)
		}
	} else {
		opts.dialHook = hook
	}
	g.srv = New(g.tables, opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = l.Addr().String()
	go func() { _ = g.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.srv.Shutdown(ctx, 0)
	})
	return g
}

// publish swaps in a table holding routes.
func (g *testGateway) publish(routes ...*routing.Route) {
	g.gen++
	// routing.New takes ownership of routes: give it copies so tests can
	// reuse theirs.
	cp := make([]*routing.Route, len(routes))
	for i, r := range routes {
		c := *r
		c.Backends = append([]routing.Backend(nil), r.Backends...)
		cp[i] = &c
	}
	g.tables.Publish(routing.New(g.gen, time.Now(), cp))
}

// echoPod starts an echo server on a loopback address (e.g. "127.0.0.2").
func echoPod(t *testing.T, ip string) *echopod.Server {
	t.Helper()
	s, err := echopod.Start(net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("echo pod on %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// backendOf returns a routing.Backend for an echo server.
func backendOf(pod string, s *echopod.Server) routing.Backend {
	return routing.Backend{Pod: pod, Addr: netip.MustParseAddrPort(s.Addr)}
}

// testRoute is a route on ws.example.com/<prefix> with the given backends.
func testRoute(name, prefix string, backends ...routing.Backend) *routing.Route {
	return &routing.Route{
		Key:         routing.RouteKey{Namespace: "ns", Name: name},
		Hosts:       []string{"ws.example.com"},
		PathPrefix:  prefix,
		BackendPath: "/",
		Backends:    backends,
	}
}

// dialWS opens a websocket through the gateway to path on ws.example.com.
func (g *testGateway) dialWS(ctx context.Context, path string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if opts.Host == "" {
		opts.Host = "ws.example.com"
	}
	return websocket.Dial(ctx, "ws://"+g.addr+path, opts)
}

// mustDial is dialWS that fails the test on error.
func (g *testGateway) mustDial(t *testing.T, path string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	return mustOpen(t, path, func(ctx context.Context) (*websocket.Conn, *http.Response, error) { return g.dialWS(ctx, path, opts) })
}

// mustOpen opens a websocket to path with dial within 5 s, or fails the
// test; the connection reads messages of up to 64 MiB and is closed when
// the test ends.
func mustOpen(t *testing.T, path string, dial func(context.Context) (*websocket.Conn, *http.Response, error)) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := dial(ctx)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// echo sends msg and expects it back.
func echo(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, msg []byte) error {
	if err := c.Write(ctx, typ, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	gotTyp, got, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if gotTyp != typ || string(got) != string(msg) {
		return fmt.Errorf("echo: got %v %q, want %v %q", gotTyp, truncate(got), typ, truncate(msg))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// closeStatus waits for the server side to close c and returns the close
// code it sent (-1 when the connection ended without a Close frame).
func closeStatus(ctx context.Context, c *websocket.Conn) (websocket.StatusCode, string) {
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Reason
		}
		return -1, err.Error()
	}
}

// rawRequest sends a raw request head to the gateway and returns the
// status line and headers of the answer.
func (g *testGateway) rawRequest(t *testing.T, head string) (status int, answer string) {
	t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil || strings.Contains(string(buf[:n]), "\r\n\r\n") {
			break
		}
	}
	answer = string(buf[:n])
	if _, err := fmt.Sscanf(answer, "HTTP/1.1 %d", &status); err != nil {
		t.Fatalf("no status line in answer %q", answer)
	}
	return status, answer
}

// handshake returns a valid websocket request head for path on
// ws.example.com.
func handshake(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
}

// wsClient opens websockets through a test gateway as the clients of one
// engine connect: on the gateway's plain listener, or over TLS (the
// server name is the Host) on a TLS listener of its own.
type wsClient struct {
	g       *testGateway
	tlsAddr string // "" for plain connections
}

// newWSClient returns e's client for g; a TLS engine's starts g's TLS
// listener.
func newWSClient(t *testing.T, g *testGateway, e engine) *wsClient {
	t.Helper()
	c := &wsClient{g: g}
	if e.tls {
		c.tlsAddr = serveTLS(t, g)
	}
	return c
}

// dial opens a websocket to path on ws.example.com, or on opts.Host.
func (c *wsClient) dial(ctx context.Context, path string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	if c.tlsAddr == "" {
		return c.g.dialWS(ctx, path, opts)
	}
	o := websocket.DialOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Host == "" {
		o.Host = "ws.example.com"
	}
	serverName, _, err := net.SplitHostPort(o.Host)
	if err != nil {
		serverName = o.Host
	}
	o.HTTPClient = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{
			ServerName:         serverName,
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"http/1.1"},
		},
	}}
	return websocket.Dial(ctx, "wss://"+c.tlsAddr+path, &o)
}

// mustDial is dial that fails the test on error.
func (c *wsClient) mustDial(t *testing.T, path string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	return mustOpen(t, path, func(ctx context.Context) (*websocket.Conn, *http.Response, error) { return c.dial(ctx, path, opts) })
}

// status is the gateway's answer to a handshake for path: 101 (the
// websocket is closed at once) or the status of its refusal, with the
// refusal's body and Retry-After.
func (c *wsClient) status(t *testing.T, path string, opts *websocket.DialOptions) (status int, body, retryAfter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := c.dial(ctx, path, opts)
	if err == nil {
		_ = conn.CloseNow()
		return http.StatusSwitchingProtocols, "", ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, and no answer", path, err)
	}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		_ = resp.Body.Close()
		body = string(b)
	}
	return resp.StatusCode, body, resp.Header.Get("Retry-After")
}

// seenByPod asks an echo pod, through c, what handshake it got.
func seenByPod(ctx context.Context, c *websocket.Conn) (echopod.Seen, error) {
	var seen echopod.Seen
	if err := c.Write(ctx, websocket.MessageText, []byte(echopod.InfoRequest)); err != nil {
		return seen, fmt.Errorf("write: %w", err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		return seen, fmt.Errorf("read: %w", err)
	}
	if err := json.Unmarshal(msg, &seen); err != nil {
		return seen, fmt.Errorf("the pod's report %q: %w", truncate(msg), err)
	}
	return seen, nil
}
