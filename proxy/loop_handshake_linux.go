//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// Handshake phases on a loop.
const (
	hsHead    = iota // reading the client's request head
	hsConnect        // connecting to the pod
	hsAnswer         // the request goes to the pod; reading its answer
	hsLinger         // answered; reading the client's rest before closing
	hsOver           // the tunnel opened, or a goroutine took over, or closed
	hsProxy          // reading a trusted proxy's PROXY header
	hsTLS            // the TLS handshake, on a goroutine of its own
	hsAdmit          // the route's identity check, on a goroutine of its own
)

// lingerTime is how long a connection answered 431 waits for the
// client's end of stream (as net/http does), so that what the client
// still sends does not reset the connection before it reads the answer.
const lingerTime = 500 * time.Millisecond

// loopHandshake is a client connection on a loop before its tunnel
// opens.
type loopHandshake struct {
	s      *Server
	p      *loopPair
	phase  int
	remote string
	peer   netip.AddrPort // the connection's own peer
	client netip.AddrPort // the client: peer, or as a PROXY header says
	// head holds a head that took more than one read: the client's, then
	// the pod's answer.
	head []byte
	// deadline is when the current phase times out (expire).
	deadline evloop.Deadline

	r   *http.Request
	adm admitted // its slot is set once admitted
	// dialDue and answerDue bound the connect and the pod's answer.
	dialDue, answerDue time.Time
	// fdWait is the last wait for a descriptor for the pod's socket.
	fdWait time.Duration
	// clientPending are the bytes the client sent after its head; out is
	// what of the request the pod has not taken yet.
	clientPending []byte
	out           []byte

	// tls is the client's TLS connection, on a TLS listener.
	tls *loopTLS
}

// ready acts on the events of one of the handshake's sockets.
func (hs *loopHandshake) ready(side ws.Side, ev evloop.Events) {
	if side == ws.Client {
		switch {
		case hs.phase == hsHead && ev.Readable():
			hs.readHead()
		case hs.phase == hsProxy && ev.Readable():
			hs.readProxy()
		case hs.phase == hsLinger && ev.Readable():
			hs.linger()
		case hs.phase == hsTLS:
			hs.tls.signal()
		}
		// Otherwise, what the client sends waits for the tunnel.
		return
	}
	switch hs.phase {
	case hsConnect:
		if ev.Writable() {
			hs.connected()
		}
	case hsAnswer:
		if len(hs.out) > 0 && ev.Writable() {
			hs.writeRequest()
		}
		if hs.phase == hsAnswer && ev.Readable() {
			hs.readAnswer()
		}
	}
}

// headLimit is how much request head the gateway reads before answering
// 431, as net/http's server counts it.
func (s *Server) headLimit() int { return s.opts.MaxHeaderBytes + 4096 }

