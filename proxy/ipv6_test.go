package proxy

// IPv6 end to end: clients on IPv6 addresses reach IPv6 pods through a
// gateway listening on [::], over every engine, with real sockets. The
// tests that need addresses beyond ::1 run in a network namespace of
// their own (internal/netnstest), where fd00:5::/64 is on the loopback
// and nothing else is reachable.

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/netnstest"
	"github.com/wsgate/wsgate/routing"
)

// TestIPv6TunnelsInNetns: a gateway on [::]:0, reached at fd00:5::1,
// carries tunnels to IPv6 pods addressed by their canonical text, on
// every engine: the address in the path is the one dialled, exactly, and
// the pod sees the client's IPv6 address and the request rewritten.
func TestIPv6TunnelsInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6Namespace) {
		return
	}
	podA, podB := echoPod(t, v6PodA.String()), echoPod(t, v6PodB.String())
	rt := testRoute("v6", "/", backendOf("a", podA), backendOf("b", podB))
	rt.BackendPath = "/ws"
	// Clients that name the gateway by its address send Host
	// "[fd00:5::1]:<port>": a catch-all route serves them.
	literal := testRoute("literal", "/lit", backendOf("a", podA))
	literal.Hosts = nil
	forEachEngine(t, func(t *testing.T, e engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		g := startGatewayAt(t, "[::]:0", v6Gateway, e.opts, rt, literal)
		c := gatewayClient(t, g, e, "[::]:0", v6Gateway)
		proto := "http"
		if e.tls {
			proto = "https"
		}
		for _, pod := range []*echopod.Server{podA, podB} {
			ap := netip.MustParseAddrPort(pod.Addr)
			before := g.dials.Load()
			conn := c.mustDial(t, "/"+ap.Addr().String()+"/room/7?x=1")
			if err := echoBothWays(ctx, conn); err != nil {
				t.Fatalf("to %s: %v", ap, err)
			}
			checkEngine(t, g, e)
			seen, err := seenByPod(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range []struct{ what, got, want string }{
				{"path", seen.Path, "/ws/room/7"},
				{"query", seen.RawQuery, "x=1"},
				{"Host", seen.Host, "ws.example.com"},
				{"X-Forwarded-For", strings.Join(seen.Header.Values("X-Forwarded-For"), ","), v6Gateway.String()},
				{"X-Forwarded-Proto", seen.Header.Get("X-Forwarded-Proto"), proto},
			} {
				if ch.got != ch.want {
					t.Errorf("to %s, the pod got %s %q, want %q", ap, ch.what, ch.got, ch.want)
				}
			}
			if got := dialledSince(g, before); !slices.Equal(got, []string{ap.String()}) {
				t.Errorf("dialled %v, want exactly [%s]", got, ap)
			}
			if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Errorf("clean close through the gateway: %v", err)
			}
		}

		// The Host that a browser sends for ws://[fd00:5::1]:<port>/.
		lc := c
		lc.host = ""
		conn := lc.mustDial(t, "/lit/"+v6PodA.String())
		if err := echo(ctx, conn, websocket.MessageText, []byte("literal host")); err != nil {
			t.Fatal(err)
		}
		seen, err := seenByPod(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Host != c.addr || seen.Header.Get("X-Forwarded-Host") != c.addr {
			t.Errorf("the pod got Host %q and X-Forwarded-Host %q, want %q", seen.Host, seen.Header.Get("X-Forwarded-Host"), c.addr)
		}
		_ = conn.Close(websocket.StatusNormalClosure, "")
		waitNoTunnels(t, g)
	})
}

