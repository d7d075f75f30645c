//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Plain TCP listeners on the event loops.
//
// Serve hands a TCP listener to the loops: every loop watches the
// listening socket (EPOLLEXCLUSIVE: one loop wakes per arrival) and
// accepts, reads the request head, decides the handshake with the code
// net/http's path uses (http.ReadRequest, net/http's server rules on the
// parsed head, admit), connects to the pod without blocking, sends the
// request and, on a valid 101 answer, writes the 101 to the client and
// carries the tunnel on the same loop: no goroutine and no descriptor in
// Go's poller at any point.
//
// Only that path runs on the loop. Everything else (a refusal, an answer
// that is not a valid 101, a pod that fails or is slow, a dialer other
// than the default) is handed to a goroutine with the connections, where
// the code shared with net/http's path finishes the handshake.

// evListener is a listening socket served by the loops.
type evListener struct {
	srv *Server
	fd  int
	// slot is the listener's place in each loop's listeners (by loop id),
	// -1 while it is not in that loop's epoll set; delay is each loop's
	// backoff after accept failed for lack of descriptors or memory.
	// Each loop touches its own entries only.
	slot  []int32
	delay []time.Duration
	// left counts the loops that still watch the socket; the last one to
	// let go closes it.
	left   atomic.Int32
	failed chan error
}

// Keepalive of accepted client connections, as net.Listen sets it: the
// listening socket carries the options, and Linux copies them into every
// connection it accepts.
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)

// serveOnLoops serves l on the event loops until Shutdown; ok is false,
// with nothing changed, when l cannot be served there (not TCP, no loops,
// the tests' goroutine engine). On success l's own descriptor is closed:
// the socket lives on in the loops.
func (s *Server) serveOnLoops(l net.Listener) (ok bool, err error) {
	tl, isTCP := l.(*net.TCPListener)
	if !isTCP || s.opts.goroutineTunnels {
		return false, nil
	}
	loops := startEvLoops()
	if len(loops) == 0 {
		return false, nil
	}
	fd, dup := dupSocket(tl)
	if !dup {
		return false, nil
	}
	for _, o := range [...][3]int{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
	} {
		if unix.SetsockoptInt(fd, o[0], o[1], o[2]) != nil {
			_ = unix.Close(fd)
			return false, nil
		}
	}
	ln := &evListener{
		srv: s, fd: fd, slot: make([]int32, len(loops)), delay: make([]time.Duration, len(loops)),
		failed: make(chan error, 1),
	}
	for i := range ln.slot {
		ln.slot[i] = -1
	}
	ln.left.Store(int32(len(loops)))
	s.lnMu.Lock()
	if s.lnClosed {
		s.lnMu.Unlock()
		_ = unix.Close(fd)
		return true, nil
	}
	s.lns = append(s.lns, ln)
	s.lnMu.Unlock()
	// Go's descriptor leaves its poller, which would otherwise wake for
	// every connection too.
	_ = l.Close()
	for _, lp := range loops {
		lp.post(func() { lp.watch(ln) })
	}
	select {
	case <-s.stop:
		return true, nil
	case err := <-ln.failed:
		ln.stop()
		return true, err
	}
}

// stopLoopListeners stops accepting on the loops, and closes the
// connections whose request head has not arrived.
func (s *Server) stopLoopListeners() {
	s.lnMu.Lock()
	s.lnClosed = true
	lns := s.lns
	s.lns = nil
	s.lnMu.Unlock()
	if len(lns) == 0 {
		return
	}
	for _, ln := range lns {
		ln.stop()
	}
	for _, lp := range startEvLoops() {
		lp.post(func() {
			for et := range lp.handshakes {
				if hs := et.hs; hs != nil && hs.s == s && hs.state == hsHead {
					hs.abort(et)
				}
			}
		})
	}
}

// stop takes the socket out of every loop and closes it.
func (ln *evListener) stop() {
	for _, lp := range startEvLoops() {
		lp.post(func() {
			if ln.slot[lp.id] == -2 {
				return // stopped already
			}
			lp.unwatch(ln)
			ln.slot[lp.id] = -2
			if ln.left.Add(-1) == 0 {
				_ = unix.Close(ln.fd)
			}
		})
	}
}

