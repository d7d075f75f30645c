//go:build linux

package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestPodAnswerBodyInLaterWritesIsRelayed: a pod that refuses the
// upgrade and writes its answer's body after the head, in pieces, has
// the whole body relayed, over HTTP/1.1 and over HTTP/2.
func TestPodAnswerBodyInLaterWritesIsRelayed(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	pod := startFakePod(t, "127.0.0.5", func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, _ = pc.c.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 32768\r\n\r\n"))
		for p := body; len(p) > 0; p = p[8192:] {
			time.Sleep(20 * time.Millisecond)
			_, _ = pc.c.Write(p[:8192])
		}
		pc.drain()
	})
	h := startLoopsH2(t, Options{})
	h.g.publish(testRoute("echo", "/e", pod.backend("r")))

	t.Run("HTTP/1.1", func(t *testing.T) {
		c, err := net.Dial("tcp", h.g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(handshake("/e/127.0.0.5/x"))); err != nil {
			t.Fatal(err)
		}
		all, _ := io.ReadAll(c)
		head, got, _ := strings.Cut(string(all), "\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 403") || got != string(body) {
			t.Fatalf("answer %q with %d bytes of body, want 403 and the pod's %d", head, len(got), len(body))
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		c := dialH2(t, h.tlsAddr, rawOpts{autoWindow: true})
		c.headers(1, false, wsRequestFields("/e/127.0.0.5/x")...)
		if status, code := c.answer(1); status != http.StatusForbidden {
			t.Fatalf("status %d, reset %v, want 403", status, code)
		}
		if got := c.body(1, nil); !bytes.Equal(got, body) {
			t.Fatalf("%d bytes of body, want the pod's %d", len(got), len(body))
		}
	})
}

// TestHTTP2HandshakeWithABody: an extended CONNECT that states a body
// length is refused 400, as an HTTP/1.1 handshake with a body is, by
// both engines, and nothing is dialled; so are :path values an HTTP/1.1
// request line cannot carry (an absolute URI, which would be routed by
// its path part, or one with a space).
func TestHTTP2HandshakeWithABody(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		c := dialH2(t, h.tlsAddr, rawOpts{autoWindow: true})
		cases := []struct {
			name   string
			fields []string
		}{
			{"content-length 5", wsRequestFields("/e/127.0.0.2/x", "content-length", "5")},
			{"an absolute URI", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https",
				":path", "https://" + canaryIP + "/e/127.0.0.2/x", ":authority", "ws.example.com", "sec-websocket-version", "13"}},
			{"a space in the query", wsRequestFields("/e/127.0.0.2/x?a HTTP/1.0")},
		}
		for i, tc := range cases {
			id := uint32(2*i + 1)
			c.headers(id, false, tc.fields...)
			status, code := c.answer(id)
			if status != http.StatusBadRequest && code != http2.ErrCodeProtocol {
				t.Errorf("%s: status %d, reset %v, want 400 or PROTOCOL_ERROR", tc.name, status, code)
			}
		}
		if n := h.g.dials.Load(); n != 0 {
			t.Errorf("%d dials: %v", n, h.g.dialedAddrs())
		}
		if canaryHits() != 0 {
			t.Error("the canary was reached")
		}
	})
}

// TestHTTP2PingsKeepNoIdleConnection: a connection without streams
// closes after the idle timeout however often its client pings; one
// with a stream stays.
func TestHTTP2PingsKeepNoIdleConnection(t *testing.T) {
	h := startLoopsH2(t, Options{h2IdleTimeout: 300 * time.Millisecond})
	idle := dialH2(t, h.tlsAddr, rawOpts{autoWindow: true})
	busy := dialH2(t, h.tlsAddr, rawOpts{autoWindow: true})
	busy.open(1, "/e/127.0.0.2/x")
	start := time.Now()
	for time.Since(start) < 2*time.Second && !idle.ended() {
		_ = idle.ping()
		time.Sleep(50 * time.Millisecond)
	}
	if !idle.waitEnded(time.Second) {
		t.Fatalf("a connection without streams, pinging every 50ms, still open after %s", time.Since(start).Round(time.Millisecond))
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("closed after %s, want about the 300ms idle timeout", took.Round(time.Millisecond))
	}
	if busy.ended() {
		t.Fatal("the connection with an open stream was closed")
	}
	if got := busy.echo(1, "still here"); got != "still here" {
		t.Fatalf("echo %q", got)
	}
}
