package proxy

// Per-client limits over IPv6, in a network namespace of their own: an
// IPv6 client is its /64, whether the gateway sees its address on the
// connection or in a trusted load balancer's PROXY header.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/netnstest"
)

// Addresses of the limits tests, besides the gateway's and pod A's: two
// clients in one /64 (the gateway's, v6Net), one in another /64, and a
// load balancer in v6Net that sends PROXY headers.
var (
	v6LimitA     = netip.MustParseAddr("fd00:5::a")
	v6LimitB     = netip.MustParseAddr("fd00:5::b")
	v6LimitOther = netip.MustParseAddr("fd00:6::1")
	v6Balancer   = netip.MustParseAddr("fd00:5::9")
)

// v6LimitsNamespace is the namespace of the limits tests.
var v6LimitsNamespace = netnstest.Config{Addrs: []netip.Prefix{
	netip.PrefixFrom(v6Gateway, 64),
	netip.PrefixFrom(v6PodA, 64),
	netip.PrefixFrom(v6LimitA, 64),
	netip.PrefixFrom(v6LimitB, 64),
	netip.PrefixFrom(v6Balancer, 64),
	netip.PrefixFrom(v6LimitOther, 64),
}}

// v6EdgeClient opens websockets to a gateway from c.source, writing
// header (a PROXY header) on the connection before anything else.
type v6EdgeClient struct {
	v6Client
	header []byte
}

// from is c connecting from src, with a PROXY header for client when
// client is valid.
func (c v6EdgeClient) from(t *testing.T, src netip.Addr, client netip.AddrPort) v6EdgeClient {
	t.Helper()
	c.source, c.header = src, nil
	if client.IsValid() {
		c.header = v2(t, client)
	}
	return c
}

// dial opens a websocket to path.
func (c v6EdgeClient) dial(ctx context.Context, path string) (*websocket.Conn, *http.Response, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: c.source.AsSlice()}}
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil || c.header == nil {
				return conn, err
			}
			if _, err := conn.Write(c.header); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		},
	}
	if c.tls {
		tr.TLSClientConfig = &tls.Config{
			ServerName:         c.host,
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"http/1.1"},
		}
	}
	return websocket.Dial(ctx, c.url(path), &websocket.DialOptions{Host: c.host, HTTPClient: &http.Client{Transport: tr}})
}

