package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestRemovedOriginClosesItsTunnelsOnly(t *testing.T) {
	forEachPlainEngine(t, func(t *testing.T, opts Options) {
		pod := echoPod(t, "127.0.0.2")
		app := testRoute("app", "/app", backendOf("a", pod))
		app.AllowedOrigins = []string{"https://a.example.com", "https://b.example.com"}
		sameOrigin := testRoute("same", "/same", backendOf("a", pod))
		g := startGateway(t, opts, app, sameOrigin)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		withOrigin := func(o string) *websocket.DialOptions {
			return &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {o}}}
		}

		fromA := g.mustDial(t, "/app/127.0.0.2", withOrigin("https://a.example.com"))
		fromB := g.mustDial(t, "/app/127.0.0.2", withOrigin("https://B.example.com"))
		noOrigin := g.mustDial(t, "/app/127.0.0.2", nil)
		same := g.mustDial(t, "/same/127.0.0.2", withOrigin("http://ws.example.com"))

		// Origin a is removed from the route; nothing else changes.
		edited := *app
		edited.AllowedOrigins = []string{"https://b.example.com"}
		revokeAt := time.Now()
		g.publish(&edited, sameOrigin)
		code, reason := closeStatus(ctx, fromA)
		if code != websocket.StatusPolicyViolation || reason != reasonOriginRevoked {
			t.Errorf("the tunnel opened from the removed origin: close %d %q, want 1008 %q", code, reason, reasonOriginRevoked)
		}
		if took := time.Since(revokeAt); took > time.Second {
			t.Errorf("revocation took %s, want under 1s", took)
		}
		for name, c := range map[string]*websocket.Conn{"origin b": fromB, "no Origin": noOrigin, "same origin": same} {
			if err := echo(ctx, c, websocket.MessageText, []byte("still here")); err != nil {
				t.Errorf("tunnel with %s after the edit: %v", name, err)
			}
		}
		if status, _ := g.rawRequest(t, handshakeWithOrigin("/app/127.0.0.2", "https://a.example.com")); status != http.StatusForbidden {
			t.Errorf("new handshake from the removed origin: %d, want 403", status)
		}

		// A route that drains keeps such tunnels.
		edited.AllowedOrigins = []string{"https://a.example.com", "https://b.example.com"}
		edited.DrainOnRevoke = true
		g.publish(&edited, sameOrigin)
		again := g.mustDial(t, "/app/127.0.0.2", withOrigin("https://a.example.com"))
		drained := edited
		drained.AllowedOrigins = []string{"https://b.example.com"}
		g.publish(&drained, sameOrigin)
		time.Sleep(200 * time.Millisecond)
		if err := echo(ctx, again, websocket.MessageText, []byte("draining")); err != nil {
			t.Errorf("a draining route's tunnel from a removed origin: %v", err)
		}
	})
}

// handshakeWithOrigin is a websocket request head for path on
// ws.example.com with an Origin.
func handshakeWithOrigin(path, origin string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: " + origin + "\r\n\r\n"
}

