// Package proxy is wsgate's data plane: it accepts websocket handshakes for
// <host><pathPrefix>/<podIP>/<rest>, forwards them only to pods that the
// current routing table allowlists, and carries the tunnels.
//
// The proxy reads the table through an atomic pointer and never talks to
// the API server. When a new table revokes a pod, the pod's open tunnels
// get a Close frame 1008 at a frame boundary; on shutdown, tunnels get a
// drain window and then a Close frame 1001.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

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
	// lns are the listeners the event loops serve; lnClosed is set once
	// Shutdown stopped them.
	lnMu     sync.Mutex
	lns      []*evListener
	lnClosed bool

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
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		// HTTP/2 is off: websockets over HTTP/1.1 only.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// "OPTIONS *" is refused like any other non-GET request, not
		// answered 200 on a connection that then stays open with no
		// timeout.
		DisableGeneralOptionsHandler: true,
		// Accept and TLS handshake errors are routine under scans.
		ErrorLog: log.New(logWriter{opts.Log.V(1)}, "", 0),
	}
	go s.watchTables()
	return s
}

// Serve accepts plain HTTP/1.1 connections on l until Shutdown. A TCP
// listener is served by the event loops (on Linux), which set TCP_NODELAY
// and keepalive (15 s, as net.Listen does) on the listening socket for
// the connections to inherit, and close l's own descriptor.
func (s *Server) Serve(l net.Listener) error {
	if ok, err := s.serveOnLoops(l); ok {
		return err
	}
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTLS accepts TLS connections on l with cfg until Shutdown. ALPN
// offers http/1.1 only.
func (s *Server) ServeTLS(l net.Listener, cfg *tls.Config) error {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return s.Serve(tls.NewListener(wrapForLoop(l), cfg))
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
	err := s.http.Shutdown(ctx)
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
		t.Close(CloseGoingAway, "gateway shutting down", ClosedShutdown)
	}
	done := make(chan struct{})
	go func() { s.reg.wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("tunnels still open at the end of the grace period: %w", ctx.Err()))
	}
	return err
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
		rv.t.Close(ClosePolicyViolation, rv.reason, ClosedRevoked)
	}
}

// ServeHTTP handles one websocket handshake: check it, resolve the
// address in the current table, dial the pod, forward the handshake and,
// on a valid 101, carry the tunnel.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tgt, key, rf := s.admit(r)
	if rf != nil {
		s.refuse(w, r, rf)
		return
	}
	s.forward(w, r, tgt, key)
}

// admit decides a handshake before any dial: it checks the request,
// resolves its address in the current table, applies the route's origins
// and reserves a slot for the pod. On success the slot for key is
// reserved, and whoever goes on releases it.
func (s *Server) admit(r *http.Request) (target, backendKey, *refusal) {
	if rf := s.check(r); rf != nil {
		return target{}, backendKey{}, rf
	}
	host, ok := normalizeHost(r.Host)
	if !ok {
		return target{}, backendKey{}, refuse(http.StatusBadRequest, "invalid Host")
	}
	if sni, _ := normalizeHost(serverName(r)); sni != "" && sni != host {
		return target{}, backendKey{}, refuse(http.StatusMisdirectedRequest, "the TLS server name and the Host header differ")
	}
	tbl := s.tables.Load()
	tgt, rf := resolve(tbl, host, r.RequestURI)
	if rf != nil {
		return target{}, backendKey{}, rf
	}
	if rf := checkOrigin(r, tbl, tgt); rf != nil {
		rf.route = tgt.route
		return target{}, backendKey{}, rf
	}
	key := backendKey{route: tgt.route.Key, backend: tgt.backend}
	if c := s.reg.reserve(key, s.opts.MaxTunnels, s.opts.MaxTunnelsPerNamespace, tgt.route.MaxConnectionsPerPod); c != capNone {
		rf := refuse(http.StatusServiceUnavailable, c.message())
		rf.header = s.retryAfter()
		rf.route = tgt.route
		return target{}, backendKey{}, rf
	}
	return tgt, key, nil
}

