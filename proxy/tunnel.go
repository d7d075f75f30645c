package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CloseReason says why a tunnel ended.
type CloseReason string

// Reasons a tunnel ends.
const (
	ClosedByClient CloseReason = "client"
	ClosedByPod    CloseReason = "pod"
	ClosedIdle     CloseReason = "idle"
	ClosedLifetime CloseReason = "lifetime"
	ClosedRevoked  CloseReason = "revoked"
	ClosedShutdown CloseReason = "shutdown"
	ClosedError    CloseReason = "error"
)

// closeGrace bounds how long a closing tunnel waits for the current frame
// to end and for the peers to answer the Close frame.
const closeGrace = time.Second

// bufPool holds the buffers that tunnels borrow while bytes move; an
// idle tunnel on plain TCP holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// closeRequest is a gateway-initiated close: code and reason go into the
// Close frames sent both ways.
type closeRequest struct {
	code   uint16
	reason string
	why    CloseReason
}

// tunnel carries one websocket between a client and a pod after the
// handshake. Bytes are forwarded unchanged; each direction tracks frame
// boundaries so the gateway can insert a Close frame between frames.
type tunnel struct {
	client, pod net.Conn
	// Bytes read ahead during the handshake, forwarded first.
	clientPending, podPending []byte

	idle     time.Duration // 0: none
	deadline time.Time     // max lifetime; zero: none
	// drainOnRevoke is the route's revokePolicy when the tunnel opened.
	drainOnRevoke bool
	// bufferedReads: read as from TLS even on plain TCP (tests).
	bufferedReads bool
	// info names the tunnel for the registry and the access log.
	info *tunnelInfo

	lastActive atomic.Int64 // unix nanoseconds
	closing    atomic.Pointer[closeRequest]
	done       chan struct{}

	// Byte counts, for logs and metrics.
	fromClient, fromPod atomic.Int64
	metrics             tunnelMetrics
	// The two directions' accounting.
	c2p, p2c flow
	// ev is set when an event loop carries the tunnel.
	ev     atomic.Pointer[evTunnel]
	opened time.Time
	// firstClose is who sent the first Close frame, and its code.
	closeMu    sync.Mutex
	firstClose CloseReason
	closeCode  uint16
	// endedBy is the first reason recorded.
	endedMu sync.Mutex
	endedBy CloseReason
}

func newTunnel(client, pod net.Conn, idle, lifetime time.Duration) *tunnel {
	now := time.Now()
	t := &tunnel{client: client, pod: pod, idle: idle, done: make(chan struct{}), opened: now}
	if lifetime > 0 {
		t.deadline = now.Add(lifetime)
	}
	t.lastActive.Store(now.UnixNano())
	t.c2p = flow{count: &t.fromClient, eof: ClosedByClient}
	t.p2c = flow{count: &t.fromPod, eof: ClosedByPod}
	return t
}

// setMetrics sets the tunnel's metric series.
func (t *tunnel) setMetrics(m tunnelMetrics) {
	t.metrics = m
	t.c2p.bytes = m.fromClient
	t.p2c.bytes = m.fromPod
}

// Close asks the tunnel to end with a Close frame (code, reason) sent to
// both peers at their next frame boundary. It returns at once; Done is
// closed when the tunnel has ended.
func (t *tunnel) Close(code uint16, reason string, why CloseReason) {
	if !t.closing.CompareAndSwap(nil, &closeRequest{code: code, reason: reason, why: why}) {
		return
	}
	t.setEnded(why)
	if et := t.ev.Load(); et != nil {
		et.requestClose(t.closing.Load())
		return
	}
	// Wake both directions; they notice the request and close at a
	// boundary. A write blocked on a peer that stopped reading ends too.
	past := time.Unix(1, 0)
	_ = t.client.SetReadDeadline(past)
	_ = t.pod.SetReadDeadline(past)
	limit := time.Now().Add(closeGrace)
	_ = t.client.SetWriteDeadline(limit)
	_ = t.pod.SetWriteDeadline(limit)
}

// Done is closed when the tunnel has ended and both connections are closed.
func (t *tunnel) Done() <-chan struct{} { return t.done }

