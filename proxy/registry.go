package proxy

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/wsgate/wsgate/routing"
)

// backendKey identifies one allowlisted pod of one route.
type backendKey struct {
	route   routing.RouteKey
	backend routing.Backend
}

// registry counts tunnels (and handshakes in progress) per backend, per
// route namespace and in total, enforcing the caps, and finds the tunnels
// a new table revokes.
type registry struct {
	mu      sync.Mutex
	closed  bool           // no more tunnels: the gateway is shutting down
	wg      sync.WaitGroup // open tunnels
	total   int
	count   map[backendKey]int
	spaces  map[string]int // by route namespace
	tunnels map[backendKey]map[*tunnel]struct{}
}

func newRegistry() *registry {
	return &registry{count: make(map[backendKey]int), spaces: make(map[string]int), tunnels: make(map[backendKey]map[*tunnel]struct{})}
}

// capReached names the cap that refused a slot.
type capReached int

const (
	// capNone: the slot was taken.
	capNone capReached = iota
	// capGateway: the gateway's cap on tunnels.
	capGateway
	// capNamespace: the share of the gateway's tunnels that the routes
	// of one namespace may hold.
	capNamespace
	// capPod: the route's cap per pod.
	capPod
)

// message is what a client is told when cap c refuses its handshake.
func (c capReached) message() string {
	switch c {
	case capGateway:
		return "the gateway is at its connection limit"
	case capNamespace:
		return "the route's namespace is at its share of the gateway's tunnels"
	default:
		return "the pod is at its connection limit"
	}
}

// slot is one place under the caps, reserved for a handshake and then
// held by its tunnel. Whoever holds it releases it, exactly once: a
// second release is a bug that would let the counts drift below the
// caps, and panics.
type slot struct {
	reg      *registry
	key      backendKey
	hold     *clientHold // the client's counts, if any
	released atomic.Bool
}

// release gives the slot back.
func (s *slot) release() {
	if !s.released.CompareAndSwap(false, true) {
		panic("wsgate: a tunnel slot was released twice")
	}
	s.reg.release(s.key)
	s.hold.release()
}

// reserve takes a slot for a handshake to k, unless the global cap, the
// cap of k's route namespace or the per-pod cap (each 0: no cap) is
// reached; it returns the cap that refused, or the slot.
func (r *registry) reserve(k backendKey, globalCap, namespaceCap, perPodCap int) (*slot, capReached) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if globalCap > 0 && r.total >= globalCap {
		return nil, capGateway
	}
	if namespaceCap > 0 && r.spaces[k.route.Namespace] >= namespaceCap {
		return nil, capNamespace
	}
	if perPodCap > 0 && r.count[k] >= perPodCap {
		return nil, capPod
	}
	r.total++
	r.spaces[k.route.Namespace]++
	r.count[k]++
	return &slot{reg: r, key: k}, capNone
}

// release gives back a slot's place in the counts.
func (r *registry) release(k backendKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total--
	if r.spaces[k.route.Namespace]--; r.spaces[k.route.Namespace] <= 0 {
		delete(r.spaces, k.route.Namespace)
	}
	if r.count[k]--; r.count[k] <= 0 {
		delete(r.count, k)
	}
}

// add registers an open tunnel, which holds its slot from now on. It
// returns false once closeAll has run: the slot is then released, and
// the tunnel must be closed at once.
func (r *registry) add(t *tunnel) bool {
	k := t.slot.key
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		t.slot.release()
		return false
	}
	r.wg.Add(1)
	set := r.tunnels[k]
	if set == nil {
		set = make(map[*tunnel]struct{})
		r.tunnels[k] = set
	}
	set[t] = struct{}{}
	r.mu.Unlock()
	return true
}

// remove unregisters a tunnel that add registered and releases its slot.
func (r *registry) remove(t *tunnel) {
	k := t.slot.key
	r.mu.Lock()
	if set := r.tunnels[k]; set != nil {
		delete(set, t)
		if len(set) == 0 {
			delete(r.tunnels, k)
		}
	}
	r.mu.Unlock()
	t.slot.release()
	r.wg.Done()
}

// revocation is an open tunnel the current table no longer allows, and
// why.
type revocation struct {
	t      *tunnel
	reason string
}