// watch adds a listening socket to the loop's epoll set.
func (l *evLoop) watch(ln *evListener) {
	if ln.slot[l.id] != -1 {
		return
	}
	idx := -1
	for i, x := range l.lns {
		if x == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = len(l.lns)
		l.lns = append(l.lns, nil)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(-2 - idx)}
	if err := sysEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		select {
		case ln.failed <- err:
		default:
		}
		return
	}
	l.lns[idx] = ln
	ln.slot[l.id] = int32(idx)
}

// unwatch takes a listening socket out of the loop's epoll set.
func (l *evLoop) unwatch(ln *evListener) {
	idx := ln.slot[l.id]
	if idx < 0 {
		return
	}
	_ = sysEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
	l.lns[idx] = nil
	ln.slot[l.id] = -1
}

// maxAcceptBatch bounds the connections a loop accepts per wake-up, so
// that a flood of them does not starve the tunnels it carries.
const maxAcceptBatch = 64

// accept takes the connections waiting on a listening socket.
func (l *evLoop) accept(ln *evListener) {
	for range maxAcceptBatch {
		fd, peer, err := accept4(ln.fd)
		switch err {
		case 0:
			ln.delay[l.id] = 0
			ln.srv.startHandshake(l, fd, peer)
			continue
		case unix.EAGAIN:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// As net/http does: back off, 5 ms doubling up to 1 s. The
			// socket leaves this loop's set meanwhile, or it would wake
			// the loop at once again.
			d := descriptorBackoff(ln.delay[l.id])
			ln.delay[l.id] = d
			ln.srv.opts.Log.V(1).Info("accept failed; retrying", "err", err.Error(), "in", d.String())
			l.unwatch(ln)
			time.AfterFunc(d, func() {
				l.post(func() {
					if ln.slot[l.id] == -1 {
						l.watch(ln)
					}
				})
			})
		default:
			select {
			case ln.failed <- os.NewSyscallError("accept4", err):
			default:
			}
		}
		return
	}
	// More may be waiting. The listening socket stays ready in the loop's
	// epoll set, but that wakes nobody (the loop waits for new events in
	// Go's poller): a task wakes the loop to go on.
	l.post(func() {
		if ln.slot[l.id] >= 0 {
			l.accept(ln)
		}
	})
}

// Handshake states on a loop.
const (
	hsHead    = iota // reading the client's request head
	hsConnect        // connecting to the pod
	hsAnswer         // the request goes to the pod; reading its answer
)

// evHandshake is a client connection on a loop before its tunnel opens.
type evHandshake struct {
	s      *Server
	state  int
	remote string
	// head holds a head that took more than one read: the client's, then
	// the pod's answer.
	head  []byte
	timer *time.Timer
	due   int64 // when the current phase times out, unix nanoseconds

	r        *http.Request
	tgt      target
	key      backendKey
	reserved bool
	deadline time.Time // of the whole handshake with the pod
	dialDue  time.Time // of the connect
	// fdWait is the last wait for a descriptor for the pod's socket.
	fdWait time.Duration
	// clientPending are the bytes the client sent after its head; out
	// is what of the request the pod has not taken yet.
	clientPending []byte
	out           []byte
	// readable and drain, by side, as evDir keeps them for the tunnel.
	readable, drain [2]bool
}

// startHandshake takes an accepted connection onto the loop.
func (s *Server) startHandshake(l *evLoop, fd int, peer netip.AddrPort) {
	et := &evTunnel{loop: l}
	hs := &evHandshake{s: s, remote: peer.String()}
	et.hs = hs
	et.end[0] = evEnd{fd: fd, slot: -1, side: 0, t: et}
	et.end[1] = evEnd{fd: -1, slot: -1, side: 1, t: et}
	if err := l.register(&et.end[0]); err != nil {
		_ = sysClose(fd)
		return
	}
	l.handshakes[et] = struct{}{}
	hs.due = time.Now().Add(s.opts.ReadHeaderTimeout).UnixNano()
	hs.timer = time.AfterFunc(s.opts.ReadHeaderTimeout, func() { l.post(func() { hs.expire(et) }) })
}

