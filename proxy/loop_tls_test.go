//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TLS connections accepted on the loops: the handshake runs on a
// goroutine that the loop wakes, and nothing of it may outlive its
// timeout, hold a socket, or reach a pod.

// serveTLSWith makes f's gateway serve TLS with cert on a listener made
// by lc, and returns its address.
func serveTLSWith(t *testing.T, f *hostileFixture, lc net.ListenConfig, cert tls.Certificate) string {
	t.Helper()
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.g.srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	return l.Addr().String()
}

// dialer returns a function that connects to addr with d, closing each
// connection at the end of the test.
func dialer(t *testing.T, d net.Dialer, addr string) func() net.Conn {
	return func() net.Conn {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
}

// clientHello is the first flight of a TLS client for ws.example.com, as
// crypto/tls writes it.
func clientHello(t *testing.T) []byte {
	t.Helper()
	w := &firstWrite{}
	_ = tls.Client(w, &tls.Config{ServerName: "ws.example.com", NextProtos: []string{"http/1.1"}}).Handshake()
	if len(w.b) < 100 || w.b[0] != 0x16 {
		t.Fatalf("not a ClientHello: % x", w.b)
	}
	return w.b
}

// firstWrite is a connection that keeps what is written to it first and
// fails everything else.
type firstWrite struct {
	net.Conn
	b []byte
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if w.b != nil {
		return 0, io.ErrClosedPipe
	}
	w.b = append([]byte(nil), p...)
	return len(p), nil
}

func (w *firstWrite) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }

// cutAfter reads c until the gateway ends the connection and reports how
// long that took from start, or -1 if it did not within 5 s.
func cutAfter(c net.Conn, start time.Time) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			ch <- -1
			return
		}
		ch <- time.Since(start)
	}()
	return ch
}

