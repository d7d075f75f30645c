package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// Tunnels run on an event loop (plain TCP and TLS from ServeTLS, on
// Linux) or on goroutines (other systems, and where a connection cannot
// move). These tests drive every engine through raw clients and raw pods.

// engine is one way of carrying tunnels.
type engine struct {
	opts Options
	tls  bool // clients speak TLS to the gateway
}

var engines = []struct {
	name string
	e    engine
}{
	{"evented", engine{}},
	{"evented TLS", engine{tls: true}},
	{"goroutines", engine{opts: Options{goroutineTunnels: true}}},
	{"goroutines TLS", engine{opts: Options{goroutineTunnels: true}, tls: true}},
	{"goroutines, reads as on TLS", engine{opts: Options{goroutineTunnels: true, bufferedReads: true}}},
}

func forEachEngine(t *testing.T, test func(t *testing.T, e engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { test(t, e.e) })
	}
}

// forEachPlainEngine runs test with the engines of plain TCP clients.
func forEachPlainEngine(t *testing.T, test func(t *testing.T, opts Options)) {
	for _, e := range engines {
		if !e.e.tls {
			t.Run(e.name, func(t *testing.T) { test(t, e.e.opts) })
		}
	}
}

// upgrade101 reads the pod's handshake and answers 101; false if no
// handshake arrived.
func upgrade101(pc *podConn) bool {
	if !pc.readHead() {
		return false
	}
	_, req, _, _ := pc.recorded()
	ans := strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
	_, err := pc.c.Write([]byte(ans))
	return err == nil
}

// upgradeThenRead answers the pod's handshake 101, then reads want from
// the client; false if either fails or other bytes come.
func upgradeThenRead(pc *podConn, want []byte) bool {
	if !upgrade101(pc) {
		return false
	}
	got := make([]byte, len(want))
	_, err := io.ReadFull(pc.br, got)
	return err == nil && bytes.Equal(got, want)
}

