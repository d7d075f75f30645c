//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	"github.com/wsgate/wsgate/proxy/internal/h2"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// HTTP/2 on the event loops. Once a TLS client chose h2, its connection
// moves to a loop, which speaks HTTP/2 on it (package h2) and carries
// every websocket of it there: each stream's pod connection sits on the
// same loop, so an idle websocket costs its stream's and tunnel's
// bookkeeping and its pod socket, and no goroutine or buffer. Only a
// stream's handshake (admit, identity, forward auth, the pod's dial and
// answer) runs on a goroutine of its own, as an HTTP/1.1 handshake does,
// and hands the pod connection over to the loop with the answer.

const (
	// h2IdleTimeout closes a connection without streams.
	h2IdleTimeout = 2 * time.Minute
	// h2Congested is how much a connection may hold for a client that
	// does not read before its streams stop reading their pods.
	h2Congested = 256 << 10
	// h2AnswerChunk is how much of a relayed body goes to the loop at a
	// time.
	h2AnswerChunk = 16 << 10
)

// ownHTTP2 reports whether the event loops can serve HTTP/2.
func ownHTTP2() bool { return evloop.Pick() != nil }

// h2OnLoops reports whether HTTP/2 connections are served on the loops:
// pods are dialled with the default dialer (their sockets can move to a
// loop) and tunnels may run on loops.
func (s *Server) h2OnLoops() bool {
	return s.loopDial && !s.opts.goroutineTunnels && evloop.Pick() != nil
}

// serveH2 takes a TLS connection whose client chose h2 (net/http's
// TLSNextProto hook) and serves it on a loop; it returns when the
// connection has ended, for net/http to close it.
func (s *Server) serveH2(_ *http.Server, tc *tls.Conn, _ http.Handler) {
	l := evloop.Pick()
	dc, ok := tc.NetConn().(*detachConn)
	if !ok || l == nil {
		return
	}
	fd, ok := evloop.Dup(dc.TCPConn)
	if !ok {
		return
	}
	// The socket lives on through the duplicate.
	_ = dc.TCPConn.Close()
	remote := dc.RemoteAddr().String()
	c := s.newH2Conn(l, tc, dc, fd, remote)
	l.Post(c.begin)
	<-c.done
}

// newH2Conn makes the HTTP/2 connection over tc, whose socket fd (outside
// its set) loop l is to serve from begin; it counts among the live ones
// until it ends.
func (s *Server) newH2Conn(l *evloop.Loop, tc *tls.Conn, dc *detachConn, fd int, remote string) *h2Conn {
	state := tc.ConnectionState()
	c := &h2Conn{
		s: s, loop: l, tls: tc, dc: dc, done: make(chan struct{}),
		remote: remote, state: &state,
	}
	c.sock = loopSocket{fd: fd, reg: evloop.NewRegistration(), side: ws.Client, on: c}
	c.p = h2.NewConn(h2.Config{MaxHeaderListSize: uint32(s.opts.MaxHeaderBytes)}, c)
	dc.loop = c
	s.h2live.add(c)
	return c
}

// h2Live is the HTTP/2 connections on loops, for Shutdown's GOAWAY.
type h2Live struct {
	mu    sync.Mutex
	conns map[*h2Conn]struct{}
	// draining: new connections go away at once.
	draining bool
}

func (l *h2Live) add(c *h2Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil {
		l.conns = make(map[*h2Conn]struct{})
	}
	l.conns[c] = struct{}{}
	if l.draining {
		c.loop.Post(c.goAway)
	}
}

func (l *h2Live) remove(c *h2Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// goAway sends every connection a GOAWAY, and any that comes later.
func (l *h2Live) goAway() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.draining = true
	for c := range l.conns {
		c.loop.Post(c.goAway)
	}
}