// readHead reads the client's request head until it is complete.
func (hs *loopHandshake) readHead() {
	switch data, end, r := hs.readHeadFrom(ws.Client, hs.s.headLimit()); r {
	case headComplete:
		hs.gotHead(data[:end], data[end:])
	case headTooLarge:
		hs.answerHead(refuse(http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"), true)
	case headFailed:
		// Gone before its head was complete: no answer, as net/http.
		hs.drop()
	}
}

// readProxy reads a trusted proxy's PROXY header, then the request head
// that follows it.
func (hs *loopHandshake) readProxy() {
	s := &hs.p.sock[ws.Client]
	buf := hs.p.loop.Buf()
	for s.readable {
		n, e := evloop.Read(s.fd, buf)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			s.readable = false
			return
		case e != 0 || n == 0:
			hs.drop()
			return
		}
		if n < len(buf) && !s.drain {
			s.readable = false
		}
		hs.head = append(hs.head, buf[:n]...)
		hn, client, err := proxyHeader(hs.head, hs.peer)
		var refused *proxyHeaderError
		switch {
		case errors.Is(err, errProxyIncomplete):
			continue
		case errors.As(err, &refused):
			hs.s.opts.Metrics.proxyRefused(refused.reason)
			hs.drop()
			return
		}
		hs.client = client
		hs.remote = client.String()
		hs.phase = hsHead
		rest := hs.head[hn:]
		hs.head = nil
		if hs.tls != nil {
			hs.beginTLS(rest)
			return
		}
		if len(rest) == 0 {
			continue
		}
		if len(rest) > hs.s.headLimit() {
			hs.answerHead(refuse(http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"), true)
			return
		}
		if end := headEnd(rest, 0); end >= 0 {
			hs.gotHead(rest[:end], rest[end:])
			return
		}
		hs.head = append(make([]byte, 0, 2*len(rest)), rest...)
		hs.readHead()
		return
	}
}

// headRead is what readHeadFrom found.
type headRead int

const (
	headWaiting  headRead = iota // the socket is drained, the head incomplete
	headComplete                 // the head is in
	headTooLarge                 // the limit is read, and the head is incomplete
	headFailed                   // the peer ended its stream or failed first
)

// readHeadFrom reads a head from side's socket, at most limit bytes in
// all. With headComplete, data[:end] is the head and data[end:] what
// followed it; data is the loop's buffer, or hs.head for a head that took
// more than one read.
func (hs *loopHandshake) readHeadFrom(side ws.Side, limit int) (data []byte, end int, r headRead) {
	s := &hs.p.sock[side]
	buf := hs.p.loop.Buf()
	for s.readable {
		room := limit - len(hs.head)
		if room <= 0 {
			return nil, 0, headTooLarge
		}
		want := min(room, len(buf))
		var n int
		if side == ws.Client && hs.tls != nil {
			// A TLS read returns a record at most: a short one says
			// nothing of what is left.
			var err error
			n, err = readTLS(hs.tls.conn, buf[:want])
			switch {
			case errors.Is(err, errWouldBlock):
				s.readable = false
				return nil, 0, headWaiting
			case err != nil:
				return nil, 0, headFailed
			case n == 0:
				continue
			}
		} else {
			var e syscall.Errno
			n, e = evloop.Read(s.fd, buf[:want])
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				s.readable = false
				return nil, 0, headWaiting
			case e != 0 || n == 0:
				return nil, 0, headFailed
			}
			if n < want && !s.drain {
				s.readable = false
			}
		}
		from := max(len(hs.head)-2, 0)
		data = buf[:n]
		if len(hs.head) > 0 {
			hs.head = append(hs.head, data...)
			data = hs.head
		}
		if end := headEnd(data, from); end >= 0 {
			return data, end, headComplete
		}
		if len(hs.head) == 0 {
			hs.head = append(make([]byte, 0, 2*n), data...)
		}
	}
	return nil, 0, headWaiting
}

// gotHead decides the handshake once the client's head is in.
func (hs *loopHandshake) gotHead(head, pending []byte) {
	s := hs.s
	delete(s.loops.heads[hs.p.loop.ID()], hs)
	r, a := parseRequestHead(head)
	if a != nil {
		if s.opts.ProxyProtocol && !s.trustedProxy(hs.peer.Addr()) {
			if yes, _ := proxySignature(append(head[:len(head):len(head)], pending...)); yes {
				// A PROXY header from a peer that is not a trusted
				// proxy: closed without an answer, as on TLS.
				s.opts.Metrics.proxyRefused(proxyUntrusted)
				hs.drop()
				return
			}
		}
		hs.answerHead(a, false)
		return
	}
	r.RemoteAddr = hs.remote
	if hs.tls != nil {
		r.TLS = hs.tls.state
	}
	hs.r = r
	hs.head = nil
	m, a := s.match(r)
	if a != nil {
		hs.reply(a)
		return
	}
	if len(pending) > 0 {
		hs.clientPending = append([]byte(nil), pending...)
	}
	if m.route.Auth != nil {
		// Checking who is asking may wait for the route's keys, and
		// forward auth asks a service: on a goroutine, while the sockets
		// stay on the loop.
		hs.p.loop.StopDeadline(&hs.deadline)
		hs.phase = hsAdmit
		l := hs.p.loop
		go func() {
			adm, a := s.admitMatched(r, m)
			l.Post(func() { hs.admitted(adm, a) })
		}()
		return
	}
	adm, a := s.admitMatched(r, m)
	hs.admitted(adm, a)
}

// admitted goes on with the handshake once it is decided: refused, or
// on to the pod.
func (hs *loopHandshake) admitted(adm admitted, a *answer) {
	s, r := hs.s, hs.r
	if a != nil {
		hs.reply(a)
		return
	}
	hs.adm = adm
	if !s.loopDial {
		pending := hs.clientPending
		hs.handOff(func(client, _ net.Conn) {
			s.dialPod(hs.connClient(client, pending), r, adm)
		})
		return
	}
	hs.connect()
}

// connClient is the client, handed over to a goroutine.
func (hs *loopHandshake) connClient(conn net.Conn, pending []byte) connClient {
	return connClient{conn: conn, pending: pending, answerDue: time.Now().Add(hs.s.opts.ReadHeaderTimeout)}
}

// reply answers a handshake that was parsed, from the loop, and closes
// the connection.
func (hs *loopHandshake) reply(a *answer) {
	s := hs.s
	s.opts.Metrics.handshake(a.route, a.status)
	s.countRefusal(hs.r, a)
	if !s.quietTunnels() {
		// Off the loop: the access log may write to a slow pipe.
		r := hs.r
		go s.logRefusal(r, a.route, a.status, a.text)
	}
	hs.answerHead(a, false)
}

// answerHead writes a from the loop and closes the connection; with
// linger, the connection waits for the client's end of stream first
// (see lingerTime). A new connection's empty send buffer takes an answer
// whole; a client that does not read gets what fits.
func (hs *loopHandshake) answerHead(a *answer, linger bool) {
	c := &hs.p.sock[ws.Client]
	if hs.tls != nil {
		_, _ = hs.tls.conn.Write(a.head())
		_ = hs.tls.conn.CloseWrite()
	} else {
		_, _ = evloop.WriteAll(c.fd, a.head())
	}
	if !linger {
		hs.drop()
		return
	}
	_ = evloop.ShutdownWrite(c.fd)
	hs.phase = hsLinger
	hs.setDue(time.Now().Add(lingerTime))
	hs.linger()
}

// linger reads and drops what the client still sends, until its end of
// stream.
func (hs *loopHandshake) linger() {
	c := &hs.p.sock[ws.Client]
	buf := hs.p.loop.Buf()
	for c.readable {
		n, e := evloop.Read(c.fd, buf)
		switch {
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			c.readable = false
		case e != 0 || n == 0:
			hs.drop()
			return
		}
	}
}

// connect starts a non-blocking connect to the pod. Without a descriptor
// for its socket, it tries again after a while, until the dial is due.
func (hs *loopHandshake) connect() {
	s := hs.s
	addr := hs.adm.backend.Addr
	now := time.Now()
	if hs.answerDue.IsZero() {
		hs.dialDue, hs.answerDue = s.handshakeDeadlines(hs.adm, now)
		if s.opts.dialHook != nil {
			if err := s.opts.dialHook(addr.String()); err != nil {
				hs.podFailed(err, podDialFailed)
				return
			}
		}
	}
	fd, err := evloop.Socket(addr)
	if err != nil {
		if outOfDescriptors(err) && now.Before(hs.dialDue) {
			hs.fdWait = descriptorBackoff(hs.fdWait)
			hs.phase = hsConnect
			at := now.Add(hs.fdWait)
			if at.After(hs.dialDue) {
				at = hs.dialDue
			}
			hs.setDue(at)
			return
		}
		hs.podFailed(os.NewSyscallError("socket", err), podDialFailed)
		return
	}
	_ = evloop.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if e := evloop.Connect(fd, addr); e != 0 && e != unix.EINPROGRESS {
		_ = evloop.Close(fd)
		hs.podFailed(os.NewSyscallError("connect", e), podDialFailed)
		return
	}
	// The request goes at once: a connect to a pod on the same node has
	// often completed by the time connect returns, and the socket is
	// then watched for its answer only. A socket still connecting takes
	// nothing (EAGAIN) and is watched for the connect's end; one whose
	// connect failed says why.
	pod := &hs.p.sock[ws.Pod]
	pod.fd = fd
	hs.out = hs.adm.podRequest(hs.r)
	n, err := pod.write(hs.p.loop, hs.out)
	if err != nil {
		hs.podFailed(os.NewSyscallError("connect", err), podDialFailed)
		return
	}
	hs.out = hs.out[n:]
	if err := hs.p.register(ws.Pod, hs); err != nil {
		hs.podFailed(os.NewSyscallError("epoll_ctl", err), podDialFailed)
		return
	}
	if n == 0 {
		hs.phase = hsConnect
		hs.setDue(hs.dialDue)
		return
	}
	hs.phase = hsAnswer
	hs.setDue(hs.answerDue)
}

// setDue moves the current phase's timeout.
func (hs *loopHandshake) setDue(at time.Time) {
	hs.p.loop.SetDeadline(&hs.deadline, at)
}

// expire runs when the current phase's deadline comes.
func (hs *loopHandshake) expire() {
	if hs.phase == hsOver {
		return
	}
	switch hs.phase {
	case hsHead, hsLinger, hsProxy:
		// As net/http: a client too slow with its head gets no answer.
		hs.drop()
	case hsTLS:
		// The handshake's goroutine reports back, then it is dropped.
		hs.tls.expire()
	case hsConnect:
		if hs.p.sock[ws.Pod].fd < 0 {
			// Waiting for a descriptor for the pod's socket.
			hs.connect()
			return
		}
		hs.podFailed(context.DeadlineExceeded, podDialFailed)
	case hsAnswer:
		hs.answerElsewhere()
	}
}

// shutDown ends the handshake when the gateway stops accepting, at once:
// a client whose request has come or may still come gets the 503 of the
// handshakes after it (a pod's socket already open is closed: a tunnel
// opened after the drain would hold the shutdown); a trusted proxy's
// connection that has not passed its PROXY header is closed.
func (hs *loopHandshake) shutDown() {
	switch hs.phase {
	case hsProxy:
		hs.drop()
	case hsTLS:
		hs.tls.expire()
	case hsHead:
		// A head in part, or none yet: what the client still sends is
		// read and dropped before the close (linger), not reset.
		hs.s.opts.Metrics.handshake(nil, http.StatusServiceUnavailable)
		hs.answerHead(shuttingDown(), true)
	case hsConnect, hsAnswer:
		// reply closes the pod's socket with the client's (drop).
		if hs.adm.slot != nil {
			hs.adm.slot.release()
			hs.adm.slot = nil
		}
		a := shuttingDown()
		a.route = hs.adm.route
		hs.reply(a)
	}
}

// podFailed answers for a pod that failed before answering, with text.
func (hs *loopHandshake) podFailed(err error, text string) {
	hs.adm.slot.release()
	hs.adm.slot = nil
	hs.reply(hs.s.podFailure(hs.adm, err, text))
}

// connected runs when the connect to the pod has completed or failed.
func (hs *loopHandshake) connected() {
	soErr, err := evloop.GetsockoptInt(hs.p.sock[ws.Pod].fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = syscall.Errno(soErr)
	}
	if err != nil {
		hs.podFailed(os.NewSyscallError("connect", err), podDialFailed)
		return
	}
	hs.phase = hsAnswer
	hs.setDue(hs.answerDue)
	hs.writeRequest()
}

// writeRequest sends the pod what it can take of the request.
func (hs *loopHandshake) writeRequest() {
	n, err := hs.p.sock[ws.Pod].write(hs.p.loop, hs.out)
	if err != nil {
		hs.podFailed(os.NewSyscallError("write", err), podWriteFailed)
		return
	}
	hs.out = hs.out[n:]
}

// readAnswer reads the pod's answer until its head is complete.
func (hs *loopHandshake) readAnswer() {
	switch data, end, r := hs.readHeadFrom(ws.Pod, hs.s.opts.MaxHeaderBytes); r {
	case headComplete:
		hs.gotAnswer(data, end)
	case headTooLarge, headFailed:
		// Handed over with what the pod sent: the shared path reads the
		// rest (the end of stream, the error, the bytes beyond the
		// limit) again and answers for it.
		hs.answerElsewhere()
	}
}

// gotAnswer opens the tunnel when the pod's answer is a valid 101; it
// hands any other answer over.
func (hs *loopHandshake) gotAnswer(answer []byte, end int) {
	s, r := hs.s, hs.r
	upgraded, ok := plainUpgrade(answer[:end], r)
	if !ok {
		//nolint:bodyclose // the body is closed in the parse function, before its reader goes back to the pool.
		resp, err := parseHead(answer[:end], func(br *bufio.Reader) (*http.Response, error) {
			resp, err := http.ReadResponse(br, r)
			if err == nil {
				// A 1xx answer has no body; any other is read again
				// elsewhere. The body reads from br: it is closed before
				// br goes back to its pool.
				_ = resp.Body.Close()
			}
			return resp, err
		})
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || checkUpgradeResponse(resp, r) != nil {
			if len(hs.head) == 0 {
				hs.head = append([]byte(nil), answer...)
			}
			hs.answerElsewhere()
			return
		}
		upgraded = upgradeHeader(resp)
	}
	var podPending []byte
	if end < len(answer) {
		podPending = append([]byte(nil), answer[end:]...)
	}
	hs.p.loop.StopDeadline(&hs.deadline)
	hs.phase = hsOver
	t := s.newTunnel(r, hs.adm, hs.clientPending, podPending)
	lt := &loopTunnel{t: t, p: hs.p}
	if hs.tls != nil {
		lt.tls = hs.tls.conn
		hs.tls.dc.loop = &loopIO{lt: lt}
	}
	t.carry(lt)
	if s.openTunnel(t) {
		lt.onDone, lt.doneOnLoop = func() { s.tunnelDone(t) }, s.quietTunnels()
	}
	lt.begin(upgraded)
}

// answerElsewhere hands the pod's answer (what was read of it, then the
// rest) to a goroutine, which relays it or answers for it.
func (hs *loopHandshake) answerElsewhere() {
	s, r, adm, answerDue := hs.s, hs.r, hs.adm, hs.answerDue
	read, pending := hs.head, hs.clientPending
	hs.handOff(func(client, pod net.Conn) {
		s.takeAnswer(hs.connClient(client, pending), r, adm, pod, io.MultiReader(bytes.NewReader(read), pod), answerDue)
	})
}

// handOff takes the handshake's sockets off the loop and finishes it with
// f on a goroutine of its own; pod is nil before a connect. f owns the
// slot, if any. When a socket cannot be taken over for lack of
// descriptors (each move takes one, for a moment), the client is
// answered 503 from here and the slot released.
func (hs *loopHandshake) handOff(f func(client, pod net.Conn)) {
	hs.p.loop.StopDeadline(&hs.deadline)
	pod, err := hs.take(ws.Pod)
	var client net.Conn
	if err == nil {
		client, err = hs.take(ws.Client)
	}
	if err == nil && hs.tls != nil {
		// The TLS connection goes on over the client's socket in Go's
		// poller.
		tc, ok := client.(*net.TCPConn)
		if !ok {
			_ = client.Close()
			if pod != nil {
				_ = pod.Close()
			}
			hs.drop()
			return
		}
		hs.tls.dc.TCPConn, hs.tls.dc.loop = tc, nil
		client = hs.tls.conn
	}
	if err == nil {
		hs.phase = hsOver
		go f(client, pod)
		return
	}
	if pod != nil {
		_ = pod.Close()
	}
	text := msgOutOfDescriptors
	if !outOfDescriptors(err) {
		text = "the gateway could not take the connection"
	}
	a := refuse(http.StatusServiceUnavailable, text)
	a.header = hs.s.retryAfter()
	a.route = hs.adm.route
	if hs.adm.slot != nil {
		hs.adm.slot.release()
		hs.adm.slot = nil
	}
	hs.reply(a)
}

// take moves side's socket from the loop into a net.Conn in Go's poller;
// (nil, nil) when there is none. When that fails, the socket stays open
// on the loop's side, out of its epoll set.
func (hs *loopHandshake) take(side ws.Side) (net.Conn, error) {
	s := &hs.p.sock[side]
	if s.fd < 0 {
		return nil, nil
	}
	// The descriptor is duplicated below: closing this one would leave
	// the socket in the loop's set.
	hs.p.loop.Detach(s.fd, &s.reg)
	// net.FileConn duplicates the descriptor of the file it is given,
	// and closing the file closes that: the file is a duplicate, and the
	// loop's descriptor is closed only once the connection is made, so
	// that an answer for lack of descriptors still reaches this socket
	// (and not another that took its number).
	nfd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(nfd), "")
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	_ = evloop.Close(s.fd)
	s.fd = -1
	return c, nil
}

// drop closes the handshake's sockets, without an answer if none was
// written, and releases its slot.
func (hs *loopHandshake) drop() {
	hs.phase = hsOver
	hs.p.loop.StopDeadline(&hs.deadline)
	delete(hs.s.loops.heads[hs.p.loop.ID()], hs)
	hs.p.closeAll()
	if hs.adm.slot != nil {
		hs.adm.slot.release()
		hs.adm.slot = nil
	}
}
