package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr/funcr"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Peers of the edge tests: the load balancer the gateway trusts, and a
// client that is not one. Both are loopback source addresses.
const (
	trustedPeer   = "127.0.0.61"
	untrustedPeer = "127.0.0.62"
)

// edgeGateway is a gateway with PROXY headers on, trusting trustedPeer,
// with one echo pod, its metrics and access log lines.
type edgeGateway struct {
	g       *testGateway
	reg     *prometheus.Registry
	log     *lines
	tlsAddr string // "" for a plain engine
	pod     string // the pod's path segment
}

func startEdgeGateway(t *testing.T, e engine, opts Options) *edgeGateway {
	t.Helper()
	pod := echoPod(t, "127.0.0.2")
	eg := &edgeGateway{reg: prometheus.NewRegistry(), log: &lines{}, pod: "127.0.0.2"}
	opts.goroutineTunnels, opts.bufferedReads = e.opts.goroutineTunnels, e.opts.bufferedReads
	opts.Metrics = NewMetrics(eg.reg)
	opts.AccessLog = funcr.NewJSON(func(obj string) { eg.log.add(obj) }, funcr.Options{})
	if opts.TrustedProxies == nil {
		opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(trustedPeer + "/32")}
	}
	eg.g = startGateway(t, opts, testRoute("echo", "/e", backendOf("p", pod)))
	if e.tls {
		eg.tlsAddr = serveTLS(t, eg.g)
	}
	return eg
}

// edgeDial is how an edge test's client connects: from src, writing
// pieces (a PROXY header, maybe cut) before anything else.
type edgeDial struct {
	src    string
	pieces [][]byte
}

// conn connects to the gateway's listener as d says.
func (eg *edgeGateway) conn(ctx context.Context, d edgeDial) (net.Conn, error) {
	addr := eg.g.addr
	if eg.tlsAddr != "" {
		addr = eg.tlsAddr
	}
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(d.src)}}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	for i, p := range d.pieces {
		if i > 0 {
			time.Sleep(30 * time.Millisecond)
		}
		if _, err := c.Write(p); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// dial opens a websocket to the pod with the client's header h.
func (eg *edgeGateway) dial(ctx context.Context, d edgeDial, h http.Header) (*websocket.Conn, *http.Response, error) {
	return eg.dialPath(ctx, d, "/e/"+eg.pod+"/x", h)
}

// dialPath opens a websocket to path on ws.example.com.
func (eg *edgeGateway) dialPath(ctx context.Context, d edgeDial, path string, h http.Header) (*websocket.Conn, *http.Response, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return eg.conn(ctx, d) },
		TLSClientConfig: &tls.Config{
			ServerName:         "ws.example.com",
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"http/1.1"},
		},
	}
	scheme := "ws"
	if eg.tlsAddr != "" {
		scheme = "wss"
	}
	return websocket.Dial(ctx, scheme+"://ws.example.com"+path, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: h})
}

// forwardedFor opens a websocket as d says and returns the
// X-Forwarded-For that the pod saw.
func (eg *edgeGateway) forwardedFor(t *testing.T, d edgeDial, h http.Header) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := eg.dial(ctx, d, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial from %s: %v (status %d)", d.src, err, status)
	}
	defer func() { _ = c.CloseNow() }()
	seen, err := seenByPod(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := seen.Header.Values("X-Forwarded-For"); len(got) != 1 {
		t.Fatalf("the pod got X-Forwarded-For %q, want one value", got)
	}
	return seen.Header.Get("X-Forwarded-For")
}

// refused connects as d says, sends a handshake (over TLS on a TLS
// engine) and returns the answer's status, or 0 when the gateway closed
// the connection without one.
func (eg *edgeGateway) refused(t *testing.T, d edgeDial) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := eg.conn(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if eg.tlsAddr != "" {
		tc := tls.Client(c, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true}) //nolint:gosec // a self-signed test certificate
		if err := tc.Handshake(); err != nil {
			if isTimeout(err) {
				t.Fatalf("the gateway neither answered nor closed: %v", err)
			}
			return 0
		}
		c = tc
	}
	return askOn(t, c, handshake("/e/"+eg.pod+"/x"))
}

// askOn sends data on c and returns the answer's status, or 0 when the
// gateway closed the connection without one. A 101 leaves c open.
func askOn(t *testing.T, c net.Conn, data string) int {
	t.Helper()
	if c == nil {
		return 0
	}
	if _, err := io.WriteString(c, data); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("the gateway neither answered nor closed: %v", err)
		}
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (eg *edgeGateway) refusedCount(t *testing.T, reason string) float64 {
	t.Helper()
	return value(t, eg.reg, "wsgate_proxy_protocol_refused_total", map[string]string{"reason": reason})
}

