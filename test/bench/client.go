package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// The benchmark clients speak websocket by hand: a fixed handshake, frames
// written from prepared bytes and read into reused buffers. They cost
// little CPU (which the client shares with the proxies and the pods on
// the same cores) and hold no buffers while idle.

// benchHost is the Host header and TLS server name of every request.
const benchHost = "bench.test"

// clientAddrs is how many source addresses (127.0.0.100 and up) the
// clients spread their connections over, so that no (source, destination)
// pair runs out of ephemeral ports.
const clientAddrs = 32

var dialSeq atomic.Uint64

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: a socket bound
// to a source address gets its port at connect time, per destination.
const ipBindAddressNoPort = 24

// clientDialer returns a dialer bound to the next client source address.
func clientDialer() *net.Dialer {
	k := dialSeq.Add(1) % clientAddrs
	return dialerFrom(net.IPv4(127, 0, 0, byte(100+k)))
}

// dialerFrom returns a dialer bound to the source address ip.
func dialerFrom(ip net.IP) *net.Dialer {
	return &net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: &net.TCPAddr{IP: ip},
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				// Best effort: without it, ports are merely used up faster.
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		},
	}
}

// clientTLS is the TLS configuration of every TLS client: no session
// resumption (no session cache), X25519 key exchange for every peer
// (Debian's OpenSSL has no post-quantum hybrid, which Go would prefer
// with Go servers), no chain verification (the handshake signature is
// still checked).
func clientTLS() *tls.Config {
	return &tls.Config{
		ServerName:         benchHost,
		InsecureSkipVerify: true, //nolint:gosec // self-signed certificate of this run, on loopback
		CurvePreferences:   []tls.CurveID{tls.X25519},
		NextProtos:         []string{"http/1.1"},
	}
}

// wsConn is a client websocket over a raw connection.
type wsConn struct {
	net.Conn
	br *bufio.Reader
}

// dialWS connects to addr (with TLS when useTLS), sends the handshake for
// path, with the extra header lines hdr ("" or lines each ending in
// "\r\n"), and reads the 101 answer.
func dialWS(ctx context.Context, addr, path, hdr string, useTLS bool) (*wsConn, error) {
	c, err := dialConn(ctx, addr, useTLS)
	if err != nil {
		return nil, err
	}
	ws, err := upgrade(c, path, hdr)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return ws, nil
}

// dialConn connects to addr from the next client address, with a TLS
// handshake when useTLS.
func dialConn(ctx context.Context, addr string, useTLS bool) (net.Conn, error) {
	d := clientDialer()
	if useTLS {
		return (&tls.Dialer{NetDialer: d, Config: clientTLS()}).DialContext(ctx, "tcp", addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// bearerHeader is the header line that carries token.
func bearerHeader(token string) string { return "Authorization: Bearer " + token + "\r\n" }

var handshakeTail = []byte("Host: " + benchHost + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")

// upgrade sends the handshake (with the extra header lines hdr) and reads
// the answer's head, which must be a 101.
func upgrade(c net.Conn, path, hdr string) (*wsConn, error) {
	status, _, br, err := handshake(c, path, hdr)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 101 ")) {
		return nil, fmt.Errorf("answer %q", bytes.TrimSpace(status))
	}
	_ = c.SetDeadline(time.Time{})
	return &wsConn{Conn: c, br: br}, nil
}

// handshake sends the handshake for path with the extra header lines hdr
// and reads the answer's head: its status line, and its
// WWW-Authenticate value if it has one.
func handshake(c net.Conn, path, hdr string) (status []byte, wwwAuth string, br *bufio.Reader, err error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := make([]byte, 0, 256+len(hdr))
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\n"...)
	req = append(req, hdr...)
	req = append(req, handshakeTail...)
	if _, err := c.Write(req); err != nil {
		return nil, "", nil, fmt.Errorf("send handshake: %w", err)
	}
	br = bufio.NewReaderSize(c, 512)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, "", nil, fmt.Errorf("read answer: %w", err)
	}
	status = bytes.Clone(line)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, "", nil, fmt.Errorf("read answer: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if name, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Www-Authenticate")) {
			wwwAuth = string(bytes.TrimSpace(v))
		}
	}
	return status, wwwAuth, br, nil
}

// idle returns the bare connection, for tunnels that only stay open. The
// pod sends nothing unasked, so nothing is left in the reader.
func (w *wsConn) idle() (net.Conn, error) {
	if w.br.Buffered() > 0 {
		return nil, errors.New("unexpected bytes after the 101 answer")
	}
	return w.Conn, nil
}

// binaryFrame returns a masked binary frame carrying payload. The masking
// key is zero (valid, and the payload is then sent as is): the clients
// spend nothing on masking, and no proxy unmasks.
func binaryFrame(payload []byte) []byte {
	n := len(payload)
	var f []byte
	switch {
	case n < 126:
		f = append(f, 0x82, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x82, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x82, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, 0, 0, 0, 0)
	return append(f, payload...)
}

// readMessage reads one unfragmented data frame from the pod into buf
// (grown when too small) and returns its payload.
func (w *wsConn) readMessage(buf []byte) ([]byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(w.br, h[:2]); err != nil {
		return nil, err
	}
	if h[0]&0x80 == 0 {
		return nil, errors.New("fragmented message")
	}
	if op := h[0] & 0x0f; op != 1 && op != 2 {
		return nil, fmt.Errorf("unexpected frame opcode %d", op)
	}
	if h[1]&0x80 != 0 {
		return nil, errors.New("masked frame from the server")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(w.br, h[:2]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(w.br, h[:8]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > 1<<24 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(w.br, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// echo sends one small message and reads the echo back, checking it.
func (w *wsConn) echo(frame, payload, buf []byte) error {
	if _, err := w.Write(frame); err != nil {
		return err
	}
	got, err := w.readMessage(buf)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo differs: sent %q, got %q", payload, got)
	}
	return nil
}
