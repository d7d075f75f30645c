// Package proxy is wsgate's data plane: it accepts websocket handshakes for
// <host><pathPrefix>/<podIP>/<rest>, forwards them only to pods that the
// current routing table allowlists, and carries the tunnels.
//
// The proxy reads the table through an atomic pointer and never talks to
// the API server. When a new table revokes a pod, the pod's open tunnels
// get a Close frame 1008 at a frame boundary; on shutdown, tunnels get a
// drain window and then a Close frame 1001.
//
// A request's path, whatever transport carries it (net/http, or the
// event loops reading it themselves): admit decides it (route, address,
// Origin, caps) and returns a target holding a slot, or an answer; the
// pod is dialled and its answer read (pod.go, or the loop doing the same
// without blocking); on a valid 101 the tunnel opens, its state in
// internal/wstunnel, carried by an engine (event loop or goroutines)
// that only moves bytes.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
	"github.com/wsgate/wsgate/routing"
)

// Tables is where the proxy reads the routing table; routing.Publisher
// implements it.
type Tables interface {
	// Load returns the current table.
	Load() *routing.Table
	// Subscribe returns a channel that receives after each new table.
	Subscribe() (<-chan struct{}, func())
	// Ready reports whether a table built from cluster state was
	// published; before that, every handshake is answered 503.
	Ready() bool
}

// Server is the websocket gateway. Create it with New, serve listeners
// with Serve, and stop it with Shutdown.
type Server struct {
	tables Tables
	opts   Options
	reg    *registry
	http   *http.Server

	refusals *sampler
	// loopDial: pods are dialled with the default dialer, which the event
	// loops can stand in for.
	loopDial bool
	// loops is the state of the event-loop transport.
	loops loopServer
	// forwardAuth asks routes' forward-auth services; forwardAuthWaits
	// bounds the handshakes waiting for them.
	forwardAuth      *http.Client
	forwardAuthWaits forwardAuthWaits
	// edge is the per-client state.
	edge *edgeLimits
	// h2conns are the HTTP/2 connections carrying tunnels; h2live those
	// on the loops.
	h2conns h2Conns
	h2live  h2Live

	draining atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
}

// New returns a Server that routes by tables.
func New(tables Tables, opts Options) *Server {
	loopDial := opts.Dial == nil
	opts.setDefaults()
	s := &Server{tables: tables, opts: opts, reg: newRegistry(), stop: make(chan struct{}), loopDial: loopDial}
	s.refusals = newSampler(opts.RefusalLogRate)
	s.forwardAuth = newForwardAuthClient(s.opts.Dial)
	s.edge = newEdgeLimits(s.opts.ClientLimits)
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		// HTTP/2 only with Options.HTTP2 (see below).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// "OPTIONS *" is refused like any other non-GET request, not
		// answered 200 on a connection that then stays open with no
		// timeout.
		DisableGeneralOptionsHandler: true,
		// Accept and TLS handshake errors are routine under scans.
		ErrorLog: log.New(logWriter{opts.Log.V(1)}, "", 0),
	}
	switch {
	case opts.HTTP2 && s.h2OnLoops():
		// The gateway's own HTTP/2, on the loops (loop_h2_linux.go).
		s.http.TLSNextProto["h2"] = s.serveH2
	case opts.HTTP2:
		// net/http's own HTTP/2 server, on TLS only (h2c stays refused),
		// a bounded number of streams per connection, a bounded buffer
		// per stream: a stream whose reader stalls holds no more.
		s.http.TLSNextProto = nil
		s.http.HTTP2 = &http.HTTP2Config{
			MaxConcurrentStreams:          250,
			MaxReceiveBufferPerStream:     64 << 10,
			MaxReceiveBufferPerConnection: 1 << 20,
		}
	}
	go s.watchTables()
	go s.sweepClients(clientSweepInterval)
	return s
}

// clientSweepInterval is how often the clients whose state changes
// nothing any more are forgotten.
const clientSweepInterval = 10 * time.Second

// AcceptDeferral is about how long, on Linux, a TCP listener of Serve or
// ServeTLS leaves a new connection that has sent nothing with the kernel
// before accepting it (TCP_DEFER_ACCEPT); its read-header timeout runs
// from then. A connection waiting there holds no descriptor of the
// gateway's.
const AcceptDeferral = time.Second

