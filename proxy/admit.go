package proxy

import (
	"net/http"
	"strconv"
	"time"
)

// admitted is a handshake the gateway takes: where it goes, and the slot
// it holds under the caps until its tunnel ends (or it fails first).
type admitted struct {
	target
	slot *slot
	// id is who the token says is asking; nil on routes without tokens.
	id *identity
	// header is what the pod gets of the client's header on a route with
	// auth (see podHeader); nil: the client's, as is.
	header http.Header
}

// admit decides a handshake, whatever transport carried it, before any
// dial: who the client is (resolveClient) and whether it is blocked for
// its refusals, the gateway's state, the websocket handshake itself, the
// host (and TLS server name), the route, who is asking (on routes with
// auth), the per-client limits, the address in the current table, the
// route's Origin rule and the caps, with the route's forward-auth
// service asked before the slot is taken. It returns either the handshake admitted, holding a reserved
// slot, or the answer to give. Checking a token may wait for its keys and
// forward auth asks a service: the event loops hand routes with auth to a
// goroutine first (see match).
func (s *Server) admit(r *http.Request) (admitted, *answer) {
	m, a := s.match(r)
	if a != nil {
		return admitted{}, a
	}
	return s.admitMatched(r, m)
}

// match is admit up to the route: the gateway's state, the handshake,
// the host and the path. What follows may wait (for a route's keys), so
// the event loops finish routes with auth on a goroutine.
func (s *Server) match(r *http.Request) (matched, *answer) {
	client := s.resolveClient(r)
	if a := s.check(r); a != nil {
		return matched{}, a
	}
	if a := s.checkBlocked(client); a != nil {
		return matched{}, a
	}
	host, ok := normalizeHost(r.Host)
	if !ok {
		return matched{}, refuse(http.StatusBadRequest, "invalid Host")
	}
	if sni, _ := normalizeHost(serverName(r)); sni != "" && sni != host {
		return matched{}, refuse(http.StatusMisdirectedRequest, "the TLS server name and the Host header differ")
	}
	m, a := match(s.tables.Load(), host, r.RequestURI)
	m.client = client
	return m, a
}

// admitMatched is admit after the route is found. On a route with
// tokens, the token is checked before the address is looked up, and a
// pod that the token may not reach is answered as one that does not
// exist.
func (s *Server) admitMatched(r *http.Request, m matched) (admitted, *answer) {
	route := m.route
	var id *identity
	if route.Auth != nil {
		var a *answer
		if id, a = s.authenticate(r, route); a != nil {
			a.route = route
			return admitted{}, a
		}
	}
	// Limits before the address is looked up: a client walking
	// addresses spends its handshakes like any other.
	hold, a := s.limitClient(route, m.client, id)
	if a != nil {
		a.route = route
		return admitted{}, a
	}
	adm, a := s.admitTarget(r, m, id)
	if a != nil {
		hold.release()
		return admitted{}, a
	}
	adm.slot.hold = hold
	return adm, nil
}

// admitTarget is admitMatched from the address on: the pod, its binding
// to who is asking, the Origin rule, forward auth and the slot.
func (s *Server) admitTarget(r *http.Request, m matched, id *identity) (admitted, *answer) {
	route := m.route
	tgt, a := m.target()
	if a != nil {
		return admitted{}, a
	}
	if id != nil && !id.bound(route, tgt.backend) {
		s.opts.Metrics.auth(route, "unbound")
		return admitted{}, errNotFound
	}
	if a := checkOrigin(r, m.tbl, tgt); a != nil {
		a.route = route
		return admitted{}, a
	}
	adm := admitted{target: tgt, id: id}
	if au := route.Auth; au != nil {
		adm.header = podHeader(r, au, id)
		if au.Tokens != nil && au.Query != "" {
			adm.uri = withoutQueryParameter(adm.uri, au.Query)
		}
		// Before the slot: handshakes the service has not admitted yet
		// must not hold the pod's slots.
		if au.Forward != nil {
			if a := s.askForwardAuth(r, &adm); a != nil {
				return admitted{}, a
			}
		}
	}
	key := backendKey{route: route.Key, backend: tgt.backend}
	sl, c := s.reg.reserve(key, s.opts.MaxTunnels, s.opts.MaxTunnelsPerNamespace, route.MaxConnectionsPerPod)
	if c != capNone {
		a := refuse(http.StatusServiceUnavailable, c.message())
		a.header = s.retryAfter()
		a.route = route
		return admitted{}, a
	}
	adm.slot = sl
	return adm, nil
}

// podRequest is the handshake the pod gets.
func (adm admitted) podRequest(r *http.Request) []byte {
	if adm.header == nil {
		return podRequest(r, adm.uri)
	}
	c := *r
	c.Header = adm.header
	return podRequest(&c, adm.uri)
}

// shuttingDown is the answer to handshakes once the gateway drains.
func shuttingDown() *answer {
	a := refuse(http.StatusServiceUnavailable, "the gateway is shutting down")
	a.header = http.Header{"Retry-After": {"1"}}
	return a
}

// check refuses requests before any lookup: the gateway draining or
// without a routing table yet, or not a websocket handshake.
func (s *Server) check(r *http.Request) *answer {
	if s.draining.Load() {
		return shuttingDown()
	}
	if !s.tables.Ready() {
		// Before the first table, "not allowlisted" cannot be told apart
		// from "not loaded yet": ask the client to come back.
		a := refuse(http.StatusServiceUnavailable, "the gateway has not loaded its routing table yet")
		a.header = http.Header{"Retry-After": {"1"}}
		return a
	}
	return checkHandshake(r)
}

// retryAfter is the header of a 503 for a lack of capacity.
func (s *Server) retryAfter() http.Header {
	return http.Header{"Retry-After": {strconv.Itoa(int(s.opts.RetryAfter.Round(time.Second) / time.Second))}}
}

// handshakeDeadlines are when the dial to the pod of an admitted
// handshake starting at now must have connected, and when the pod must
// have answered.
func (s *Server) handshakeDeadlines(adm admitted, now time.Time) (dialDue, answerDue time.Time) {
	timeout := s.opts.HandshakeTimeout
	if d := adm.route.Timeouts.Handshake; d > 0 {
		timeout = d
	}
	return now.Add(min(timeout, s.opts.DialTimeout)), now.Add(timeout)
}

// What a client is told when its pod failed before answering.
const (
	podDialFailed  = "the pod did not accept the connection"
	podWriteFailed = "the pod closed the connection"
	podNoAnswer    = "the pod did not answer the handshake"
	podTooSlow     = "the pod did not answer the handshake in time"
	podBadUpgrade  = "the pod's upgrade answer is not a valid websocket handshake"
)

// podFailure is the answer for a pod that failed before answering: 502
// with text, or 504 for a timeout; or 503 when the gateway had no
// descriptor for the pod's socket.
func (s *Server) podFailure(adm admitted, err error, text string) *answer {
	var a *answer
	switch {
	case outOfDescriptors(err):
		a = refuse(http.StatusServiceUnavailable, msgOutOfDescriptors)
		a.header = s.retryAfter()
	default:
		a = refuse(dialStatus(err), text)
	}
	a.route = adm.route
	return a
}
