// Package routing defines the gateway's routing table: the immutable
// allowlist that the control plane builds from cluster state and the data
// plane reads on every handshake.
//
// A Table maps a request's host and path to a Route, and a Route maps a pod
// address to the one Backend the gateway may dial for it. Nothing outside a
// Table is ever dialled. Tables are built once, never modified, and swapped
// whole through a Publisher, so readers need no locks.
package routing

import (
	"cmp"
	"crypto/tls"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// RouteKey names the WsRoute a Route comes from.
type RouteKey struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (k RouteKey) String() string { return k.Namespace + "/" + k.Name }

// Backend is one allowlisted pod address and the port the gateway dials.
type Backend struct {
	// Pod is the pod's name, in the route's namespace.
	Pod string
	// Addr is the pod IP (canonical, unmapped, no zone) and resolved port.
	Addr netip.AddrPort
	// Bound is the pod's value that a token's binding claim must include,
	// on routes whose auth binds tokens to pods; "" otherwise.
	Bound string
}

// Timeouts of a route's tunnels; zero means "the gateway's default" for
// Handshake and Idle, and "unlimited" for MaxLifetime.
type Timeouts struct {
	Handshake   time.Duration
	Idle        time.Duration
	MaxLifetime time.Duration
}

// ClientLimits are a route's limits per client (its address, or its
// token's subject on routes with tokens), on each gateway replica; zero
// values are off.
type ClientLimits struct {
	// HandshakeRate handshakes a second, up to HandshakeBurst at once.
	HandshakeRate  float64
	HandshakeBurst int
	// MaxTunnels caps a client's open tunnels on the route.
	MaxTunnels int
}

// Route is one accepted WsRoute with its allowlisted backends.
type Route struct {
	// Key names the WsRoute.
	Key RouteKey
	// Generation is the WsRoute's metadata.generation that was built.
	Generation int64
	// Hosts are the lower-case host names the route answers on, sorted.
	// "*.example.com" matches exactly one label in front of example.com.
	// No hosts means the catch-all: every host that no other route names.
	Hosts []string
	// PathPrefix is "/" or a prefix without a trailing slash.
	PathPrefix string
	// BackendPath is the path prefix on the pod.
	BackendPath string
	// AllowedOrigins are exact origins, or "*"; empty means Origins of the
	// route's own hostnames only (the proxy's Origin rule), or no Origin
	// header.
	AllowedOrigins []string
	// Timeouts of the route's tunnels.
	Timeouts Timeouts
	// MaxConnectionsPerPod caps tunnels per pod; 0 means no per-route cap.
	MaxConnectionsPerPod int
	// DrainOnRevoke keeps open tunnels of revoked pods running instead of
	// closing them.
	DrainOnRevoke bool
	// Auth checks who is asking; nil for an open route.
	Auth *Auth
	// Limits are the route's limits per client; nil for none.
	Limits *ClientLimits
	// Backends are the allowlisted pod addresses, sorted by address.
	Backends []Backend

	byAddr map[netip.Addr]Backend
}

// Backend returns the backend for a pod address, if the route allowlists
// it. addr must be in canonical form (unmapped, no zone); any other form is
// never allowlisted.
func (r *Route) Backend(addr netip.Addr) (Backend, bool) {
	b, ok := r.byAddr[addr]
	return b, ok
}

// MatchPath reports whether path falls under the route's prefix, and
// returns the remainder: "" or a string starting with "/".
func (r *Route) MatchPath(path string) (rest string, ok bool) {
	if r.PathPrefix == "/" {
		if !strings.HasPrefix(path, "/") {
			return "", false
		}
		return path, true
	}
	if !strings.HasPrefix(path, r.PathPrefix) {
		return "", false
	}
	rest = path[len(r.PathPrefix):]
	if rest != "" && rest[0] != '/' {
		return "", false
	}
	return rest, true
}

// hostRoutes are the routes of one host, longest prefix first.
type hostRoutes []*Route

// Table is an immutable routing table. It must not be modified after New;
// it is safe for concurrent use.
type Table struct {
	certs      Certificates
	generation uint64
	builtAt    time.Time
	routes     []*Route
	byKey      map[RouteKey]*Route
	exact      map[string]hostRoutes
	wildcard   map[string]hostRoutes // keyed by the suffix after "*."
	catchAll   hostRoutes
	backends   int
}

// Certificates are the TLS certificates a table serves, chosen by SNI.
type Certificates struct {
	// ByHost maps a lower-case host name, or a "*.suffix" wildcard, to its
	// certificate. A host mapped to nil is served Default: it belongs to
	// a route without a certificate of its own, and a wildcard's
	// certificate must not stand in for it.
	ByHost map[string]*tls.Certificate
	// Default serves names that ByHost does not cover; may be nil.
	Default *tls.Certificate
}

// Option adds to a Table that New builds.
type Option func(*Table)

// WithCertificates makes the table serve certs.
func WithCertificates(certs Certificates) Option {
	return func(t *Table) { t.certs = certs }
}

// New builds a Table from routes, which it takes ownership of. Routes must
// not conflict (no two with the same host and path prefix); conflicts are
// resolved by tablebuild before this point. Backends are sorted and
// indexed; a backend whose address is not canonical is dropped.
func New(generation uint64, builtAt time.Time, routes []*Route, opts ...Option) *Table {
	t := &Table{
		generation: generation,
		builtAt:    builtAt,
		byKey:      make(map[RouteKey]*Route, len(routes)),
		exact:      make(map[string]hostRoutes),
		wildcard:   make(map[string]hostRoutes),
	}
	for _, r := range routes {
		slices.Sort(r.Hosts)
		bs := r.Backends[:0]
		r.byAddr = make(map[netip.Addr]Backend, len(r.Backends))
		for _, b := range r.Backends {
			a := b.Addr.Addr()
			if !Canonical(a) {
				continue
			}
			if _, dup := r.byAddr[a]; dup {
				continue
			}
			r.byAddr[a] = b
			bs = append(bs, b)
		}
		slices.SortFunc(bs, func(a, b Backend) int { return a.Addr.Addr().Compare(b.Addr.Addr()) })
		r.Backends = bs
		t.backends += len(bs)
		t.routes = append(t.routes, r)
		t.byKey[r.Key] = r
		if len(r.Hosts) == 0 {
			t.catchAll = append(t.catchAll, r)
			continue
		}
		for _, h := range r.Hosts {
			if suffix, ok := strings.CutPrefix(h, "*."); ok {
				t.wildcard[suffix] = append(t.wildcard[suffix], r)
			} else {
				t.exact[h] = append(t.exact[h], r)
			}
		}
	}
	slices.SortFunc(t.routes, func(a, b *Route) int { return compareKeys(a.Key, b.Key) })
	for _, o := range opts {
		o(t)
	}
	sortByPrefix(t.catchAll)
	for _, rs := range t.exact {
		sortByPrefix(rs)
	}
	for _, rs := range t.wildcard {
		sortByPrefix(rs)
	}
	return t
}

func compareKeys(a, b RouteKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// sortByPrefix orders a host's routes longest prefix first.
func sortByPrefix(rs hostRoutes) {
	slices.SortFunc(rs, func(a, b *Route) int {
		return cmp.Or(cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)), compareKeys(a.Key, b.Key))
	})
}