func (t *tunnel) setEnded(why CloseReason) {
	t.endedMu.Lock()
	if t.endedBy == "" {
		t.endedBy = why
	}
	t.endedMu.Unlock()
}

// noteClose records a Close frame from one side; the first side to send
// one names who ended the tunnel, and its code is kept.
func (t *tunnel) noteClose(from CloseReason, code uint16) {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.firstClose == "" {
		t.firstClose = from
	}
	if t.firstClose == from && code != 0 {
		t.closeCode = code
	}
}

// ending says why the tunnel ended and with which close code (0: none):
// a close the gateway asked for, else the side whose Close frame came
// first, else the side that ended the stream or the error.
func (t *tunnel) ending() (CloseReason, uint16) {
	if cr := t.closing.Load(); cr != nil {
		return cr.why, cr.code
	}
	t.closeMu.Lock()
	first, code := t.firstClose, t.closeCode
	t.closeMu.Unlock()
	if first != "" {
		return first, code
	}
	return t.EndedBy(), 0
}

// EndedBy reports why the tunnel ended.
func (t *tunnel) EndedBy() CloseReason {
	t.endedMu.Lock()
	defer t.endedMu.Unlock()
	return t.endedBy
}

// run moves bytes both ways until the tunnel ends, then closes both
// connections.
func (t *tunnel) run() {
	t.begin()
	var wg sync.WaitGroup
	wg.Add(1)
	go t.clientToPod(&wg)
	t.pump(t.pod, t.client, t.podPending, false, &t.p2c)
	wg.Wait()
	_ = t.client.Close()
	_ = t.pod.Close()
	t.end()
}

// begin counts the tunnel as active, whichever engine carries it.
func (t *tunnel) begin() {
	if t.metrics.active != nil {
		t.metrics.active.Inc()
	}
}

// end counts the tunnel as no longer active and closes Done, once both
// connections are closed.
func (t *tunnel) end() {
	if t.metrics.active != nil {
		t.metrics.active.Dec()
	}
	close(t.done)
}

// clientToPod is the tunnel's second goroutine.
func (t *tunnel) clientToPod(wg *sync.WaitGroup) {
	defer wg.Done()
	t.pump(t.client, t.pod, t.clientPending, true, &t.c2p)
}