// openRaw opens a tunnel to fake pod A of the fixture with a raw client,
// over TLS for a TLS engine.
func openRaw(t *testing.T, f *hostileFixture, e engine) *rawAnswer {
	t.Helper()
	var c net.Conn
	var err error
	if e.tls {
		c, err = tls.Dial("tcp", serveTLS(t, f.g), &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true})
	} else {
		c, err = net.Dial("tcp", f.g.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	a := upgradeRaw(t, c, "/rooms/127.0.0.2")
	checkEngine(t, f.g, e)
	return a
}

// upgradeRaw sends a websocket handshake for path on c and fails t
// unless the answer is 101; c's deadline is cleared then.
func upgradeRaw(t *testing.T, c net.Conn, path string) *rawAnswer {
	t.Helper()
	a := roundTrip(t, c, wsHead(path))
	if a.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %q, want 101", a.resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return a
}

// checkEngine fails t unless g's open tunnels run on e's engine. The
// client may read the 101 before the tunnel has moved to its loop: the
// check waits for that.
func checkEngine(t *testing.T, g *testGateway, e engine) {
	t.Helper()
	want := runtime.GOOS == "linux" && !e.opts.goroutineTunnels
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, evented := tunnelCounts(g)
		if n > 0 && (want && evented == n || !want && evented == 0) {
			if !want {
				// A tunnel on goroutines is never moved: make sure none
				// is about to be.
				time.Sleep(20 * time.Millisecond)
				if _, evented := tunnelCounts(g); evented != 0 {
					t.Fatal("a tunnel moved to an event loop, want goroutines")
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tunnels on an event loop, want all: %v", evented, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tunnelCounts counts g's open tunnels, and those on an event loop.
func tunnelCounts(g *testGateway) (n, evented int) {
	g.srv.reg.mu.Lock()
	defer g.srv.reg.mu.Unlock()
	for _, set := range g.srv.reg.tunnels {
		for tn := range set {
			n++
			tn.mu.Lock()
			c := tn.carrier
			tn.mu.Unlock()
			if _, onGoroutines := c.(*connTunnel); c != nil && !onGoroutines {
				evented++
			}
		}
	}
	return n, evented
}

// serveTLS makes g serve TLS (a self-signed certificate for
// ws.example.com) on a second listener and returns its address.
func serveTLS(t *testing.T, g *testGateway) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t, "ws.example.com")
	go func() { _ = g.srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

// halfClose half-closes c: a TCP FIN, or close_notify on TLS.
func halfClose(t *testing.T, c net.Conn) error {
	t.Helper()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T cannot half-close", c)
	}
	return cw.CloseWrite()
}

// frameStream writes n binary frames of size bytes each (masked when
// masked), with payloads that differ frame to frame, and hashes what it
// wrote.
type frameStream struct {
	n, size int
	masked  bool
	sum     hash.Hash
	written int64
}

func (s *frameStream) writeTo(w io.Writer) error {
	s.sum = sha256.New()
	buf := make([]byte, 0, s.size+14)
	for i := range s.n {
		buf = append(buf[:0], 0x82, 127)
		if s.masked {
			buf[1] |= 0x80
		}
		buf = binary.BigEndian.AppendUint64(buf, uint64(s.size))
		if s.masked {
			buf = append(buf, 0, 0, 0, 0) // a zero key: the payload is as written
		}
		for j := range s.size {
			buf = append(buf, byte(i*31+j))
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		s.sum.Write(buf)
		s.written += int64(len(buf))
	}
	return nil
}

// sendAndCloseWrite writes s to c and half-closes it, in the background;
// the channel gets the error.
func (s *frameStream) sendAndCloseWrite(t *testing.T, c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := s.writeTo(c)
		if err == nil {
			err = halfClose(t, c)
		}
		done <- err
	}()
	return done
}

// readAllHashed reads r to its end and returns its length and hash.
func readAllHashed(r io.Reader) (int64, []byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, h.Sum(nil), err
}

// forwardedFromClient is what the gateway has read from clients of open
// tunnels.
func forwardedFromClient(g *testGateway) int64 {
	g.srv.reg.mu.Lock()
	defer g.srv.reg.mu.Unlock()
	var n int64
	for _, set := range g.srv.reg.tunnels {
		for tn := range set {
			n += tn.st.Bytes(ws.Client)
		}
	}
	return n
}

func TestBackpressureBoundsMemoryAndKeepsEveryByte(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		release := make(chan struct{})
		type result struct {
			n   int64
			sum []byte
			err error
		}
		got := make(chan result, 1)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				return
			}
			select {
			case <-release:
			case <-time.After(30 * time.Second): // the test failed
				return
			}
			_ = pc.c.SetDeadline(time.Now().Add(30 * time.Second))
			n, sum, err := readAllHashed(pc.br)
			got <- result{n, sum, err}
		})
		a := openRaw(t, f, e)

		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)

		// 64 MiB from a client to a pod that reads nothing yet: more than
		// the kernel's socket buffers on both hops can hold.
		s := &frameStream{n: 1024, size: 64 << 10, masked: true}
		wrote := s.sendAndCloseWrite(t, a.conn)
		// Wait until the gateway stops taking bytes.
		last, stable := int64(-1), 0
		for stable < 5 {
			time.Sleep(100 * time.Millisecond)
			if n := forwardedFromClient(f.g); n == last {
				stable++
			} else {
				last, stable = n, 0
			}
		}
		select {
		case err := <-wrote:
			t.Fatalf("the client wrote its 64 MiB (err %v) to a pod that reads nothing: no backpressure", err)
		default:
		}
		if last >= 64<<20 {
			t.Fatalf("the gateway read %d bytes for a pod that reads nothing", last)
		}
		var during runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&during)
		if grow := int64(during.HeapInuse) - int64(before.HeapInuse); grow > 4<<20 {
			t.Errorf("the heap grew by %d bytes while the pod stalled, want under 4 MiB", grow)
		}
		t.Logf("stalled: the gateway read %.1f MiB and held them in the kernel's buffers", float64(last)/(1<<20))

		close(release)
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatalf("client write: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the client's writes never completed once the pod read")
		}
		r := <-got
		if r.err != nil {
			t.Fatalf("pod read: %v", r.err)
		}
		if r.n != s.written || !bytes.Equal(r.sum, s.sum.Sum(nil)) {
			t.Fatalf("the pod got %d bytes (hash %x), want the %d bytes sent (hash %x)", r.n, r.sum, s.written, s.sum.Sum(nil))
		}
		waitNoTunnelsAfterClose(t, f, a)
	})
}

