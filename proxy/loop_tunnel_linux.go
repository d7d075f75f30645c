//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// The event-loop engine, on Linux.
//
// A tunnel whose connections are TCP (the client's possibly under TLS,
// accepted through Server.ServeTLS) is carried by an event loop: its two
// sockets sit in one of a few epoll instances, each served by one
// goroutine that reads, gives the bytes to the tunnel's state and writes
// for every tunnel it holds. An idle tunnel then costs its bookkeeping
// only: no goroutine stack and no buffer. Reads go into the loop's own
// buffer; only bytes a peer cannot take yet are copied into a buffer
// borrowed until it drains (and the tunnel stops reading the other side
// meanwhile).
//
// A TLS client's connection stays a crypto/tls connection, driven by the
// loop over its socket (loopIO).
//
// Sockets are registered edge-triggered for input, and for output once a
// write could not take everything (evloop.Loop.WantWritable). A read
// shorter than the buffer means the socket is drained (a later arrival
// raises a new edge), unless the peer's end of stream or an error was
// reported, in which case reading goes on until it is seen.

// loopOut is what one direction's destination could not take yet.
type loopOut struct {
	// out holds the bytes, in a borrowed buffer; shutAfter ends the
	// destination's stream once they are written.
	out       []byte
	outBuf    *[]byte
	shutAfter bool
}

// release gives back the buffer.
func (o *loopOut) release() {
	if o.outBuf != nil {
		*o.outBuf = (*o.outBuf)[:0]
		outPool.Put(o.outBuf)
	}
	o.out, o.outBuf = nil, nil
}

// hold keeps p, which its destination cannot take yet, in a borrowed
// buffer.
func (o *loopOut) hold(p []byte) {
	o.outBuf = outPool.Get().(*[]byte)
	*o.outBuf = append((*o.outBuf)[:0], p...)
	o.out = *o.outBuf
}

// send writes p to s after the bytes held for it, and holds what s cannot
// take yet; n is how much of p went now.
func (o *loopOut) send(l *evloop.Loop, s *loopSocket, p []byte) (n int, err error) {
	if len(o.out) > 0 {
		o.out = append(o.out, p...)
		return 0, nil
	}
	if n, err = s.write(l, p); err == nil && n < len(p) {
		o.hold(p[n:])
	}
	return n, err
}

// writeTo writes the held bytes to s, as much as it takes; done reports
// that none are left: the buffer is given back, and s's stream ended if
// that was asked for.
func (o *loopOut) writeTo(l *evloop.Loop, s *loopSocket) (n int, done bool, err error) {
	n, err = s.write(l, o.out)
	if err != nil {
		return n, false, err
	}
	if o.out = o.out[n:]; len(o.out) > 0 {
		return n, false, nil
	}
	o.release()
	if o.shutAfter {
		o.shutAfter = false
		_ = evloop.ShutdownWrite(s.fd)
	}
	return n, true, nil
}

// outPool holds the buffers of bytes a peer could not take yet.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, evloop.ReadSize+256); return &b }}

// loopTunnel carries a tunnel on a loop.
type loopTunnel struct {
	t *tunnel
	p *loopPair
	// out, by the side the bytes come from.
	out [2]loopOut
	// tls is the client's TLS connection, driven by the loop through a
	// detachConn; nil on plain TCP.
	tls *tls.Conn
	// timeout is the idle timeout or maximum lifetime, whichever comes
	// first; grace bounds a close.
	timeout, grace evloop.Deadline
	// closing: the close request is applied.
	closing bool
	started bool
	ended   bool
	onDone  func()
	// doneOnLoop: onDone is cheap (no access log line to write) and runs
	// on the loop instead of a goroutine of its own.
	doneOnLoop bool
}

// carryOnLoop moves a tunnel over client and pod (TCP, the client's
// possibly TLS over a detachConn) to an event loop and returns true;
// onDone (if not nil) runs once it has ended. It returns false, changing
// nothing, when the connections cannot be carried there.
func carryOnLoop(t *tunnel, client, pod net.Conn, onDone func(), doneOnLoop bool) bool {
	l := evloop.Pick()
	if l == nil {
		return false
	}
	tcpClient, tc, dc := client, (*tls.Conn)(nil), (*detachConn)(nil)
	if c, ok := client.(*tls.Conn); ok {
		// A TLS connection can move only if it was accepted through a
		// detachListener (Server.ServeTLS).
		if dc, ok = c.NetConn().(*detachConn); !ok {
			return false
		}
		if dc.proxied != nil && dc.proxied.buffered() {
			// Bytes read with the PROXY header are still to be read.
			return false
		}
		tc, tcpClient = c, dc.TCPConn
	}
	cfd, ok := dupTCP(tcpClient)
	if !ok {
		return false
	}
	pfd, ok := dupTCP(pod)
	if !ok {
		_ = evloop.Close(cfd)
		return false
	}
	// The sockets now live on through the duplicates; closing Go's
	// descriptors takes them out of its poller.
	_ = tcpClient.Close()
	_ = pod.Close()

	lt := &loopTunnel{t: t, p: newLoopPair(l, cfd, pfd), tls: tc, onDone: onDone, doneOnLoop: doneOnLoop}
	if dc != nil {
		dc.loop = &loopIO{lt: lt}
	}
	t.carry(lt)
	l.Post(func() { lt.begin(nil) })
	return true
}

