package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

// h2Gateway is a gateway offering websockets over HTTP/2 on its TLS
// listener, and an HTTP/2 client of it.
type h2Gateway struct {
	g       *testGateway
	tlsAddr string
	client  *http.Client
}

func startH2Gateway(t *testing.T, opts Options) *h2Gateway {
	t.Helper()
	opts.HTTP2 = true
	pod := echoPod(t, "127.0.0.2")
	h := &h2Gateway{g: startGateway(t, opts, testRoute("echo", "/e", backendOf("p", pod)))}
	h.tlsAddr = serveTLS(t, h.g)
	// golang.org/x/net/http2's client: net/http's refuses the :protocol
	// pseudo-header in a request's header.
	tr := &http2.Transport{
		TLSClientConfig: &tls.Config{
			ServerName:         "ws.example.com",
			InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
			NextProtos:         []string{"h2"},
		},
		DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, h.tlsAddr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	h.client = &http.Client{Transport: tr}
	return h
}

// h2Engine is one of the two ways the gateway serves HTTP/2: its own, on
// the event loops (Linux, pods dialled with the default dialer), or
// net/http's, whose streams' tunnels run on goroutines (other systems,
// custom dialers; tests reach it with goroutineTunnels).
type h2Engine struct {
	name       string
	goroutines bool
}

var h2Engines = []h2Engine{{"loops", false}, {"net/http", true}}

// opts is o served by the engine.
func (e h2Engine) opts(o Options) Options {
	o.goroutineTunnels = e.goroutines
	return o
}

// eachH2Engine runs f for each engine.
func eachH2Engine(t *testing.T, f func(t *testing.T, e h2Engine)) {
	for _, e := range h2Engines {
		t.Run(e.name, func(t *testing.T) { f(t, e) })
	}
}

// h2Socket is a websocket over one HTTP/2 stream, seen as raw frames.
type h2Socket struct {
	resp *http.Response
	out  *io.PipeWriter
}

// answered is the gateway's answer to a request on a stream.
type answered struct {
	StatusCode int
	Header     http.Header
}

// open sends an extended CONNECT for path with :protocol protocol (and
// hdr); it returns the answer, and the socket when it is 200.
func (h *h2Gateway) open(t *testing.T, method, protocol, path string, hdr http.Header) (answered, *h2Socket) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(method, "https://ws.example.com"+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if protocol != "" {
		req.Header.Set(":protocol", protocol)
	}
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := h.client.Do(req)
	if err != nil {
		_ = pw.Close()
		t.Fatalf("%s %s (:protocol %q): %v", method, path, protocol, err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
	}
	a := answered{StatusCode: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		_ = pw.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return a, nil
	}
	s := &h2Socket{resp: resp, out: pw}
	t.Cleanup(func() { _ = pw.Close(); _ = resp.Body.Close() })
	return a, s
}

// echo sends a text message and returns the echo's payload.
func (s *h2Socket) echo(t *testing.T, msg string) string {
	t.Helper()
	if _, err := s.out.Write(maskedFrame(0x1, msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	op, payload := s.read(t)
	if op != 0x1 {
		t.Fatalf("opcode %#x, want a text frame", op)
	}
	return string(payload)
}

// read reads one unmasked frame of less than 64 KiB from the gateway.
func (s *h2Socket) read(t *testing.T) (byte, []byte) {
	t.Helper()
	var h [4]byte
	if _, err := io.ReadFull(s.resp.Body, h[:2]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	n := int(h[1] & 0x7f)
	if h[1]&0x80 != 0 || n == 127 {
		t.Fatalf("frame header %x: want an unmasked frame under 64 KiB", h[:2])
	}
	if n == 126 {
		if _, err := io.ReadFull(s.resp.Body, h[2:]); err != nil {
			t.Fatalf("read frame length: %v", err)
		}
		n = int(h[2])<<8 | int(h[3])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(s.resp.Body, p); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	return h[0] & 0x0f, p
}

func TestWebsocketOverHTTP2(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		if !ExtendedConnect() {
			t.Fatal("the test process lacks GODEBUG=http2xconnect=1 (TestMain adds it)")
		}
		var log lines
		reg := prometheus.NewRegistry()
		h := startH2Gateway(t, e.opts(Options{Metrics: NewMetrics(reg), AccessLog: funcr.NewJSON(func(obj string) { log.add(obj) }, funcr.Options{})}))
		resp, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/x?q=1", http.Header{"Sec-Websocket-Protocol": {"chat"}})
		if s == nil {
			t.Fatalf("extended CONNECT: %d", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "chat" {
			t.Errorf("subprotocol %q, want the pod's choice chat", got)
		}
		if resp.Header.Get("Sec-Websocket-Accept") != "" {
			t.Error("a Sec-WebSocket-Accept on HTTP/2 (RFC 8441 has none)")
		}
		for i := range 3 {
			msg := fmt.Sprintf("hello %d", i)
			if got := s.echo(t, msg); got != msg {
				t.Fatalf("echo %q, want %q", got, msg)
			}
		}
		// The pod got an ordinary HTTP/1.1 upgrade.
		var seen echopod.Seen
		if err := json.Unmarshal([]byte(s.echo(t, echopod.InfoRequest)), &seen); err != nil {
			t.Fatal(err)
		}
		if seen.Path != "/x" || seen.RawQuery != "q=1" || seen.Header.Get("Upgrade") != "websocket" || seen.Header.Get("Sec-Websocket-Key") == "" {
			t.Errorf("the pod saw path %q query %q Upgrade %q key %q", seen.Path, seen.RawQuery, seen.Header.Get("Upgrade"), seen.Header.Get("Sec-Websocket-Key"))
		}
		if xfp := seen.Header.Get("X-Forwarded-Proto"); xfp != "https" {
			t.Errorf("X-Forwarded-Proto %q", xfp)
		}
		for k := range seen.Header {
			if strings.HasPrefix(k, ":") {
				t.Errorf("the pod got pseudo-header %q", k)
			}
		}
		// A second websocket on the same HTTP/2 connection.
		_, s2 := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/y", nil)
		if s2 == nil || s2.echo(t, "second") != "second" {
			t.Fatal("a second stream did not echo")
		}
		if got := s.echo(t, "first again"); got != "first again" {
			t.Fatalf("the first stream after the second opened: %q", got)
		}
		if n := h.g.srv.OpenTunnels(); n != 2 {
			t.Errorf("%d tunnels open, want 2", n)
		}
		if got := value(t, reg, "wsgate_http2_tunnels_active", nil); got != 2 {
			t.Errorf("wsgate_http2_tunnels_active = %v, want 2", got)
		}
		if got := value(t, reg, "wsgate_http2_connections_active", nil); got != 1 {
			t.Errorf("wsgate_http2_connections_active = %v, want the one connection of both streams", got)
		}
		if got := value(t, reg, "wsgate_http2_handshakes_total", map[string]string{"code": "101"}); got != 2 {
			t.Errorf("wsgate_http2_handshakes_total{code=101} = %v, want 2", got)
		}
		// The access log says which protocol carried the tunnel.
		_ = s2.out.Close()
		waitFor(t, "the second tunnel's access log line", func() bool { return len(log.withMsg("tunnel closed")) == 1 })
		if line := log.withMsg("tunnel closed")[0]; line["protocol"] != "HTTP/2" {
			t.Errorf("access log line %v: protocol %v, want HTTP/2", line, line["protocol"])
		}
		if got := value(t, reg, "wsgate_http2_tunnels_active", nil); got != 1 {
			t.Errorf("wsgate_http2_tunnels_active = %v after one stream ended, want 1", got)
		}
	})
}

// TestHTTP2RequestsGetTheirHTTP1Answers: over HTTP/2 the gateway decides
// as over HTTP/1.1, and dials only what it would dial there.
func TestHTTP2RequestsGetTheirHTTP1Answers(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		cases := []struct {
			name, method, protocol, path string
			want                         int
		}{
			{"an address not allowlisted", http.MethodConnect, "websocket", "/e/127.0.0.9/x", http.StatusNotFound},
			{"the canary", http.MethodConnect, "websocket", "/e/" + canaryIP + "/x", http.StatusNotFound},
			{"a non-canonical address", http.MethodConnect, "websocket", "/e/127.000.0.2/x", http.StatusNotFound},
			{"no route", http.MethodConnect, "websocket", "/nowhere/127.0.0.2/x", http.StatusNotFound},
			{"a plain GET", http.MethodGet, "", "/e/127.0.0.2/x", http.StatusUpgradeRequired},
			{"another protocol", http.MethodConnect, "webtransport", "/e/127.0.0.2/x", http.StatusMethodNotAllowed},
			{"a CONNECT without :protocol", http.MethodConnect, "", "/e/127.0.0.2/x", http.StatusMethodNotAllowed},
		}
		for _, c := range cases {
			resp, s := h.open(t, c.method, c.protocol, c.path, nil)
			if s != nil || resp.StatusCode != c.want {
				t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
			}
		}
		if n := h.g.dials.Load(); n != 0 {
			t.Errorf("%d dials: %v", n, h.g.dialedAddrs())
		}
	})
}

// TestHTTP2StreamEndsItsTunnelOnly: a client that resets one stream ends
// that tunnel; the other stream of the connection goes on.
func TestHTTP2StreamEndsItsTunnelOnly(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		_, a := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/a", nil)
		_, b := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/b", nil)
		if a == nil || b == nil {
			t.Fatal("streams did not open")
		}
		a.echo(t, "a")
		_ = a.out.CloseWithError(fmt.Errorf("gone"))
		_ = a.resp.Body.Close()
		waitTunnels(t, h.g, 1)
		if got := b.echo(t, "b still"); got != "b still" {
			t.Fatalf("the other stream: %q", got)
		}
	})
}

// TestHTTP2ShutdownClosesStreamsWith1001: on shutdown, each stream's
// tunnel gets a Close frame 1001.
func TestHTTP2ShutdownClosesStreamsWith1001(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		_, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/a", nil)
		if s == nil {
			t.Fatal("no stream")
		}
		s.echo(t, "before")
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- h.g.srv.Shutdown(ctx, 0)
		}()
		op, p := s.read(t)
		if op != 0x8 || len(p) < 2 || int(p[0])<<8|int(p[1]) != 1001 {
			t.Fatalf("frame %#x %q, want Close 1001", op, p)
		}
		if err := <-done; err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// TestHTTP2RevocationClosesOnlyItsStream: a pod that leaves the table
// gets its stream's tunnel closed with 1008; a stream to another pod on
// the same connection goes on.
func TestHTTP2RevocationClosesOnlyItsStream(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		podB := echoPod(t, "127.0.0.3")
		keep := backendOf("p", echoPod(t, "127.0.0.2"))
		// startH2Gateway's pod is replaced by one this test controls.
		h.g.publish(testRoute("echo", "/e", keep, backendOf("b", podB)))
		_, a := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/a", nil)
		_, b := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.3/b", nil)
		if a == nil || b == nil {
			t.Fatal("streams did not open")
		}
		a.echo(t, "a")
		b.echo(t, "b")
		h.g.publish(testRoute("echo", "/e", keep))
		op, p := b.read(t)
		if op != 0x8 || len(p) < 2 || int(p[0])<<8|int(p[1]) != 1008 {
			t.Fatalf("the revoked pod's stream: frame %#x %q, want Close 1008", op, p)
		}
		if got := a.echo(t, "a still"); got != "a still" {
			t.Fatalf("the other stream: %q", got)
		}
	})
}

