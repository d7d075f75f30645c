package proxy

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/routing"
)

// Messages of the 503 answers for the gateway's caps.
const (
	msgNamespaceShare = "the route's namespace is at its share of the gateway's tunnels"
	msgGatewayFull    = "the gateway is at its connection limit"
)

// rawConn opens a connection to the gateway as c's clients do, without a
// handshake.
func (c *wsClient) rawConn(t *testing.T) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	if c.tlsAddr != "" {
		conn, err = tls.Dial("tcp", c.tlsAddr, &tls.Config{
			ServerName:         "ws.example.com",
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"http/1.1"},
		})
	} else {
		conn, err = net.Dial("tcp", c.g.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestNamespaceShareOfTheGateway: with MaxTunnels 10 and
// MaxTunnelsPerNamespace 4, the routes of one namespace together hold at
// most 4 slots, tunnels and handshakes in progress alike; beyond, 503
// with Retry-After and a message of its own, without a dial. Another
// namespace still gets its share, a closed tunnel gives its slot back,
// and the gateway's own cap still answers with its own message.
func TestNamespaceShareOfTheGateway(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		// A pod that takes handshakes and answers none until hangUp.
		hangUp := make(chan struct{})
		hanging := startFakePod(t, "127.0.0.5", func(pc *podConn) {
			if pc.readHead() {
				<-hangUp
			}
		})
		defer func() {
			select {
			case <-hangUp:
			default:
				close(hangUp)
			}
		}()
		route := func(ns, name, prefix string, b routing.Backend) *routing.Route {
			r := testRoute(name, prefix, b)
			r.Key.Namespace = ns
			return r
		}
		// Two routes of namespace a, one of b, one of c whose pod never
		// answers.
		a1, a2 := route("a", "one", "/a1", backendOf("p", pod)), route("a", "two", "/a2", backendOf("p", pod))
		b := route("b", "one", "/b", backendOf("p", pod))
		c := route("c", "one", "/c", hanging.backend("h"))
		opts := e.opts
		opts.MaxTunnels, opts.MaxTunnelsPerNamespace = 10, 4
		g := startGateway(t, opts, a1, a2, b, c)
		client := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()

		// refused checks that a handshake for path gets 503 with
		// Retry-After and msg, without a dial.
		refused := func(what, path, msg string) {
			t.Helper()
			dials := g.dials.Load()
			status, body, retry := client.status(t, path, nil)
			if status != http.StatusServiceUnavailable || retry == "" || strings.TrimSpace(body) != msg {
				t.Errorf("%s: %d, Retry-After %q, %q; want 503 with Retry-After and %q", what, status, retry, body, msg)
			}
			if d := g.dials.Load() - dials; d != 0 {
				t.Errorf("%s: %d dial(s), want none", what, d)
			}
		}

		// Namespace a: 4 tunnels over its two routes, then no more.
		var inA []*websocket.Conn
		for _, path := range []string{"/a1/127.0.0.2", "/a2/127.0.0.2", "/a1/127.0.0.2", "/a2/127.0.0.2"} {
			inA = append(inA, client.mustDial(t, path, nil))
		}
		refused("a fifth tunnel in namespace a", "/a1/127.0.0.2", msgNamespaceShare)
		refused("a fifth tunnel in namespace a, on its other route", "/a2/127.0.0.2", msgNamespaceShare)

		// Namespace b gets its own 4.
		var inB []*websocket.Conn
		for range 4 {
			inB = append(inB, client.mustDial(t, "/b/127.0.0.2", nil))
		}
		refused("a fifth tunnel in namespace b", "/b/127.0.0.2", msgNamespaceShare)
		for i, conn := range append(inA, inB...) {
			if err := echo(ctx, conn, websocket.MessageText, []byte("hello")); err != nil {
				t.Errorf("tunnel %d: %v", i, err)
			}
		}

		// A closed tunnel of a gives its slot back to a.
		_ = inA[0].Close(websocket.StatusNormalClosure, "")
		waitTunnels(t, g, 7)
		inA[0] = client.mustDial(t, "/a1/127.0.0.2", nil)
		refused("a fifth tunnel in namespace a after one was replaced", "/a2/127.0.0.2", msgNamespaceShare)

		// Handshakes in progress count: namespace b leaves, c's pod takes
		// 4 handshakes and answers none.
		for _, conn := range inB {
			_ = conn.Close(websocket.StatusNormalClosure, "")
		}
		waitTunnels(t, g, 4)
		var inC []net.Conn
		for range 4 {
			conn := client.rawConn(t)
			if _, err := conn.Write([]byte(wsHead("/c/127.0.0.5"))); err != nil {
				t.Fatal(err)
			}
			inC = append(inC, conn)
		}
		waitTunnels(t, g, 8)
		refused("a fifth handshake in namespace c while 4 hang", "/c/127.0.0.5", msgNamespaceShare)

		// The gateway's own cap: 2 slots are left, for namespace b.
		client.mustDial(t, "/b/127.0.0.2", nil)
		client.mustDial(t, "/b/127.0.0.2", nil)
		refused("an eleventh tunnel", "/b/127.0.0.2", msgGatewayFull)

		// Every slot is given back once, whatever ended it: the pod
		// hanging up on its handshakes, clients closing their tunnels.
		close(hangUp)
		for _, conn := range inC {
			a := roundTrip(t, conn, "")
			if a.resp.StatusCode != http.StatusBadGateway {
				t.Errorf("a handshake the pod hung up on: %q, want 502", a.resp.Status)
			}
		}
		for _, conn := range inA {
			_ = conn.Close(websocket.StatusNormalClosure, "")
		}
		waitTunnels(t, g, 2)
		g.srv.reg.mu.Lock()
		spaces := maps.Clone(g.srv.reg.spaces)
		g.srv.reg.mu.Unlock()
		if len(spaces) != 1 || spaces["b"] != 2 {
			t.Errorf("slots by namespace %v, want b: 2 only", spaces)
		}
	})
}