// Canonical reports whether a is an address the table can hold: valid,
// without zone, and not an IPv4-mapped IPv6 address.
func Canonical(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && !a.Is4In6()
}

// Generation counts the tables built by one publisher; 0 is the empty
// table that exists before the first build.
func (t *Table) Generation() uint64 { return t.generation }

// BuiltAt is when the table was built.
func (t *Table) BuiltAt() time.Time { return t.builtAt }

// Routes returns the table's routes sorted by namespace and name. The
// slice is shared: do not modify it.
func (t *Table) Routes() []*Route { return t.routes }

// Route returns the route built from the WsRoute key, if it is accepted.
func (t *Table) Route(key RouteKey) (*Route, bool) {
	r, ok := t.byKey[key]
	return r, ok
}

// Backends is the number of allowlisted backends over all routes.
func (t *Table) Backends() int { return t.backends }

// Allows reports whether the route key still allowlists backend b (same
// address and port, and the same bound value on routes that bind tokens
// to pods). The data plane uses it to find tunnels a new table
// revokes.
func (t *Table) Allows(key RouteKey, b Backend) bool {
	r, ok := t.byKey[key]
	if !ok {
		return false
	}
	got, ok := r.byAddr[b.Addr.Addr()]
	return ok && got.Addr == b.Addr && got.Bound == b.Bound
}

// Match finds the route for a request's host and path. host must be lower
// case without port. The most specific host wins (exact name, then a
// wildcard one non-empty label up, then the catch-all routes), and within it the
// longest path prefix; a host that has routes does not fall back to less
// specific ones. rest is the path after the prefix: "" or "/...".
func (t *Table) Match(host, path string) (r *Route, rest string, ok bool) {
	rs, found := t.exact[host]
	if !found {
		if parent, ok := wildcardSuffix(host); ok {
			rs, found = t.wildcard[parent]
		}
	}
	if !found {
		rs = t.catchAll
	}
	for _, r := range rs {
		if rest, ok := r.MatchPath(path); ok {
			return r, rest, true
		}
	}
	return nil, "", false
}

// wildcardSuffix is the suffix whose "*." name covers host: host without
// its first label, which must not be empty ("*.suffix" does not cover
// ".suffix").
func wildcardSuffix(host string) (suffix string, ok bool) {
	label, suffix, dot := strings.Cut(host, ".")
	return suffix, dot && label != ""
}

// Certificate returns the certificate for a TLS server name: the exact
// name's, then the wildcard's one label up, then the default (nil when
// there is none). The first of those names that has an entry decides: a
// name whose entry is nil gets the default, not the wildcard's.
func (t *Table) Certificate(serverName string) *tls.Certificate {
	name := strings.TrimSuffix(strings.ToLower(serverName), ".")
	c, ok := t.certs.ByHost[name]
	if !ok {
		if parent, wild := wildcardSuffix(name); wild {
			c, ok = t.certs.ByHost["*."+parent]
		}
	}
	if ok && c != nil {
		return c
	}
	return t.certs.Default
}
