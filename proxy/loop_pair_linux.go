//go:build linux

package proxy

import (
	"github.com/wsgate/wsgate/proxy/internal/evloop"
	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// A client's socket and its pod's on a loop, as the loop's handshake and
// then the tunnel use them.

// loopSocket is one socket of a connection pair on a loop.
type loopSocket struct {
	fd   int
	reg  evloop.Registration
	side ws.Side
	// on is told of the socket's events: the handshake, then the tunnel.
	on interface{ ready(ws.Side, evloop.Events) }
	// readable: the socket may hold bytes not read yet. drain: the peer's
	// end of stream or an error was reported, so a short read does not
	// mean the socket is drained.
	readable, drain bool
}

// Ready notes what the loop reported and passes it on.
func (s *loopSocket) Ready(ev evloop.Events) {
	if ev.Readable() {
		s.readable = true
		if ev.Ended() {
			s.drain = true
		}
	}
	s.on.ready(s.side, ev)
}

// write writes what s takes of p now; when it does not take all of it,
// s's output is watched from then on, so that a Writable event tells
// when it takes more.
func (s *loopSocket) write(l *evloop.Loop, p []byte) (int, error) {
	n, err := evloop.WriteAll(s.fd, p)
	if err == nil && n < len(p) {
		err = l.WantWritable(s.fd, &s.reg)
	}
	return n, err
}

// loopPair is the client's socket and the pod's on one loop.
type loopPair struct {
	loop *evloop.Loop
	sock [2]loopSocket // by side; fd -1: none
}

func newLoopPair(l *evloop.Loop, clientFD, podFD int) *loopPair {
	p := &loopPair{loop: l}
	for i, fd := range [2]int{clientFD, podFD} {
		p.sock[i] = loopSocket{fd: fd, reg: evloop.NewRegistration(), side: ws.Side(i)}
	}
	return p
}

// register adds side's socket to the loop, reporting to on.
func (p *loopPair) register(side ws.Side, on interface{ ready(ws.Side, evloop.Events) }) error {
	s := &p.sock[side]
	s.on = on
	if s.reg.Registered() {
		return nil
	}
	return p.loop.Register(s.fd, s, &s.reg)
}

// closeAll closes both sockets.
func (p *loopPair) closeAll() {
	for i := range p.sock {
		if s := &p.sock[i]; s.fd >= 0 {
			p.loop.Forget(&s.reg)
			_ = evloop.Close(s.fd)
			s.fd = -1
		}
	}
}