// v1 and v2 are PROXY headers for a TCP client src.
func v1(src string) []byte {
	return []byte("PROXY TCP4 " + src + " 10.0.0.1 41000 443\r\n")
}

func v2(t *testing.T, src netip.AddrPort) []byte {
	t.Helper()
	tp := proxyproto.TCPv4
	dst := netip.MustParseAddrPort("10.0.0.1:443")
	if src.Addr().Is6() {
		tp, dst = proxyproto.TCPv6, netip.MustParseAddrPort("[fd00::1]:443")
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
		SourceAddr: net.TCPAddrFromAddrPort(src), DestinationAddr: net.TCPAddrFromAddrPort(dst)}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProxyProtocol(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true})
		local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
		if err != nil {
			t.Fatal(err)
		}
		v2h := v2(t, netip.MustParseAddrPort("[2001:db8::7]:5000"))
		accepted := []struct {
			name string
			d    edgeDial
			want string
		}{
			{"v1 from the trusted proxy", edgeDial{trustedPeer, [][]byte{v1("203.0.113.7")}}, "203.0.113.7"},
			{"v2 IPv6 from the trusted proxy", edgeDial{trustedPeer, [][]byte{v2h}}, "2001:db8::7"},
			{"v2 IPv4", edgeDial{trustedPeer, [][]byte{v2(t, netip.MustParseAddrPort("198.51.100.4:1"))}}, "198.51.100.4"},
			{"v2 LOCAL (a health check): the proxy's own address", edgeDial{trustedPeer, [][]byte{local}}, trustedPeer},
			{"v1 UNKNOWN: a client no one knows, whose X-Forwarded-For is not read", edgeDial{trustedPeer, [][]byte{[]byte("PROXY UNKNOWN\r\n")}}, "0.0.0.0"},
			{"v1 in three pieces", edgeDial{trustedPeer, [][]byte{[]byte("PRO"), []byte("XY TCP4 203.0.113"), []byte(".8 10.0.0.1 1 2\r\n")}}, "203.0.113.8"},
			{"v2 in two pieces", edgeDial{trustedPeer, [][]byte{v2h[:7], v2h[7:]}}, "2001:db8::7"},
			{"no header from anyone else: its own address", edgeDial{untrustedPeer, nil}, untrustedPeer},
		}
		for _, c := range accepted {
			if got := eg.forwardedFor(t, c.d, nil); got != c.want {
				t.Errorf("%s: the pod saw X-Forwarded-For %q, want %q", c.name, got, c.want)
			}
		}
		if n := eg.g.dials.Load(); n != int64(len(accepted)) {
			t.Errorf("%d dials for %d tunnels", n, len(accepted))
		}
		// The access log's tunnel lines name the header's client.
		deadline := time.Now().Add(5 * time.Second)
		for !eg.log.hasClient("203.0.113.7") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !eg.log.hasClient("203.0.113.7") {
			t.Errorf("no access log line names client 203.0.113.7")
		}

		refusedCases := []struct {
			name   string
			d      edgeDial
			reason string
		}{
			{"v1 header from an untrusted peer", edgeDial{untrustedPeer, [][]byte{v1("203.0.113.9")}}, proxyUntrusted},
			{"v2 header from an untrusted peer", edgeDial{untrustedPeer, [][]byte{v2(t, netip.MustParseAddrPort("203.0.113.9:1"))}}, proxyUntrusted},
			{"no header from the trusted proxy", edgeDial{trustedPeer, nil}, proxyMissing},
			{"garbage from the trusted proxy", edgeDial{trustedPeer, [][]byte{[]byte("PROXY TCP4 nonsense\r\n")}}, proxyMalformed},
			{"v1 line too long", edgeDial{trustedPeer, [][]byte{[]byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n")}}, proxyMalformed},
			{"v2 with a UDP address", edgeDial{trustedPeer, [][]byte{udpHeader(t)}}, proxyMalformed},
			{"v2 signature then nonsense", edgeDial{trustedPeer, [][]byte{append(append([]byte{}, proxyproto.SIGV2...), 0x99, 0x11, 0, 12)}}, proxyMalformed},
		}
		for _, c := range refusedCases {
			before := eg.refusedCount(t, c.reason)
			if got := eg.refused(t, c.d); got != 0 {
				t.Errorf("%s: answered %d, want the connection closed without an answer", c.name, got)
			}
			if after := eg.refusedCount(t, c.reason); after != before+1 {
				t.Errorf("%s: wsgate_proxy_protocol_refused_total{reason=%q} went %v -> %v", c.name, c.reason, before, after)
			}
		}
		if n := eg.g.dials.Load(); n != int64(len(accepted)) {
			t.Errorf("refused connections dialled: %d dials for %d tunnels", n, len(accepted))
		}
	})
}

