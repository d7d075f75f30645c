//go:build linux

package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// The event-loop transport: Serve hands a TCP listener to the loops,
// which accept, read each request head, decide it with admit, connect to
// the pod without blocking, send the request and, on a valid 101, write
// the 101 to the client and carry the tunnel on the same loop: no
// goroutine and no descriptor in Go's poller at any point. The rare rest
// (an answer from the pod that is not a valid 101, a dialer other than
// the default) is handed to a goroutine with the connections
// (loop_handshake_linux.go).

// loopServer is a Server's state on the loops.
type loopServer struct {
	mu     sync.Mutex
	lns    []*evloop.Listener
	closed bool // Shutdown stopped the listeners
	// heads are, by loop, the handshakes whose request head is being
	// read; each loop touches its own entry only.
	heads []map[*loopHandshake]struct{}
}

// Keepalive of accepted client connections, as net.Listen sets it: the
// listening socket carries the options, and Linux copies them into every
// connection it accepts.
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)

// deferAccept has l's socket accept connections once their first bytes
// are in, when l is TCP (TCP_DEFER_ACCEPT): a client's request or TLS
// ClientHello usually comes right after its handshake's last packet, and
// accepting the connection with its first bytes takes one wake-up of the
// gateway, not two. A client that sends nothing is accepted after about
// AcceptDeferral (the kernel counts it in retransmissions of its
// SYN-ACK), and its read-header timeout runs from then.
func deferAccept(l net.Listener) {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, int(AcceptDeferral/time.Second))
	})
}

// serveOnLoops serves l on the event loops until Shutdown; ok is false,
// with nothing changed, when l cannot be served there (not TCP, no loops,
// the tests' goroutine engine). On success l's own descriptor is closed:
// the socket lives on in the loops.
//
// With cfg, the connections are TLS: served on the loops only when their
// HTTP/2 would be too (Server.h2OnLoops: the default dialer, tunnels on
// loops).
func (s *Server) serveOnLoops(l net.Listener, cfg *tls.Config) (ok bool, err error) {
	tl, isTCP := l.(*net.TCPListener)
	if !isTCP || s.opts.goroutineTunnels || (cfg != nil && !s.h2OnLoops()) {
		return false, nil
	}
	loops := evloop.Loops()
	if len(loops) == 0 {
		return false, nil
	}
	fd, dup := evloop.Dup(tl)
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
		if evloop.SetsockoptInt(fd, o[0], o[1], o[2]) != nil {
			_ = evloop.Close(fd)
			return false, nil
		}
	}
	ls := &s.loops
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		_ = evloop.Close(fd)
		return true, nil
	}
	if ls.heads == nil {
		ls.heads = make([]map[*loopHandshake]struct{}, len(loops))
		for i := range ls.heads {
			ls.heads[i] = map[*loopHandshake]struct{}{}
		}
	}
	accepted := s.accepted
	if cfg != nil {
		accepted = func(l *evloop.Loop, fd int, peer netip.AddrPort) { s.acceptedTLS(l, fd, peer, cfg) }
	}
	ln := evloop.Listen(fd, s.opts.acceptBatch, accepted, s.acceptBackoff)
	ls.lns = append(ls.lns, ln)
	ls.mu.Unlock()
	// Go's descriptor leaves its poller, which would otherwise wake for
	// every connection too.
	_ = l.Close()
	select {
	case <-s.stop:
		return true, nil
	case err := <-ln.Failed():
		ln.Stop()
		return true, err
	}
}

// acceptBackoff logs a pause in accepting for lack of descriptors or
// memory and says how long it is: 5 ms doubling up to 1 s, as net/http.
func (s *Server) acceptBackoff(err error, last time.Duration) time.Duration {
	d := descriptorBackoff(last)
	s.opts.Log.V(1).Info("accept failed; retrying", "err", err.Error(), "in", d.String())
	return d
}

// stopLoopListeners stops accepting on the loops (the connections queued
// on their sockets are accepted first), and ends the handshakes on them.
func (s *Server) stopLoopListeners() {
	ls := &s.loops
	ls.mu.Lock()
	ls.closed = true
	lns := ls.lns
	ls.lns = nil
	ls.mu.Unlock()
	if len(lns) == 0 {
		return
	}
	for _, ln := range lns {
		ln.Stop()
	}
	for _, l := range evloop.Loops() {
		l.Post(func() {
			for hs := range ls.heads[l.ID()] {
				hs.shutDown()
			}
		})
	}
}

// accepted takes a connection accepted on loop l.
func (s *Server) accepted(l *evloop.Loop, fd int, peer netip.AddrPort) {
	hs := s.newLoopHandshake(l, fd, peer)
	// The listening socket defers accepting until the first bytes are in
	// (TCP_DEFER_ACCEPT): they are read before the socket joins the
	// loop's set, which would otherwise report them on a wake-up of its
	// own. An edge for what comes later is not lost: registering reports
	// a socket that has bytes already.
	hs.p.sock[ws.Client].readable = true
	if hs.phase == hsProxy {
		hs.readProxy()
	} else {
		hs.readHead()
	}
	if hs.phase == hsOver {
		return
	}
	if err := hs.p.register(ws.Client, hs); err != nil {
		hs.drop()
	}
}

// newLoopHandshake begins the handshake of a connection accepted on l.
func (s *Server) newLoopHandshake(l *evloop.Loop, fd int, peer netip.AddrPort) *loopHandshake {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	hs := &loopHandshake{s: s, p: newLoopPair(l, fd, -1), remote: peer.String(), peer: peer, client: peer}
	if s.opts.ProxyProtocol && s.trustedProxy(peer.Addr()) {
		hs.phase = hsProxy
	}
	s.loops.heads[l.ID()][hs] = struct{}{}
	hs.deadline.Calls(hs.expire)
	hs.setDue(time.Now().Add(s.opts.ReadHeaderTimeout))
	return hs
}

// acceptedTLS takes a TLS connection accepted on loop l: its handshake
// begins at once (after a trusted proxy's PROXY header), on a goroutine
// that reads what the socket has and then waits for the loop's word.
func (s *Server) acceptedTLS(l *evloop.Loop, fd int, peer netip.AddrPort, cfg *tls.Config) {
	hs := s.newLoopHandshake(l, fd, peer)
	hs.tls = &loopTLS{config: cfg}
	if hs.phase == hsProxy {
		hs.p.sock[ws.Client].readable = true
		hs.readProxy()
	} else {
		hs.beginTLS(nil)
	}
	if hs.phase == hsOver {
		return
	}
	// Registered after the handshake began: what arrived before is
	// reported at once, what arrives later raises an edge.
	if err := hs.p.register(ws.Client, hs); err != nil {
		if hs.phase == hsTLS {
			hs.tls.expire()
			return
		}
		hs.drop()
	}
}
