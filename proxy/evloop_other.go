//go:build !linux

package proxy

import "net"

// evTunnel is the event-driven engine, on Linux only.
type evTunnel struct{}

func (*evTunnel) requestClose(*closeRequest) {}

// wrapForLoop returns l: no event loops here.
func wrapForLoop(l net.Listener) net.Listener { return l }

// startEvented returns false: tunnels run on goroutines.
func startEvented(*tunnel, func()) bool { return false }