// dupTCP duplicates the descriptor of a plain TCP connection.
func dupTCP(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	return evloop.Dup(tc)
}

// begin starts the tunnel on its loop: head (the 101 answer, when the
// loop made the handshake) goes to the client first, then the bytes read
// with the handshake; the sockets not yet in the loop's set are
// registered, and the timers armed.
func (lt *loopTunnel) begin(head []byte) {
	t, st, l := lt.t, lt.t.st, lt.p.loop
	lt.started = true
	t.begin()
	if len(head) > 0 && !lt.send(ws.Pod, head) {
		return
	}
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if p := st.TakePending(side); len(p) > 0 && !lt.forward(side, p) {
			return
		}
	}
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if err := lt.p.register(side, lt); err != nil {
			lt.fail()
			return
		}
	}
	if st.Timed() {
		lt.timeout.Calls(lt.checkTimers)
		l.SetDeadline(&lt.timeout, st.NextDeadline())
	}
	if st.Closing() != nil {
		lt.startClose()
	}
	if lt.tls != nil && !lt.ended {
		// Records that arrived with the handshake may sit decoded in the
		// TLS connection, with no event to come for them.
		lt.p.sock[ws.Client].readable = true
	}
	// Sockets that the loop's handshake left unread have no edge to
	// come.
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if lt.p.sock[side].readable && !lt.ended {
			lt.pump(side)
		}
	}
}

// closeRequested is the engine's part of tunnel.Close.
func (lt *loopTunnel) closeRequested() { lt.p.loop.Post(lt.startClose) }

func (lt *loopTunnel) checkTimers() {
	if lt.ended || lt.closing {
		return
	}
	if cr := lt.t.st.Expired(time.Now()); cr != nil {
		lt.t.close(cr)
		return
	}
	lt.p.loop.SetDeadline(&lt.timeout, lt.t.st.NextDeadline())
}

// ready acts on the events of side's socket.
func (lt *loopTunnel) ready(side ws.Side, ev evloop.Events) {
	if ev.Readable() {
		lt.pump(side)
	}
	if !lt.ended && ev.Writable() {
		lt.flush(side.Other())
	}
}

// pump reads side's socket while it has bytes and the other side takes
// them.
func (lt *loopTunnel) pump(from ws.Side) {
	st := lt.t.st
	d := st.Direction(from)
	s := &lt.p.sock[from]
	buf := lt.p.loop.Buf()
	var tc *tls.Conn
	if from == ws.Client {
		tc = lt.tls
	}
	for !lt.ended && d.Phase() != ws.Ended && s.readable && len(lt.out[from].out) == 0 {
		var n int
		var err error
		if tc != nil {
			n, err = readTLS(tc, buf)
		} else {
			var e syscall.Errno
			if n, e = evloop.Read(s.fd, buf); e != 0 {
				err = e
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN) || errors.Is(err, errWouldBlock):
				s.readable = false
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, io.EOF):
				s.readable = false
				lt.sourceEnded(from)
			default:
				lt.fail()
			}
			return
		}
		if n == 0 {
			if tc != nil {
				continue
			}
			s.readable = false
			lt.sourceEnded(from)
			return
		}
		// A short read drained the socket; a TLS read returns one record
		// at most, so it reads on until the socket is empty.
		if tc == nil && n < len(buf) && !s.drain {
			s.readable = false
		}
		if d.Phase() == ws.Forwarding {
			st.Touch(lt.p.loop.Now())
		}
		if !lt.forward(from, buf[:n]) {
			return
		}
	}
}

// forward gives p, read from side from, to the tunnel's state and sends
// what goes on (and the Close frame, when it is time) to the other side.
func (lt *loopTunnel) forward(from ws.Side, p []byte) bool {
	st := lt.t.st
	n, sendClose := st.Direction(from).Forward(p)
	st.Forwarded(from, n)
	if n > 0 && !lt.send(from, p[:n]) {
		return false
	}
	return !sendClose || lt.sendClose(from)
}

// send writes p to the other side of from (through TLS to a TLS client);
// what it cannot take yet is kept and written when it can. It returns
// false if the tunnel failed.
func (lt *loopTunnel) send(from ws.Side, p []byte) bool {
	if from == ws.Pod && lt.tls != nil {
		if _, err := lt.tls.Write(p); err != nil {
			lt.fail()
			return false
		}
		return !lt.ended
	}
	return lt.sendRaw(from, p)
}

