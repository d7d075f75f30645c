package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
	"github.com/wsgate/wsgate/routing"
)

// client is the client's side of a handshake, as its transport carries
// it: net/http (a ResponseWriter), or a connection whose request head the
// event loop read. A new transport implements it, and the rest of the
// handshake and the tunnel stay as they are.
type client interface {
	// answer writes a and ends the connection.
	answer(a *answer)
	// upgrade writes head (the 101 answer) by deadline and hands over
	// the connection for the tunnel, with the bytes the client sent
	// after its request.
	upgrade(head []byte, deadline time.Time) (net.Conn, []byte, error)
}

// connClient is a client connection whose request head the gateway read
// itself; pending is what the client sent after it.
type connClient struct {
	conn    net.Conn
	pending []byte
	// answerDue bounds writing an answer.
	answerDue time.Time
}

func (c connClient) answer(a *answer) {
	_ = c.conn.SetWriteDeadline(c.answerDue)
	a.writeConn(c.conn)
}

func (c connClient) upgrade(head []byte, deadline time.Time) (net.Conn, []byte, error) {
	return c.conn, c.pending, writeUpgrade(c.conn, head, deadline)
}

// writeUpgrade writes the 101 answer to conn by deadline, or closes it.
func writeUpgrade(conn net.Conn, head []byte, deadline time.Time) error {
	_ = conn.SetWriteDeadline(deadline)
	if _, err := conn.Write(head); err != nil {
		_ = conn.Close()
		return err
	}
	return conn.SetWriteDeadline(time.Time{})
}

// dialPod dials the pod of an admitted handshake, sends it the handshake
// and takes its answer (takeAnswer). The slot goes with it.
func (s *Server) dialPod(c client, r *http.Request, adm admitted) {
	now := time.Now()
	dialDue, answerDue := s.handshakeDeadlines(adm, now)
	// One context, for the dial only: the rest of the handshake is bound
	// by deadlines on the connections.
	ctx, cancel := context.WithDeadline(context.Background(), dialDue)
	pod, err := s.opts.Dial(ctx, "tcp", adm.backend.Addr.String())
	cancel()
	if err != nil {
		adm.slot.release()
		s.reply(c, r, s.podFailure(adm, err, podDialFailed))
		return
	}
	_ = pod.SetDeadline(answerDue)
	if _, err := pod.Write(adm.podRequest(r)); err != nil {
		_ = pod.Close()
		adm.slot.release()
		s.reply(c, r, s.podFailure(adm, err, podWriteFailed))
		return
	}
	s.takeAnswer(c, r, adm, pod, pod, answerDue)
}

// takeAnswer reads the pod's answer to the forwarded handshake from
// from (the pod's bytes, maybe preceded by some read already) by
// answerDue, and opens the tunnel on a valid 101 or relays anything else.
// The slot and pod go with it.
func (s *Server) takeAnswer(c client, r *http.Request, adm admitted, pod net.Conn, from io.Reader, answerDue time.Time) {
	fail := func(a *answer) {
		_ = pod.Close()
		adm.slot.release()
		s.reply(c, r, a)
	}
	_ = pod.SetDeadline(answerDue)
	resp, br, err := readPodResponse(from, r, s.opts.MaxHeaderBytes)
	switch {
	case err != nil && !time.Now().Before(answerDue):
		// Cut off mid-answer by the handshake timeout: the pod was too
		// slow, whatever the partial answer looked like.
		a := refuse(http.StatusGatewayTimeout, podTooSlow)
		a.route = adm.route
		fail(a)
		return
	case err != nil:
		fail(s.podFailure(adm, err, podNoAnswer))
		return
	}
	defer br.release()
	br.budget.n = -1
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The pod's answer is relayed, its body read as it is written
		// (by answerDue), before the pod's connection closes.
		s.reply(c, r, relay(resp, adm.route))
		_ = pod.Close()
		adm.slot.release()
		return
	}
	// A 101 has no body.
	_ = resp.Body.Close()
	if err := checkUpgradeResponse(resp, r); err != nil {
		s.opts.Log.V(1).Info("bad upgrade from pod", "route", adm.route.Key.String(), "pod", adm.backend.Pod, "err", err.Error())
		a := refuse(http.StatusBadGateway, podBadUpgrade)
		a.route = adm.route
		fail(a)
		return
	}
	podPending, _ := br.Peek(br.Buffered())
	podPending = append([]byte(nil), podPending...)
	conn, clientPending, err := c.upgrade(upgradeHeader(resp), answerDue)
	if err != nil {
		_ = pod.Close()
		adm.slot.release()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	_ = pod.SetDeadline(time.Time{})
	t := s.newTunnel(r, adm, clientPending, podPending)
	s.carryConns(t, conn, pod, s.openTunnel(t))
}