// handle acts on the epoll events of one of the handshake's sockets.
func (hs *evHandshake) handle(et *evTunnel, side int, events uint32) {
	in := events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	if in {
		hs.readable[side] = true
		if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			hs.drain[side] = true
		}
	}
	if side == 0 {
		if hs.state == hsHead && in {
			hs.readHead(et)
		}
		// Later, what the client sends waits for the tunnel.
		return
	}
	switch hs.state {
	case hsConnect:
		if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			hs.connected(et)
		}
	case hsAnswer:
		if len(hs.out) > 0 && events&unix.EPOLLOUT != 0 {
			hs.writeRequest(et)
		}
		if et.hs == hs && in {
			hs.readAnswer(et)
		}
	}
}

// headLimit is how much request head the gateway reads before answering
// 431, as net/http's server counts it.
func (s *Server) headLimit() int { return s.opts.MaxHeaderBytes + 4096 }

// readHead reads the client's request head until it is complete.
func (hs *evHandshake) readHead(et *evTunnel) {
	switch data, end, r := hs.readHeadFrom(et, 0, hs.s.headLimit()); r {
	case headComplete:
		hs.gotHead(et, data[:end], data[end:])
	case headTooLarge:
		hs.refuseHead(et, headError(http.StatusRequestHeaderFieldsTooLarge, ""), true)
	case headFailed:
		// Gone before its head was complete: no answer, as net/http.
		hs.abort(et)
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

// readHeadFrom reads a head from the socket on side, at most limit bytes
// in all. With headComplete, data[:end] is the head and data[end:] what
// followed it; data is the loop's buffer, or hs.head for a head that took
// more than one read.
func (hs *evHandshake) readHeadFrom(et *evTunnel, side, limit int) (data []byte, end int, r headRead) {
	l := et.loop
	for hs.readable[side] {
		room := limit - len(hs.head)
		if room <= 0 {
			return nil, 0, headTooLarge
		}
		want := min(room, len(l.buf))
		n, e := sysRead(et.end[side].fd, l.buf[:want])
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			hs.readable[side] = false
			return nil, 0, headWaiting
		case e != 0 || n == 0:
			return nil, 0, headFailed
		}
		if n < want && !hs.drain[side] {
			hs.readable[side] = false
		}
		from := max(len(hs.head)-2, 0)
		data = l.buf[:n]
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

// headEnd returns the length of the head in b (up to and including the
// empty line that ends it, CRLF or a bare LF as net/textproto reads
// lines), or -1 while it is incomplete. The search starts at from.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j + 1
		switch {
		case k < len(b) && b[k] == '\n':
			return k + 1
		case k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n':
			return k + 2
		}
		i = k
	}
}

// headReader reads a head that is already in memory.
type headReader struct {
	src bytes.Reader
	br  *bufio.Reader
}

var headReaders = sync.Pool{New: func() any {
	h := &headReader{}
	h.br = bufio.NewReaderSize(&h.src, 4096)
	return h
}}

// parseHead runs parse over a complete head in memory. The reader goes
// back to a pool: what parse returns must not read from it later.
func parseHead[T any](head []byte, parse func(*bufio.Reader) (T, error)) (T, error) {
	h := headReaders.Get().(*headReader)
	h.src.Reset(head)
	h.br.Reset(&h.src)
	v, err := parse(h.br)
	h.src.Reset(nil)
	h.br.Reset(&h.src)
	headReaders.Put(h)
	return v, err
}

// parseRequestHead parses a complete request head as net/http's server
// does, or returns its answer.
func parseRequestHead(head []byte) (*http.Request, []byte) {
	r, err := parseHead(head, func(br *bufio.Reader) (*http.Request, error) {
		r, err := http.ReadRequest(br)
		if err == nil {
			// A body is refused (checkHandshake), never read; it reads
			// from br, which goes back to its pool.
			r.Body = http.NoBody
		}
		return r, err
	})
	if err != nil {
		if strings.HasPrefix(err.Error(), "unsupported transfer encoding") {
			const h = "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
			return nil, []byte(h + "Unsupported transfer encoding")
		}
		return nil, headError(http.StatusBadRequest, "")
	}
	if r.Method == "PRI" && r.RequestURI == "*" && r.ProtoMajor == 2 && r.ProtoMinor == 0 {
		// HTTP/2's preface: net/http hands it to the handler, which
		// refuses it for its method.
		return r, nil
	}
	// http.ReadRequest took the Host field into r.Host, unless the
	// request-target named a host too or the field was empty: then the
	// field's own values are read again, as net/http's server sees them.
	hosts := []string{r.Host}
	if r.Host == "" || r.URL.Host != "" {
		hosts = hostFields(head)
	}
	return r, checkRequestHead(r, hosts)
}

// hostFields returns the values of a parsed head's Host fields.
func hostFields(head []byte) []string {
	_, fields, _ := bytes.Cut(head, []byte("\n"))
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(fields))).ReadMIMEHeader()
	if err != nil {
		return nil
	}
	return h["Host"]
}

