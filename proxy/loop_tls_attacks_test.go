//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// coalescer holds what is written to it until the next Read or Flush,
// then sends it in one write: records a TLS client writes one by one
// reach the gateway in one segment.
type coalescer struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *coalescer) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = nil
	return err
}

// Deadlines set through TLS (CloseWrite sets one to now) do not reach
// the socket: the test sets them on it.
func (c *coalescer) SetDeadline(time.Time) error      { return nil }
func (c *coalescer) SetWriteDeadline(time.Time) error { return nil }
func (c *coalescer) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(t)
}

func (c *coalescer) Read(p []byte) (int, error) {
	if err := c.Flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func forEachTLSEngine(t *testing.T, test func(t *testing.T, e engine)) {
	for _, e := range engines {
		if e.e.tls {
			t.Run(e.name, func(t *testing.T) { test(t, e.e) })
		}
	}
}

func coalescedTLS(t *testing.T, addr string) (*tls.Conn, *coalescer) {
	return coalescedTLSv(t, addr, tls.VersionTLS12)
}

// coalescedTLSv: a TLS 1.2 client (max), by default: in TLS 1.3 an alert
// travels as application data, and crypto/tls cannot see it coming.
func coalescedTLSv(t *testing.T, addr string, maxVersion uint16) (*tls.Conn, *coalescer) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	co := &coalescer{Conn: raw}
	c := tls.Client(co, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, MaxVersion: maxVersion}) //nolint:gosec // test cert
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, co
}

// TestTLSHeadWithFinishedInOneSegment: the client's Finished and its
// request head arrive together.
func TestTLSHeadWithFinishedInOneSegment(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		addr := serveTLS(t, f.g)
		c, _ := coalescedTLS(t, addr)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		a := roundTrip(t, c, wsHead("/rooms/127.0.0.2"))
		if a.resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", a.resp.StatusCode)
		}
	})
}

// TestTLSHeadThenCloseNotifyInOneSegment: a client sends its head
// and half-closes (close_notify) at once.
func TestTLSHeadThenCloseNotifyInOneSegment(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		addr := serveTLS(t, f.g)
		c, co := coalescedTLS(t, addr)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		_ = co.Flush()
		time.Sleep(50 * time.Millisecond)
		_, _ = c.Write([]byte(wsHead("/rooms/127.0.0.2")))
		_ = c.CloseWrite()
		_ = co.Flush()
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"}) //nolint:bodyclose // a 101's body is empty
		if err != nil {
			t.Fatalf("no answer to a head followed by close_notify in one segment: %v (pod conns %d)", err, f.podA.accepted())
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("a head followed by close_notify: %q, want 101", resp.Status)
		}
	})
}

// TestTLSFrameThenCloseNotifyInOneSegment: in the tunnel, the
// client's last frame and its close_notify arrive together; the pod must
// get the frame, then the end of stream.
func TestTLSFrameThenCloseNotifyInOneSegment(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		got := make(chan []byte, 1)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				got <- nil
				return
			}
			pc.drain()
			_, _, after, eof := pc.recorded()
			if !eof {
				after = append(after, "<no eof>"...)
			}
			got <- after
		})
		addr := serveTLS(t, f.g)
		c, co := coalescedTLS(t, addr)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		a := roundTrip(t, c, wsHead("/rooms/127.0.0.2"))
		if a.resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", a.resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond) // the tunnel is open, idle
		frame := maskedFrame(0x1, "last words")
		_, _ = c.Write(frame)
		_ = c.CloseWrite()
		co.mu.Lock()
		t.Logf("one segment of %d bytes: % x", len(co.buf), co.buf)
		co.mu.Unlock()
		checkEngine(t, f.g, e)
		if err := co.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case after := <-got:
			if !bytes.Equal(after, frame) {
				t.Errorf("the pod got %q, want the frame % x then the end of stream", after, frame)
			}
		case <-time.After(5 * time.Second):
			t.Error("the pod's connection did not end")
		}
	})
}

// TestTLSHandOffFailureWritesToNoOtherDescriptor: on a route with auth
// the loop hands the TLS client to a goroutine (handOff), which takes
// descriptors; when there are none to spare, the client is answered 503
// on its own socket, never through a descriptor number another socket
// has taken meanwhile. Here that other is a thread that takes the
// client's number X the moment it is free (fcntl F_DUPFD, X) as a
// duplicate of a victim socket; the descriptor limit keeps every other
// number taken.
func TestTLSHandOffFailureWritesToNoOtherDescriptor(t *testing.T) {
	f := newAuthFixture(t)
	addr := serveTLS(t, f.g)
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	restore := func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) }
	t.Cleanup(restore)
	set := 0
	for attempt := range 300 {
		ok, hit, got := handOffRaceOnce(t, addr, &orig)
		restore()
		if ok {
			set++
		}
		if hit {
			t.Fatalf("attempt %d: the victim socket received %d bytes the gateway meant for a TLS client: % x", attempt, len(got), got)
		}
	}
	// A descriptor freed late (a listener's, a test's before) can leave
	// no free number below the client's: such an attempt is not set up.
	if set < 200 {
		t.Fatalf("only %d of 300 attempts were set up", set)
	}
}