// newTunnel prepares the tunnel of an accepted handshake, holding its
// slot: its timeouts, metrics and what its access log line and
// revocation need.
func (s *Server) newTunnel(r *http.Request, adm admitted, clientPending, podPending []byte) *tunnel {
	route := adm.route
	idle := route.Timeouts.Idle
	if idle == 0 {
		idle = s.opts.IdleTimeout
	}
	t := newTunnel(max(idle, 0), route.Timeouts.MaxLifetime, clientPending, podPending)
	t.slot = adm.slot
	t.drainOnRevoke = route.DrainOnRevoke
	if adm.id != nil && route.Auth.CloseOnExpiry {
		t.st.ExpireAt(route.Auth.Tokens.ValidUntil(adm.id.claims))
	}
	t.setMetrics(s.opts.Metrics.forTunnel(route))
	// Only what the access log and revocation need is kept: holding r
	// would keep the request and its connection state alive as long as
	// the tunnel.
	t.info = &tunnelInfo{route: route, backend: adm.backend, client: r.RemoteAddr, host: r.Host,
		// A copy: the path shares its bytes with the whole request-target,
		// query included.
		matchHost: adm.host, path: strings.Clone(adm.path), overTLS: r.TLS != nil, http2: r.Proto == "HTTP/2.0"}
	t.info.origin, t.info.hasOrigin = requestOrigin(r)
	t.info.authed = route.Auth != nil
	if adm.id != nil {
		t.info.subject = adm.id.claims.Subject
	}
	s.opts.Metrics.handshake(route, http.StatusSwitchingProtocols)
	return t
}

// openTunnel registers a new tunnel, which holds its slot from now on,
// and reports whether it did; a tunnel that comes too late (Shutdown
// closed the ones it knew of; its slot is released) or that the current
// table no longer allows (see revokeReason) is asked to close. Either
// way, an engine still has to carry it to its end.
func (s *Server) openTunnel(t *tunnel) bool {
	if !s.reg.add(t) {
		t.Close(ws.CloseGoingAway, "gateway shutting down", ws.Shutdown)
		return false
	}
	// The table may have changed while the pod answered: a revocation
	// that the watcher ran before add would be missed.
	if reason, drainable := s.reg.stillAllowed(s.tables.Load(), t); reason != "" && (!drainable || !t.drainOnRevoke) {
		t.Close(ws.ClosePolicyViolation, reason, ws.Revoked)
	}
	return true
}

// carryConns carries a tunnel over client and pod: on an event loop where
// one can take them, else on goroutines. A registered tunnel is
// unregistered and recorded at its end.
func (s *Server) carryConns(t *tunnel, client, pod net.Conn, registered bool) {
	var done func()
	if registered {
		done = func() { s.tunnelDone(t) }
	}
	if sc, ok := client.(streamCarrier); ok {
		sc.carry(t, pod, done, s.quietTunnels())
		return
	}
	if !s.opts.goroutineTunnels && carryOnLoop(t, client, pod, done, s.quietTunnels()) {
		return
	}
	ct := &connTunnel{t: t, conn: [2]net.Conn{client, pod}, bufferedReads: s.opts.bufferedReads}
	t.carry(ct)
	go ct.runThen(done)
}

// streamCarrier is a client that carries its tunnel itself: an HTTP/2
// stream on a loop.
type streamCarrier interface {
	carry(t *tunnel, pod net.Conn, onDone func(), doneOnLoop bool)
}

// tunnelInfo is what a tunnel's access log line and revocation need.
type tunnelInfo struct {
	route   *routing.Route
	backend routing.Backend
	// client is the client's address; host the Host header as sent.
	client, host string
	// matchHost and path are what the table matched the handshake with:
	// its normalized host, and its request path without the query.
	matchHost, path string
	// overTLS: the client's connection is TLS; http2: the tunnel is an
	// HTTP/2 stream of it.
	overTLS, http2 bool
	// origin is the handshake's Origin, normalized, if it had one.
	origin    string
	hasOrigin bool
	// authed: the route checked who was asking (spec.auth) when the
	// tunnel opened.
	authed bool
	// subject is the token's subject on routes with tokens.
	subject string
}

// originSite is where the tunnel's handshake was sent, for its route's
// Origin rule.
func (in *tunnelInfo) originSite() originSite {
	return originSite{hostport: in.host, path: in.path, overTLS: in.overTLS}
}

// quietTunnels reports whether ending a tunnel writes no access log
// line: recording it is then cheap enough for an event loop to do.
func (s *Server) quietTunnels() bool { return s.opts.AccessLog.GetSink() == nil }

// tunnelDone unregisters an ended tunnel, which releases its slot, and
// records it.
func (s *Server) tunnelDone(t *tunnel) {
	s.reg.remove(t)
	reason, code := t.st.Ending()
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
		"status", http.StatusSwitchingProtocols, "bytesFromClient", t.st.Bytes(ws.Client), "bytesFromPod", t.st.Bytes(ws.Pod),
		"durationSeconds", dur.Seconds(), "closeCode", code, "reason", string(reason), "subject", in.subject,
		"protocol", protocolName(in.http2))
}

// protocolName is how the access log names a handshake's protocol.
func protocolName(http2 bool) string {
	if http2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}