// gotHead decides the handshake once the client's head is in.
func (hs *evHandshake) gotHead(et *evTunnel, head, pending []byte) {
	s := hs.s
	r, answer := parseRequestHead(head)
	if answer != nil {
		hs.refuseHead(et, answer, false)
		return
	}
	r.RemoteAddr = hs.remote
	hs.head = nil
	tgt, key, rf := s.admit(r)
	if rf != nil {
		hs.handOff(et, func(client, _ net.Conn) {
			_ = client.SetWriteDeadline(time.Now().Add(s.opts.ReadHeaderTimeout))
			w := newConnResponse(client, nil)
			s.refuse(w, r, rf)
			w.finish()
		})
		return
	}
	hs.r, hs.tgt, hs.key, hs.reserved = r, tgt, key, true
	if len(pending) > 0 {
		hs.clientPending = append([]byte(nil), pending...)
	}
	if !s.loopDial {
		pending := hs.clientPending
		hs.handOff(et, func(client, _ net.Conn) {
			w := newConnResponse(client, pending)
			s.forward(w, r, tgt, key)
			w.finish()
		})
		return
	}
	hs.connect(et)
}

// refuseHead answers a request head that cannot be taken and closes the
// connection; linger waits for the client's end of stream first (up to
// half a second, as net/http does after a 431) so that what the client
// still sends does not reset the connection before it reads the answer.
func (hs *evHandshake) refuseHead(et *evTunnel, answer []byte, linger bool) {
	hs.handOff(et, func(client, _ net.Conn) {
		_ = client.SetWriteDeadline(time.Now().Add(hs.s.opts.ReadHeaderTimeout))
		_, _ = client.Write(answer)
		if linger {
			closeWrite(client)
			time.Sleep(500 * time.Millisecond)
		}
		_ = client.Close()
	})
}

// connect starts a non-blocking connect to the pod. Without a descriptor
// for its socket, it tries again after a while, until the dial is due.
func (hs *evHandshake) connect(et *evTunnel) {
	s := hs.s
	addr := hs.tgt.backend.Addr
	now := time.Now()
	if hs.deadline.IsZero() {
		hsTimeout := s.handshakeTimeout(hs.tgt.route)
		hs.deadline = now.Add(hsTimeout)
		hs.dialDue = now.Add(min(hsTimeout, s.opts.DialTimeout))
		if s.opts.dialHook != nil {
			if err := s.opts.dialHook(addr.String()); err != nil {
				hs.dialFailed(et, err)
				return
			}
		}
	}
	fd, err := sysSocket(addr)
	if err != nil {
		if outOfDescriptors(err) && now.Before(hs.dialDue) {
			hs.fdWait = descriptorBackoff(hs.fdWait)
			hs.state = hsConnect
			at := now.Add(hs.fdWait)
			if at.After(hs.dialDue) {
				at = hs.dialDue
			}
			hs.setDue(at)
			return
		}
		hs.dialFailed(et, os.NewSyscallError("socket", err))
		return
	}
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if e := sysConnect(fd, addr); e != 0 && e != unix.EINPROGRESS {
		_ = sysClose(fd)
		hs.dialFailed(et, os.NewSyscallError("connect", e))
		return
	}
	et.end[1].fd = fd
	if err := et.loop.register(&et.end[1]); err != nil {
		_ = sysClose(fd)
		et.end[1].fd = -1
		hs.dialFailed(et, os.NewSyscallError("epoll_ctl", err))
		return
	}
	hs.state = hsConnect
	hs.setDue(hs.dialDue)
}

// setDue moves the current phase's timeout.
func (hs *evHandshake) setDue(at time.Time) {
	hs.due = at.UnixNano()
	hs.timer.Reset(time.Until(at))
}

