package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/netnstest"
	"github.com/wsgate/wsgate/routing"
)

// The IPv6 tests run inside a network namespace whose loopback holds
// these ULA addresses: the gateway's (where clients connect), pods' and
// clients'. Only the namespace's loopback addresses are reachable from
// there.
var (
	v6Net     = netip.MustParsePrefix("fd00:5::/64")
	v6Gateway = netip.MustParseAddr("fd00:5::1")
	v6PodA    = netip.MustParseAddr("fd00:5::2")
	v6PodB    = netip.MustParseAddr("fd00:5::3")
	v6Dual    = netip.MustParseAddr("fd00:5::4") // with v4Dual: one dual-stack pod
	v6ClientA = netip.MustParseAddr("fd00:5::7")
	v6ClientB = netip.MustParseAddr("fd00:5::8")
	v4Dual    = netip.MustParseAddr("127.0.0.4")
	// Link-local addresses of the namespace's loopback, for a client on
	// the gateway's link.
	v6LinkGateway = netip.MustParseAddr("fe80::1%lo")
	v6LinkClient  = netip.MustParseAddr("fe80::2%lo")
)

// v6Namespace is the namespace of the IPv6 tests.
var v6Namespace = netnstest.Config{Addrs: func() []netip.Prefix {
	var ps []netip.Prefix
	for _, a := range []netip.Addr{v6Gateway, v6PodA, v6PodB, v6Dual, v6ClientA, v6ClientB} {
		ps = append(ps, netip.PrefixFrom(a, v6Net.Bits()))
	}
	for _, a := range []netip.Addr{v6LinkGateway, v6LinkClient} {
		ps = append(ps, netip.PrefixFrom(a.WithZone(""), 64))
	}
	return ps
}()}

// startGatewayAt is startGateway with the plain listener on listen (such
// as "[::]:0"), reached by clients at host (g.addr is host:port). The
// dials are counted as startGateway counts them, and any address outside
// loopback and v6Net is refused.
func startGatewayAt(t *testing.T, listen string, host netip.Addr, opts Options, routes ...*routing.Route) *testGateway {
	t.Helper()
	if opts.Dial != nil {
		t.Fatal("startGatewayAt dials with the default dialer only")
	}
	g := &testGateway{tables: routing.NewPublisher()}
	g.publish(routes...)
	opts.dialHook = func(address string) error {
		g.dials.Add(1)
		g.dialMu.Lock()
		g.dialed = append(g.dialed, address)
		g.dialMu.Unlock()
		a, err := netip.ParseAddrPort(address)
		if err != nil || !a.Addr().IsLoopback() && !v6Net.Contains(a.Addr()) {
			return fmt.Errorf("test dialer refuses %q", address)
		}
		return nil
	}
	g.srv = New(g.tables, opts)
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	g.addr = clientAddr(t, l, host)
	go func() { _ = g.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.srv.Shutdown(ctx, 0)
	})
	return g
}

// serveTLSAt makes g serve TLS, as serveTLS does, on a listener on
// listen, and returns the address clients reach it at on host.
func serveTLSAt(t *testing.T, g *testGateway, listen string, host netip.Addr) string {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	addr := clientAddr(t, l, host)
	cert := selfSigned(t, "ws.example.com")
	go func() { _ = g.srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	t.Cleanup(func() { _ = l.Close() })
	return addr
}

// clientAddr is host with l's port.
func clientAddr(t *testing.T, l net.Listener, host netip.Addr) string {
	t.Helper()
	lp, err := netip.ParseAddrPort(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(host, lp.Port()).String()
}

// v6Client opens websockets to one gateway address, over TLS or not,
// from a chosen source address (the zero Addr: the system's choice).
type v6Client struct {
	addr   string // the gateway's host:port
	tls    bool
	source netip.Addr
	// host is the Host header; "": the URL's, addr.
	host string
}

// url is the websocket URL of path at the gateway.
func (c v6Client) url(path string) string {
	// A zone's '%' is escaped in a URL.
	addr := strings.Replace(c.addr, "%", "%25", 1)
	if c.tls {
		return "wss://" + addr + path
	}
	return "ws://" + addr + path
}

// dial opens a websocket to path.
func (c v6Client) dial(ctx context.Context, path string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	o := websocket.DialOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Host == "" {
		o.Host = c.host
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if c.source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: c.source.AsSlice(), Zone: c.source.Zone()}
	}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: d.DialContext}
	if c.tls {
		serverName := ""
		if o.Host != "" {
			serverName, _, _ = net.SplitHostPort(o.Host)
			if serverName == "" {
				serverName = o.Host
			}
		}
		tr.TLSClientConfig = &tls.Config{
			ServerName:         serverName,
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"http/1.1"},
		}
	}
	o.HTTPClient = &http.Client{Transport: tr}
	return websocket.Dial(ctx, c.url(path), &o)
}

// mustDial is dial that fails the test on error.
func (c v6Client) mustDial(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	return mustOpen(t, path, func(ctx context.Context) (*websocket.Conn, *http.Response, error) { return c.dial(ctx, path, nil) })
}

// status is the gateway's answer to a handshake for path: 101 (the
// websocket is closed at once) or the status of its refusal.
func (c v6Client) status(t *testing.T, path string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := c.dial(ctx, path, nil)
	if err == nil {
		_ = conn.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, and no answer", path, err)
	}
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	return resp.StatusCode
}

// gatewayClient is the client of engine e for g, on host: g's plain
// listener, or a TLS listener of its own on listen.
func gatewayClient(t *testing.T, g *testGateway, e engine, listen string, host netip.Addr) v6Client {
	t.Helper()
	c := v6Client{addr: g.addr, host: "ws.example.com"}
	if e.tls {
		c.addr, c.tls = serveTLSAt(t, g, listen, host), true
	}
	return c
}

// echoBothWays checks that messages of several kinds and sizes cross c's
// tunnel and come back.
func echoBothWays(ctx context.Context, c *websocket.Conn) error {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, m := range []struct {
		typ websocket.MessageType
		msg []byte
	}{{websocket.MessageText, []byte("hello over IPv6")}, {websocket.MessageBinary, []byte{0, 1, 2, 0xff}}, {websocket.MessageBinary, big}, {websocket.MessageText, nil}} {
		if err := echo(ctx, c, m.typ, m.msg); err != nil {
			return err
		}
	}
	return nil
}

// dialledSince returns what g dialled after its first n dials.
func dialledSince(g *testGateway, n int64) []string {
	return slices.Clone(g.dialedAddrs()[n:])
}