// TestRegistryNamespaceShare: reserve counts slots by route namespace
// across routes and pods, refuses with the cap that is reached first
// (the gateway's, the namespace's, the pod's), and release gives a slot
// back to its namespace.
func TestRegistryNamespaceShare(t *testing.T) {
	r := newRegistry()
	key := func(ns, route, addr string) backendKey {
		return backendKey{route: routing.RouteKey{Namespace: ns, Name: route}, backend: routing.Backend{Addr: netip.MustParseAddrPort(addr)}}
	}
	a1, a2, b := key("a", "one", "10.0.0.1:80"), key("a", "two", "10.0.0.2:80"), key("b", "one", "10.0.0.1:80")
	steps := []struct {
		k    backendKey
		pod  int
		want capReached
	}{
		{a1, 0, capNone}, {a2, 0, capNone}, {a1, 0, capNone},
		{a2, 0, capNamespace}, // a holds 3 of 3
		{b, 1, capNone},
		{b, 1, capPod}, // b's pod holds 1 of 1
		{b, 0, capNone},
		{b, 0, capGateway}, // 5 of 5
	}
	held := map[backendKey][]*slot{}
	reserve := func(k backendKey, podCap int) capReached {
		sl, got := r.reserve(k, 5, 3, podCap)
		if got == capNone {
			held[k] = append(held[k], sl)
		}
		return got
	}
	release := func(k backendKey) {
		sl := held[k][0]
		held[k] = held[k][1:]
		sl.release()
	}
	for i, s := range steps {
		if got := reserve(s.k, s.pod); got != s.want {
			t.Fatalf("step %d: reserve for %v: %v, want %v", i, s.k.route, got, s.want)
		}
	}
	release(b)
	if got := reserve(a2, 0); got != capNamespace {
		t.Errorf("a slot of b given back went to a: %v, want %v", got, capNamespace)
	}
	release(a1)
	if got := reserve(a2, 0); got != capNone {
		t.Errorf("a slot of a given back: %v, want %v", got, capNone)
	}
	for _, k := range []backendKey{a1, a2, a2, b} {
		release(k)
	}
	if r.total != 0 || len(r.spaces) != 0 || len(r.count) != 0 {
		t.Errorf("after every release: total %d, by namespace %v, by pod %v; want none", r.total, r.spaces, r.count)
	}
	if _, got := r.reserve(a1, 5, 0, 0); got != capNone {
		t.Errorf("without a namespace cap: %v, want %v", got, capNone)
	}
}

// TestSlotReleasedTwicePanics: a slot is released by whoever holds it,
// exactly once; a second release would let the counts drift below the
// caps, and fails loudly instead.
func TestSlotReleasedTwicePanics(t *testing.T) {
	r := newRegistry()
	k := backendKey{route: routing.RouteKey{Namespace: "a", Name: "one"}}
	sl, c := r.reserve(k, 1, 0, 0)
	if c != capNone {
		t.Fatal(c.message())
	}
	sl.release()
	if r.open() != 0 {
		t.Fatalf("%d open after the release, want 0", r.open())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a second release of a slot did not panic")
		}
		if r.open() != 0 {
			t.Fatalf("the second release changed the count to %d", r.open())
		}
	}()
	sl.release()
}