// expire runs when the handshake's timer fires.
func (hs *evHandshake) expire(et *evTunnel) {
	if et.hs != hs {
		return
	}
	if now := time.Now().UnixNano(); now < hs.due {
		hs.timer.Reset(time.Duration(hs.due - now))
		return
	}
	switch hs.state {
	case hsHead:
		// As net/http: a client too slow with its head gets no answer.
		hs.abort(et)
	case hsConnect:
		if et.end[1].fd < 0 {
			// Waiting for a descriptor for the pod's socket.
			hs.connect(et)
			return
		}
		hs.dialFailed(et, context.DeadlineExceeded)
	case hsAnswer:
		hs.answerElsewhere(et)
	}
}

// dialFailed answers 502, or 504 for a timeout, for a pod that could not
// be connected.
func (hs *evHandshake) dialFailed(et *evTunnel, err error) { hs.podFailed(et, err, podDialFailed) }

// podFailed answers for a pod that failed before answering, with msg.
func (hs *evHandshake) podFailed(et *evTunnel, err error, msg string) {
	s, r, tgt, key := hs.s, hs.r, hs.tgt, hs.key
	hs.handOff(et, func(client, pod net.Conn) {
		if pod != nil {
			_ = pod.Close()
		}
		s.reg.release(key)
		_ = client.SetWriteDeadline(time.Now().Add(s.opts.ReadHeaderTimeout))
		w := newConnResponse(client, nil)
		s.refusePod(w, r, tgt, err, msg)
		w.finish()
	})
}

// connected runs when the connect to the pod has completed or failed.
func (hs *evHandshake) connected(et *evTunnel) {
	soErr, err := sysGetsockoptInt(et.end[1].fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = syscall.Errno(soErr)
	}
	if err != nil {
		hs.dialFailed(et, os.NewSyscallError("connect", err))
		return
	}
	hs.state = hsAnswer
	hs.setDue(hs.deadline)
	hs.out = podRequest(hs.r, hs.tgt.uri)
	hs.writeRequest(et)
}

// writeRequest sends the pod what it can take of the request.
func (hs *evHandshake) writeRequest(et *evTunnel) {
	n, err := writeAll(et.end[1].fd, hs.out)
	if err != nil {
		hs.podFailed(et, os.NewSyscallError("write", err), podWriteFailed)
		return
	}
	hs.out = hs.out[n:]
}

// readAnswer reads the pod's answer until its head is complete.
func (hs *evHandshake) readAnswer(et *evTunnel) {
	switch data, end, r := hs.readHeadFrom(et, 1, hs.s.opts.MaxHeaderBytes); r {
	case headComplete:
		hs.gotAnswer(et, data, end)
	case headTooLarge, headFailed:
		// Handed over with what the pod sent: the shared path reads the
		// rest (the end of stream, the error, the bytes beyond the
		// limit) again and answers for it.
		hs.answerElsewhere(et)
	}
}

// gotAnswer opens the tunnel when the pod's answer is a valid 101; it
// hands any other answer over.
func (hs *evHandshake) gotAnswer(et *evTunnel, answer []byte, end int) {
	s, r := hs.s, hs.r
	//nolint:bodyclose // the body is closed in the parse function, before its reader goes back to the pool.
	resp, err := parseHead(answer[:end], func(br *bufio.Reader) (*http.Response, error) {
		resp, err := http.ReadResponse(br, r)
		if err == nil {
			// A 1xx answer has no body; any other is read again
			// elsewhere. The body reads from br: it is closed before br
			// goes back to its pool.
			_ = resp.Body.Close()
		}
		return resp, err
	})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || checkUpgradeResponse(resp, r) != nil {
		if len(hs.head) == 0 {
			hs.head = append([]byte(nil), answer...)
		}
		hs.answerElsewhere(et)
		return
	}
	var podPending []byte
	if end < len(answer) {
		podPending = append([]byte(nil), answer[end:]...)
	}
	l := et.loop
	hs.timer.Stop()
	delete(l.handshakes, et)
	et.hs = nil

	t := s.newTunnel(r, hs.tgt, hs.key, nil, nil)
	t.clientPending, t.podPending = hs.clientPending, podPending
	t.ev.Store(et)
	et.t = t
	et.dir[0].fl = &t.c2p
	et.dir[1].fl = &t.p2c
	for i := range et.dir {
		et.dir[i].readable, et.dir[i].drain = hs.readable[i], hs.drain[i]
	}
	if s.openTunnel(t) {
		et.onDone, et.doneOnLoop = func() { s.tunnelDone(t) }, s.quietTunnels()
	} else {
		s.reg.release(hs.key)
	}
	et.begin(upgradeHeader(resp))
}

