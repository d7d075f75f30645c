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
