package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/proxy/internal/clientlimit"
	"github.com/wsgate/wsgate/routing"
)

// The public edge: who the client is (its own address, or the one a
// trusted proxy in front says), and the limits per client.

// ClientLimits are the gateway's limits per client and replica. A client
// is its address (an IPv6 address counts as its /64) or, on routes with
// tokens, the token's subject. Zero values turn a limit off.
type ClientLimits struct {
	// HandshakeRate and HandshakeBurst are a token bucket of handshakes
	// per client: HandshakeRate a second, up to HandshakeBurst at once;
	// 429 with Retry-After beyond it.
	HandshakeRate  float64
	HandshakeBurst int
	// MaxTunnels caps a client's open tunnels (and handshakes in
	// progress); 429 beyond it.
	MaxTunnels int
	// RefusalBudget is how many handshakes the gateway refuses (400,
	// 401, 403, 404; the answers of pods and of routes' auth services
	// never count) a client may collect a minute; past it, every handshake of the
	// client's address is answered 429 for RefusalBlock, so walking pod
	// addresses through the gateway is slow and shows in the metrics.
	RefusalBudget int
	// RefusalBlock is how long a client past its refusal budget waits.
	// Default 1m.
	RefusalBlock time.Duration
	// MaxClients bounds the clients tracked (each with its state for
	// the gateway and for each route with limits). Default 100,000.
	MaxClients int
}

// Reasons a handshake was limited, as the metric counts them.
const (
	limitRate         = "handshake_rate"
	limitRouteRate    = "route_handshake_rate"
	limitTunnels      = "open_tunnels"
	limitRouteTunnels = "route_open_tunnels"
	limitRefusals     = "refusals"
)

// trustedProxy reports whether a is the address of a proxy whose PROXY
// header and X-Forwarded-For the gateway believes.
func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxForwardedHops bounds the X-Forwarded-For entries read.
const maxForwardedHops = 32

// resolveClient sets r.RemoteAddr to the client's address: the
// connection's peer (or the PROXY header's source), or, when that is a
// trusted proxy, the right-most address of X-Forwarded-For that is not
// one (all trusted: the left-most). A malformed entry ends the walk at
// the proxy that passed it on. It returns the client's address.
func (s *Server) resolveClient(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsValid() || !s.trustedProxy(peer) {
		return peer
	}
	values := r.Header["X-Forwarded-For"]
	client := peer
	hops := 0
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" && hops < maxForwardedHops {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			hops++
			a, ok := forwardedAddr(entry)
			if !ok {
				return s.setClient(r, client)
			}
			client = a
			if !s.trustedProxy(a) {
				return s.setClient(r, client)
			}
		}
	}
	return s.setClient(r, client)
}

func (s *Server) setClient(r *http.Request, a netip.Addr) netip.Addr {
	if a != remoteAddr(r.RemoteAddr) {
		r.RemoteAddr = a.String()
	}
	return a
}

// forwardedAddr parses an X-Forwarded-For entry: an address, possibly
// with a port ("192.0.2.1:5000", "[2001:db8::1]:5000").
func forwardedAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// remoteAddr is the address of a request's RemoteAddr ("host:port", or a
// bare address once resolveClient set it).
func remoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// edgeLimits is a Server's per-client state.
type edgeLimits struct {
	opts    ClientLimits
	clients *clientlimit.Table
	refusal clientlimit.Budget
	blocks  *sampler // log lines for clients blocked for their refusals
}

func newEdgeLimits(o ClientLimits) *edgeLimits {
	if o.RefusalBlock <= 0 {
		o.RefusalBlock = time.Minute
	}
	return &edgeLimits{
		opts:    o,
		clients: clientlimit.New(o.MaxClients),
		refusal: clientlimit.Budget{Bucket: clientlimit.Bucket{Rate: float64(o.RefusalBudget) / 60, Burst: o.RefusalBudget}, Block: o.RefusalBlock},
		blocks:  newSampler(5),
	}
}

// checkBlocked refuses a client blocked for its refusals, before
// anything else is looked at.
func (s *Server) checkBlocked(client netip.Addr) *answer {
	if s.edge.opts.RefusalBudget <= 0 || !client.IsValid() {
		return nil
	}
	e := s.edge
	wait, blocked := e.clients.Blocked(clientlimit.AddrKey("", client), e.clients.Now())
	if !blocked {
		return nil
	}
	s.opts.Metrics.limited(limitRefusals)
	return tooMany("too many refused handshakes from this client", wait)
}

// refusable are the answers a client's own requests earn that count
// against its refusal budget: looking for what is not there or not its.
func refusable(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return true
	}
	return false
}