// try opens a websocket to path: 101 with the open connection (closed
// when the test ends), or the refusal's status and Retry-After.
func (c v6EdgeClient) try(t *testing.T, path string) (int, string, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := c.dial(ctx, path)
	if err == nil {
		t.Cleanup(func() { _ = conn.CloseNow() })
		return http.StatusSwitchingProtocols, "", conn
	}
	if resp == nil {
		t.Fatalf("dial %s from %s: %v, and no answer", path, c.source, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

// open is try that wants a tunnel, and returns it.
func (c v6EdgeClient) open(t *testing.T, what, path string) *websocket.Conn {
	t.Helper()
	st, _, conn := c.try(t, path)
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("%s: answer %d, want 101", what, st)
	}
	return conn
}

// forwardedFor is the X-Forwarded-For that the pod saw on conn.
func forwardedFor(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seen, err := seenByPod(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(seen.Header.Values("X-Forwarded-For"), ",")
}

// v6LimitsGateway starts a gateway on [::]:0 for engine e with opts
// (its engine fields aside), routing ws.example.com/<address>/ to an
// echo pod on fd00:5::2, and returns a client of it (source and header unset) and its
// metrics.
func v6LimitsGateway(t *testing.T, e engine, opts Options) (*testGateway, v6EdgeClient, *prometheus.Registry) {
	t.Helper()
	opts.goroutineTunnels, opts.bufferedReads = e.opts.goroutineTunnels, e.opts.bufferedReads
	reg := prometheus.NewRegistry()
	opts.Metrics = NewMetrics(reg)
	rt := testRoute("v6", "/", backendOf("a", echoPod(t, v6PodA.String())))
	g := startGatewayAt(t, "[::]:0", v6Gateway, opts, rt)
	return g, v6EdgeClient{v6Client: gatewayClient(t, g, e, "[::]:0", v6Gateway)}, reg
}

// TestIPv6ClientLimitsBySlash64InNetns: the gateway's per-client limits
// count an IPv6 client by its /64, on every engine: fd00:5::a and
// fd00:5::b share a tunnel cap, a handshake bucket and a refusal block,
// which fd00:6::1, in another /64, does not feel.
func TestIPv6ClientLimitsBySlash64InNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6LimitsNamespace) {
		return
	}
	pod := "/" + v6PodA.String() + "/x"
	limited := func(t *testing.T, reg *prometheus.Registry, reason string) float64 {
		t.Helper()
		return value(t, reg, "wsgate_client_limited_total", map[string]string{"reason": reason})
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		t.Run("open tunnels", func(t *testing.T) {
			g, c, reg := v6LimitsGateway(t, e, Options{ClientLimits: ClientLimits{MaxTunnels: 1}})
			a, b, other := c.from(t, v6LimitA, netip.AddrPort{}), c.from(t, v6LimitB, netip.AddrPort{}), c.from(t, v6LimitOther, netip.AddrPort{})
			first := a.open(t, "fd00:5::a's tunnel", pod)
			checkEngine(t, g, e)
			if got := forwardedFor(t, first); got != v6LimitA.String() {
				t.Errorf("the pod saw X-Forwarded-For %q, want %s", got, v6LimitA)
			}
			dials := g.dials.Load()
			st, retry, _ := b.try(t, pod)
			want429(t, "fd00:5::b while fd00:5::a, in its /64, holds a tunnel", st, retry)
			if g.dials.Load() != dials {
				t.Error("the limited handshake was dialled")
			}
			if got := limited(t, reg, limitTunnels); got != 1 {
				t.Errorf("wsgate_client_limited_total{reason=open_tunnels} = %v, want 1", got)
			}
			second := other.open(t, "fd00:6::1, in another /64", pod)
			if got := forwardedFor(t, second); got != v6LimitOther.String() {
				t.Errorf("the pod saw X-Forwarded-For %q, want %s", got, v6LimitOther)
			}
			// The /64's tunnel closed, its place is fd00:5::b's.
			_ = first.Close(websocket.StatusNormalClosure, "")
			waitFor(t, "fd00:5::b's tunnel once fd00:5::a's closed", func() bool {
				st, _, conn := b.try(t, pod)
				if conn != nil {
					_ = conn.Close(websocket.StatusNormalClosure, "")
				}
				return st == http.StatusSwitchingProtocols
			})
			_ = second.Close(websocket.StatusNormalClosure, "")
			waitNoTunnels(t, g)
		})

		t.Run("handshake rate", func(t *testing.T) {
			// One handshake in 20 s, two at once; refusals counted as the
			// gateway's flags do by default.
			_, c, reg := v6LimitsGateway(t, e, Options{ClientLimits: ClientLimits{HandshakeRate: 0.05, HandshakeBurst: 2, RefusalBudget: 100}})
			a, b, other := c.from(t, v6LimitA, netip.AddrPort{}), c.from(t, v6LimitB, netip.AddrPort{}), c.from(t, v6LimitOther, netip.AddrPort{})
			// fd00:6::1 starts with a handshake for a host with no route:
			// a refusal, which takes nothing from its handshake bucket.
			lost := other
			lost.host = "elsewhere.example.com"
			if st, _, _ := lost.try(t, pod); st != http.StatusNotFound {
				t.Fatalf("a host without a route: %d, want 404", st)
			}
			for i, c := range []v6EdgeClient{a, b} {
				_ = c.open(t, fmt.Sprintf("handshake %d of the /64, within its burst of 2", i+1), pod).CloseNow()
			}
			for _, c := range []v6EdgeClient{a, b} {
				st, retry, _ := c.try(t, pod)
				want429(t, c.source.String()+" past its /64's burst", st, retry)
			}
			if got := limited(t, reg, limitRate); got != 2 {
				t.Errorf("wsgate_client_limited_total{reason=handshake_rate} = %v, want 2", got)
			}
			for i := range 2 {
				_ = other.open(t, fmt.Sprintf("fd00:6::1's handshake %d", i+1), pod).CloseNow()
			}
			st, retry, _ := other.try(t, pod)
			want429(t, "fd00:6::1 past its own burst", st, retry)
		})

		t.Run("refusal block", func(t *testing.T) {
			g, c, reg := v6LimitsGateway(t, e, Options{ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: 1500 * time.Millisecond}})
			a, b, other := c.from(t, v6LimitA, netip.AddrPort{}), c.from(t, v6LimitB, netip.AddrPort{}), c.from(t, v6LimitOther, netip.AddrPort{})
			// fd00:5::a walks addresses that are no pod's: the fourth
			// refusal is past its budget of 3 a minute.
			for i := range 4 {
				if st, _, _ := a.try(t, fmt.Sprintf("/fd00:5::%x/x", 0x100+i)); st != http.StatusNotFound {
					t.Fatalf("scan step %d: %d, want 404", i+1, st)
				}
			}
			for _, tc := range []struct {
				c    v6EdgeClient
				what string
			}{{a, "the scanner"}, {b, "fd00:5::b, in the scanner's /64"}} {
				st, retry, _ := tc.c.try(t, pod)
				want429(t, tc.what+", to the pod", st, retry)
			}
			if g.dials.Load() != 0 {
				t.Errorf("%d dials from blocked clients", g.dials.Load())
			}
			_ = other.open(t, "fd00:6::1, in another /64", pod).CloseNow()
			if got := value(t, reg, "wsgate_client_blocks_total", nil); got != 1 {
				t.Errorf("wsgate_client_blocks_total = %v, want 1", got)
			}
			if got := limited(t, reg, limitRefusals); got != 2 {
				t.Errorf("wsgate_client_limited_total{reason=refusals} = %v, want 2", got)
			}
			waitFor(t, "the end of the /64's block", func() bool {
				st, _, conn := b.try(t, pod)
				if conn != nil {
					_ = conn.CloseNow()
				}
				return st == http.StatusSwitchingProtocols
			})
		})
	})
}

