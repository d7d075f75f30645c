//go:build !linux

package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
)

// The event loops run on Linux only: elsewhere net/http serves every
// listener and tunnels run on goroutines.

// loopServer is a Server's state on the loops: none here.
type loopServer struct{}

// wrapForLoop returns l.
func wrapForLoop(l net.Listener) net.Listener { return l }

// carryOnLoop returns false.
func carryOnLoop(*tunnel, net.Conn, net.Conn, func(), bool) bool { return false }

// deferAccept does nothing.
func deferAccept(net.Listener) {}

// serveOnLoops returns false.
func (*Server) serveOnLoops(net.Listener, *tls.Config) (bool, error) { return false, nil }

func (*Server) stopLoopListeners() {}

// h2Live is the HTTP/2 connections on loops: none here.
type h2Live struct{}

func (h2Live) goAway() {}

// ownHTTP2 returns false: there are no event loops here.
func ownHTTP2() bool { return false }

// h2OnLoops returns false: net/http's HTTP/2 server serves HTTP/2.
func (*Server) h2OnLoops() bool { return false }

// serveH2 is never used.
func (*Server) serveH2(*http.Server, *tls.Conn, http.Handler) {}
