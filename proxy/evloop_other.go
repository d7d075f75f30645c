//go:build !linux

package proxy

// evTunnel is the event-driven engine, on Linux only.
type evTunnel struct{}

func (*evTunnel) requestClose(*closeRequest) {}

// startEvented returns false: tunnels run on goroutines.
func startEvented(*tunnel, func()) bool { return false }
