package proxy

import (
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/routing"
)

// TestRouteSeriesFollowTables: the series a route's tunnels use are
// resolved once per route, dropped with the table that held it, and made
// afresh when a removed route comes back.
func TestRouteSeriesFollowTables(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	rt := testRoute("echo", "/e", backendOf("p", pod))
	g := startGateway(t, Options{Metrics: m}, rt)
	opened := map[string]string{"namespace": "ns", "route": "echo", "code": "101"}
	active := map[string]string{"namespace": "ns", "route": "echo"}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	cached := func() int {
		n := 0
		m.routes.Range(func(_, _ any) bool { n++; return true })
		return n
	}

	for range 2 {
		c := g.mustDial(t, "/e/127.0.0.2", nil)
		waitFor("an active tunnel", func() bool { return value(t, reg, "wsgate_tunnels_active", active) == 1 })
		_ = c.Close(websocket.StatusNormalClosure, "")
		waitFor("no active tunnel", func() bool { return value(t, reg, "wsgate_tunnels_active", active) == 0 })
	}
	if got := value(t, reg, "wsgate_handshakes_total", opened); got != 2 {
		t.Fatalf("opened = %v, want 2", got)
	}
	if n := cached(); n != 1 {
		t.Fatalf("%d routes with resolved series, want 1", n)
	}

	// A new table without the route: its series and resolved series go.
	g.publish(testRoute("other", "/o"))
	waitFor("the route's series to go", func() bool {
		return value(t, reg, "wsgate_handshakes_total", opened) == -1 && cached() == 0
	})

	// Back again: counted from zero, in series that are exported.
	g.publish(rt)
	waitFor("the route to be served", func() bool {
		_, ok := g.tables.Load().Route(routing.RouteKey{Namespace: "ns", Name: "echo"})
		return ok
	})
	c := g.mustDial(t, "/e/127.0.0.2", nil)
	waitFor("an active tunnel", func() bool { return value(t, reg, "wsgate_tunnels_active", active) == 1 })
	if got := value(t, reg, "wsgate_handshakes_total", opened); got != 1 {
		t.Fatalf("opened after the route came back = %v, want 1", got)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}