// Reasons sent in the Close frame of a revoked tunnel.
const (
	reasonPodRevoked    = "pod is no longer allowlisted"
	reasonRouteMoved    = "route no longer serves this host and path"
	reasonOriginRevoked = "origin is no longer allowed by the route"
	reasonRebound       = "pod no longer belongs to this identity"
	reasonAuthRequired  = "route now requires authentication"
)

// revoked returns the open tunnels that tbl no longer allows, except
// those that drain: the route's current revokePolicy decides, or, for a
// route that is gone, the policy it had when the tunnel opened. Why a
// tunnel is no longer allowed: see revokeReason.
func (r *registry) revoked(tbl *routing.Table) []revocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []revocation
	for k, set := range r.tunnels {
		rt, exists := tbl.Route(k.route)
		podAllowed := tbl.Allows(k.route, k.backend)
		for t := range set {
			if reason := identityRevoked(rt, k.backend, t); reason != "" {
				out = append(out, revocation{t: t, reason: reason})
				continue
			}
			drain := t.drainOnRevoke
			if exists {
				drain = rt.DrainOnRevoke
			}
			if drain {
				continue
			}
			if reason := revokeReason(tbl, podAllowed, rt, t); reason != "" {
				out = append(out, revocation{t: t, reason: reason})
			}
		}
	}
	return out
}

// revokeReason says why route rt of table tbl (nil: gone) no longer
// allows tunnel t, or "" when it still does: its pod left the route's
// allowlist; the table sends the host and path the tunnel was opened on
// to no route or to another one (the route's hostnames or prefix were
// edited, or another route, maybe another namespace's, now claims them);
// or the route no longer admits the Origin the tunnel opened with.
func revokeReason(tbl *routing.Table, podAllowed bool, rt *routing.Route, t *tunnel) string {
	if !podAllowed || rt == nil {
		return reasonPodRevoked
	}
	in := t.info
	if in == nil {
		return ""
	}
	if m, _, ok := tbl.Match(in.matchHost, in.path); !ok || m.Key != rt.Key {
		return reasonRouteMoved
	}
	// A list of origins that has not changed admits what it admitted;
	// the rule without one depends on the route's hostnames and the rest
	// of the table.
	unchanged := len(rt.AllowedOrigins) > 0 && slices.Equal(in.route.AllowedOrigins, rt.AllowedOrigins)
	if in.hasOrigin && !unchanged && !originMatches(in.origin, tbl, rt, in.originSite()) {
		return reasonOriginRevoked
	}
	return ""
}

// identityRevoked says why route rt (nil: gone) no longer lets the
// identity tunnel t opened with reach its pod b, or "": the pod's bound
// value changed (it belongs to someone else now), or the route, open when
// the tunnel opened, now requires auth. These close the tunnel whatever
// the route's revokePolicy: Drain is for pods that leave the route, not
// for a pod that changes hands.
func identityRevoked(rt *routing.Route, b routing.Backend, t *tunnel) string {
	if rt == nil || t.info == nil {
		return ""
	}
	if rt.Auth != nil && !t.info.authed {
		return reasonAuthRequired
	}
	if now, ok := rt.Backend(b.Addr.Addr()); ok && now.Addr == b.Addr && now.Bound != b.Bound {
		return reasonRebound
	}
	return ""
}

// stillAllowed says why tbl no longer allows a tunnel just registered,
// and whether the route's revokePolicy may let it drain; "" when tbl
// allows it.
func (r *registry) stillAllowed(tbl *routing.Table, t *tunnel) (reason string, drainable bool) {
	k := t.slot.key
	rt, _ := tbl.Route(k.route)
	if reason := identityRevoked(rt, k.backend, t); reason != "" {
		return reason, false
	}
	return revokeReason(tbl, tbl.Allows(k.route, k.backend), rt, t), true
}

// closeAll refuses further tunnels and returns every open one.
func (r *registry) closeAll() []*tunnel {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var out []*tunnel
	for _, set := range r.tunnels {
		for t := range set {
			out = append(out, t)
		}
	}
	return out
}

// wait returns when every tunnel is removed; call it after closeAll.
func (r *registry) wait() { r.wg.Wait() }

// open is the number of open tunnels and handshakes in progress.
func (r *registry) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