// retryAfter is the header of a 503 for a lack of capacity.
func (s *Server) retryAfter() http.Header {
	return http.Header{"Retry-After": {strconv.Itoa(int(s.opts.RetryAfter.Round(time.Second) / time.Second))}}
}

// check refuses requests before any lookup: the gateway draining or
// without a routing table yet, or not a websocket handshake.
func (s *Server) check(r *http.Request) *refusal {
	if s.draining.Load() {
		rf := refuse(http.StatusServiceUnavailable, "the gateway is shutting down")
		rf.header = http.Header{"Retry-After": {"1"}}
		return rf
	}
	if !s.tables.Ready() {
		// Before the first table, "not allowlisted" cannot be told apart
		// from "not loaded yet": ask the client to come back.
		rf := refuse(http.StatusServiceUnavailable, "the gateway has not loaded its routing table yet")
		rf.header = http.Header{"Retry-After": {"1"}}
		return rf
	}
	return checkHandshake(r)
}

// forward dials the pod, relays the handshake and runs the tunnel. The
// slot for key is reserved and is released here.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, tgt target, key backendKey) {
	hsTimeout := s.handshakeTimeout(tgt.route)
	// One context, for the dial only: the rest of the handshake is bound
	// by deadlines on the connections.
	now := time.Now()
	deadline := now.Add(hsTimeout)
	dialCtx, dialCancel := context.WithDeadline(r.Context(), now.Add(min(hsTimeout, s.opts.DialTimeout)))
	pod, err := s.opts.Dial(dialCtx, "tcp", tgt.backend.Addr.String())
	dialCancel()
	if err != nil {
		s.reg.release(key)
		s.refusePod(w, r, tgt, err, podDialFailed)
		return
	}
	_ = pod.SetDeadline(deadline)
	if _, err := pod.Write(podRequest(r, tgt.uri)); err != nil {
		_ = pod.Close()
		s.reg.release(key)
		s.refusePod(w, r, tgt, err, podWriteFailed)
		return
	}
	s.forwardAnswer(w, r, tgt, key, pod, pod, deadline)
}

// handshakeTimeout bounds dialling a pod of route and its 101 answer.
func (s *Server) handshakeTimeout(route *routing.Route) time.Duration {
	if d := route.Timeouts.Handshake; d > 0 {
		return d
	}
	return s.opts.HandshakeTimeout
}

// What a client is told when its pod failed before answering.
const (
	podDialFailed  = "the pod did not accept the connection"
	podWriteFailed = "the pod closed the connection"
)

// refusePod answers a handshake whose pod failed before answering (502,
// or 504 for a timeout), with msg; or 503 when the gateway had no
// descriptor for the pod's socket.
func (s *Server) refusePod(w http.ResponseWriter, r *http.Request, tgt target, err error, msg string) {
	var rf *refusal
	if outOfDescriptors(err) {
		rf = refuse(http.StatusServiceUnavailable, msgOutOfDescriptors)
		rf.header = s.retryAfter()
	} else {
		rf = refuse(dialStatus(err), msg)
	}
	rf.route = tgt.route
	s.refuse(w, r, rf)
}