// TestIPv6DualStackPodInNetns: a pod with an IPv4 and an IPv6 address
// (status.podIPs, one port: the table holds one backend per address) is
// reached by either canonical form, each at its own address; its
// IPv4-mapped form is not found; and revoking the pod closes the tunnels
// to both addresses. A client on IPv4, through the same [::] listener, is
// seen at its IPv4 address, not an IPv4-mapped one.
func TestIPv6DualStackPodInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6Namespace) {
		return
	}
	port, servers, err := echopod.StartAll(v6Dual.String(), v4Dual.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		t.Cleanup(func() { _ = s.Close() })
	}
	on6, on4 := servers[0], servers[1]
	dual := []routing.Backend{
		{Pod: "dual", Addr: netip.AddrPortFrom(v6Dual, port)},
		{Pod: "dual", Addr: netip.AddrPortFrom(v4Dual, port)},
	}
	rt := testRoute("dual", "/d", dual...)
	forEachEngine(t, func(t *testing.T, e engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		g := startGatewayAt(t, "[::]:0", v6Gateway, e.opts, rt)
		clients := map[string]v6Client{"IPv6": gatewayClient(t, g, e, "[::]:0", v6Gateway)}
		// The same listeners, reached over IPv4.
		v4 := clients["IPv6"]
		v4.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddrPort(v4.addr).Port()).String()
		clients["IPv4"] = v4

		var open []*websocket.Conn
		for _, name := range []string{"IPv6", "IPv4"} {
			c := clients[name]
			for _, b := range dual {
				pod := on6
				if b.Addr.Addr().Is4() {
					pod = on4
				}
				accepted, before := pod.Accepted(), g.dials.Load()
				conn := c.mustDial(t, "/d/"+b.Addr.Addr().String()+"/x")
				if err := echoBothWays(ctx, conn); err != nil {
					t.Fatalf("%s client to %s: %v", name, b.Addr, err)
				}
				if pod.Accepted() != accepted+1 {
					t.Errorf("%s client to %s: the pod's listener on %s did not get the tunnel", name, b.Addr, pod.Addr)
				}
				if got := dialledSince(g, before); !slices.Equal(got, []string{b.Addr.String()}) {
					t.Errorf("dialled %v, want exactly [%s]", got, b.Addr)
				}
				seen, err := seenByPod(ctx, conn)
				if err != nil {
					t.Fatal(err)
				}
				want := v6Gateway.String()
				if name == "IPv4" {
					want = "127.0.0.1"
				}
				if got := strings.Join(seen.Header.Values("X-Forwarded-For"), ","); got != want {
					t.Errorf("%s client: X-Forwarded-For %q, want %q", name, got, want)
				}
				open = append(open, conn)
			}
		}
		checkEngine(t, g, e)

		before := g.dials.Load()
		for _, seg := range []string{"::ffff:127.0.0.4", "::ffff:7f00:4", "::127.0.0.4"} {
			if status := clients["IPv6"].status(t, "/d/"+seg+"/x"); status != http.StatusNotFound {
				t.Errorf("%q: status %d, want 404", seg, status)
			}
		}
		if got := dialledSince(g, before); len(got) != 0 {
			t.Errorf("the IPv4-mapped forms of the pod's address dialled %v", got)
		}

		// Revoked: every tunnel to either address gets a Close 1008.
		g.publish(testRoute("dual", "/d"))
		for i, conn := range open {
			if code, reason := closeStatus(ctx, conn); code != websocket.StatusPolicyViolation {
				t.Errorf("tunnel %d to the revoked pod: close %d %q, want 1008", i, code, reason)
			}
		}
		waitNoTunnels(t, g)
	})
}

