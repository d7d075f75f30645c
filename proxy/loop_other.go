//go:build !linux

package proxy

import "net"

// The event loops run on Linux only: elsewhere net/http serves every
// listener and tunnels run on goroutines.

// loopServer is a Server's state on the loops: none here.
type loopServer struct{}

// wrapForLoop returns l.
func wrapForLoop(l net.Listener) net.Listener { return l }

// carryOnLoop returns false.
func carryOnLoop(*tunnel, net.Conn, net.Conn, func(), bool) bool { return false }

// serveOnLoops returns false.
func (*Server) serveOnLoops(net.Listener) (bool, error) { return false, nil }

func (*Server) stopLoopListeners() {}