// forwardAnswer reads the pod's answer to the forwarded handshake from
// answer (pod's bytes, possibly preceded by some read already) within
// deadline, and relays it or, on a valid 101, opens the tunnel. The slot
// for key is reserved and pod is open; both are released here.
func (s *Server) forwardAnswer(w http.ResponseWriter, r *http.Request, tgt target, key backendKey, pod net.Conn, answer io.Reader, deadline time.Time) {
	fail := func(rf *refusal) {
		rf.route = tgt.route
		s.refuse(w, r, rf)
	}
	registered := false
	defer func() {
		if !registered {
			s.reg.release(key)
		}
	}()
	podOK := false
	defer func() {
		if !podOK {
			_ = pod.Close()
		}
	}()
	_ = pod.SetDeadline(deadline)
	resp, br, err := readPodResponse(answer, r, s.opts.MaxHeaderBytes)
	if err != nil {
		if !time.Now().Before(deadline) {
			// Cut off mid-answer by the handshake timeout: the pod was
			// too slow, whatever the partial answer looked like.
			fail(refuse(http.StatusGatewayTimeout, "the pod did not answer the handshake in time"))
			return
		}
		fail(refuse(dialStatus(err), "the pod did not answer the handshake"))
		return
	}
	defer br.release()
	br.budget.n = -1
	if resp.StatusCode != http.StatusSwitchingProtocols {
		s.relay(w, r, tgt.route, resp)
		return
	}
	if err := checkUpgradeResponse(resp, r); err != nil {
		s.opts.Log.V(1).Info("bad upgrade from pod", "route", key.route.String(), "pod", tgt.backend.Pod, "err", err.Error())
		fail(refuse(http.StatusBadGateway, "the pod's upgrade answer is not a valid websocket handshake"))
		return
	}

	client, cbr, err := http.NewResponseController(w).Hijack()
	if err != nil {
		fail(refuse(http.StatusInternalServerError, "cannot take over the connection"))
		return
	}
	_ = client.SetDeadline(time.Time{})
	_ = pod.SetDeadline(time.Time{})
	// Anything the client sent after its request head is already in cbr.
	clientPending, _ := cbr.Peek(cbr.Reader.Buffered())
	podPending, _ := br.Peek(br.Buffered())
	_ = client.SetWriteDeadline(deadline)
	if _, err := client.Write(upgradeHeader(resp)); err != nil {
		_ = client.Close()
		return
	}
	_ = client.SetWriteDeadline(time.Time{})

	t := s.newTunnel(r, tgt, key, client, pod)
	t.clientPending = append([]byte(nil), clientPending...)
	t.podPending = append([]byte(nil), podPending...)
	podOK = true
	registered = s.openTunnel(t)
	// Plain TCP tunnels move to an event loop; others (TLS) run on
	// goroutines of their own, so that this handler returns and net/http
	// frees the connection's buffers and stack either way.
	if !registered {
		go t.run()
		return
	}
	if s.opts.goroutineTunnels || !startEvented(t, func() { s.tunnelDone(t) }, s.quietTunnels()) {
		go s.serveTunnel(t)
	}
}

// newTunnel prepares the tunnel of an accepted handshake: its timeouts,
// metrics and what its access log line and revocation need.
func (s *Server) newTunnel(r *http.Request, tgt target, key backendKey, client, pod net.Conn) *tunnel {
	idle := tgt.route.Timeouts.Idle
	if idle == 0 {
		idle = s.opts.IdleTimeout
	}
	t := newTunnel(client, pod, max(idle, 0), tgt.route.Timeouts.MaxLifetime)
	t.drainOnRevoke = tgt.route.DrainOnRevoke
	t.bufferedReads = s.opts.bufferedReads
	t.setMetrics(s.opts.Metrics.forTunnel(tgt.route))
	// Only what the access log and revocation need is kept: holding r
	// would keep the request and its connection state alive as long as
	// the tunnel.
	t.info = &tunnelInfo{key: key, route: tgt.route, backend: tgt.backend, client: r.RemoteAddr, host: r.Host,
		// A copy: the path shares its bytes with the whole request-target,
		// query included.
		matchHost: tgt.host, path: strings.Clone(tgt.path), overTLS: r.TLS != nil}
	t.info.origin, t.info.hasOrigin = requestOrigin(r)
	s.opts.Metrics.handshake(tgt.route, http.StatusSwitchingProtocols)
	return t
}