// TestIPv6NonCanonicalAddressesInNetns: every form of an allowlisted
// IPv6 address but the canonical one is refused before any lookup: 404
// (400 for a zone, whose '%' is refused in any path), with no dial and
// no connection to the pod.
func TestIPv6NonCanonicalAddressesInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6Namespace) {
		return
	}
	pod := startFakePod(t, v6PodA.String(), podAnswers(ok101))
	v4 := startFakePod(t, v4Dual.String(), podAnswers(ok101))
	port := pod.addr.Port()
	rt := testRoute("v6", "/", pod.backend("a"), v4.backend("v4"))
	cases := []struct {
		seg  string
		want int
	}{
		{"FD00:5::2", 404}, {"fd00:5::2", 101}, {"Fd00:5::2", 404},
		{"fd00:5::02", 404}, {"fd00:5::0002", 404}, {"fd00:0005::2", 404}, {"0fd00:5::2", 404},
		{"fd00:5:0:0:0:0:0:2", 404}, {"fd00:5:0::2", 404}, {"fd00:5::0:2", 404}, {"fd00:0005:0000:0000:0000:0000:0000:0002", 404},
		{"fd00:5::0.0.0.2", 404},
		{"[fd00:5::2]", 404}, {"[fd00:5::2]:" + strconv.Itoa(int(port)), 404}, {"fd00:5::2:" + strconv.Itoa(int(port)), 404},
		{"fd00:5::2%lo", 400}, {"fd00:5::2%25lo", 400}, {"fd00:5::2%251", 400},
		{"fd00:5::2.", 404}, {"fd00:5::2:", 404}, {":fd00:5::2", 404}, {"fd00::5::2", 404},
		{"::ffff:127.0.0.4", 404}, {"::FFFF:127.0.0.4", 404}, {"::ffff:127.0.0.1", 404}, {"::ffff:7f00:4", 404}, {"::127.0.0.4", 404}, {"64:ff9b::7f00:4", 404},
		{"127.0.0.4", 101},
	}
	forEachPlainEngine(t, func(t *testing.T, opts Options) {
		g := startGatewayAt(t, "[::]:0", v6Gateway, opts, rt)
		for _, tc := range cases {
			t.Run(tc.seg, func(t *testing.T) {
				dials, accepted := g.dials.Load(), pod.accepted()+v4.accepted()
				a := exchange(t, g.addr, wsHead("/"+tc.seg+"/x"))
				if a.resp.StatusCode != tc.want {
					t.Fatalf("status %q, want %d (body %q)", a.resp.Status, tc.want, a.body)
				}
				_ = a.conn.Close()
				got := dialledSince(g, dials)
				if tc.want != http.StatusSwitchingProtocols {
					if len(got) != 0 || pod.accepted()+v4.accepted() != accepted {
						t.Errorf("dialled %v and the pods got %d connection(s): want none", got, pod.accepted()+v4.accepted()-accepted)
					}
					return
				}
				want := netip.AddrPortFrom(netip.MustParseAddr(tc.seg), port).String()
				if !slices.Equal(got, []string{want}) {
					t.Errorf("dialled %v, want exactly [%s]", got, want)
				}
			})
		}
		waitNoTunnels(t, g)
	})
}

