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
}

// admit decides a handshake, whatever transport carried it, before any
// dial: the gateway's state, the websocket handshake itself, the host
// (and TLS server name), the address in the current table, the route's
// Origin rule and the caps. It returns either the handshake admitted,
// holding a reserved slot, or the answer to give.
func (s *Server) admit(r *http.Request) (admitted, *answer) {
	if a := s.check(r); a != nil {
		return admitted{}, a
	}
	host, ok := normalizeHost(r.Host)
	if !ok {
		return admitted{}, refuse(http.StatusBadRequest, "invalid Host")
	}
	if sni, _ := normalizeHost(serverName(r)); sni != "" && sni != host {
		return admitted{}, refuse(http.StatusMisdirectedRequest, "the TLS server name and the Host header differ")
	}
	tbl := s.tables.Load()
	tgt, a := resolve(tbl, host, r.RequestURI)
	if a != nil {
		return admitted{}, a
	}
	if a := checkOrigin(r, tbl, tgt); a != nil {
		a.route = tgt.route
		return admitted{}, a
	}
	key := backendKey{route: tgt.route.Key, backend: tgt.backend}
	sl, c := s.reg.reserve(key, s.opts.MaxTunnels, s.opts.MaxTunnelsPerNamespace, tgt.route.MaxConnectionsPerPod)
	if c != capNone {
		a := refuse(http.StatusServiceUnavailable, c.message())
		a.header = s.retryAfter()
		a.route = tgt.route
		return admitted{}, a
	}
	return admitted{target: tgt, slot: sl}, nil
}

// check refuses requests before any lookup: the gateway draining or
// without a routing table yet, or not a websocket handshake.
func (s *Server) check(r *http.Request) *answer {
	if s.draining.Load() {
		a := refuse(http.StatusServiceUnavailable, "the gateway is shutting down")
		a.header = http.Header{"Retry-After": {"1"}}
		return a
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
