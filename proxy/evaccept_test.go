//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
)

// The event loops serve plain listeners themselves: these tests hold that
// path to net/http's answers, and check what it is for.

// proxyGoroutines counts the goroutines running code of the proxy itself
// (not of its tests).
func proxyGoroutines(t *testing.T) int {
	t.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		t.Fatal(err)
	}
	frame := regexp.MustCompile(`/proxy/[a-z_]+\.go:`)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		for _, m := range frame.FindAllString(g, -1) {
			if !strings.HasSuffix(m, "_test.go:") {
				n++
				break
			}
		}
	}
	return n
}

// steadyProxyGoroutines is proxyGoroutines once it has held still for
// 300 ms (at most 5 s): goroutines of earlier tests, such as one that
// lingers after a 431, end first.
func steadyProxyGoroutines(t *testing.T) int {
	t.Helper()
	n, since := proxyGoroutines(t), time.Now()
	for limit := time.Now().Add(5 * time.Second); time.Now().Before(limit); {
		time.Sleep(50 * time.Millisecond)
		if m := proxyGoroutines(t); m != n {
			n, since = m, time.Now()
		} else if time.Since(since) >= 300*time.Millisecond {
			break
		}
	}
	return n
}

func TestLoopHandshakesAndTunnelsHoldNoGoroutine(t *testing.T) {
	const tunnels = 200
	for _, tc := range []struct {
		name     string
		opts     Options
		min, max int // goroutines of the proxy per tunnel, ×tunnels
	}{
		{"event loops", Options{}, 0, 0},
		// The control: net/http and the goroutine engine hold two or
		// three per tunnel, which the count must see.
		{"net/http and goroutines", Options{goroutineTunnels: true}, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostileFixture(t, tc.opts)
			warm := exchange(t, f.g.addr, wsHead("/rooms/127.0.0.2"))
			if warm.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %q, want 101", warm.resp.Status)
			}
			waitTunnels(t, f.g, 1)
			base := steadyProxyGoroutines(t)
			for range tunnels {
				a := exchange(t, f.g.addr, wsHead("/rooms/127.0.0.2"))
				if a.resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %q, want 101", a.resp.Status)
				}
			}
			waitTunnels(t, f.g, tunnels+1)
			got := proxyGoroutines(t) - base
			t.Logf("%d tunnels: %d more goroutines in the proxy", tunnels, got)
			// Two either way: a goroutine of an earlier handshake may
			// end, or one of the runtime's start, while the count runs.
			if got < tc.min*tunnels-2 || got > tc.max*tunnels+2 {
				t.Errorf("%d more goroutines for %d tunnels, want %d to %d per tunnel", got, tunnels, tc.min, tc.max)
			}
			if n, evented := tunnelCounts(f.g); tc.max == 0 && evented != n {
				t.Errorf("%d of %d tunnels on the event loops, want all", evented, n)
			}
		})
	}
}

// writeInPieces writes s a few bytes at a time, pausing between writes so
// that each arrives on its own.
func writeInPieces(c net.Conn, s string, piece int) error {
	for s != "" {
		n := min(piece, len(s))
		if _, err := io.WriteString(c, s[:n]); err != nil {
			return err
		}
		s = s[n:]
		time.Sleep(time.Millisecond)
	}
	return nil
}

func TestHeadsAndAnswersInPieces(t *testing.T) {
	fromPod := "\x81\x02hi"
	for _, tc := range []struct {
		name string
		head string
		// piece: bytes per write of the client's head and the pod's 101.
		piece int
	}{
		{"byte by byte", wsHead("/rooms/127.0.0.2"), 1},
		{"CRLF CRLF split", wsHead("/rooms/127.0.0.2"), 3},
		{"bare LF line ends", strings.ReplaceAll(wsHead("/rooms/127.0.0.2"), "\r\n", "\n"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostileFixture(t, Options{})
			f.podA.setScript(func(pc *podConn) {
				if !pc.readHead() {
					return
				}
				_, req, _, _ := pc.recorded()
				out := strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
				if writeInPieces(pc.c, out+fromPod, tc.piece) != nil {
					return
				}
				pc.drain()
			})
			before := f.podA.accepted()
			c, err := net.Dial("tcp", f.g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := writeInPieces(c, tc.head, tc.piece); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close() // a 101 has none: the connection goes on
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %q, want 101", resp.Status)
			}
			got := make([]byte, len(fromPod))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != fromPod {
				t.Fatalf("the client got %q (%v), want the pod's frame %q", got, err, fromPod)
			}
			frame := maskedFrame(1, "ping")
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			pc := f.podA.conn(before)
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, _, after, _ := pc.recorded(); bytes.Equal(after, frame) {
					break
				} else if len(after) > len(frame) || time.Now().After(deadline) {
					t.Fatalf("the pod got %q, want the client's frame %q", after, frame)
				}
				time.Sleep(5 * time.Millisecond)
			}
			_ = c.Close()
			pc.wait(t)
		})
	}
}

