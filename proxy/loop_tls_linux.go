//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// A TLS client on a loop: the TLS connection is a crypto/tls connection
// whose socket I/O goes through the loop. Its reads on the loop never
// wait (a temporary error when the socket is empty leaves the TLS state
// intact) and a tunnel's writes always take every byte (kept like any
// other bytes the peer cannot take yet).
//
// A TLS listener served by the loops (ServeTLS) accepts there; crypto/tls
// makes the handshake on a goroutine of its own, whose reads wait for the
// loop's word that the socket has bytes (loopTLS), and the loop takes the
// connection back for its request head, the pod's dial and answer and the
// tunnel, as on plain TCP. A listener that the loops do not serve goes
// through net/http, whose connections can still move to a loop after
// their handshake (detachListener).

// detachListener accepts TCP connections as detachConns, so that a TLS
// connection made over one can move to an event loop after its handshake.
type detachListener struct{ net.Listener }

func (l detachListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	switch c := c.(type) {
	case *net.TCPConn:
		return &detachConn{TCPConn: c}, nil
	case *proxiedConn:
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			return &detachConn{TCPConn: tc, proxied: c}, nil
		}
	}
	return c, nil
}

// wrapForLoop prepares a listener whose connections TLS will wrap.
func wrapForLoop(l net.Listener) net.Listener { return detachListener{l} }

// detachConn is a TCP connection under TLS. Until its tunnel moves to an
// event loop it is the TCP connection; then the TLS connection over it
// reads and writes through the loop, which owns the socket.
//
// A connection accepted on a loop has no TCP connection until it is
// handed to a goroutine (loopHandshake.handOff); peer is its client's
// address meanwhile.
type detachConn struct {
	*net.TCPConn
	// proxied reads the connection's PROXY header first, on a listener
	// that takes them.
	proxied *proxiedConn
	loop    loopSide
	peer    net.Addr
}

// loopSide is a TLS connection's socket I/O once a loop owns the socket:
// a tunnel's (loopIO) or an HTTP/2 connection's.
type loopSide interface {
	read(p []byte) (int, error)
	write(p []byte) (int, error)
}

func (c *detachConn) Read(p []byte) (int, error) {
	if c.loop != nil {
		return c.loop.read(p)
	}
	if c.proxied != nil {
		return c.proxied.Read(p)
	}
	return c.TCPConn.Read(p)
}

func (c *detachConn) RemoteAddr() net.Addr {
	if c.peer != nil {
		return c.peer
	}
	if c.proxied != nil {
		return c.proxied.RemoteAddr()
	}
	return c.TCPConn.RemoteAddr()
}

func (c *detachConn) LocalAddr() net.Addr {
	if c.TCPConn == nil {
		return &net.TCPAddr{}
	}
	return c.TCPConn.LocalAddr()
}

func (c *detachConn) Write(p []byte) (int, error) {
	if c.loop != nil {
		return c.loop.write(p)
	}
	return c.TCPConn.Write(p)
}

// Deadlines and closing belong to the loop once it owns the socket.

func (c *detachConn) SetDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *detachConn) SetReadDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *detachConn) SetWriteDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *detachConn) Close() error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.Close()
}

// loopIO is the socket I/O of a TLS client's connection on a loop.
type loopIO struct{ lt *loopTunnel }

func (a *loopIO) read(p []byte) (int, error) { return readTLSBytes(a.lt.p.sock[ws.Client].fd, p) }

