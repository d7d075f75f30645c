package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// Listener is a listener the gateway serves, with TLS when TLS is set.
type Listener struct {
	net.Listener
	TLS *tls.Config
}

// Runnable runs a Server on its listeners until its context ends, then
// shuts it down: readiness turns false (Server.Draining), listeners
// close, tunnels get the drain window, then Close 1001, all within Grace.
// It fits controller-runtime's manager.Runnable and runs on every replica.
type Runnable struct {
	Server    *Server
	Listeners []Listener
	// Drain is how long open tunnels may run on after shutdown begins.
	Drain time.Duration
	// Grace bounds the whole shutdown.
	Grace time.Duration
}

// NeedLeaderElection is false: every replica serves traffic.
func (r *Runnable) NeedLeaderElection() bool { return false }

// Start serves until ctx ends or a listener fails, then shuts down.
func (r *Runnable) Start(ctx context.Context) error {
	errs := make(chan error, len(r.Listeners))
	for _, l := range r.Listeners {
		go func(l Listener) {
			var err error
			if l.TLS != nil {
				err = r.Server.ServeTLS(l.Listener, l.TLS)
			} else {
				err = r.Server.Serve(l.Listener)
			}
			if err != nil {
				err = fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
			errs <- err
		}(l)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	sctx, cancel := context.WithTimeout(context.Background(), r.Grace)
	defer cancel()
	// Keep time for the Close frames and the peers' answers after the drain.
	drain := min(r.Drain, max(r.Grace-2*wstunnel.CloseGrace, 0))
	return errors.Join(serveErr, r.Server.Shutdown(sctx, drain))
}