// TestIPv6ProxyProtocolLimitsInNetns: behind a trusted load balancer
// (fd00:5::9) that sends PROXY v2 headers to the gateway's [::]
// listener, the client is the header's IPv6 source, on every engine: the
// pod sees it in X-Forwarded-For, and the tunnel cap and the refusal
// block count its /64, not the balancer's. A client in the balancer's
// /64 that connects itself is counted on its own.
func TestIPv6ProxyProtocolLimitsInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6LimitsNamespace) {
		return
	}
	pod := "/" + v6PodA.String() + "/x"
	var (
		src1a = netip.MustParseAddrPort("[2001:db8:1::a]:40001")
		src1b = netip.MustParseAddrPort("[2001:db8:1::b]:40002")
		src2  = netip.MustParseAddrPort("[2001:db8:2::1]:40003")
	)
	forEachEngine(t, func(t *testing.T, e engine) {
		opts := Options{
			ProxyProtocol:  true,
			TrustedProxies: []netip.Prefix{netip.PrefixFrom(v6Balancer, 128)},
			ClientLimits:   ClientLimits{MaxTunnels: 1, RefusalBudget: 3, RefusalBlock: time.Minute},
		}
		g, c, reg := v6LimitsGateway(t, e, opts)
		via1a, via1b, via2 := c.from(t, v6Balancer, src1a), c.from(t, v6Balancer, src1b), c.from(t, v6Balancer, src2)
		direct := c.from(t, v6LimitA, netip.AddrPort{})

		first := via1a.open(t, "2001:db8:1::a through the balancer", pod)
		checkEngine(t, g, e)
		if got := forwardedFor(t, first); got != src1a.Addr().String() {
			t.Errorf("the pod saw X-Forwarded-For %q, want the header's source %s", got, src1a.Addr())
		}
		st, retry, _ := via1b.try(t, pod)
		want429(t, "2001:db8:1::b while 2001:db8:1::a, in its /64, holds a tunnel", st, retry)
		for _, tc := range []struct {
			c    v6EdgeClient
			want string
		}{{via2, src2.Addr().String()}, {direct, v6LimitA.String()}} {
			conn := tc.c.open(t, tc.want+", in another /64", pod)
			if got := forwardedFor(t, conn); got != tc.want {
				t.Errorf("the pod saw X-Forwarded-For %q, want %s", got, tc.want)
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
		}
		_ = first.Close(websocket.StatusNormalClosure, "")
		waitFor(t, "2001:db8:1::b's tunnel once 2001:db8:1::a's closed", func() bool {
			st, _, conn := via1b.try(t, pod)
			if conn != nil {
				_ = conn.Close(websocket.StatusNormalClosure, "")
			}
			return st == http.StatusSwitchingProtocols
		})
		waitNoTunnels(t, g)

		// 2001:db8:1::a walks addresses that are no pod's, through the
		// balancer: its /64 is blocked, the balancer's is not.
		dials := g.dials.Load()
		for i := range 4 {
			if st, _, _ := via1a.try(t, fmt.Sprintf("/fd00:5::%x/x", 0x100+i)); st != http.StatusNotFound {
				t.Fatalf("scan step %d: %d, want 404", i+1, st)
			}
		}
		st, retry, _ = via1b.try(t, pod)
		want429(t, "2001:db8:1::b, in the scanner's /64", st, retry)
		if g.dials.Load() != dials {
			t.Error("the scan or the blocked client was dialled")
		}
		for _, tc := range []struct {
			c    v6EdgeClient
			what string
		}{{via2, "2001:db8:2::1 through the balancer"}, {direct, "fd00:5::a, in the balancer's /64"}} {
			_ = tc.c.open(t, tc.what+", while 2001:db8:1::/64 is blocked", pod).CloseNow()
		}
		if got := value(t, reg, "wsgate_client_blocks_total", nil); got != 1 {
			t.Errorf("wsgate_client_blocks_total = %v, want 1", got)
		}
		for _, reason := range []string{proxyUntrusted, proxyMissing, proxyMalformed} {
			if got := value(t, reg, "wsgate_proxy_protocol_refused_total", map[string]string{"reason": reason}); got > 0 {
				t.Errorf("wsgate_proxy_protocol_refused_total{reason=%q} = %v, want none refused", reason, got)
			}
		}
	})
}