// h2Conn is an HTTP/2 connection on a loop. Everything in it, and in its
// streams' tunnels, happens on the loop's goroutine.
type h2Conn struct {
	s    *Server
	loop *evloop.Loop
	sock loopSocket
	tls  *tls.Conn
	dc   *detachConn
	p    *h2.Conn
	// out is the TLS bytes the socket could not take yet.
	out loopOut
	// paused are the streams that stopped reading their pods while out
	// is over h2Congested.
	paused []*h2Stream
	remote string
	state  *tls.ConnectionState
	// tunnels counts the streams carrying tunnels.
	tunnels int
	// lastActive is when the connection last had a stream (or began):
	// without one, it closes h2IdleTimeout later, whatever else the
	// client sends (PINGs keep no connection open).
	lastActive time.Time
	// pendingSince is when the client began to leave a frame (or the
	// preface) incomplete on the connection without streams: the
	// read-header timeout runs from then, however slowly its bytes come.
	pendingSince time.Time
	// idle is the idle or read-header timeout (armIdle).
	idle  evloop.Deadline
	ended bool
	done  chan struct{}
}

// begin starts serving the connection: the server's SETTINGS go out,
// and anything that arrived with the TLS handshake is read.
func (c *h2Conn) begin() {
	c.lastActive = time.Now()
	c.pendingSince = c.lastActive
	if err := c.loop.Register(c.sock.fd, &c.sock, &c.sock.reg); err != nil {
		c.end()
		return
	}
	c.armIdle()
	// Records that arrived with the handshake may sit decoded in the TLS
	// connection, with no event to come for them.
	c.sock.readable = true
	c.pump()
	c.flush()
}

// read and write are the TLS connection's socket I/O (loopSide).
func (c *h2Conn) read(p []byte) (int, error) {
	if c.ended {
		return 0, net.ErrClosed
	}
	if c.dc.proxied != nil && c.dc.proxied.buffered() {
		return c.dc.proxied.Read(p)
	}
	return readTLSBytes(c.sock.fd, p)
}

func (c *h2Conn) write(p []byte) (int, error) {
	if c.ended {
		return 0, net.ErrClosed
	}
	if _, err := c.out.send(c.loop, &c.sock, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ready acts on the socket's events.
func (c *h2Conn) ready(_ ws.Side, ev evloop.Events) {
	if ev.Readable() {
		c.pump()
	}
	if !c.ended && ev.Writable() {
		c.drain()
	}
	c.flush()
}

// pump reads the connection while it has bytes and gives them to the
// HTTP/2 state.
func (c *h2Conn) pump() {
	buf := c.loop.Buf()
	for !c.ended && c.sock.readable {
		n, err := readTLS(c.tls, buf)
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN) || errors.Is(err, errWouldBlock):
				c.sock.readable = false
			case errors.Is(err, unix.EINTR):
				continue
			default:
				// The client's end of stream, or a broken connection.
				c.end()
			}
			return
		}
		if n == 0 {
			continue
		}
		if err := c.p.Feed(buf[:n]); err != nil {
			c.flush()
			c.end()
			return
		}
		c.notePending()
		// What the HTTP/2 state answers (SETTINGS and PING acks, window
		// updates) goes out as it comes, for a client that sends a lot.
		if len(c.p.Output()) > 64<<10 {
			c.flush()
		}
	}
}

// flush writes the HTTP/2 state's output through TLS.
func (c *h2Conn) flush() {
	if c.ended {
		return
	}
	if b := c.p.Output(); len(b) > 0 {
		if _, err := c.tls.Write(b); err != nil {
			c.end()
			return
		}
		c.p.Written(len(b))
	}
	if len(c.out.out) > 4*h2Congested {
		// A client that does not read what it asked for.
		c.end()
	}
}

// congested reports whether the client is behind on reading.
func (c *h2Conn) congested() bool { return len(c.out.out) > h2Congested }

// drain writes what the socket could not take before, and restarts the
// streams paused meanwhile.
func (c *h2Conn) drain() {
	o := &c.out
	if len(o.out) == 0 {
		return
	}
	if _, _, err := o.writeTo(c.loop, &c.sock); err != nil {
		c.end()
		return
	}
	if c.congested() {
		return
	}
	// The streams restart in the order they stopped, while the client
	// keeps up: one that stops again goes last, after those still
	// waiting.
	for len(c.paused) > 0 && !c.ended && !c.congested() {
		st := c.paused[0]
		c.paused[0] = nil
		c.paused = c.paused[1:]
		st.paused = false
		if !st.ended {
			st.pump()
		}
	}
}