// waitNoTunnelsAfterClose closes the client and waits for the tunnel to
// be gone.
func waitNoTunnelsAfterClose(t *testing.T, f *hostileFixture, a *rawAnswer) {
	t.Helper()
	_ = a.conn.Close()
	waitNoTunnels(t, f.g)
}

func TestBulkBothWaysAtOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		fromPod := &frameStream{n: 256, size: 32<<10 + 7}
		type result struct {
			n   int64
			sum []byte
			err error
		}
		podGot := make(chan result, 1)
		podWrote := make(chan error, 1)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				return
			}
			_ = pc.c.SetDeadline(time.Now().Add(30 * time.Second))
			wrote := fromPod.sendAndCloseWrite(t, pc.c)
			n, sum, err := readAllHashed(pc.br)
			podGot <- result{n, sum, err}
			// The script's end closes the connection: wait for the writer.
			podWrote <- <-wrote
		})
		a := openRaw(t, f, e)
		_ = a.conn.SetDeadline(time.Now().Add(30 * time.Second))
		fromClient := &frameStream{n: 256, size: 32<<10 + 3, masked: true}
		clientWrote := fromClient.sendAndCloseWrite(t, a.conn)
		n, sum, err := readAllHashed(a.br)
		if err != nil {
			t.Fatalf("client read: %v", err)
		}
		if err := <-clientWrote; err != nil {
			t.Fatalf("client write: %v", err)
		}
		if err := <-podWrote; err != nil {
			t.Fatalf("pod write: %v", err)
		}
		if n != fromPod.written || !bytes.Equal(sum, fromPod.sum.Sum(nil)) {
			t.Errorf("the client got %d bytes, want the pod's %d, identical", n, fromPod.written)
		}
		r := <-podGot
		if r.err != nil {
			t.Fatalf("pod read: %v", r.err)
		}
		if r.n != fromClient.written || !bytes.Equal(r.sum, fromClient.sum.Sum(nil)) {
			t.Errorf("the pod got %d bytes, want the client's %d, identical", r.n, fromClient.written)
		}
		waitNoTunnels(t, f.g)
	})
}

func TestStalledClientDoesNotPinAClosingTunnel(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				return
			}
			// Frames until the gateway closes the connection.
			s := &frameStream{n: 1 << 20, size: 1000}
			_ = s.writeTo(pc.c)
		})
		a := openRaw(t, f, e)
		// The client never reads; let the buffers fill.
		time.Sleep(500 * time.Millisecond)
		rooms := *f.routeRooms
		rooms.Backends = nil
		start := time.Now()
		f.g.publish(&rooms, f.routeOther, f.routeTenant, f.routeApp)
		deadline := start.Add(ws.CloseGrace + 3*time.Second)
		for f.g.srv.OpenTunnels() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("a revoked tunnel whose client reads nothing was still open %v later", time.Since(start))
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("ended %v after the revocation", time.Since(start).Round(time.Millisecond))
		_ = a.conn.Close()
	})
}

