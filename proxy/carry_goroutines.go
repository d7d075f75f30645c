package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// The goroutine engine: a tunnel over two net.Conns, one goroutine per
// direction, each blocking in its reads. It carries what the event loops
// cannot (other systems, connections that cannot move) and any
// connection that is a net.Conn, whatever carries it.

// bufPool holds the buffers that tunnels borrow while bytes move; an
// idle tunnel on plain TCP holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// connTunnel carries a tunnel over net.Conns on goroutines.
type connTunnel struct {
	t    *tunnel
	conn [2]net.Conn // by side
	// bufferedReads: read as from TLS even on plain TCP (tests).
	bufferedReads bool
	reads         [2]reader
}

// reader is how one direction reads its source.
type reader struct {
	// small is the buffer reads wait with where raw reads are not
	// available (TLS); burst: the last read filled its buffer.
	small []byte
	burst bool
	// The result of a raw read (rawRead), and its bound callback.
	rbuf   *[]byte
	rn     int
	rerr   error
	readFn func(uintptr) bool
}

// closeRequested wakes both directions; they notice the request and close
// at a boundary. A write blocked on a peer that stopped reading ends too.
func (c *connTunnel) closeRequested() {
	past := time.Unix(1, 0)
	limit := time.Now().Add(ws.CloseGrace)
	for _, conn := range c.conn {
		_ = conn.SetReadDeadline(past)
		_ = conn.SetWriteDeadline(limit)
	}
}

// run moves bytes both ways until the tunnel ends, then closes both
// connections. Its frame (and pump's) is kept small: an idle tunnel's
// goroutines sit on this call chain, and their stacks are most of its
// memory.
func (c *connTunnel) run() {
	c.t.begin()
	var wg sync.WaitGroup
	wg.Add(1)
	go c.clientToPod(&wg)
	c.pump(ws.Pod)
	wg.Wait()
	_ = c.conn[ws.Client].Close()
	_ = c.conn[ws.Pod].Close()
	c.t.end()
}

// runThen runs the tunnel, then done (if not nil).
func (c *connTunnel) runThen(done func()) {
	c.run()
	if done != nil {
		done()
	}
}

// clientToPod is the tunnel's second goroutine.
func (c *connTunnel) clientToPod(wg *sync.WaitGroup) {
	defer wg.Done()
	c.pump(ws.Client)
}

// pump carries the direction from side until it is over.
func (c *connTunnel) pump(from ws.Side) {
	st := c.t.st
	d := st.Direction(from)
	src, dst := c.conn[from], c.conn[from.Other()]
	defer st.DirectionDone(from)
	raw := rawConn(src)
	if c.bufferedReads {
		raw = nil
	}
	if p := st.TakePending(from); len(p) > 0 && !c.forward(from, p) {
		return
	}
	// grace is set once a close applies to this direction: the frame in
	// flight and the peer's answer must come by then.
	var grace time.Time
	for {
		if grace.IsZero() {
			// Arm first, then look: a Close that comes after the look
			// moves the deadline to the past after this arm, so the read
			// wakes.
			_ = src.SetReadDeadline(st.NextDeadline())
			if st.Closing() != nil {
				if grace = c.startClose(from); grace.IsZero() {
					return
				}
			}
		}
		buf, bp, err := c.read(src, raw, &c.reads[from])
		if len(buf) > 0 {
			ok := true
			if grace.IsZero() {
				st.Touch(time.Now().UnixNano())
				if st.Closing() != nil {
					// A close came while these bytes arrived: they go on
					// up to the frame boundary only.
					grace = c.startClose(from)
					ok = !grace.IsZero()
				}
			}
			ok = ok && c.forward(from, buf)
			putBuf(bp)
			if !ok {
				return
			}
		} else {
			putBuf(bp)
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			switch {
			case grace.IsZero():
				if cr := st.Expired(time.Now()); cr != nil {
					c.t.close(cr)
				}
			case time.Now().Before(grace):
				// Woken by the close request after the grace was armed.
				_ = src.SetReadDeadline(grace)
			case d.Phase() == ws.ToBoundary:
				// The frame did not end in time: no boundary to close at.
				c.fail()
				return
			default:
				// The peer did not answer the Close in time.
				return
			}
		case errors.Is(err, io.EOF):
			endDst, failed := d.SourceEnded()
			if failed {
				c.fail()
			} else if endDst {
				// Half-close: pass the end of stream on, and let the
				// other direction finish.
				st.SourceEnded(from)
				closeWrite(dst)
			}
			return
		default:
			c.fail()
			return
		}
	}
}