// TestLoopAnswersHeadsAsNetHTTP sends the same heads to a gateway served
// by the loops and to one served by net/http: the answers' statuses (and
// whether the gateway dialled) must agree, heads at the size limit
// included.
func TestLoopAnswersHeadsAsNetHTTP(t *testing.T) {
	loop := newHostileFixture(t, Options{})
	std := newHostileFixture(t, Options{goroutineTunnels: true})
	limit := loop.g.srv.headLimit()
	pad := func(total int) string {
		base := wsHead("/rooms/127.0.0.2", "X-Pad: ")
		return wsHead("/rooms/127.0.0.2", "X-Pad: "+strings.Repeat("a", total-len(base)))
	}
	heads := map[string]string{
		"valid":                       wsHead("/rooms/127.0.0.2"),
		"bare LF":                     strings.ReplaceAll(wsHead("/rooms/127.0.0.2"), "\r\n", "\n"),
		"leading CRLF":                "\r\n" + wsHead("/rooms/127.0.0.2"),
		"HTTP/1.0":                    wsRequest("GET /rooms/127.0.0.2 HTTP/1.0"),
		"HTTP/0.9":                    wsRequest("GET /rooms/127.0.0.2 HTTP/0.9"),
		"HTTP/2.0 preface":            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"HTTP/3.0":                    wsRequest("GET /rooms/127.0.0.2 HTTP/3.0"),
		"no Host":                     wsHead("/rooms/127.0.0.2", "-Host"),
		"empty Host":                  wsHead("/rooms/127.0.0.2", "Host: "),
		"two Hosts":                   wsHead("/rooms/127.0.0.2", "+Host: ws.example.com"),
		"Host with a space":           wsHead("/rooms/127.0.0.2", "Host: ws example.com"),
		"Host with a slash":           wsHead("/rooms/127.0.0.2", "Host: ws.example.com/x"),
		"space before colon":          wsHead("/rooms/127.0.0.2", "X-A : b"),
		"name with a bracket":         wsHead("/rooms/127.0.0.2", "X-[a]: b"),
		"value with NUL":              wsHead("/rooms/127.0.0.2", "X-A: b\x00c"),
		"value with DEL":              wsHead("/rooms/127.0.0.2", "X-A: b\x7fc"),
		"folded line":                 wsHead("/rooms/127.0.0.2", "X-A: b\r\n c"),
		"line without colon":          wsHead("/rooms/127.0.0.2", "X-A b"),
		"Expect 100-continue":         wsHead("/rooms/127.0.0.2", "Expect: 100-continue"),
		"Expect other":                wsHead("/rooms/127.0.0.2", "Expect: fly"),
		"chunked body":                wsHead("/rooms/127.0.0.2", "Transfer-Encoding: chunked") + "0\r\n\r\n",
		"gzip transfer coding":        wsHead("/rooms/127.0.0.2", "Transfer-Encoding: gzip"),
		"length and chunked":          wsHead("/rooms/127.0.0.2", "Content-Length: 3", "Transfer-Encoding: chunked") + "0\r\n\r\n",
		"two lengths":                 wsHead("/rooms/127.0.0.2", "Content-Length: 3", "+Content-Length: 4") + "abc",
		"body":                        wsHead("/rooms/127.0.0.2", "Content-Length: 3") + "abc",
		"absolute form":               wsRequest("GET http://ws.example.com/rooms/127.0.0.2 HTTP/1.1"),
		"asterisk form":               wsRequest("GET * HTTP/1.1"),
		"lower-case method":           wsRequest("get /rooms/127.0.0.2 HTTP/1.1"),
		"no version":                  wsRequest("GET /rooms/127.0.0.2"),
		"two spaces":                  wsRequest("GET  /rooms/127.0.0.2 HTTP/1.1"),
		"garbage line":                "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
		"head one below the limit":    pad(limit - 1),
		"head at the limit":           pad(limit),
		"head one beyond the limit":   pad(limit + 1),
		"head far beyond the limit":   pad(4 * limit),
		"not a websocket":             wsHead("/rooms/127.0.0.2", "-Upgrade", "-Connection"),
		"unknown address":             wsHead("/rooms/127.0.0.9"),
		"the canary":                  wsHead("/rooms/" + loop.canaryHost),
		"POST":                        wsRequest("POST /rooms/127.0.0.2 HTTP/1.1"),
		"pipelined second request":    wsHead("/rooms/127.0.0.9") + wsHead("/rooms/127.0.0.2"),
		"request-target with a query": wsHead("/rooms/127.0.0.2/x?y=1&z=%20"),
	}
	for name, head := range heads {
		t.Run(name, func(t *testing.T) {
			answer := func(f *hostileFixture) (int, bool) {
				s := f.snap()
				c, err := net.Dial("tcp", f.g.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, head)
				resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
				status := 0
				if err == nil {
					status = resp.StatusCode
					_ = resp.Body.Close()
				} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					var ne net.Error
					if !errors.As(err, &ne) {
						t.Logf("reading the answer: %v", err)
					}
				}
				dialled := f.g.dials.Load() > s.dials
				if status == http.StatusSwitchingProtocols {
					_ = c.Close()
					waitNoTunnels(t, f.g)
				}
				return status, dialled
			}
			gotStatus, gotDial := answer(loop)
			wantStatus, wantDial := answer(std)
			t.Logf("event loops: %d, dialled %v", gotStatus, gotDial)
			if gotStatus != wantStatus || gotDial != wantDial {
				t.Errorf("event loops: status %d, dialled %v; net/http: status %d, dialled %v", gotStatus, gotDial, wantStatus, wantDial)
			}
		})
	}
}