// TestIPv6ClientAddressInNetns: the pod sees, in X-Forwarded-For, the
// IPv6 address each client connected from (never one the client sent),
// written as Go's net package writes it, whatever the engine: with its
// zone for a client on a link-local address.
func TestIPv6ClientAddressInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6Namespace) {
		return
	}
	pod := echoPod(t, v6PodA.String())
	rt := testRoute("v6", "/", backendOf("a", pod))
	forEachEngine(t, func(t *testing.T, e engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		g := startGatewayAt(t, "[::]:0", v6Gateway, e.opts, rt)
		global := gatewayClient(t, g, e, "[::]:0", v6Gateway)
		// The same listeners, reached on the link.
		link := global
		link.addr = netip.AddrPortFrom(v6LinkGateway, netip.MustParseAddrPort(global.addr).Port()).String()
		for _, tc := range []struct {
			c   v6Client
			src netip.Addr
		}{{global, v6ClientA}, {global, v6ClientB}, {link, v6LinkClient}} {
			c := tc.c
			c.source = tc.src
			ctxDial, cancelDial := context.WithTimeout(ctx, 5*time.Second)
			conn, resp, err := c.dial(ctxDial, "/"+v6PodA.String()+"/", &websocket.DialOptions{
				HTTPHeader: http.Header{"X-Forwarded-For": {"fd00:5::66"}, "X-Real-Ip": {"fd00:5::66"}},
			})
			cancelDial()
			if resp != nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			if err != nil {
				t.Fatalf("from %s: %v", tc.src, err)
			}
			seen, err := seenByPod(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(seen.Header.Values("X-Forwarded-For"), ","); got != tc.src.String() {
				t.Errorf("client on %s: the pod got X-Forwarded-For %q, want %q", tc.src, got, tc.src)
			}
			if got := seen.Header.Get("X-Real-Ip"); got != "" {
				t.Errorf("client on %s: the pod got X-Real-Ip %q from the client", tc.src, got)
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
		}
	})
}

// TestIPv6PodFailuresInNetns: an IPv6 pod that refuses the connection
// is a 502 and one that never answers the connect a 504 at the dial
// timeout, on every engine of plain clients, each after one dial of its
// canonical address.
func TestIPv6PodFailuresInNetns(t *testing.T) {
	if !netnstest.InNamespace(t, v6Namespace) {
		return
	}
	l, err := net.Listen("tcp", net.JoinHostPort(v6PodB.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	refusing := netip.MustParseAddrPort(l.Addr().String())
	_ = l.Close()
	// In the namespace's prefix, on no interface: the connect gets no
	// answer.
	silent := netip.AddrPortFrom(netip.MustParseAddr("fd00:5::5"), refusing.Port())
	rt := testRoute("v6", "/", routing.Backend{Pod: "refusing", Addr: refusing}, routing.Backend{Pod: "silent", Addr: silent})
	forEachPlainEngine(t, func(t *testing.T, opts Options) {
		opts.DialTimeout = 300 * time.Millisecond
		g := startGatewayAt(t, "[::]:0", v6Gateway, opts, rt)
		for _, tc := range []struct {
			addr netip.AddrPort
			want int
		}{{refusing, http.StatusBadGateway}, {silent, http.StatusGatewayTimeout}} {
			before := g.dials.Load()
			start := time.Now()
			if status, answer := g.rawRequest(t, handshake("/"+tc.addr.Addr().String()+"/")); status != tc.want {
				t.Errorf("to %s: %d, want %d (%q)", tc.addr, status, tc.want, answer)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("to %s: answered after %s", tc.addr, took)
			}
			if got := dialledSince(g, before); !slices.Equal(got, []string{tc.addr.String()}) {
				t.Errorf("dialled %v, want exactly [%s]", got, tc.addr)
			}
		}
		waitNoTunnels(t, g)
	})
}

// TestIPv6Loopback: the same over ::1, without a namespace: a gateway
// on [::1], a pod on ::1, every engine.
func TestIPv6Loopback(t *testing.T) {
	loop := netip.IPv6Loopback()
	pod := echoPod(t, loop.String())
	rt := testRoute("v6", "/rooms", backendOf("a", pod))
	forEachEngine(t, func(t *testing.T, e engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		g := startGatewayAt(t, "[::1]:0", loop, e.opts, rt)
		c := gatewayClient(t, g, e, "[::1]:0", loop)
		before := g.dials.Load()
		conn := c.mustDial(t, "/rooms/::1/chat")
		if err := echoBothWays(ctx, conn); err != nil {
			t.Fatal(err)
		}
		checkEngine(t, g, e)
		seen, err := seenByPod(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(seen.Header.Values("X-Forwarded-For"), ","); got != "::1" {
			t.Errorf("X-Forwarded-For %q, want ::1", got)
		}
		if got := dialledSince(g, before); !slices.Equal(got, []string{pod.Addr}) {
			t.Errorf("dialled %v, want exactly [%s]", got, pod.Addr)
		}
		if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Errorf("clean close through the gateway: %v", err)
		}
		for _, seg := range []string{"0:0:0:0:0:0:0:1", "::01", "[::1]"} {
			if status, _ := g.rawRequest(t, handshake("/rooms/"+seg+"/chat")); status != http.StatusNotFound {
				t.Errorf("%q: status %d, want 404", seg, status)
			}
		}
		if got := dialledSince(g, before); len(got) != 1 {
			t.Errorf("dialled %v, want the canonical address once", got)
		}
	})
}
