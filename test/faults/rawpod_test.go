package faults

import (
	"bufio"
	"crypto/sha1" //nolint:gosec // RFC 6455 defines Sec-WebSocket-Accept with SHA-1.
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawPod is a misbehaving "pod": a raw TCP listener on a loopback address
// that runs a script on each connection. Scripts that hold a connection
// wait for release (they must not outlive the test's check).
type rawPod struct {
	ip      string
	l       net.Listener
	script  func(p *rawPod, c net.Conn, br *bufio.Reader)
	release chan struct{}

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
	accepted atomic.Int64
	relOnce  sync.Once
}

// startRawPod listens on ip:port and runs script on each connection until
// the test ends (or release).
func startRawPod(t *testing.T, ip string, port int, script func(p *rawPod, c net.Conn, br *bufio.Reader)) *rawPod {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("raw pod on %s:%d: %v", ip, port, err)
	}
	p := &rawPod{ip: ip, l: l, script: script, release: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

func (p *rawPod) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			defer func() {
				p.mu.Lock()
				delete(p.conns, c)
				p.mu.Unlock()
				_ = c.Close()
			}()
			// Bounded: every script ends at release at the latest.
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			p.script(p, c, bufio.NewReader(c))
		}()
	}
}

// releaseConns ends the scripts that hold connections and closes every
// connection (the pod "comes back" and resets), keeping the listener.
func (p *rawPod) releaseConns() {
	p.relOnce.Do(func() { close(p.release) })
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// stop closes the listener and every connection, and waits for the
// scripts.
func (p *rawPod) stop() {
	_ = p.l.Close()
	p.releaseConns()
	p.wg.Wait()
}

// hold waits for release.
func (p *rawPod) hold() { <-p.release }

// readHead reads a request head and returns its Sec-WebSocket-Key.
func readHead(br *bufio.Reader) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", err
	}
	return req.Header.Get("Sec-WebSocket-Key"), nil
}

// accept101 is a valid 101 answer for key.
func accept101(key string) string {
	h := sha1.New() //nolint:gosec // see import
	h.Write([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h.Sum(nil)) + "\r\n\r\n"
}

// resetConn closes c with SO_LINGER 0: the peer gets a TCP reset.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// readFrame reads one websocket frame (payload at most 16 MiB) and
// returns its opcode and unmasked payload.
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	op, masked, n := h[0]&0x0f, h[1]&0x80 != 0, uint64(h[1]&0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return op, payload, nil
}

// frameHeader is the header of an unmasked final frame (server to client).
func frameHeader(op byte, n int) []byte {
	switch {
	case n < 126:
		return []byte{0x80 | op, byte(n)}
	case n < 1<<16:
		return []byte{0x80 | op, 126, byte(n >> 8), byte(n)}
	default:
		h := []byte{0x80 | op, 127, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(h[2:], uint64(n))
		return h
	}
}

// echoFrames echoes data frames and answers a Close frame, as a pod
// would, until the stream ends.
func echoFrames(c net.Conn, br *bufio.Reader) {
	for {
		op, payload, err := readFrame(br)
		if err != nil {
			return
		}
		if _, err := c.Write(append(frameHeader(op, len(payload)), payload...)); err != nil {
			return
		}
		if op == 0x8 {
			return
		}
	}
}

// errNoAnswer: a raw client got no HTTP answer.
var errNoAnswer = errors.New("no answer")

// rawStatus reads the status of the answer to a request sent on c.
func rawStatus(br *bufio.Reader) (int, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// handshakeHead is a websocket handshake for path on its host, with extra
// header lines.
func handshakeHead(path string, extra ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + hostFor(path) + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}
