//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// A TLS client's tunnel on a loop: the TLS connection stays a crypto/tls
// connection, whose socket I/O goes through the loop once the tunnel
// moves there. Its reads never wait (a temporary error when the socket is
// empty leaves the TLS state intact) and its writes always take every
// byte (kept like any other bytes the peer cannot take yet).

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
type detachConn struct {
	*net.TCPConn
	// proxied reads the connection's PROXY header first, on a listener
	// that takes them.
	proxied *proxiedConn
	loop    loopSide
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
	if c.proxied != nil {
		return c.proxied.RemoteAddr()
	}
	return c.TCPConn.RemoteAddr()
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