// goAway takes no new streams, and closes the connection once it has
// none (at once when it has none now).
func (c *h2Conn) goAway() {
	if c.ended {
		return
	}
	c.p.GoAway()
	c.flush()
	if c.p.Streams() == 0 {
		c.end()
	}
}

// armIdle bounds how long the connection stays without streams: the
// read-header timeout while a request (or the preface) is incomplete,
// h2IdleTimeout otherwise.
func (c *h2Conn) armIdle() {
	if c.ended || c.p.Streams() > 0 {
		return
	}
	limit, since := h2IdleTimeout, c.lastActive
	if c.s.opts.h2IdleTimeout > 0 {
		limit = c.s.opts.h2IdleTimeout
	}
	if c.p.Pending() {
		limit = c.s.opts.ReadHeaderTimeout
		if !c.pendingSince.IsZero() {
			since = c.pendingSince
		}
	}
	at := since.Add(limit)
	if time.Until(at) <= 0 {
		c.goAway()
		c.end()
		return
	}
	c.idle.Calls(c.armIdle)
	c.loop.SetDeadline(&c.idle, at)
}

// notePending starts the read-header timeout when the client leaves a
// frame incomplete on the connection without streams.
func (c *h2Conn) notePending() {
	if !c.p.Pending() || c.p.Streams() > 0 {
		if !c.pendingSince.IsZero() {
			// The read-header timeout is over: the idle one runs.
			c.pendingSince = time.Time{}
			c.armIdle()
		}
		return
	}
	if c.pendingSince.IsZero() {
		c.pendingSince = time.Now()
		c.armIdle()
	}
}

// end closes the connection and ends its streams.
func (c *h2Conn) end() {
	if c.ended {
		return
	}
	// Ended first: the streams' ends below write nothing.
	c.ended = true
	c.p.Close()
	c.loop.Forget(&c.sock.reg)
	_ = evloop.Close(c.sock.fd)
	c.sock.fd = -1
	c.out.release()
	c.loop.StopDeadline(&c.idle)
	c.s.h2live.remove(c)
	close(c.done)
}

// streamReleased is told that a stream ended; the connection then waits
// for its next stream (or closes, going away).
func (c *h2Conn) streamReleased() {
	if c.p.Streams() > 0 || c.ended {
		return
	}
	if c.p.GoingAway() {
		c.end()
		return
	}
	c.lastActive = time.Now()
	c.notePending()
	c.armIdle()
}

// tunnelCount moves the number of the connection's streams carrying
// tunnels.
func (c *h2Conn) tunnelCount(delta int) {
	c.tunnels += delta
	c.s.opts.Metrics.http2Tunnels(float64(delta), c.s.h2conns.add(c.remote, delta))
}

// The HTTP/2 state's handler (h2.Handler).

func (c *h2Conn) NewStream() *h2.Stream {
	hs := &h2Stream{c: c}
	hs.st.User = hs
	return &hs.st
}