// startClose applies the close request to the direction from side from:
// the Close frame goes now at a boundary, or after the current frame, and
// the peers have until the returned grace to finish (zero: the tunnel
// failed).
func (c *connTunnel) startClose(from ws.Side) time.Time {
	grace := time.Now().Add(ws.CloseGrace)
	_ = c.conn[from].SetReadDeadline(grace)
	_ = c.conn[from.Other()].SetWriteDeadline(grace)
	if c.t.st.Direction(from).Close() && !c.sendClose(from) {
		return time.Time{}
	}
	return grace
}

// forward gives p, read from side from, to the tunnel's state and writes
// what goes on (and the Close frame, when it is time) to the other side.
func (c *connTunnel) forward(from ws.Side, p []byte) bool {
	st := c.t.st
	n, sendClose := st.Direction(from).Forward(p)
	st.Forwarded(from, n)
	if n > 0 {
		if _, err := c.conn[from.Other()].Write(p[:n]); err != nil {
			c.fail()
			return false
		}
	}
	return !sendClose || c.sendClose(from)
}

// sendClose writes the Close frame to the other side of from, then ends
// that side's stream.
func (c *connTunnel) sendClose(from ws.Side) bool {
	dst := c.conn[from.Other()]
	if _, err := dst.Write(c.t.st.CloseFrame(from)); err != nil {
		c.fail()
		return false
	}
	closeWrite(dst)
	return true
}

// fail ends the tunnel at once: both connections are closed, which wakes
// the other direction.
func (c *connTunnel) fail() {
	c.t.st.SetEnded(ws.Failed)
	abort(c.conn[ws.Client])
	abort(c.conn[ws.Pod])
}

// abort closes c without a goodbye: on TLS, without the close_notify that
// tls.Conn.Close writes, which would wait up to 5 s for a peer that reads
// nothing (the failure that led here is often that very peer).
func abort(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

// closeWrite half-closes c (sends FIN, or close_notify on TLS).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// smallRead is the buffer a tunnel on goroutines waits with on a
// connection without raw reads (TLS); see read.
const smallRead = 2 << 10

// putBuf gives back a buffer that read borrowed (nil: none).
func putBuf(bp *[]byte) {
	if bp != nil {
		bufPool.Put(bp)
	}
}

// read reads from src. It returns the bytes read, and the pooled buffer
// that holds them (nil when they are in the reader's own buffer), to
// give back with putBuf once they are written.
//
// An idle tunnel should hold no 32 KiB buffer. On plain TCP the buffer is
// borrowed only once bytes are there (a raw read). A TLS connection
// cannot say whether it holds decrypted bytes, so it waits with a small
// buffer of the reader's own; when that fills up, more is surely
// buffered and the next read borrows a large one.
func (c *connTunnel) read(src net.Conn, raw syscall.RawConn, d *reader) ([]byte, *[]byte, error) {
	if raw == nil {
		if !d.burst {
			if d.small == nil {
				d.small = make([]byte, smallRead)
			}
			n, err := src.Read(d.small)
			d.burst = n == len(d.small)
			return d.small[:n], nil, err
		}
		bp := bufPool.Get().(*[]byte)
		n, err := src.Read(*bp)
		d.burst = n == len(*bp)
		return (*bp)[:n], bp, err
	}
	if d.readFn == nil {
		d.readFn = d.rawRead
	}
	if err := raw.Read(d.readFn); err != nil {
		return nil, nil, err
	}
	bp, n, err := d.rbuf, d.rn, d.rerr
	d.rbuf, d.rerr = nil, nil
	if err != nil {
		bufPool.Put(bp)
		return nil, nil, err
	}
	if n == 0 {
		bufPool.Put(bp)
		return nil, nil, io.EOF
	}
	return (*bp)[:n], bp, nil
}

// rawConn returns the syscall.RawConn of a plain TCP connection, or nil
// where raw reads are not available (then reads borrow a buffer while
// waiting).
func rawConn(c net.Conn) syscall.RawConn {
	if !rawReads {
		return nil
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