// TestHTTP2StreamOverThePodsCap: a stream beyond the route's cap per pod
// is answered 503 with Retry-After, as an HTTP/1.1 handshake would be.
func TestHTTP2StreamOverThePodsCap(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		rt := testRoute("echo", "/e", backendOf("p", echoPod(t, "127.0.0.2")))
		rt.MaxConnectionsPerPod = 1
		h.g.publish(rt)
		if _, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/a", nil); s == nil {
			t.Fatal("the first stream did not open")
		}
		resp, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/b", nil)
		if s != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("a stream over the cap: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
}

// TestHTTP2OnlyWhenAsked: without Options.HTTP2 the TLS listener offers
// http/1.1 only.
func TestHTTP2OnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		g := startGateway(t, Options{HTTP2: on}, testRoute("echo", "/e", backendOf("p", echoPod(t, "127.0.0.2"))))
		addr := serveTLS(t, g)
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}) //nolint:gosec // a self-signed test certificate
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{false: "http/1.1", true: "h2"}[on]
		if got := c.ConnectionState().NegotiatedProtocol; got != want {
			t.Errorf("HTTP2 %v: ALPN %q, want %q", on, got, want)
		}
		_ = c.Close()
	}
}

// TestHTTP2StalledStreamStallsNoOther: a client that stops reading one
// stream while its pod keeps sending fills that stream's flow-control
// window only: the other stream of the connection goes on echoing, and
// the gateway holds a bounded amount for the stalled one.
func TestHTTP2StalledStreamStallsNoOther(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		_, stalled := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/stalled", nil)
		_, live := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/live", nil)
		if stalled == nil || live == nil {
			t.Fatal("streams did not open")
		}
		// 64 MiB of echoes that the stalled stream's client never reads
		// (its window takes 4 MiB, the sockets a few more).
		msg := strings.Repeat("x", 125)
		frame := maskedFrame(0x2, msg)
		sent := make(chan int, 1)
		go func() {
			n := 0
			for ; n < (64<<20)/len(msg); n++ {
				if _, err := stalled.out.Write(frame); err != nil {
					break
				}
			}
			sent <- n
		}()
		for i := range 50 {
			want := fmt.Sprintf("live %d", i)
			if got := live.echo(t, want); got != want {
				t.Fatalf("the live stream: %q, want %q", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case n := <-sent:
			t.Fatalf("the stalled stream's client wrote all %d messages: nothing held it back", n)
		default:
		}
	})
}