// sendRaw writes p as it is to the socket across from side from.
func (lt *loopTunnel) sendRaw(from ws.Side, p []byte) bool {
	if lt.ended {
		return false
	}
	if _, err := lt.out[from].send(lt.p.loop, &lt.p.sock[from.Other()], p); err != nil {
		lt.fail()
		return false
	}
	return true
}

// flush writes what the other side of from could not take before, and
// goes on reading from once it is written.
func (lt *loopTunnel) flush(from ws.Side) {
	o := &lt.out[from]
	if len(o.out) == 0 {
		return
	}
	_, done, err := o.writeTo(lt.p.loop, &lt.p.sock[from.Other()])
	if err != nil {
		lt.fail()
		return
	}
	if !done || lt.maybeEnd() {
		return
	}
	lt.pump(from)
}

// endStream ends the stream toward the other side of from once what it
// holds for it is written.
func (lt *loopTunnel) endStream(from ws.Side) {
	if from == ws.Pod && lt.tls != nil {
		// close_notify, then the TCP end of stream.
		_ = lt.tls.CloseWrite()
		if lt.ended {
			return
		}
	}
	if o := &lt.out[from]; len(o.out) > 0 {
		o.shutAfter = true
		return
	}
	_ = evloop.ShutdownWrite(lt.p.sock[from.Other()].fd)
}

// sourceEnded takes the end of side from's stream.
func (lt *loopTunnel) sourceEnded(from ws.Side) {
	endDst, failed := lt.t.st.Direction(from).SourceEnded()
	if failed {
		lt.fail()
		return
	}
	if endDst {
		// Half-close: pass the end of stream on; the other direction goes
		// on. When it has ended already, closing both sockets below
		// sends the end of stream.
		lt.t.st.SourceEnded(from)
		if lt.t.st.ClosingHandshakeDone() && lt.finish(from) {
			return
		}
		if lt.t.st.Direction(from.Other()).Phase() != ws.Ended || len(lt.out[from].out) > 0 {
			lt.endStream(from)
		}
	}
	lt.maybeEnd()
}

// finish ends the tunnel when side from ends its stream after the
// closing handshake: nothing may follow either way, so the other side's
// socket is closed now (after close_notify to a TLS client), as a
// websocket server closes its connection once the handshake is over,
// rather than half-closed until that side's own end of stream comes. It
// reports false, changing nothing, while bytes for either side are held:
// a side that ended its stream may still be reading what it is owed.
func (lt *loopTunnel) finish(from ws.Side) bool {
	o := &lt.out[from]
	if len(o.out) > 0 || len(lt.out[from.Other()].out) > 0 {
		return false
	}
	if from == ws.Pod && lt.tls != nil {
		_ = lt.tls.CloseWrite()
		if lt.ended {
			return true
		}
		if len(o.out) > 0 {
			// The client takes close_notify later: the end of stream
			// follows it, and the tunnel ends at the client's (endStream).
			o.shutAfter = true
			return true
		}
	}
	lt.end()
	return true
}

// startClose applies the close request to each direction: the Close frame
// goes at its next frame boundary, within the close grace.
func (lt *loopTunnel) startClose() {
	if !lt.started || lt.ended || lt.closing {
		return
	}
	lt.closing = true
	l := lt.p.loop
	l.StopDeadline(&lt.timeout)
	lt.grace.Calls(func() {
		if !lt.ended {
			lt.fail()
		}
	})
	l.SetDeadline(&lt.grace, time.Now().Add(ws.CloseGrace))
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if lt.t.st.Direction(side).Close() && !lt.sendClose(side) {
			return
		}
	}
}

// sendClose sends the Close frame across from side from, then the end of
// stream.
func (lt *loopTunnel) sendClose(from ws.Side) bool {
	if !lt.send(from, lt.t.st.CloseFrame(from)) {
		return false
	}
	lt.endStream(from)
	return !lt.ended
}

// maybeEnd ends the tunnel once both directions are over and written.
func (lt *loopTunnel) maybeEnd() bool {
	if lt.ended {
		return true
	}
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if lt.t.st.Direction(side).Phase() != ws.Ended || len(lt.out[side].out) > 0 {
			return false
		}
	}
	lt.end()
	return true
}

// fail ends the tunnel at once.
func (lt *loopTunnel) fail() {
	if lt.ended {
		return
	}
	lt.t.st.SetEnded(ws.Failed)
	lt.end()
}

// end closes both sockets and reports the tunnel ended.
func (lt *loopTunnel) end() {
	lt.ended = true
	lt.p.closeAll()
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		lt.out[side].release()
		lt.t.st.DirectionDone(side)
	}
	lt.p.loop.StopDeadline(&lt.timeout)
	lt.p.loop.StopDeadline(&lt.grace)
	lt.t.end()
	if lt.onDone != nil {
		if lt.doneOnLoop {
			lt.onDone()
			return
		}
		// Off the loop: the access log may write to a slow pipe, and the
		// loop carries other tunnels.
		go lt.onDone()
	}
}