func (c *h2Conn) Request(st *h2.Stream, r *h2.Request) {
	hs := st.User.(*h2Stream)
	hs.hsk = &h2Handshake{}
	if r.Truncated {
		go hs.answer(refuse(http.StatusRequestHeaderFieldsTooLarge, "request header too large"))
		return
	}
	req, err := c.request(r)
	if err != nil {
		go hs.answer(refuse(http.StatusBadRequest, err.Error()))
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	hs.hsk.cancel = cancel
	req = req.WithContext(ctx)
	if !r.EndStream && r.ContentLength > 0 && r.Method != http.MethodConnect {
		// A request with a body of a stated length, which no websocket
		// handshake has: it is answered once its body has come (and been
		// dropped, its length checked), within the read-header timeout.
		// Other requests are answered at once, whatever follows them.
		hs.hsk.waiting = req
		l := c.loop
		hs.hsk.bodyTimer = time.AfterFunc(c.s.opts.ReadHeaderTimeout, func() {
			l.Post(func() {
				if hs.hsk != nil && hs.hsk.waiting != nil {
					c.release(hs)
				}
			})
		})
		return
	}
	go c.s.serveHTTP2Request(hs, req)
}

// request is the net/http form of an HTTP/2 request.
func (c *h2Conn) request(r *h2.Request) (*http.Request, error) {
	req := &http.Request{
		Method: r.Method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: r.Header,
		Host: r.Authority, RemoteAddr: c.remote, TLS: c.state, Body: http.NoBody, RequestURI: r.Path,
	}
	if r.Protocol != "" {
		req.Header[":protocol"] = []string{r.Protocol}
	}
	switch host := r.Header.Get("Host"); {
	case req.Host == "":
		req.Host = host
	case host != "" && !strings.EqualFold(host, req.Host):
		// RFC 9113 §8.3.1: a Host naming another site than :authority
		// makes the request malformed (net/http's server answers 400 too).
		return nil, errors.New("the Host field differs from :authority")
	}
	r.Header.Del("Host")
	if r.Method == http.MethodConnect && r.Protocol == "" {
		req.URL, req.RequestURI = &url.URL{Host: r.Authority}, r.Authority
		return req, nil
	}
	if !h2PathOK(r.Path) {
		return nil, errMalformedPath
	}
	u, err := url.ParseRequestURI(r.Path)
	if err != nil {
		return nil, errMalformedPath
	}
	req.URL = u
	return req, nil
}

func (c *h2Conn) Data(st *h2.Stream, p []byte) {
	if hs, ok := st.User.(*h2Stream); ok {
		hs.data(p)
	}
}

func (c *h2Conn) EndStream(st *h2.Stream) {
	if hs, ok := st.User.(*h2Stream); ok {
		hs.clientEnded()
	}
}

func (c *h2Conn) Reset(st *h2.Stream) {
	if hs, ok := st.User.(*h2Stream); ok {
		hs.reset()
	}
}

func (c *h2Conn) Writable(st *h2.Stream) {
	if hs, ok := st.User.(*h2Stream); ok {
		hs.writable()
	}
}

// release ends the connection's use of a stream.
func (c *h2Conn) release(hs *h2Stream) {
	if hs.released {
		return
	}
	hs.released = true
	hs.endHandshake()
	c.p.Release(&hs.st)
	c.flush()
	c.streamReleased()
}

// h2Stream is one stream of an HTTP/2 connection on a loop: the client
// of a handshake, then one side of its tunnel. Its fields belong to the
// loop but for those the handshake's goroutine sets before it hands the
// stream over.
type h2Stream struct {
	c *h2Conn
	// st is the stream's HTTP/2 state (its User is the h2Stream).
	st h2.Stream
	// hsk is the handshake's part, dropped once the tunnel begins.
	hsk *h2Handshake

	// The tunnel.
	t   *tunnel
	pod loopSocket
	// podOut is what the pod could not take yet; toClient what the
	// stream's windows did not let through yet.
	podOut, toClient loopOut
	// timeout is the idle timeout or maximum lifetime, whichever comes
	// first; grace bounds the stream's end once armed (endWithin).
	timeout, grace evloop.Deadline
	graceArmed     bool
	onDone         func()
	// podOwed is how much of podOut is the client's, to give back to
	// the stream's window as it goes.
	podOwed int32
	// gone: the client reset the stream, or the connection ended.
	gone, released bool
	// endToClient ends the stream after toClient.
	endToClient, paused, closing, started, ended, doneOnLoop bool
}

// h2Handshake is a stream's state until its tunnel begins.
type h2Handshake struct {
	// cancel ends the request's context.
	cancel context.CancelFunc
	// early is what the client sent before the tunnel (held against the
	// stream's window until the tunnel takes it); earlyEnded, whether it
	// ended its side.
	early      []byte
	earlyEnded bool
	// body is the part of an answer's body the windows did not let
	// through yet, and answered is told once all of it went.
	body     []byte
	endAfter bool
	answered chan struct{}
	// waiting is a request answered once its body has come, by
	// bodyTimer.
	waiting   *http.Request
	bodyTimer *time.Timer
}

// Before the tunnel: the stream as a handshake's client, on its
// goroutine.

// answer writes a on the stream and waits until it went, the stream went
// away, or the handshake timeout passed; then it releases the stream.
func (hs *h2Stream) answer(a *answer) {
	c := hs.c
	c.s.opts.Metrics.http2Handshake(a.status)
	h := a.fields()
	h.Del("Connection")
	body := io.Reader(strings.NewReader(a.text + "\n"))
	if a.relayed != nil {
		body, _ = a.body()
		defer func() { _ = a.relayed.Body.Close() }()
	}
	defer c.loop.Post(func() { c.release(hs) })
	c.loop.Post(func() {
		if !hs.gone {
			c.p.WriteHeaders(&hs.st, a.status, h, false)
		}
	})
	deadline := time.NewTimer(c.s.opts.HandshakeTimeout)
	defer deadline.Stop()
	for last := false; !last; {
		chunk := make([]byte, h2AnswerChunk)
		n, err := io.ReadFull(body, chunk)
		last = err != nil
		done := make(chan struct{})
		c.loop.Post(func() { hs.sendAnswer(chunk[:n], last, done) })
		select {
		case <-done:
		case <-deadline.C:
			return
		}
	}
}

// sendAnswer sends a chunk of an answer's body, on the loop; done is
// closed once it went (or the stream went away).
func (hs *h2Stream) sendAnswer(p []byte, last bool, done chan struct{}) {
	if hs.gone || hs.hsk == nil {
		close(done)
		return
	}
	hs.hsk.body, hs.hsk.endAfter, hs.hsk.answered = p, last, done
	hs.sendPending()
	hs.c.flush()
}

// sendPending sends what the windows allow of the answer's body.
func (hs *h2Stream) sendPending() {
	k := hs.hsk
	n := hs.c.p.WriteData(&hs.st, k.body, k.endAfter)
	if k.body = k.body[n:]; len(k.body) == 0 && (!k.endAfter || hs.st.LocalEnded()) && k.answered != nil {
		close(k.answered)
		k.answered = nil
	}
}

// upgrade answers the extended CONNECT 200 with the fields of head (the
// pod's 101) that mean something on HTTP/2, and hands over the stream.
func (hs *h2Stream) upgrade(head []byte, _ time.Time) (net.Conn, []byte, error) {
	c := hs.c
	h, err := upgradeFields(head)
	if err != nil {
		c.loop.Post(func() { c.release(hs) })
		return nil, nil, err
	}
	ok := make(chan bool, 1)
	c.loop.Post(func() {
		if hs.gone {
			ok <- false
			c.release(hs)
			return
		}
		c.p.WriteHeaders(&hs.st, http.StatusOK, h, false)
		c.flush()
		ok <- true
	})
	if !<-ok {
		return nil, nil, errStreamGone
	}
	c.s.opts.Metrics.http2Handshake(http.StatusSwitchingProtocols)
	return hs, nil, nil
}

var errStreamGone = errors.New("the client reset the stream")

// carry moves the tunnel over the stream and pod to the loop; onDone
// (if not nil) runs once it has ended.
func (hs *h2Stream) carry(t *tunnel, pod net.Conn, onDone func(), doneOnLoop bool) {
	hs.t, hs.onDone, hs.doneOnLoop = t, onDone, doneOnLoop
	fd, ok := dupTCP(pod)
	_ = pod.Close()
	if !ok {
		fd = -1
	}
	hs.pod = loopSocket{fd: fd, reg: evloop.NewRegistration(), side: ws.Pod, on: hs}
	t.carry(hs)
	hs.c.loop.Post(hs.begin)
}

// net.Conn, for the handshake's code that hands the stream to carry.
func (hs *h2Stream) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (hs *h2Stream) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (hs *h2Stream) Close() error                     { return nil }
func (hs *h2Stream) LocalAddr() net.Addr              { return h2Addr{} }
func (hs *h2Stream) RemoteAddr() net.Addr             { return addrOf(hs.c.remote) }
func (hs *h2Stream) SetDeadline(time.Time) error      { return nil }
func (hs *h2Stream) SetReadDeadline(time.Time) error  { return nil }
func (hs *h2Stream) SetWriteDeadline(time.Time) error { return nil }

// On the loop: the HTTP/2 state's news of the stream.

func (hs *h2Stream) data(p []byte) {
	if !hs.started {
		switch k := hs.hsk; {
		case k == nil:
		case k.waiting != nil:
			hs.c.p.Consumed(&hs.st, len(p))
		default:
			k.early = append(k.early, p...)
		}
		return
	}
	if hs.t.st.Direction(ws.Client).Phase() == ws.Forwarding {
		hs.t.st.Touch(hs.c.loop.Now())
	}
	hs.forward(ws.Client, p)
}

func (hs *h2Stream) clientEnded() {
	if hs.started {
		hs.sourceEnded(ws.Client)
		return
	}
	if k := hs.hsk; k != nil {
		k.earlyEnded = true
		if r := k.waiting; r != nil {
			k.waiting = nil
			k.bodyTimer.Stop()
			go hs.c.s.serveHTTP2Request(hs, r)
		}
	}
}

func (hs *h2Stream) reset() {
	hs.gone = true
	if k := hs.hsk; k != nil && k.waiting != nil {
		// No goroutine holds the stream yet to release it.
		hs.c.release(hs)
		return
	}
	hs.endHandshake()
	if hs.started {
		hs.fail()
	}
}

func (hs *h2Stream) writable() {
	if !hs.started {
		if hs.hsk != nil && hs.hsk.answered != nil {
			hs.sendPending()
		}
		return
	}
	if !hs.ended && hs.flushToClient() {
		hs.pump()
	}
}

// endHandshake drops the handshake's state: its request's context ends,
// and an answer waiting for the windows is let go.
func (hs *h2Stream) endHandshake() {
	k := hs.hsk
	if k == nil {
		return
	}
	hs.hsk = nil
	if k.cancel != nil {
		k.cancel()
	}
	if k.bodyTimer != nil {
		k.bodyTimer.Stop()
	}
	if k.answered != nil {
		close(k.answered)
	}
}

// The tunnel on the loop, as loopTunnel carries one over two sockets;
// the client's side is the stream.

// begin starts the tunnel: the bytes each side sent with the handshake
// first, then the pod's socket in the loop's set.
func (hs *h2Stream) begin() {
	t, st := hs.t, hs.t.st
	hs.started = true
	t.begin()
	hs.c.tunnelCount(1)
	if hs.gone || hs.pod.fd < 0 {
		hs.fail()
		return
	}
	if p := st.TakePending(ws.Pod); len(p) > 0 && !hs.forward(ws.Pod, p) {
		return
	}
	k := hs.hsk
	hs.endHandshake()
	if len(k.early) > 0 && !hs.forward(ws.Client, k.early) {
		return
	}
	if k.earlyEnded {
		hs.sourceEnded(ws.Client)
		if hs.ended {
			return
		}
	}
	if err := hs.c.loop.Register(hs.pod.fd, &hs.pod, &hs.pod.reg); err != nil {
		hs.fail()
		return
	}
	if st.Timed() {
		hs.timeout.Calls(hs.checkTimers)
		hs.c.loop.SetDeadline(&hs.timeout, st.NextDeadline())
	}
	if st.Closing() != nil {
		hs.startClose()
	}
	hs.c.flush()
}

// closeRequested is the engine's part of tunnel.Close.
func (hs *h2Stream) closeRequested() {
	hs.c.loop.Post(func() {
		hs.startClose()
		hs.c.flush()
	})
}

func (hs *h2Stream) checkTimers() {
	if hs.ended || hs.closing {
		return
	}
	if cr := hs.t.st.Expired(time.Now()); cr != nil {
		hs.t.close(cr)
		return
	}
	hs.c.loop.SetDeadline(&hs.timeout, hs.t.st.NextDeadline())
}

// ready acts on the pod socket's events.
func (hs *h2Stream) ready(_ ws.Side, ev evloop.Events) {
	if ev.Readable() {
		hs.pump()
	}
	if !hs.ended && ev.Writable() {
		hs.flushToPod()
	}
	hs.c.flush()
}

// pump reads the pod's socket while it has bytes and the stream's
// windows (and the client's reading) take them.
func (hs *h2Stream) pump() {
	st := hs.t.st
	d := st.Direction(ws.Pod)
	s := &hs.pod
	buf := hs.c.loop.Buf()
	for !hs.ended && d.Phase() != ws.Ended && s.readable && len(hs.toClient.out) == 0 {
		if len(hs.c.p.Output()) > 64<<10 {
			// What the stream sent goes to the socket first, for
			// congested to see what the client has not read yet.
			hs.c.flush()
			continue
		}
		if hs.c.congested() {
			if !hs.paused {
				hs.paused = true
				hs.c.paused = append(hs.c.paused, hs)
			}
			return
		}
		window := hs.c.p.Sendable(&hs.st)
		if window <= 0 {
			return // Writable follows
		}
		n, e := evloop.Read(s.fd, buf[:min(int64(len(buf)), window)])
		if e != 0 {
			switch e {
			case unix.EAGAIN:
				s.readable = false
			case unix.EINTR:
				continue
			default:
				hs.fail()
			}
			return
		}
		if n == 0 {
			s.readable = false
			hs.sourceEnded(ws.Pod)
			return
		}
		if n < len(buf) && int64(n) < window && !s.drain {
			s.readable = false
		}
		if d.Phase() == ws.Forwarding {
			st.Touch(hs.c.loop.Now())
		}
		if !hs.forward(ws.Pod, buf[:n]) {
			return
		}
	}
}

// forward gives p, from side from, to the tunnel's state and sends what
// goes on (and the Close frame, when it is time) to the other side.
func (hs *h2Stream) forward(from ws.Side, p []byte) bool {
	st := hs.t.st
	n, sendClose := st.Direction(from).Forward(p)
	st.Forwarded(from, n)
	if from == ws.Client {
		// What the tunnel drops is given back to the window at once.
		hs.c.p.Consumed(&hs.st, len(p)-n)
		hs.podOwed += int32(n)
	}
	if n > 0 && !hs.send(from, p[:n]) {
		return false
	}
	return !sendClose || hs.sendClose(from)
}

// send writes p to the other side of from: the pod's socket, or the
// stream.
func (hs *h2Stream) send(from ws.Side, p []byte) bool {
	if hs.ended {
		return false
	}
	if from == ws.Pod {
		o := &hs.toClient
		if len(o.out) > 0 {
			o.out = append(o.out, p...)
			return true
		}
		if n := hs.c.p.WriteData(&hs.st, p, false); n < len(p) {
			o.hold(p[n:])
		}
		return true
	}
	n, err := hs.podOut.send(hs.c.loop, &hs.pod, p)
	if err != nil {
		hs.fail()
		return false
	}
	hs.giveBack(n)
	return true
}

// giveBack returns to the stream's window the client's bytes among n
// written to the pod.
func (hs *h2Stream) giveBack(n int) {
	n = min(n, int(hs.podOwed))
	hs.podOwed -= int32(n)
	hs.c.p.Consumed(&hs.st, n)
}

// flushToClient sends what the stream's windows held back; it reports
// whether all of it went.
func (hs *h2Stream) flushToClient() bool {
	o := &hs.toClient
	if len(o.out) > 0 {
		n := hs.c.p.WriteData(&hs.st, o.out, false)
		if o.out = o.out[n:]; len(o.out) > 0 {
			return false
		}
		o.release()
	}
	if hs.endToClient {
		hs.endToClient = false
		hs.c.p.WriteData(&hs.st, nil, true)
	}
	return !hs.maybeEnd()
}

// flushToPod writes what the pod could not take before, and goes on
// reading the stream's bytes (given back to its window) once it is
// written.
func (hs *h2Stream) flushToPod() {
	o := &hs.podOut
	if len(o.out) == 0 {
		return
	}
	n, done, err := o.writeTo(hs.c.loop, &hs.pod)
	if err != nil {
		hs.fail()
		return
	}
	hs.giveBack(n)
	if done {
		hs.maybeEnd()
	}
}

// endStream ends the stream toward the other side of from once what it
// holds for it is written.
func (hs *h2Stream) endStream(from ws.Side) {
	if from == ws.Pod {
		if len(hs.toClient.out) > 0 {
			hs.endToClient = true
			return
		}
		hs.c.p.WriteData(&hs.st, nil, true)
		return
	}
	if o := &hs.podOut; len(o.out) > 0 {
		o.shutAfter = true
		return
	}
	_ = evloop.ShutdownWrite(hs.pod.fd)
}

// sourceEnded takes the end of side from's stream.
func (hs *h2Stream) sourceEnded(from ws.Side) {
	endDst, failed := hs.t.st.Direction(from).SourceEnded()
	if failed {
		hs.fail()
		return
	}
	if endDst {
		hs.t.st.SourceEnded(from)
		hs.endStream(from)
		if from == ws.Pod {
			// The pod is done: a client that does not end its side of
			// the stream in turn (a websocket's close handshake is over
			// by now) has its stream reset, as a TCP client's connection
			// is closed.
			hs.endWithin(ws.CloseGrace)
		}
	}
	hs.maybeEnd()
}

// endWithin ends the tunnel after d unless it ended by then.
func (hs *h2Stream) endWithin(d time.Duration) {
	if hs.graceArmed {
		return
	}
	hs.graceArmed = true
	hs.grace.Calls(func() {
		if !hs.ended {
			hs.fail()
			hs.c.flush()
		}
	})
	hs.c.loop.SetDeadline(&hs.grace, time.Now().Add(d))
}

// startClose applies the close request to each direction: the Close
// frame goes at its next frame boundary, within the close grace.
func (hs *h2Stream) startClose() {
	if !hs.started || hs.ended || hs.closing {
		return
	}
	hs.closing = true
	hs.c.loop.StopDeadline(&hs.timeout)
	hs.endWithin(ws.CloseGrace)
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if hs.t.st.Direction(side).Close() && !hs.sendClose(side) {
			return
		}
	}
}