// answerElsewhere hands the pod's answer (what was read of it, then the
// rest) to the shared path, which relays it or answers for it.
func (hs *evHandshake) answerElsewhere(et *evTunnel) {
	s, r, tgt, key, deadline := hs.s, hs.r, hs.tgt, hs.key, hs.deadline
	read, pending := hs.head, hs.clientPending
	hs.handOff(et, func(client, pod net.Conn) {
		if pod == nil {
			s.reg.release(key)
			_ = client.Close()
			return
		}
		w := newConnResponse(client, pending)
		s.forwardAnswer(w, r, tgt, key, pod, io.MultiReader(bytes.NewReader(read), pod), deadline)
		w.finish()
	})
}

// handOff takes the handshake's sockets off the loop and finishes it with
// f on a goroutine of its own; pod is nil before a connect. Once f runs,
// it owns the slot reserved for the pod, if any. When a socket cannot be
// taken over for lack of descriptors (each move takes one, for a moment),
// the client is answered 503 from here and the slot released.
func (hs *evHandshake) handOff(et *evTunnel, f func(client, pod net.Conn)) {
	l := et.loop
	hs.timer.Stop()
	delete(l.handshakes, et)
	et.hs = nil
	pod, err := takeConn(l, &et.end[1])
	var client net.Conn
	if err == nil {
		client, err = takeConn(l, &et.end[0])
	}
	if err == nil {
		go f(client, pod)
		return
	}
	if pod != nil {
		_ = pod.Close()
	}
	if e := &et.end[1]; e.fd >= 0 {
		_ = sysClose(e.fd)
		e.fd = -1
	}
	if e := &et.end[0]; e.fd >= 0 {
		l.detach(e)
		hs.refuseRaw(e.fd, err)
		_ = sysClose(e.fd)
		e.fd = -1
	}
	if hs.reserved {
		hs.s.reg.release(hs.key)
	}
}

// refuseRaw answers 503 on a client's socket that stays on the loop: one
// write, which a new connection's empty send buffer takes whole.
func (hs *evHandshake) refuseRaw(fd int, err error) {
	s := hs.s
	msg := msgOutOfDescriptors
	if !outOfDescriptors(err) {
		msg = "the gateway could not take the connection"
	}
	retry := s.retryAfter().Get("Retry-After")
	answer := fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"+
		"Content-Length: %d\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: %s\r\n"+
		"X-Content-Type-Options: nosniff\r\n\r\n%s\n", len(msg)+1, retry, msg)
	_, _ = sysWrite(fd, answer)
	if hs.r != nil {
		s.opts.Metrics.handshake(hs.tgt.route, http.StatusServiceUnavailable)
		s.logRefusal(hs.r, hs.tgt.route, http.StatusServiceUnavailable, msg)
	}
}

// takeConn moves a socket from the loop into a net.Conn in Go's poller;
// (nil, nil) when there is none. When that fails, the socket is out of the
// loop's set but stays open, for the caller to close.
func takeConn(l *evLoop, e *evEnd) (net.Conn, error) {
	if e.fd < 0 {
		return nil, nil
	}
	// The descriptor is duplicated below: closing this one would leave
	// the socket in the loop's set.
	l.detach(e)
	// net.FileConn duplicates the descriptor it is given: duplicating it
	// first keeps the socket if there is no descriptor to spare.
	nfd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	_ = sysClose(e.fd)
	e.fd = -1
	f := os.NewFile(uintptr(nfd), "")
	c, err := net.FileConn(f)
	_ = f.Close()
	return c, err
}

// detach takes a socket out of the loop's epoll set and its slots, and
// leaves its descriptor open.
func (l *evLoop) detach(e *evEnd) {
	if e.slot >= 0 {
		_ = sysEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
		l.unregister(e)
	}
}

// abort closes the handshake's sockets without an answer.
func (hs *evHandshake) abort(et *evTunnel) {
	l := et.loop
	hs.timer.Stop()
	delete(l.handshakes, et)
	et.hs = nil
	for i := range et.end {
		if e := &et.end[i]; e.fd >= 0 {
			l.unregister(e)
			_ = sysClose(e.fd)
			e.fd = -1
		}
	}
	if hs.reserved {
		hs.s.reg.release(hs.key)
	}
}
