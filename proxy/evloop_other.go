//go:build !linux

package proxy

import "net"

// evTunnel is the event-driven engine, on Linux only.
type evTunnel struct{}

func (*evTunnel) requestClose(*closeRequest) {}

// wrapForLoop returns l: no event loops here.
func wrapForLoop(l net.Listener) net.Listener { return l }

// startEvented returns false: tunnels run on goroutines.
func startEvented(*tunnel, func(), bool) bool { return false }

// evListener is a listener on the event loops, on Linux only.
type evListener struct{}

// serveOnLoops returns false: net/http serves every listener.
func (*Server) serveOnLoops(net.Listener) (bool, error) { return false, nil }

func (*Server) stopLoopListeners() {}
