//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
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

// coalescedTLS serves TLS on f's gateway and makes a TLS 1.2 client's
// handshake to it over a coalescer: its Finished is held for the next
// write. TLS 1.2: in TLS 1.3 an alert travels as application data, and
// crypto/tls cannot see it coming behind the last bytes.
func coalescedTLS(t *testing.T, f *hostileFixture) (*tls.Conn, *coalescer) {
	return coalescedTLSv(t, f, tls.VersionTLS12)
}

// coalescedTLSv is coalescedTLS with maxVersion.
func coalescedTLSv(t *testing.T, f *hostileFixture, maxVersion uint16) (*tls.Conn, *coalescer) {
	t.Helper()
	raw, err := net.Dial("tcp", serveTLS(t, f.g))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	co := &coalescer{Conn: raw}
	c := tls.Client(co, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, MaxVersion: maxVersion}) //nolint:gosec // a self-signed test certificate
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	return c, co
}

// TestTLSHeadWithFinishedInOneSegment: the client's Finished and its
// request head arrive together.
func TestTLSHeadWithFinishedInOneSegment(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		c, _ := coalescedTLS(t, f)
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
		c, co := coalescedTLS(t, f)
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
		c, co := coalescedTLS(t, f)
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
				c, co := coalescedTLSv(t, f, v)
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

// TestTakeKeepsTheSocketWithoutADescriptorToSpare: moving a socket off
// the loop (handOff) takes two descriptors for a moment; when the second
// is not to be had, the loop's descriptor still names the socket, so
// that the answer for lack of descriptors reaches its client and no
// socket that took the number meanwhile.
func TestTakeKeepsTheSocketWithoutADescriptorToSpare(t *testing.T) {
	l := evloop.Pick()
	if l == nil {
		t.Skip("no event loops")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd, ok := evloop.Dup(server.(*net.TCPConn))
	_ = server.Close()
	if !ok {
		t.Fatal("dup")
	}
	hs := &loopHandshake{p: newLoopPair(l, fd, -1)}
	defer func() {
		if fd := hs.p.sock[ws.Client].fd; fd >= 0 {
			_ = unix.Close(fd)
		}
	}()

	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	// Every descriptor number below the limit taken but one.
	lim := orig
	lim.Cur = uint64(fd) + 64
	var fillers []int
	release := func() {
		for _, f := range fillers {
			_ = unix.Close(f)
		}
		fillers = nil
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &orig)
	}
	defer release()
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, f)
	}
	_ = unix.Close(fillers[len(fillers)-1])
	fillers = fillers[:len(fillers)-1]

	done := make(chan error, 1)
	l.Post(func() {
		c, err := hs.take(ws.Client)
		if c != nil {
			_ = c.Close()
		}
		done <- err
	})
	err = <-done
	release()
	if err == nil {
		t.Fatal("the socket was taken with one descriptor to spare: the loop's descriptor was closed before the connection was made (or the test did not run out)")
	}
	// The loop's descriptor is the socket still: what is written to it
	// reaches the client.
	s := &hs.p.sock[ws.Client]
	if s.fd < 0 {
		t.Fatalf("take failed (%v) and left no descriptor for the socket", err)
	}
	if _, err := unix.Write(s.fd, []byte("503")); err != nil {
		t.Fatalf("writing to the socket after take failed: %v", err)
	}
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 3)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "503" {
		t.Fatalf("the client got %q, %v", got, err)
	}
}