// Serve accepts plain HTTP/1.1 connections on l until Shutdown. A TCP
// listener is served by the event loops (on Linux), which set TCP_NODELAY
// and keepalive (15 s, as net.Listen does) on the listening socket for
// the connections to inherit, and close l's own descriptor. On Linux, a
// TCP listener (here and in ServeTLS) accepts a connection once its first
// bytes are in (TCP_DEFER_ACCEPT), or after about AcceptDeferral.
func (s *Server) Serve(l net.Listener) error {
	deferAccept(l)
	if ok, err := s.serveOnLoops(l, nil); ok {
		return err
	}
	return s.serveHTTP(s.proxied(l))
}

// proxied is l, reading PROXY headers first when the gateway takes them.
func (s *Server) proxied(l net.Listener) net.Listener {
	if !s.opts.ProxyProtocol {
		return l
	}
	return proxyListener{Listener: l, s: s}
}

// serveHTTP serves l with net/http until Shutdown.
func (s *Server) serveHTTP(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTLS accepts TLS connections on l with cfg until Shutdown. ALPN
// offers http/1.1 only, or h2 first with Options.HTTP2: a cfg that
// offers anything else is cloned with that changed; one that offers just
// that (as TLSConfig makes it) is used as it is, so that later calls on
// it (SetSessionTicketKeys) apply.
func (s *Server) ServeTLS(l net.Listener, cfg *tls.Config) error {
	protos := s.alpn()
	if !slices.Equal(cfg.NextProtos, protos) {
		cfg = cfg.Clone()
		cfg.NextProtos = protos
	}
	deferAccept(l)
	if ok, err := s.serveOnLoops(l, cfg); ok {
		return err
	}
	return s.serveHTTP(tls.NewListener(wrapForLoop(s.proxied(l)), cfg))
}

// alpn is what the TLS listener offers in ALPN.
func (s *Server) alpn() []string {
	if s.opts.HTTP2 {
		return []string{"h2", "http/1.1"}
	}
	return []string{"http/1.1"}
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// OpenTunnels is the number of open tunnels and handshakes in progress.
func (s *Server) OpenTunnels() int { return s.reg.open() }

// Shutdown stops accepting connections, lets open tunnels run for up to
// drain, then closes the rest with a Close frame 1001, and returns when
// they have ended or ctx is done.
func (s *Server) Shutdown(ctx context.Context, drain time.Duration) error {
	s.draining.Store(true)
	s.stopLoopListeners()
	// net/http's Shutdown closes the listeners at once, then waits for
	// its connections to go idle: HTTP/2 connections carrying tunnels do
	// so only once the tunnels below have ended.
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()
	s.h2live.goAway()
	s.stopOnce.Do(func() { close(s.stop) })

	timer := time.NewTimer(drain)
	defer timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for s.reg.open() > 0 {
		select {
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		case <-tick.C:
		}
	}
	for _, t := range s.reg.closeAll() {
		t.Close(ws.CloseGoingAway, "gateway shutting down", ws.Shutdown)
	}
	done := make(chan struct{})
	go func() { s.reg.wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(<-httpDone, fmt.Errorf("tunnels still open at the end of the grace period: %w", ctx.Err()))
	}
	return <-httpDone
}

// watchTables closes the tunnels that each new table revokes, and drops
// the metric series of routes that are gone.
func (s *Server) watchTables() {
	updates, cancel := s.tables.Subscribe()
	defer cancel()
	// The routes of the table published before New count as well: the
	// series of those that the first update removes go too.
	var routes map[routing.RouteKey]bool
	if tbl := s.tables.Load(); tbl != nil {
		routes = s.opts.Metrics.forget(tbl, nil)
	}
	for {
		select {
		case <-s.stop:
			return
		case <-updates:
		}
		tbl := s.tables.Load()
		s.revoke(tbl)
		routes = s.opts.Metrics.forget(tbl, routes)
	}
}

func (s *Server) revoke(tbl *routing.Table) {
	for _, rv := range s.reg.revoked(tbl) {
		rv.t.Close(ws.ClosePolicyViolation, rv.reason, ws.Revoked)
	}
}

// serverName is the TLS SNI of the request's connection, if any.
func serverName(r *http.Request) string {
	if r.TLS == nil {
		return ""
	}
	return r.TLS.ServerName
}

// logWriter sends the HTTP server's own log lines to a logr.Logger.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