// TestRouteOwnOriginsOnEveryEngine: on a route without allowedOrigins, a
// browser's Origin passes only when it names one of the route's own
// hostnames (never the Host the client chose), with a scheme that fits
// the connection (https on TLS; http or https on a plain one) and the
// port that Host names. Refusals are 403 without a dial; a request
// without Origin passes even on the catch-all route.
func TestRouteOwnOriginsOnEveryEngine(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		rooms := testRoute("rooms", "/rooms", backendOf("a", pod))
		other := testRoute("other", "/rooms", backendOf("a", pod))
		other.Key.Namespace, other.Hosts = "tenant", []string{"other.example.com"}
		wild := testRoute("wild", "/rooms", backendOf("a", pod))
		wild.Key.Namespace, wild.Hosts = "wild", []string{"*.wild.example"}
		claimed := testRoute("claimed", "/rooms", backendOf("a", pod))
		claimed.Key.Namespace, claimed.Hosts = "claimer", []string{"claimed.wild.example"}
		catchAll := testRoute("any", "/any", backendOf("a", pod))
		catchAll.Hosts = nil
		g := startGateway(t, e.opts, rooms, other, wild, claimed, catchAll)
		client := newWSClient(t, g, e)

		// plain and tls are the statuses wanted on each kind of
		// connection.
		cases := []struct {
			name, path, host, origin string
			plain, tls               int
		}{
			{"own host, http", "/rooms/127.0.0.2", "", "http://ws.example.com", 101, 403},
			{"own host, http, on the port Host names", "/rooms/127.0.0.2", "ws.example.com:8443", "http://ws.example.com:8443", 101, 403},
			{"own host, http, port 443 named", "/rooms/127.0.0.2", "", "http://ws.example.com:443", 403, 403},
			{"own host, https", "/rooms/127.0.0.2", "", "https://ws.example.com", 101, 101},
			{"own host, https, port 443 named", "/rooms/127.0.0.2", "", "https://ws.example.com:443", 101, 101},
			{"own host and the port Host names", "/rooms/127.0.0.2", "ws.example.com:8443", "https://ws.example.com:8443", 101, 101},
			{"own host without the port Host names", "/rooms/127.0.0.2", "ws.example.com:8443", "https://ws.example.com", 403, 403},
			{"own host on another port", "/rooms/127.0.0.2", "", "https://ws.example.com:8443", 403, 403},
			{"scheme foo", "/rooms/127.0.0.2", "", "foo://ws.example.com", 403, 403},
			{"scheme ws", "/rooms/127.0.0.2", "", "ws://ws.example.com", 403, 403},
			{"scheme wss", "/rooms/127.0.0.2", "", "wss://ws.example.com", 403, 403},
			{"null", "/rooms/127.0.0.2", "", "null", 403, 403},
			{"another route's host", "/rooms/127.0.0.2", "", "https://other.example.com", 403, 403},
			{"catch-all, Origin of the client's Host", "/any/127.0.0.2", "attacker.test", "https://attacker.test", 403, 403},
			{"catch-all, http Origin of the client's Host", "/any/127.0.0.2", "attacker.test", "http://attacker.test", 403, 403},
			{"catch-all, Origin of a named route", "/any/127.0.0.2", "attacker.test", "https://ws.example.com", 403, 403},
			{"catch-all, no Origin", "/any/127.0.0.2", "attacker.test", "", 101, 101},
			{"wildcard, one-label name", "/rooms/127.0.0.2", "x.wild.example", "https://y.wild.example", 101, 101},
			{"wildcard, two-label name", "/rooms/127.0.0.2", "x.wild.example", "https://a.b.wild.example", 403, 403},
			{"wildcard, a name another namespace claims", "/rooms/127.0.0.2", "x.wild.example", "https://claimed.wild.example", 403, 403},
			{"the claimed name, its own origin", "/rooms/127.0.0.2", "claimed.wild.example", "https://claimed.wild.example", 101, 101},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				want := tc.plain
				if e.tls {
					want = tc.tls
				}
				opts := &websocket.DialOptions{Host: tc.host, HTTPHeader: http.Header{}}
				if tc.origin != "" {
					opts.HTTPHeader.Set("Origin", tc.origin)
				}
				dials := g.dials.Load()
				got, body, _ := client.status(t, tc.path, opts)
				if got != want {
					t.Fatalf("status %d (%q), want %d", got, body, want)
				}
				if d := g.dials.Load() - dials; want == http.StatusForbidden && d != 0 {
					t.Errorf("%d dial(s) for a refused Origin", d)
				}
			})
		}
		waitNoTunnels(t, g)
	})
}

// TestOwnOriginsThatLeaveTheRouteCloseTheirTunnels: open tunnels are
// held to the same Origin rule as new handshakes. A tunnel whose Origin
// named a hostname the route drops, or a wildcard's name that another
// namespace's route then claims, gets 1008; the route's other tunnels
// carry on, and a route that drains keeps them.
func TestOwnOriginsThatLeaveTheRouteCloseTheirTunnels(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		rooms := testRoute("rooms", "/rooms", backendOf("a", pod))
		rooms.Hosts = []string{"app.example.com", "ws.example.com"}
		wild := testRoute("wild", "/rooms", backendOf("a", pod))
		wild.Key.Namespace, wild.Hosts = "wild", []string{"*.wild.example"}
		g := startGateway(t, e.opts, rooms, wild)
		client := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		open := func(host, origin string) *websocket.Conn {
			return client.mustDial(t, "/rooms/127.0.0.2", &websocket.DialOptions{Host: host, HTTPHeader: http.Header{"Origin": {origin}}})
		}
		fromApp := open("ws.example.com", "https://app.example.com")
		fromWS := open("ws.example.com", "https://ws.example.com")
		fromX := open("y.wild.example", "https://x.wild.example")
		fromY := open("y.wild.example", "https://y.wild.example")

		// The route drops app.example.com; another namespace claims
		// x.wild.example.
		edited := *rooms
		edited.Hosts = []string{"ws.example.com"}
		claimed := testRoute("claimed", "/rooms", backendOf("a", pod))
		claimed.Key.Namespace, claimed.Hosts = "claimer", []string{"x.wild.example"}
		g.publish(&edited, wild, claimed)
		for name, c := range map[string]*websocket.Conn{"app.example.com": fromApp, "x.wild.example": fromX} {
			if code, reason := closeStatus(ctx, c); code != websocket.StatusPolicyViolation || reason != reasonOriginRevoked {
				t.Errorf("the tunnel from %s: close %d %q, want 1008 %q", name, code, reason, reasonOriginRevoked)
			}
		}
		for name, c := range map[string]*websocket.Conn{"ws.example.com": fromWS, "y.wild.example": fromY} {
			if err := echo(ctx, c, websocket.MessageText, []byte("still here")); err != nil {
				t.Errorf("the tunnel from %s after the edit: %v", name, err)
			}
		}

		// A route that drains keeps them.
		edited.Hosts, edited.DrainOnRevoke = []string{"app.example.com", "ws.example.com"}, true
		g.publish(&edited, wild)
		kept := open("ws.example.com", "https://app.example.com")
		drained := edited
		drained.Hosts = []string{"ws.example.com"}
		g.publish(&drained, wild)
		time.Sleep(200 * time.Millisecond)
		if err := echo(ctx, kept, websocket.MessageText, []byte("draining")); err != nil {
			t.Errorf("a draining route's tunnel from a dropped hostname: %v", err)
		}
	})
}