// newLoopListener returns a server over tables with a listener that it
// does not serve yet; its loops accept acceptBatch connections a wake-up
// (0: the default).
func newLoopListener(t *testing.T, tables Tables, acceptBatch int) (*Server, net.Listener) {
	t.Helper()
	srv := New(tables, Options{dialHook: func(string) error { return nil }, acceptBatch: acceptBatch})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return srv, l
}

func TestShutdownStopsTheLoopListener(t *testing.T) {
	f := newHostileFixture(t, Options{})
	srv, l := newLoopListener(t, f.g.tables, 0)
	addr := l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	// One tunnel, to be sure the loops serve the listener; then a client
	// that has sent half a head.
	tun := exchange(t, addr, wsHead("/rooms/127.0.0.2"))
	if tun.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %q, want 101", tun.resp.Status)
	}
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := io.WriteString(half, "GET /rooms/127.0.0.2 HTTP/1.1\r\nHost: ws"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx, 0); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	// The client with half a head is answered 503 at once, long before
	// the read header timeout (10 s), and the connection closes.
	_ = half.SetReadDeadline(time.Now().Add(2 * time.Second))
	if got, err := io.ReadAll(half); err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
		t.Errorf("the client with half a head read %q (%v), want a 503 and the connection's end", got, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed %v after Shutdown", d)
	}
	// The tunnel got its Close frame 1001, and the listener is gone.
	_ = tun.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	frame := make([]byte, 4)
	if _, err := io.ReadFull(tun.br, frame); err != nil || frame[0] != 0x88 || frame[2] != 0x03 || frame[3] != 0xe9 {
		t.Errorf("the tunnel's client read % x (%v), want a Close frame 1001", frame, err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts connections after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShutdownAnswersQueuedConnections: connections that the kernel has
// queued on the listening socket when the gateway stops are accepted and
// answered 503, not reset by the socket's close after their clients sent
// their requests.
func TestShutdownAnswersQueuedConnections(t *testing.T) {
	f := newHostileFixture(t, Options{})
	// One connection a wake-up: the loops would go on accepting in tasks
	// posted after the listener's stop.
	srv, l := newLoopListener(t, f.g.tables, 1)
	addr := l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	if tun := exchange(t, addr, wsHead("/rooms/127.0.0.2")); tun.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %q, want 101", tun.resp.Status)
	}

	// Hold every loop, so that nothing accepts: connections queue.
	release := make(chan struct{})
	var held sync.WaitGroup
	for _, lp := range evloop.Loops() {
		held.Add(1)
		lp.Post(func() { held.Done(); <-release })
	}
	held.Wait()
	var clients []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			close(release)
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, wsHead("/rooms/127.0.0.2")); err != nil {
			close(release)
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx, 0) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
			t.Errorf("queued client %d read %q (%v), want a 503 and the connection's end", i, got, err)
		}
	}
}

// TestAcceptBacklogBeyondOneBatch queues more connections than the loops
// accept per wake-up before the gateway serves its listener; only the
// later ones send a head, so nothing but the loops' own accepting can
// reach them: the listening socket is edge-triggered, and no event comes
// for connections already queued.
func TestAcceptBacklogBeyondOneBatch(t *testing.T) {
	f := newHostileFixture(t, Options{})
	// One connection a wake-up: every later one needs the loops to go on
	// accepting by themselves.
	srv, l := newLoopListener(t, f.g.tables, 1)
	addr := l.Addr().String()
	const queued = 64
	conns := make([]net.Conn, queued)
	for i := range conns {
		var err error
		if conns[i], err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx, 0)
	})
	// The first batches, one per loop, take the silent ones.
	time.Sleep(100 * time.Millisecond)
	late := conns[queued/2:]
	for _, c := range late {
		if _, err := io.WriteString(c, wsHead("/rooms/127.0.0.2")); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range late {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("queued connection %d of %d: %v", queued/2+i, queued, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("queued connection %d: status %q, want 101", queued/2+i, resp.Status)
		}
	}
}
