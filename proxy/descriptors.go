package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// At the process's descriptor limit the gateway neither fails nor spins.
// Accepting pauses (5 ms doubling up to 1 s between attempts, as net/http
// does), so new clients wait in the listen backlog; a client accepted
// with the last descriptor waits for one for its pod's socket, within the
// dial timeout, and then gets 503 with Retry-After: the shortage is the
// gateway's, not the pod's. Tunnels already open carry on.

const msgOutOfDescriptors = "the gateway is out of file descriptors"

// outOfDescriptors reports whether err is the process or the system
// running out of file descriptors.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// descriptorBackoff is the wait after d before trying again for a
// descriptor: 5 ms, doubling, at most 1 s.
func descriptorBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 5*time.Millisecond), time.Second)
}

// dialForDescriptor dials with dial, and while that fails for lack of
// descriptors tries again after descriptorBackoff until ctx is done; it
// then returns the shortage, not ctx's error, so that the client is told
// what went wrong.
func dialForDescriptor(ctx context.Context, dial func(context.Context) (net.Conn, error)) (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := dial(ctx)
		if err == nil || !outOfDescriptors(err) {
			return c, err
		}
		wait = descriptorBackoff(wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}