// TestHTTP2Hostile: the data plane's rules hold for websockets over
// HTTP/2 as over HTTP/1.1: address forms, names, Origin, identity and
// per-client limits, each refused with its HTTP/1.1 answer and no dial.
func TestHTTP2Hostile(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{ClientLimits: ClientLimits{MaxTunnels: 1}}))
		sg := newES256Signer(t, "k1")
		pod := echoPod(t, "127.0.0.2")
		open := testRoute("echo", "/e", backendOf("p", pod))
		open.AllowedOrigins = []string{"https://app.example.com"}
		private := testRoute("private", "/me", func() routing.Backend { b := backendOf("a", echoPod(t, "127.0.0.3")); b.Bound = "alice"; return b }())
		private.Auth = &routing.Auth{Tokens: sg.verifier(t), BindingClaim: "sub"}
		h.g.publish(open, private)
		bearer := func(sub string) http.Header {
			return http.Header{"Authorization": {"Bearer " + sg.sign(t, claimsFor(sub, nil), nil, false)}}
		}
		cases := []struct {
			name, path string
			hdr        http.Header
			host       string
			want       int
		}{
			{"an address not allowlisted", "/e/127.0.0.9/x", nil, "", http.StatusNotFound},
			{"the canary", "/e/" + canaryIP + "/x", nil, "", http.StatusNotFound},
			{"leading zeros", "/e/127.0.0.02/x", nil, "", http.StatusNotFound},
			{"short form", "/e/127.2/x", nil, "", http.StatusNotFound},
			{"hex", "/e/0x7f.0.0.2/x", nil, "", http.StatusNotFound},
			{"percent-encoded", "/e/%31%32%37.0.0.2/x", nil, "", http.StatusBadRequest},
			{"mapped IPv6", "/e/::ffff:127.0.0.2/x", nil, "", http.StatusNotFound},
			{"with a port", "/e/127.0.0.2:80/x", nil, "", http.StatusNotFound},
			{"a dot segment", "/e/../e/127.0.0.2/x", nil, "", http.StatusBadRequest},
			{"a dot segment to the canary", "/e/127.0.0.2/../../" + canaryIP, nil, "", http.StatusBadRequest},
			{"another site's Origin", "/e/127.0.0.2/x", http.Header{"Origin": {"https://evil.example.com"}}, "", http.StatusForbidden},
			{":authority other than the TLS server name", "/e/127.0.0.2/x", nil, "other.example.com", http.StatusMisdirectedRequest},
			{"no token", "/me/127.0.0.3/x", nil, "", http.StatusUnauthorized},
			{"someone else's pod", "/me/127.0.0.3/x", bearer("bob"), "", http.StatusNotFound},
		}
		for _, c := range cases {
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodConnect, "https://ws.example.com"+c.path, pr)
			if err != nil {
				t.Fatal(err)
			}
			if c.host != "" {
				req.Host = c.host
			}
			for k, v := range c.hdr {
				req.Header[k] = v
			}
			req.Header.Set(":protocol", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			resp, err := h.client.Do(req)
			_ = pw.Close()
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			_ = resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
			}
		}
		if n := h.g.dials.Load(); n != 0 {
			t.Errorf("%d dials: %v", n, h.g.dialedAddrs())
		}
		// Alice's own pod opens, once: the per-client cap counts streams.
		if _, s := h.open(t, http.MethodConnect, "websocket", "/me/127.0.0.3/x", bearer("alice")); s == nil {
			t.Fatal("alice's own pod did not open")
		}
		if a, _ := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/x", nil); a.StatusCode != http.StatusTooManyRequests || a.Header.Get("Retry-After") == "" {
			t.Errorf("a second stream of the same client under --client-max-tunnels 1: %d, Retry-After %q", a.StatusCode, a.Header.Get("Retry-After"))
		}
		if canaryHits() != 0 {
			t.Error("the canary was reached")
		}
	})
}