func TestPodResetEndsTheTunnel(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				return
			}
			_, _ = pc.c.Write([]byte("\x81\x02hi"))
			time.Sleep(50 * time.Millisecond)
			_ = pc.c.(*net.TCPConn).SetLinger(0) // close sends RST
		})
		a := openRaw(t, f, e)
		_ = a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(a.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the client's connection stayed open after the pod reset its side")
		}
		if !bytes.HasPrefix(got, []byte("\x81\x02hi")) {
			t.Errorf("the client got %q, want the pod's frame first", got)
		}
		waitNoTunnels(t, f.g)
	})
}

// TestEndOfStreamAfterTheClosingHandshakeEndsTheTunnel: once a Close
// frame has gone each way, nothing may follow either way, so the pod's
// end of stream ends the tunnel at once, as a websocket server closes its
// connection after the handshake: the client gets the pod's Close and
// then its end of stream, and the gateway holds nothing for it while the
// client has not closed its side.
func TestEndOfStreamAfterTheClosingHandshakeEndsTheTunnel(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		if e.opts.goroutineTunnels {
			t.Skip("on goroutines each direction ends on its own: the half-close lasts until the client's end of stream")
		}
		f := newHostileFixture(t, e.opts)
		clientClose := maskedFrame(8, "\x03\xe8")
		const podClose = "\x88\x02\x03\xe8" // Close 1000, unmasked
		f.podA.setScript(func(pc *podConn) {
			// The client's Close, the pod's answer, then the pod closes.
			if upgradeThenRead(pc, clientClose) {
				_, _ = pc.c.Write([]byte(podClose))
			}
		})
		a := openRaw(t, f, e)
		if _, err := a.conn.Write(clientClose); err != nil {
			t.Fatal(err)
		}
		_ = a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(a.br)
		if err != nil {
			t.Errorf("reading up to the end of stream: %v", err)
		}
		if string(got) != podClose {
			t.Errorf("the client got %q, want the pod's Close %q and the end of stream", got, podClose)
		}
		// The client still holds its side open.
		waitNoTunnels(t, f.g)
	})
}

// TestEndAfterTheClosingHandshakeDeliversWhatIsHeld: a client that
// half-closes after the closing handshake may still be reading; what the
// gateway holds for it (a slow reader's share of the pod's last frames
// and the pod's Close) still reaches it before the tunnel ends.
func TestEndAfterTheClosingHandshakeDeliversWhatIsHeld(t *testing.T) {
	clientClose := maskedFrame(8, "\x03\xe8")
	const size = 60000
	fromPod := append([]byte{0x82, 126, byte(size >> 8), byte(size & 0xff)}, bytes.Repeat([]byte{'x'}, size)...)
	fromPod = append(fromPod, "\x88\x02\x03\xe8"...) // then the pod's Close 1000
	pod := startFakePod(t, "127.0.0.2", func(pc *podConn) {
		if upgradeThenRead(pc, clientClose) {
			_, _ = pc.c.Write(fromPod)
			pc.drain() // the pod keeps its side open
		}
	})
	g := startGateway(t, Options{}, testRoute("rooms", "/rooms", pod.backend("a")))
	// Small socket buffers (the listener's are inherited by the sockets it
	// accepts), so that the gateway holds most of the pod's bytes.
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) })
		}
	}
	lc := net.ListenConfig{Control: small(syscall.SO_SNDBUF)}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.srv.Serve(l) }()
	d := net.Dialer{Control: small(syscall.SO_RCVBUF)}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := upgradeRaw(t, c, "/rooms/127.0.0.2")
	if _, err := c.Write(clientClose); err != nil {
		t.Fatal(err)
	}
	// The gateway reads the pod's frames and its Close, and holds what the
	// client's full buffers do not take; then the client ends its stream.
	time.Sleep(300 * time.Millisecond)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(a.br)
	if err != nil {
		t.Errorf("reading up to the end of stream: %v", err)
	}
	if !bytes.Equal(got, fromPod) {
		t.Errorf("the client got %d of the %d bytes the pod sent", len(got), len(fromPod))
	}
}