// openTunnel registers a new tunnel under its reserved slot and reports
// whether it did; a tunnel that comes too late (Shutdown closed the ones
// it knew of) or that the current table no longer allows (see
// revokeReason) is asked to close. Either way, its engine still has to run it to its
// end.
func (s *Server) openTunnel(t *tunnel) bool {
	if !s.reg.add(t.info.key, t) {
		// Shutdown already closed the tunnels it knew of.
		t.Close(CloseGoingAway, "gateway shutting down", ClosedShutdown)
		return false
	}
	// The table may have changed while the pod answered: a revocation
	// that the watcher ran before add would be missed.
	if reason := s.reg.stillAllowed(s.tables.Load(), t.info.key, t); reason != "" && !t.drainOnRevoke {
		t.Close(ClosePolicyViolation, reason, ClosedRevoked)
	}
	return true
}

// tunnelInfo is what a tunnel's access log line and registry entry need.
type tunnelInfo struct {
	key     backendKey
	route   *routing.Route
	backend routing.Backend
	// client is the client's address; host the Host header as sent.
	client, host string
	// matchHost and path are what the table matched the handshake with:
	// its normalized host, and its request path without the query.
	matchHost, path string
	// overTLS: the client's connection is TLS.
	overTLS bool
	// origin is the handshake's Origin, normalized, if it had one.
	origin    string
	hasOrigin bool
}

// originSite is where the tunnel's handshake was sent, for its route's
// Origin rule.
func (in *tunnelInfo) originSite() originSite {
	return originSite{hostport: in.host, path: in.path, overTLS: in.overTLS}
}

// serveTunnel runs a registered tunnel to its end. Its frame (and run's
// and pump's) is kept small: an idle tunnel's goroutines sit on this call
// chain, and their stacks are most of its memory.
func (s *Server) serveTunnel(t *tunnel) {
	t.run()
	s.tunnelDone(t)
}

// quietTunnels reports whether ending a tunnel writes no access log
// line: recording it is then cheap enough for an event loop to do.
func (s *Server) quietTunnels() bool { return s.opts.AccessLog.GetSink() == nil }

// tunnelDone unregisters an ended tunnel and records it.
func (s *Server) tunnelDone(t *tunnel) {
	s.reg.remove(t.info.key, t)
	s.tunnelEnded(t)
}

// tunnelEnded records a closed tunnel in the metrics and the access log.
func (s *Server) tunnelEnded(t *tunnel) {
	reason, code := t.ending()
	dur := time.Since(t.opened)
	if m := t.metrics; m.active != nil {
		m.duration.Observe(dur.Seconds())
	}
	s.opts.Metrics.closed(reason, code)
	if s.quietTunnels() {
		// The line's values would be boxed for nothing.
		return
	}
	in := t.info
	s.opts.AccessLog.Info("tunnel closed",
		"namespace", in.route.Key.Namespace, "route", in.route.Key.Name, "pod", in.backend.Pod,
		"podAddress", in.backend.Addr.String(), "client", in.client, "host", in.host,
		"status", http.StatusSwitchingProtocols, "bytesFromClient", t.fromClient.Load(), "bytesFromPod", t.fromPod.Load(),
		"durationSeconds", dur.Seconds(), "closeCode", code, "reason", string(reason))
}

// relay passes a non-101 answer from the pod to the client as a plain
// response and closes the connection: it never becomes a tunnel.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, route *routing.Route, resp *http.Response) {
	defer resp.Body.Close()
	s.opts.Metrics.handshake(route, resp.StatusCode)
	s.logRefusal(r, route, resp.StatusCode, "the pod answered without upgrading")
	h := resp.Header.Clone()
	removeHopByHop(h)
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Connection", "close")
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, maxRelayedBody))
}

// maxRelayedBody bounds the body of a non-101 answer that is relayed.
const maxRelayedBody = 1 << 20

// refuse answers a refused handshake with a plain-text status and closes
// the connection.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, rf *refusal) {
	s.opts.Metrics.handshake(rf.route, rf.status)
	s.logRefusal(r, rf.route, rf.status, rf.msg)
	for k, v := range rf.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Connection", "close")
	w.WriteHeader(rf.status)
	_, _ = io.WriteString(w, rf.msg+"\n")
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