// tlsWebsocket opens a websocket over conn, a connection to a TLS
// listener of the hostile fixture's gateway, reports the answer's status
// and closes the connection.
func tlsWebsocket(t *testing.T, conn net.Conn) int {
	t.Helper()
	c := tls.Client(conn, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // a self-signed test certificate
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return roundTrip(t, c, wsHead("/rooms/127.0.0.2")).resp.StatusCode
}

func TestTLSHandshakesOnTheLoopsAreCutAndLeaveNothing(t *testing.T) {
	// Long enough for the handshakes made meanwhile (under -race too) to
	// tell "served at once" from "served after the stalls".
	const rht = 2 * time.Second
	f := newHostileFixture(t, Options{ReadHeaderTimeout: rht})
	dial := dialer(t, net.Dialer{}, serveTLSWith(t, f, net.ListenConfig{}, selfSigned(t, "ws.example.com")))
	if got := tlsWebsocket(t, dial()); got != http.StatusSwitchingProtocols {
		t.Fatalf("a TLS websocket: %d, want 101", got)
	}
	waitNoTunnels(t, f.g)
	base := steadyProxyGoroutines(t)
	before := f.snap()

	hello := clientHello(t)
	clients := []struct {
		name string
		send []byte
		// silent: accepted only after the kernel's deferral.
		silent bool
	}{
		{"silent", nil, true},
		{"half a ClientHello", hello[:len(hello)/2], false},
		{"a ClientHello, then nothing", hello, false},
	}
	const each = 20
	var cuts []<-chan time.Duration
	for _, c := range clients {
		for range each {
			conn := dial()
			start := time.Now()
			if _, err := conn.Write(c.send); err != nil {
				t.Fatal(err)
			}
			cuts = append(cuts, cutAfter(conn, start))
		}
	}
	// Handshakes on the loops meanwhile are served at once.
	for i := range 3 {
		start := time.Now()
		if got := tlsWebsocket(t, dial()); got != http.StatusSwitchingProtocols {
			t.Fatalf("a TLS websocket during the stalls: %d, want 101", got)
		}
		if took := time.Since(start); took > rht/2 {
			t.Errorf("websocket %d during the stalls took %s", i, took)
		}
	}
	for i, ch := range cuts {
		c := clients[i/each]
		took := <-ch
		want := rht
		if c.silent {
			want += AcceptDeferral
		}
		switch {
		case took < 0:
			t.Errorf("%s client: not cut", c.name)
		case took < want-50*time.Millisecond || took > want+1500*time.Millisecond:
			t.Errorf("%s client cut after %s, want about %s", c.name, took, want)
		}
	}
	// Each handshake's goroutine has ended with its connection.
	if got := steadyProxyGoroutines(t); got > base {
		t.Errorf("%d goroutines in the proxy after the stalled handshakes ended, %d before", got, base)
	}
	if d := f.g.dials.Load() - before.dials; d != 3 {
		t.Errorf("%d dials, want the 3 complete handshakes only", d)
	}
	waitNoTunnels(t, f.g)
}

// TestTLSHandshakeFlightWaitsForASlowReader: a server flight that the
// sockets cannot hold at once (a certificate of ~100 KB, small socket
// buffers) waits for the client to read it; a client that never reads
// is cut at the handshake's timeout.
func TestTLSHandshakeFlightWaitsForASlowReader(t *testing.T) {
	// The slow reader's handshake must end within it, under -race too.
	const rht = 2 * time.Second
	f := newHostileFixture(t, Options{ReadHeaderTimeout: rht})
	names := []string{"ws.example.com"}
	for i := range 3000 {
		names = append(names, fmt.Sprintf("name-%04d.rooms.example.com", i))
	}
	cert := selfSigned(t, names...)
	if n := len(cert.Certificate[0]); n < 80<<10 {
		t.Fatalf("certificate of %d bytes: too small to fill the buffers", n)
	}
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) })
		}
	}
	// The accepted sockets inherit the listening socket's send buffer.
	addr := serveTLSWith(t, f, net.ListenConfig{Control: small(syscall.SO_SNDBUF)}, cert)
	dial := dialer(t, net.Dialer{Control: small(syscall.SO_RCVBUF)}, addr)
	base := steadyProxyGoroutines(t)

	// A client that reads its flight only after a while.
	if got := tlsWebsocket(t, &lateReader{Conn: dial(), wait: 200 * time.Millisecond}); got != http.StatusSwitchingProtocols {
		t.Fatalf("slow reader's websocket: %d, want 101", got)
	}
	// One that reads nothing: its handshake waits for the socket to take
	// its flight until the timeout, and not past it.
	c := dial()
	if _, err := c.Write(clientHello(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(rht / 2)
	if n := handshakeGoroutines(); n != 1 {
		t.Fatalf("%d handshakes in progress, want the one whose client reads nothing", n)
	}
	if !waitHandshakeGoroutines(0, rht+time.Second) {
		t.Fatal("the handshake of a client that reads nothing outlived its timeout")
	}
	// What the socket had taken of the flight, then the end.
	if took := <-cutAfter(c, time.Now()); took < 0 {
		t.Error("the connection of a client that read nothing is still open")
	}
	waitNoTunnels(t, f.g)
	if got := steadyProxyGoroutines(t); got > base {
		t.Errorf("%d goroutines in the proxy after the handshakes, %d before", got, base)
	}
}

// lateReader waits before its first read.
type lateReader struct {
	net.Conn
	wait   time.Duration
	waited bool
}

func (c *lateReader) Read(p []byte) (int, error) {
	if !c.waited {
		c.waited = true
		time.Sleep(c.wait)
	}
	return c.Conn.Read(p)
}

// TestTLSHandshakeOnTheLoopsEndsAtShutdown: Shutdown ends handshakes in
// progress on the loops; none of them holds it.
func TestTLSHandshakeOnTheLoopsEndsAtShutdown(t *testing.T) {
	f := newHostileFixture(t, Options{ReadHeaderTimeout: time.Minute})
	addr := serveTLSWith(t, f, net.ListenConfig{}, selfSigned(t, "ws.example.com"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := clientHello(t)
	start := time.Now()
	if _, err := c.Write(hello[:len(hello)/2]); err != nil {
		t.Fatal(err)
	}
	cut := cutAfter(c, start)
	time.Sleep(100 * time.Millisecond)
	if err := f.g.srv.Shutdown(t.Context(), time.Second); err != nil {
		t.Fatal(err)
	}
	if took := <-cut; took < 0 || took > 2*time.Second {
		t.Errorf("a handshake in progress at Shutdown ended after %v, want at once", took)
	}
	if !waitHandshakeGoroutines(0, 2*time.Second) {
		t.Errorf("%d TLS handshakes' goroutines left after Shutdown", handshakeGoroutines())
	}
}

// handshakeGoroutines counts the goroutines making TLS handshakes for
// the loops.
func handshakeGoroutines() int {
	buf := make([]byte, 4<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*loopHandshake).beginTLS.func")
}

// waitHandshakeGoroutines waits up to d until n handshakes' goroutines
// are left.
func waitHandshakeGoroutines(n int, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if handshakeGoroutines() == n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