// pump copies src to dst. toPod says dst is the pod (Close frames to it
// are masked); d accounts the bytes and names who ends the stream.
func (t *tunnel) pump(src, dst net.Conn, pending []byte, toPod bool, d *flow) {
	// The tracker lives with the flow, not in this frame: the stacks of
	// idle tunnels' goroutines are most of their memory.
	frames := &d.frames
	defer t.flowEnded(d)
	raw := rawConn(src)
	if t.bufferedReads {
		raw = nil
	}
	if len(pending) > 0 {
		frames.consume(pending, false)
		t.moved(d, len(pending))
		if _, err := dst.Write(pending); err != nil {
			t.fail(err)
			return
		}
	}
	for {
		// Arm first, then look: a Close that comes after the look moves
		// the deadline to the past after this arm, so the read wakes.
		t.armDeadline(src)
		if cr := t.closing.Load(); cr != nil {
			t.finish(src, dst, frames, cr, toPod)
			return
		}
		buf, bp, err := t.read(src, raw, d)
		if n := len(buf); n > 0 {
			t.lastActive.Store(time.Now().UnixNano())
			if cr := t.closing.Load(); cr != nil {
				// A close was requested while these bytes arrived: forward
				// them up to the first frame boundary only.
				used := frames.consume(buf, true)
				t.moved(d, used)
				_, werr := dst.Write(buf[:used])
				putBuf(bp)
				if werr != nil {
					t.fail(werr)
					return
				}
				t.finish(src, dst, frames, cr, toPod)
				return
			}
			frames.consume(buf, false)
			t.moved(d, n)
			_, werr := dst.Write(buf)
			putBuf(bp)
			if werr != nil {
				t.fail(werr)
				return
			}
		} else {
			putBuf(bp)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if t.closing.Load() == nil {
				t.checkTimers()
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			// Half-close: pass the end of stream on, and let the other
			// direction finish.
			t.setEnded(d.eof)
			closeWrite(dst)
			return
		}
		t.fail(err)
		return
	}
}

// flow is the accounting of one direction of a tunnel.
type flow struct {
	frames frameTracker
	count  *atomic.Int64
	bytes  prometheus.Counter
	// eof is who ends the stream in this direction.
	eof CloseReason
	// noted: the first Close frame of this direction was reported.
	noted bool

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

// moved accounts n bytes forwarded, and notes a Close frame as soon as
// it is seen (who closed first).
func (t *tunnel) moved(d *flow, n int) {
	d.count.Add(int64(n))
	if d.bytes != nil {
		d.bytes.Add(float64(n))
	}
	if d.frames.closeSeen && !d.noted {
		d.noted = true
		t.noteClose(d.eof, d.frames.peerCloseCode())
	}
}

// flowEnded notes the direction's Close frame again, when its code is
// surely complete.
func (t *tunnel) flowEnded(d *flow) {
	if d.frames.closeSeen {
		t.noteClose(d.eof, d.frames.peerCloseCode())
	}
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
// that holds them (nil when they are in the flow's own buffer), to give
// back with putBuf once they are written.
//
// An idle tunnel should hold no 32 KiB buffer. On plain TCP the buffer is
// borrowed only once bytes are there (a raw read). A TLS connection
// cannot say whether it holds decrypted bytes, so it waits with a small
// buffer of the flow's own; when that fills up, more is surely buffered
// and the next read borrows a large one.
func (t *tunnel) read(src net.Conn, raw syscall.RawConn, d *flow) ([]byte, *[]byte, error) {
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

// armDeadline sets src's read deadline to the earlier of the idle timeout
// and the maximum lifetime.
func (t *tunnel) armDeadline(src net.Conn) {
	var dl time.Time
	if t.idle > 0 {
		dl = time.Unix(0, t.lastActive.Load()).Add(t.idle)
	}
	if !t.deadline.IsZero() && (dl.IsZero() || t.deadline.Before(dl)) {
		dl = t.deadline
	}
	_ = src.SetReadDeadline(dl)
}

// checkTimers closes the tunnel when its lifetime or idle time is over; a
// deadline hit while the other direction was busy is simply re-armed.
func (t *tunnel) checkTimers() {
	now := time.Now()
	if !t.deadline.IsZero() && !now.Before(t.deadline) {
		t.Close(CloseGoingAway, "maximum connection lifetime reached", ClosedLifetime)
		return
	}
	if t.idle > 0 && now.Sub(time.Unix(0, t.lastActive.Load())) >= t.idle {
		t.Close(CloseGoingAway, "idle timeout", ClosedIdle)
	}
}

// finish ends one direction of a closing tunnel: it forwards src until the
// current frame ends (within closeGrace), sends the Close frame to dst,
// half-closes dst, and reads src until the peer closes or closeGrace
// passes, discarding what arrives (the peer's Close answer).
func (t *tunnel) finish(src, dst net.Conn, frames *frameTracker, cr *closeRequest, toPod bool) {
	limit := time.Now().Add(closeGrace)
	_ = dst.SetWriteDeadline(limit)
	_ = src.SetReadDeadline(limit)
	var buf [4096]byte
	for !frames.atBoundary() {
		n, err := src.Read(buf[:])
		used := frames.consume(buf[:n], true)
		if _, werr := dst.Write(buf[:used]); werr != nil {
			t.fail(werr)
			return
		}
		if err != nil && !frames.atBoundary() {
			// The frame did not end in time: no boundary to close at.
			t.fail(err)
			return
		}
	}
	if _, err := dst.Write(closeFrame(cr.code, cr.reason, toPod)); err != nil {
		t.fail(err)
		return
	}
	closeWrite(dst)
	for {
		if _, err := src.Read(buf[:]); err != nil {
			return
		}
	}
}

// fail ends the tunnel at once: both connections are closed, which wakes
// the other direction.
func (t *tunnel) fail(error) {
	t.setEnded(ClosedError)
	abort(t.client)
	abort(t.pod)
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
