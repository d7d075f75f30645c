package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/routing"
)

// checkRevoked fails t unless each of closed ends with Close 1008 and
// reason within a second, and each of kept still echoes.
func checkRevoked(ctx context.Context, t *testing.T, reason string, closed, kept map[string]*websocket.Conn) {
	t.Helper()
	start := time.Now()
	for name, c := range closed {
		closeCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		code, got := closeStatus(closeCtx, c)
		cancel()
		if code != websocket.StatusPolicyViolation || got != reason {
			t.Errorf("the tunnel %s: close %d %q, want 1008 %q", name, code, got, reason)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("revocation took %s, want under 1s", took)
	}
	for name, c := range kept {
		if err := echo(ctx, c, websocket.MessageText, []byte("still here")); err != nil {
			t.Errorf("the tunnel %s: %v", name, err)
		}
	}
}

// TestTunnelsCloseWhenTheirRouteNoLongerServesTheirHostOrPath: a route
// still in the table whose hostnames or pathPrefix are edited so that the
// host and path a tunnel was opened on no longer reach it closes that
// tunnel with 1008; its tunnels on the host and path it still serves
// carry on, and a route that drains keeps them all.
func TestTunnelsCloseWhenTheirRouteNoLongerServesTheirHostOrPath(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		rt := testRoute("rooms", "/rooms", backendOf("a", pod))
		rt.Hosts = []string{"a.example.com", "b.example.com"}
		g := startGateway(t, e.opts, rt)
		client := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		on := func(host string) *websocket.Conn {
			return client.mustDial(t, "/rooms/127.0.0.2/x", &websocket.DialOptions{Host: host})
		}

		// The route drops a.example.com.
		onA, onB := on("a.example.com"), on("b.example.com")
		edited := *rt
		edited.Hosts = []string{"b.example.com"}
		g.publish(&edited)
		checkRevoked(ctx, t, reasonRouteMoved, map[string]*websocket.Conn{"on the dropped host": onA}, map[string]*websocket.Conn{"on the kept host": onB})
		if got, _, _ := client.status(t, "/rooms/127.0.0.2/x", &websocket.DialOptions{Host: "a.example.com"}); got != http.StatusNotFound {
			t.Errorf("a new handshake on the dropped host: %d, want 404", got)
		}

		// The route's pathPrefix changes.
		moved := edited
		moved.PathPrefix = "/games"
		g.publish(&moved)
		checkRevoked(ctx, t, reasonRouteMoved, map[string]*websocket.Conn{"under the old prefix": onB}, nil)
		onGames := client.mustDial(t, "/games/127.0.0.2", &websocket.DialOptions{Host: "b.example.com"})
		if err := echo(ctx, onGames, websocket.MessageText, []byte("under the new prefix")); err != nil {
			t.Errorf("a tunnel under the new prefix: %v", err)
		}

		// A route that drains keeps them.
		drained := *rt
		drained.DrainOnRevoke = true
		g.publish(&drained)
		keptA, keptB := on("a.example.com"), on("b.example.com")
		drainedEdit := drained
		drainedEdit.Hosts, drainedEdit.PathPrefix = []string{"b.example.com"}, "/games"
		g.publish(&drainedEdit)
		time.Sleep(200 * time.Millisecond)
		checkRevoked(ctx, t, "", nil, map[string]*websocket.Conn{"of a draining route on a dropped host": keptA, "of a draining route under a dropped prefix": keptB})
	})
}

// TestTunnelsCloseWhenAnotherRouteClaimsTheirHost: a tunnel opened on
// x.example.com through a "*.example.com" route closes with 1008 once a
// route of another namespace claims x.example.com exactly (the name's
// requests now go there); the wildcard route's tunnel on y.example.com
// carries on. A wildcard route that drains keeps it.
func TestTunnelsCloseWhenAnotherRouteClaimsTheirHost(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		wild := testRoute("wild", "/rooms", backendOf("a", pod))
		wild.Key.Namespace, wild.Hosts = "tenant-a", []string{"*.example.com"}
		claim := testRoute("claim", "/rooms", backendOf("a", pod))
		claim.Key.Namespace, claim.Hosts = "tenant-b", []string{"x.example.com"}
		g := startGateway(t, e.opts, wild)
		client := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		on := func(host string) *websocket.Conn {
			return client.mustDial(t, "/rooms/127.0.0.2", &websocket.DialOptions{Host: host})
		}

		onX, onY := on("x.example.com"), on("y.example.com")
		// The same names with a port, in upper case, with a trailing dot.
		onXSpelled, onYSpelled := on("X.Example.COM.:8443"), on("Y.Example.COM.:8443")
		g.publish(wild, claim)
		checkRevoked(ctx, t, reasonRouteMoved,
			map[string]*websocket.Conn{"on the claimed name": onX, "on the claimed name, spelled otherwise": onXSpelled},
			map[string]*websocket.Conn{"on another name": onY, "on another name, spelled otherwise": onYSpelled})
		if n := tunnelsOf(g, claim.Key); n != 0 {
			t.Errorf("%d tunnels under the claiming route, want none", n)
		}

		// A wildcard route that drains keeps its tunnel on the name.
		drain := *wild
		drain.DrainOnRevoke = true
		g.publish(&drain)
		kept := on("x.example.com")
		g.publish(&drain, claim)
		time.Sleep(200 * time.Millisecond)
		checkRevoked(ctx, t, "", nil, map[string]*websocket.Conn{"of a draining route on the claimed name": kept})
	})
}

// tunnelsOf counts g's open tunnels under route key.
func tunnelsOf(g *testGateway, key routing.RouteKey) int {
	g.srv.reg.mu.Lock()
	defer g.srv.reg.mu.Unlock()
	n := 0
	for k, set := range g.srv.reg.tunnels {
		if k.route == key {
			n += len(set)
		}
	}
	return n
}