// handOffRaceOnce makes one attempt; ok reports that it was set up (a
// free number below the client's), hit that the victim got bytes.
func handOffRaceOnce(t *testing.T, addr string, orig *unix.Rlimit) (ok, hit bool, got []byte) {
	// A number below the client's, freed later for take's own duplicate.
	pad, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // test cert
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	// The gateway's descriptor for this client.
	local := c.LocalAddr().(*net.TCPAddr)
	x := -1
	for deadline := time.Now().Add(time.Second); x < 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for fd := 3; fd < 4096; fd++ {
			sa, err := unix.Getpeername(fd)
			if err != nil {
				continue
			}
			if in, ok := sa.(*unix.SockaddrInet4); ok && in.Port == local.Port {
				x = fd
				break
			}
		}
	}
	if x < 0 {
		t.Fatal("the gateway's descriptor for the client was not found")
	}
	// A victim: a socket pair whose one end a thread duplicates onto x.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	// Every number below x taken but one.
	var fillers []int
	defer func() {
		for _, fd := range fillers {
			_ = unix.Close(fd)
		}
	}()
	for range 8192 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd > x {
			_ = unix.Close(fd)
			break
		}
		fillers = append(fillers, fd)
	}
	if pad > x {
		_ = unix.Close(pad)
		return false, false, nil
	}
	_ = unix.Close(pad)
	lim := *orig
	lim.Cur = uint64(x + 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	took := make(chan int, 1)
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(ready)
		for !stop.Load() {
			if nfd, err := unix.FcntlInt(uintptr(pair[0]), unix.F_DUPFD_CLOEXEC, x); err == nil {
				took <- nfd
				return
			}
		}
		took <- -1
	}()
	<-ready
	_, _ = c.Write([]byte(wsHead("/me/127.0.0.2/x")))
	var b [512]byte
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = c.Read(b[:])
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	nfd := <-took
	if nfd >= 0 {
		defer unix.Close(nfd)
	}
	// What reached the victim.
	_ = unix.SetNonblock(pair[1], true)
	n, _ := unix.Read(pair[1], b[:])
	if n > 0 {
		return true, true, append([]byte(nil), b[:n]...)
	}
	return true, false, nil
}

// TestTLSBytesAroundTheHead: records after the head (in the head's own
// record, or coalesced with it and the client's Finished), and the pod's
// bytes right after its 101, all arrive.
func TestTLSBytesAroundTheHead(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, sameRecord := range []bool{true, false} {
			forEachTLSEngine(t, func(t *testing.T, e engine) {
				f := newHostileFixture(t, e.opts)
				early := maskedFrame(0x2, "pod-early")
				got := make(chan []byte, 1)
				f.podA.setScript(func(pc *podConn) {
					if !pc.readHead() {
						got <- nil
						return
					}
					_, req, _, _ := pc.recorded()
					ans := strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
					_, _ = pc.c.Write(append([]byte(ans), early...))
					b := make([]byte, 32)
					_ = pc.c.SetReadDeadline(time.Now().Add(3 * time.Second))
					n, _ := io.ReadAtLeast(pc.br, b, 16)
					got <- b[:n]
				})
				addr := serveTLS(t, f.g)
				c, co := coalescedTLSv(t, addr, v)
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				frame := maskedFrame(0x1, "pipelined!")
				if sameRecord {
					_, _ = c.Write(append([]byte(wsHead("/rooms/127.0.0.2")), frame...))
				} else {
					_, _ = c.Write([]byte(wsHead("/rooms/127.0.0.2")))
					_, _ = c.Write(frame)
				}
				_ = co.Flush() // Finished, head and frame in one segment
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"}) //nolint:bodyclose // a 101's body is empty; the tunnel's bytes are read from br
				if err != nil || resp.StatusCode != 101 {
					t.Fatalf("answer %v %v", resp, err)
				}
				b := make([]byte, len(early))
				if _, err := io.ReadFull(br, b); err != nil || !bytes.Equal(b, early) {
					t.Errorf("client got %q %v, want the pod's early frame", b, err)
				}
				if p := <-got; !bytes.Equal(p, frame) {
					t.Errorf("pod got % x, want % x", p, frame)
				}
			})
		}
	}
}

// TestTLSPlainHTTPToTLSPort: a plain HTTP request on a TLS port is
// answered 400, as net/http answers it, and dials nothing.
func TestTLSPlainHTTPToTLSPort(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		addr := serveTLS(t, f.g)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		before := f.snap()
		_, _ = c.Write([]byte(wsHead("/rooms/127.0.0.2")))
		b, _ := io.ReadAll(c)
		if want := "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"; string(b) != want {
			t.Errorf("answer %q, want %q", b, want)
		}
		f.checkNoDial(t, before)
	})
}
