package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (v1 text, v2 binary): a load balancer in front of
// the gateway that does not terminate TCP (a cloud network load
// balancer) puts the client's address in a header before the client's
// own bytes. With Options.ProxyProtocol, every listener requires that
// header from the peers in Options.TrustedProxies, and refuses it from
// everyone else; a peer outside them is served with its own address.
//
// Both transports read the header the same way: proxyHeader frames it in
// the bytes read so far (the header may come in pieces; the read-head
// timeout bounds the wait) and go-proxyproto parses the framed bytes.

// Why a connection's PROXY header was refused, as the metric counts it.
const (
	proxyUntrusted = "untrusted" // a header from a peer outside the trusted proxies
	proxyMissing   = "missing"   // no header from a trusted proxy
	proxyMalformed = "malformed" // a header that does not parse
)

// maxProxyHeader bounds a v2 header's length field (the addresses and
// TLVs that follow the 16 fixed bytes), as go-proxyproto does.
var maxProxyHeader = int(proxyproto.MaxV2HeaderSize)

// errProxyIncomplete: the bytes so far start a header that is not
// complete yet.
var errProxyIncomplete = errors.New("incomplete PROXY header")

// proxyHeaderError is a refused header, with the metric's reason.
type proxyHeaderError struct{ reason string }

func (e *proxyHeaderError) Error() string { return "PROXY header refused: " + e.reason }

// proxySignature reports whether b starts with a PROXY v1 or v2
// signature (yes), cannot start with one (no), or is a prefix of one and
// needs more bytes to tell (more).
func proxySignature(b []byte) (yes, more bool) {
	for _, sig := range [...][]byte{[]byte("PROXY "), proxyproto.SIGV2} {
		n := min(len(b), len(sig))
		if bytes.Equal(b[:n], sig[:n]) {
			if n == len(sig) {
				return true, false
			}
			more = true
		}
	}
	return false, more
}

// proxyHeader reads the PROXY header at the start of b, from a trusted
// proxy whose own address is peer. It returns the header's length and the
// client's address: the header's source; peer for a v2 LOCAL header (a
// connection the load balancer made itself, such as a health check); or,
// for a v1 UNKNOWN header (a client the balancer cannot name), the
// unspecified address of peer's family, which no X-Forwarded-For
// follows, since the bytes after the header are the unknown client's.
// It returns errProxyIncomplete while b is a header's beginning, and a
// *proxyHeaderError for bytes that are not a valid header.
func proxyHeader(b []byte, peer netip.AddrPort) (int, netip.AddrPort, error) {
	n, err := proxyHeaderLen(b)
	if err != nil {
		return 0, peer, err
	}
	br := bufio.NewReaderSize(bytes.NewReader(b[:n]), max(n, 16))
	h, err := proxyproto.Read(br)
	if err != nil || br.Buffered() != 0 {
		return 0, peer, &proxyHeaderError{proxyMalformed}
	}
	if h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
		if h.Version == 1 {
			unknown := netip.IPv4Unspecified()
			if peer.Addr().Is6() {
				unknown = netip.IPv6Unspecified()
			}
			return n, netip.AddrPortFrom(unknown, 0), nil
		}
		return n, peer, nil
	}
	src, _, ok := h.TCPAddrs()
	if !ok || src == nil {
		// UDP or Unix addresses: not a TCP client's.
		return 0, peer, &proxyHeaderError{proxyMalformed}
	}
	ap := src.AddrPort()
	return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// proxyHeaderLen frames a header: the length of the one b starts with.
func proxyHeaderLen(b []byte) (int, error) {
	yes, more := proxySignature(b)
	switch {
	case more:
		return 0, errProxyIncomplete
	case !yes:
		return 0, &proxyHeaderError{proxyMissing}
	}
	if b[0] == 'P' {
		// v1: one line of at most 107 bytes, CRLF included.
		const maxLine = 107
		if i := bytes.IndexByte(b[:min(len(b), maxLine)], '\n'); i >= 0 {
			return i + 1, nil
		}
		if len(b) >= maxLine {
			return 0, &proxyHeaderError{proxyMalformed}
		}
		return 0, errProxyIncomplete
	}
	// v2: 16 fixed bytes, the last two the length of the rest.
	if len(b) < 16 {
		return 0, errProxyIncomplete
	}
	rest := int(binary.BigEndian.Uint16(b[14:16]))
	if rest > maxProxyHeader {
		return 0, &proxyHeaderError{proxyMalformed}
	}
	if len(b) < 16+rest {
		return 0, errProxyIncomplete
	}
	return 16 + rest, nil
}

// proxiedConn is a connection accepted on a listener that takes PROXY
// headers, from a goroutine's transport (TLS): the header is read on the
// first Read or RemoteAddr (net/http asks for the address first, on the
// connection's own goroutine, before the TLS handshake), within the
// read-head timeout. Its address is then the header's source; a refused
// header fails every Read, which ends the connection.
type proxiedConn struct {
	net.Conn
	s       *Server
	once    sync.Once
	remote  net.Addr
	pending []byte // read beyond the header
	err     error
}

func (c *proxiedConn) Read(p []byte) (int, error) {
	c.once.Do(c.readHeader)
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *proxiedConn) RemoteAddr() net.Addr {
	c.once.Do(c.readHeader)
	return c.remote
}

// buffered reports whether bytes read beyond the header are still to be
// read.
func (c *proxiedConn) buffered() bool { return len(c.pending) > 0 }

// readHeader reads the header, from a trusted peer; from any other, it
// reads enough to tell whether one came.
func (c *proxiedConn) readHeader() {
	c.remote = c.Conn.RemoteAddr()
	peer := addrPortOf(c.remote)
	trusted := c.s.trustedProxy(peer.Addr())
	_ = c.SetReadDeadline(time.Now().Add(c.s.opts.ReadHeaderTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if done := c.examine(buf, peer, trusted); done {
			return
		}
		if err != nil {
			c.err = err
			return
		}
	}
}

// examine decides the connection once buf tells enough; false: read on.
func (c *proxiedConn) examine(buf []byte, peer netip.AddrPort, trusted bool) bool {
	if !trusted {
		yes, more := proxySignature(buf)
		if more {
			return false
		}
		if yes {
			c.refuse(proxyUntrusted)
			return true
		}
		c.pending = buf
		return true
	}
	n, client, err := proxyHeader(buf, peer)
	var refused *proxyHeaderError
	switch {
	case errors.Is(err, errProxyIncomplete):
		return false
	case errors.As(err, &refused):
		c.refuse(refused.reason)
		return true
	}
	c.remote = net.TCPAddrFromAddrPort(client)
	c.pending = buf[n:]
	return true
}

// refuse fails the connection's reads and writes: net/http then closes
// it without an answer, as after any read error of a network connection.
func (c *proxiedConn) refuse(reason string) {
	c.s.opts.Metrics.proxyRefused(reason)
	c.err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.Conn.RemoteAddr(), Err: &proxyHeaderError{reason}}
}

func (c *proxiedConn) Write(p []byte) (int, error) {
	c.once.Do(c.readHeader)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Write(p)
}

// proxyListener accepts connections as proxiedConns.
type proxyListener struct {
	net.Listener
	s *Server
}

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &proxiedConn{Conn: c, s: l.s}, nil
}

// addrPortOf is a TCP address as an AddrPort, IPv4 in IPv6 unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