// readTLS reads what c has decrypted. The last bytes of a stream may come
// with its end (a close_notify in the same segment, on TLS 1.2): they are
// returned alone, and the next read reports the end, which crypto/tls
// keeps.
func readTLS(c *tls.Conn, p []byte) (int, error) {
	n, err := c.Read(p)
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// readTLSBytes reads a TLS connection's bytes from fd for crypto/tls: an
// empty socket is errWouldBlock, its end io.EOF.
func readTLSBytes(fd int, p []byte) (int, error) {
	for {
		n, e := evloop.Read(fd, p)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errWouldBlock
		default:
			return 0, e
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (a *loopIO) write(p []byte) (int, error) {
	// The bytes go to the client: the direction from the pod.
	if !a.lt.sendRaw(ws.Pod, p) {
		return 0, errTunnelFailed
	}
	return len(p), nil
}

// errWouldBlock: the socket has nothing to read now. As a temporary
// network error it leaves the TLS connection usable.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// errTunnelFailed: a write failed and the tunnel ended.
var errTunnelFailed = errors.New("tunnel ended")

// loopTLS is a TLS client accepted on a loop, until its tunnel opens (the
// tunnel's I/O is then loopIO) or it moves to HTTP/2 (h2Conn); it is the
// TLS connection's socket I/O meanwhile.
//
// While crypto/tls makes the handshake (onGoroutine), a read that finds
// the socket empty waits for wake, which the loop signals on each event
// of the socket and when the handshake's time is up (expired), and a
// write that finds the socket full waits in poll(2) until it takes more
// (a handshake's flight fits a new connection's send buffer: that wait is
// rare). The loop never closes the socket while the goroutine may use it:
// it ends the handshake by expiring it, and closes once the goroutine has
// reported back. After the handshake, on the loop, an empty socket is
// errWouldBlock and a write takes what fits (the answers written before
// a tunnel opens fit a new connection's send buffer).
type loopTLS struct {
	config *tls.Config
	// conn is the TLS connection over dc, once the handshake has begun;
	// state its state once it is over.
	conn  *tls.Conn
	dc    *detachConn
	state *tls.ConnectionState

	// sock is the client's socket on the loop (its descriptor is -1 once
	// closed or handed over).
	sock *loopSocket
	// prefix is what came after a PROXY header in the same reads: the
	// beginning of the TLS stream.
	prefix      []byte
	onGoroutine bool
	wake        chan struct{}
	expired     atomic.Bool
	// due is when the handshake's time is up, for writes that wait.
	due time.Time
	// sniff keeps the stream's first bytes, when a PROXY header from the
	// client would be refused (untrusted, with ProxyProtocol on), to say
	// so if the handshake fails; nil otherwise.
	sniff []byte
}

// sniffLen is how much of the stream sniff keeps: a PROXY v2 signature.
const sniffLen = 12

func (a *loopTLS) read(p []byte) (int, error) {
	if len(a.prefix) > 0 {
		n := copy(p, a.prefix)
		a.prefix = a.prefix[n:]
		return n, nil
	}
	for {
		n, err := readTLSBytes(a.sock.fd, p)
		if a.sniff != nil && len(a.sniff) < sniffLen {
			a.sniff = append(a.sniff, p[:min(n, sniffLen-len(a.sniff))]...)
		}
		if !errors.Is(err, errWouldBlock) || !a.onGoroutine {
			return n, err
		}
		if a.expired.Load() {
			return 0, os.ErrDeadlineExceeded
		}
		<-a.wake
	}
}

func (a *loopTLS) write(p []byte) (int, error) {
	written := 0
	for {
		n, err := evloop.WriteAll(a.sock.fd, p[written:])
		written += n
		if err != nil || written == len(p) {
			return written, err
		}
		if !a.onGoroutine {
			return written, errTunnelFailed
		}
		if err := a.waitWritable(); err != nil {
			return written, err
		}
	}
}

// waitWritable waits, on the handshake's goroutine, until the socket
// takes bytes again or the handshake's time is up.
func (a *loopTLS) waitWritable() error {
	for {
		left := time.Until(a.due)
		if left <= 0 || a.expired.Load() {
			return os.ErrDeadlineExceeded
		}
		fds := []unix.PollFd{{Fd: int32(a.sock.fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		switch {
		case err == unix.EINTR || n == 0:
		case err != nil:
			return err
		default:
			return nil
		}
	}
}

// signal tells a read waiting on the handshake's goroutine to look
// again.
func (a *loopTLS) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// expire ends the handshake: its reads and writes that wait fail.
func (a *loopTLS) expire() {
	a.expired.Store(true)
	a.signal()
}

// beginTLS starts the TLS handshake of a connection accepted on a loop,
// on a goroutine of its own; prefix is the TLS stream's beginning, read
// with a PROXY header. The read-header timeout bounds the handshake, as
// net/http bounds it, and then the request head.
func (hs *loopHandshake) beginTLS(prefix []byte) {
	c, a := &hs.p.sock[ws.Client], hs.tls
	a.sock, a.onGoroutine, a.wake = c, true, make(chan struct{}, 1)
	a.due = time.Now().Add(hs.s.opts.ReadHeaderTimeout)
	hs.setDue(a.due)
	if len(prefix) > 0 {
		a.prefix = append([]byte(nil), prefix...)
	}
	if hs.s.opts.ProxyProtocol && !hs.s.trustedProxy(hs.peer.Addr()) {
		a.sniff = make([]byte, 0, sniffLen)
	}
	a.dc = &detachConn{loop: a, peer: net.TCPAddrFromAddrPort(hs.client)}
	a.conn = tls.Server(a.dc, a.config)
	hs.phase = hsTLS
	l, tc := hs.p.loop, a.conn
	go func() {
		err := tc.Handshake()
		l.Post(func() { hs.handshook(err) })
	}()
}

// handshook takes the connection back on the loop once its TLS handshake
// has ended: its request head is read next, or it is served as HTTP/2.
func (hs *loopHandshake) handshook(err error) {
	a := hs.tls
	a.onGoroutine = false
	switch {
	case err != nil || a.expired.Load():
		if yes, _ := proxySignature(a.sniff); yes {
			// As net/http's transport counts it (proxiedConn).
			hs.s.opts.Metrics.proxyRefused(proxyUntrusted)
		}
		if err != nil {
			hs.s.opts.Log.V(1).Info("TLS handshake failed", "client", hs.remote, "err", err.Error())
		}
		if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && looksLikeHTTP(re.RecordHeader) {
			// As net/http answers a plain request on its TLS port.
			_, _ = evloop.WriteAll(a.sock.fd, []byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
		}
		hs.drop()
	case len(a.prefix) > 0:
		// Bytes with the PROXY header that the handshake did not take:
		// no TLS client sends them.
		hs.drop()
	default:
		st := a.conn.ConnectionState()
		a.state = &st
		if st.NegotiatedProtocol == "h2" {
			hs.toH2()
			return
		}
		hs.phase = hsHead
		hs.setDue(time.Now().Add(hs.s.opts.ReadHeaderTimeout))
		// Records may have come with the handshake's last flight.
		hs.p.sock[ws.Client].readable = true
		hs.readHead()
	}
}

// toH2 serves the connection as HTTP/2, on the same loop.
func (hs *loopHandshake) toH2() {
	s, l, c := hs.s, hs.p.loop, &hs.p.sock[ws.Client]
	l.StopDeadline(&hs.deadline)
	delete(s.loops.heads[l.ID()], hs)
	hs.phase = hsOver
	l.Detach(c.fd, &c.reg)
	fd := c.fd
	c.fd = -1
	s.newH2Conn(l, hs.tls.conn, hs.tls.dc, fd, hs.remote).begin()
}

// looksLikeHTTP reports whether the first five bytes of what came on a
// TLS listener are a plain HTTP request's, as net/http tells them.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