// TestProxyProtocolTLSClientHello: a load balancer that forgot its PROXY
// header sends the client's ClientHello first, which is refused.
func TestProxyProtocolTLSClientHello(t *testing.T) {
	eg := startEdgeGateway(t, engine{tls: true}, Options{ProxyProtocol: true})
	before := eg.refusedCount(t, proxyMissing)
	if got := eg.refused(t, edgeDial{src: trustedPeer}); got != 0 {
		t.Fatalf("a ClientHello without a PROXY header was answered %d", got)
	}
	if after := eg.refusedCount(t, proxyMissing); after != before+1 {
		t.Errorf("missing header counted %v -> %v", before, after)
	}
}

// TestProxyProtocolSlowHeader: a trusted peer that never completes its
// header is cut at the read-head timeout, and holds up no one meanwhile.
func TestProxyProtocolSlowHeader(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true, ReadHeaderTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := eg.conn(ctx, edgeDial{trustedPeer, [][]byte{[]byte("PROXY TCP4 203.0.")}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// While its header hangs, others are served.
		if got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{v1("203.0.113.10")}}, nil); got != "203.0.113.10" {
			t.Errorf("beside a hanging header: X-Forwarded-For %q", got)
		}
		_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read: %v, want the connection closed", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("closed after %v", d)
		}
	})
}

func udpHeader(t *testing.T) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UDPv4,
		SourceAddr:      &net.UDPAddr{IP: net.ParseIP("203.0.113.1"), Port: 1},
		DestinationAddr: &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 2}}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForwardedForFromTrustedProxies: X-Forwarded-For says who the
// client is only when a trusted proxy passes it on, and then only up to
// the first address that is not a trusted proxy's, reading from the
// right: what a client writes itself is never believed.
func TestForwardedForFromTrustedProxies(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix(trustedPeer + "/32"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/64"),
		}})
		cases := []struct {
			name string
			src  string
			xff  []string
			want string
		}{
			{"a client's own X-Forwarded-For is overwritten", untrustedPeer, []string{"203.0.113.5"}, untrustedPeer},
			{"a client's spoofed chain is overwritten", untrustedPeer, []string{"10.1.0.1, " + trustedPeer}, untrustedPeer},
			{"the trusted proxy names the client", trustedPeer, []string{"203.0.113.5"}, "203.0.113.5"},
			{"spoofed entries left of the client are skipped", trustedPeer, []string{"6.6.6.6, 7.7.7.7, 203.0.113.5"}, "203.0.113.5"},
			{"trusted hops are walked through", trustedPeer, []string{"6.6.6.6, 203.0.113.5, 10.1.2.3, fd00:1::9"}, "203.0.113.5"},
			{"several header lines read as one list", trustedPeer, []string{"6.6.6.6, 203.0.113.5", "10.1.2.3"}, "203.0.113.5"},
			{"an address with a port", trustedPeer, []string{"[2001:db8::5]:4431"}, "2001:db8::5"},
			{"garbage stops the walk at the proxy that passed it", trustedPeer, []string{"203.0.113.5, not-an-address, 10.1.2.3"}, "10.1.2.3"},
			{"a zone is garbage", trustedPeer, []string{"fe80::1%eth0"}, trustedPeer},
			{"all trusted: the left-most", trustedPeer, []string{"10.1.0.7, 10.1.0.8"}, "10.1.0.7"},
			{"IPv4 in IPv6 is unmapped", trustedPeer, []string{"::ffff:203.0.113.6"}, "203.0.113.6"},
			{"no X-Forwarded-For: the proxy itself", trustedPeer, nil, trustedPeer},
		}
		for _, c := range cases {
			var h http.Header
			if c.xff != nil {
				h = http.Header{"X-Forwarded-For": c.xff}
			}
			if got := eg.forwardedFor(t, edgeDial{src: c.src}, h); got != c.want {
				t.Errorf("%s: the pod saw X-Forwarded-For %q, want %q", c.name, got, c.want)
			}
		}
	})
}

// hasClient reports whether a logged line names client (with or
// without a port).
func (l *lines) hasClient(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.all {
		c, _ := m["client"].(string)
		if c == client || strings.HasPrefix(c, client+":") || strings.HasPrefix(c, "["+client+"]:") {
			return true
		}
	}
	return false
}