// countRefusal charges r's client with a, when it is the gateway's own
// refusal: a pod's answer or a route's auth service's (which a tenant
// controls) never blocks a client from the other routes.
func (s *Server) countRefusal(r *http.Request, a *answer) {
	e := s.edge
	if e.opts.RefusalBudget <= 0 || !refusable(a.status) || a.relayed != nil || a.tenant {
		return
	}
	client := remoteAddr(r.RemoteAddr)
	if !client.IsValid() {
		return
	}
	key := clientlimit.AddrKey("", client)
	if !e.clients.Refused(key, e.refusal, e.clients.Now()) {
		return
	}
	s.opts.Metrics.blocked()
	if ok, suppressed := e.blocks.allow(time.Now()); ok && s.opts.AccessLog.GetSink() != nil {
		s.opts.AccessLog.Info("client blocked for its refused handshakes",
			"client", key.Addr.String(), "refusalsPerMinute", e.opts.RefusalBudget,
			"blockedFor", e.opts.RefusalBlock.String(), "suppressedSinceLast", suppressed)
	}
}

// clientHold is a handshake's place under the per-client tunnel caps,
// released with its slot.
type clientHold struct {
	clients *clientlimit.Table
	keys    [2]clientlimit.Key
	n       int
}

func (h *clientHold) release() {
	if h == nil {
		return
	}
	now := h.clients.Now()
	for _, k := range h.keys[:h.n] {
		h.clients.Release(k, now)
	}
	h.n = 0
}

// limitClient applies the per-client limits of the gateway and of the
// route to an admitted handshake of client (id: the token's, on routes
// with tokens). It returns the tunnel counts to hold, or the 429.
func (s *Server) limitClient(route *routing.Route, client netip.Addr, id *identity) (*clientHold, *answer) {
	e := s.edge
	g, rl := e.opts, route.Limits
	if !g.rateOn() && g.MaxTunnels <= 0 && rl == nil {
		return nil, nil
	}
	// A token's subject is the client on the route; across the gateway
	// only when the route's namespace cannot mint subjects (see
	// routing.Auth.TrustedSubjects): else any tenant could spend another's
	// users' limits, or make up a subject per handshake.
	subject := ""
	if id != nil && id.claims != nil && id.claims.Subject != "" && route.Auth.Tokens != nil {
		subject = route.Auth.Tokens.Issuer() + "\x00" + id.claims.Subject
	}
	key := func(scope string, bySubject bool) (clientlimit.Key, bool) {
		if bySubject && subject != "" {
			return clientlimit.SubjectKey(scope, subject), true
		}
		return clientlimit.AddrKey(scope, client), client.IsValid()
	}
	now := e.clients.Now()
	gk, gok := key("", route.Auth != nil && route.Auth.TrustedSubjects)
	var rk clientlimit.Key
	rok := false
	if rl != nil {
		rk, rok = key(route.Key.Namespace+"/"+route.Key.Name, true)
	}
	if !gok && !rok {
		return nil, nil
	}
	if !gok {
		g = ClientLimits{}
	}
	if !rok {
		rl = nil
	}
	if g.rateOn() {
		if ok, wait := e.clients.Allow(gk, clientlimit.Bucket{Rate: g.HandshakeRate, Burst: g.HandshakeBurst}, now); !ok {
			s.opts.Metrics.limited(limitRate)
			return nil, tooMany("too many handshakes from this client", wait)
		}
	}
	if rl != nil && rl.HandshakeRate > 0 {
		if ok, wait := e.clients.Allow(rk, clientlimit.Bucket{Rate: rl.HandshakeRate, Burst: rl.HandshakeBurst}, now); !ok {
			s.opts.Metrics.limited(limitRouteRate)
			return nil, tooMany("too many handshakes from this client on this route", wait)
		}
	}
	h := &clientHold{clients: e.clients}
	if g.MaxTunnels > 0 {
		ok, tracked := e.clients.Acquire(gk, g.MaxTunnels, now)
		if !ok {
			s.opts.Metrics.limited(limitTunnels)
			return nil, tooMany("this client has too many open tunnels", s.opts.RetryAfter)
		}
		if tracked {
			h.keys[h.n], h.n = gk, h.n+1
		}
	}
	if rl != nil && rl.MaxTunnels > 0 {
		ok, tracked := e.clients.Acquire(rk, rl.MaxTunnels, now)
		if !ok {
			h.release()
			s.opts.Metrics.limited(limitRouteTunnels)
			return nil, tooMany("this client has too many open tunnels on this route", s.opts.RetryAfter)
		}
		if tracked {
			h.keys[h.n], h.n = rk, h.n+1
		}
	}
	if h.n == 0 {
		return nil, nil
	}
	return h, nil
}

func (o ClientLimits) rateOn() bool { return o.HandshakeRate > 0 && o.HandshakeBurst > 0 }

// tooMany is a 429 whose Retry-After is wait, in whole seconds, at least
// one.
func tooMany(text string, wait time.Duration) *answer {
	a := refuse(http.StatusTooManyRequests, text)
	secs := max(1, int((wait+time.Second-1)/time.Second))
	a.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	return a
}

// sweepClients forgets, every interval, the clients whose state changes
// nothing any more, until the gateway stops.
func (s *Server) sweepClients(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.edge.clients.Sweep(s.edge.clients.Now())
			s.opts.Metrics.trackedClients(s.edge.clients.Len())
		}
	}
}