// sendClose sends the Close frame across from side from, then the end of
// stream.
func (hs *h2Stream) sendClose(from ws.Side) bool {
	if !hs.send(from, hs.t.st.CloseFrame(from)) {
		return false
	}
	hs.endStream(from)
	return !hs.ended
}

// maybeEnd ends the tunnel once both directions are over and written.
func (hs *h2Stream) maybeEnd() bool {
	if hs.ended {
		return true
	}
	if len(hs.toClient.out) > 0 || hs.endToClient || len(hs.podOut.out) > 0 {
		return false
	}
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		if hs.t.st.Direction(side).Phase() != ws.Ended {
			return false
		}
	}
	hs.end()
	return true
}

// fail ends the tunnel at once (the stream is reset).
func (hs *h2Stream) fail() {
	if hs.ended {
		return
	}
	hs.t.st.SetEnded(ws.Failed)
	hs.end()
}

// end closes the pod's socket, releases the stream and reports the
// tunnel ended.
func (hs *h2Stream) end() {
	hs.ended = true
	if hs.pod.fd >= 0 {
		hs.c.loop.Forget(&hs.pod.reg)
		_ = evloop.Close(hs.pod.fd)
		hs.pod.fd = -1
	}
	hs.podOut.release()
	hs.toClient.release()
	for _, side := range [2]ws.Side{ws.Client, ws.Pod} {
		hs.t.st.DirectionDone(side)
	}
	hs.c.loop.StopDeadline(&hs.timeout)
	hs.c.loop.StopDeadline(&hs.grace)
	hs.t.end()
	hs.c.tunnelCount(-1)
	hs.c.release(hs)
	if hs.onDone != nil {
		if hs.doneOnLoop {
			hs.onDone()
			return
		}
		go hs.onDone()
	}
}
