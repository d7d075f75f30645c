package proxy

import (
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/wsgate/wsgate/routing"
)

// requestOrigin is the request's Origin header, trimmed and lower-cased,
// and whether it has one. checkOrigin has refused requests with several.
func requestOrigin(r *http.Request) (string, bool) {
	v := r.Header.Values("Origin")
	if len(v) == 0 {
		return "", false
	}
	return strings.ToLower(strings.TrimSpace(v[0])), true
}

// originSite is where a handshake was sent, as the Origin rule of a
// route without allowedOrigins needs it.
type originSite struct {
	// hostport is the request's Host header as the client sent it: only
	// its port counts.
	hostport string
	// path is the request path (without the query).
	path string
	// overTLS: the client's connection to the gateway is TLS.
	overTLS bool
}

// originMatches reports whether route rt of table tbl admits origin (as
// requestOrigin gives it) for a handshake sent to site. With
// allowedOrigins, the origin must equal one of them, or the list holds
// "*". Without, only the route's own origins pass:
//
//   - the scheme fits the connection: https on TLS; http or https on a
//     plain connection (https when a load balancer in front ends TLS: a
//     page served over https can only open wss:// websockets). Any other
//     scheme, and "null", is refused;
//   - the host is one of the route's hostnames (a "*.suffix" name covers
//     one label in front of suffix) that is the route's own: the table
//     sends a request for the same path on that host to this very route,
//     so a name that another route claims more precisely (its exact name
//     in front of this route's wildcard) is that route's. For a route
//     with hostnames, the table choosing it is exactly that: it picks a
//     route by exact name, then by a wildcard one label up, and falls
//     back to routes without hostnames only. The request's Host header is
//     never taken for the route's: the client chooses it. A route without
//     hostnames (the catch-all) thus admits no Origin;
//   - the port (the scheme's default when absent) is the one the Host
//     header names; without one, 443 on TLS, and on a plain connection
//     the default of the Origin's scheme (behind a load balancer that
//     ends TLS, the scheme the client used is not known).
func originMatches(origin string, tbl *routing.Table, rt *routing.Route, site originSite) bool {
	if len(rt.AllowedOrigins) > 0 {
		return slices.Contains(rt.AllowedOrigins, "*") || slices.Contains(rt.AllowedOrigins, origin)
	}
	scheme, host, port, ok := parseOrigin(origin)
	if !ok || scheme == "http" && site.overTLS {
		return false
	}
	if len(rt.Hosts) == 0 {
		return false
	}
	if m, _, ok := tbl.Match(host, site.path); !ok || m.Key != rt.Key {
		return false
	}
	want, ok := hostPort(site.hostport)
	if !ok {
		return false
	}
	if want == 0 {
		want = defaultPort(scheme)
		if site.overTLS {
			want = 443
		}
	}
	return port == want
}

// parseOrigin splits an Origin that is exactly scheme://host[:port] with
// scheme http or https and host a DNS name in lower case (a trailing dot
// is dropped); port is the scheme's default when absent. ok is false for
// anything else: other schemes, "null", userinfo, a path, a query, an IP
// literal in brackets, an empty or non-numeric port.
func parseOrigin(origin string) (scheme, host string, port int, ok bool) {
	scheme, rest, found := strings.Cut(origin, "://")
	if !found || scheme != "http" && scheme != "https" {
		return "", "", 0, false
	}
	host, port = rest, defaultPort(scheme)
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		if host, port = rest[:i], parsePort(rest[i+1:]); port == 0 {
			return "", "", 0, false
		}
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", "", 0, false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c == ':' || !hostByte(c) {
			return "", "", 0, false
		}
	}
	return scheme, host, port, true
}

// hostPort is the port that a Host header names, 0 when it names none;
// ok is false for a port that is not a number in 1-65535.
func hostPort(hostport string) (port int, ok bool) {
	if strings.IndexByte(hostport, ':') < 0 {
		return 0, true
	}
	_, p, err := net.SplitHostPort(hostport)
	if err != nil || p == "" {
		// No port (an IPv6 literal), or an empty one: the default.
		return 0, true
	}
	port = parsePort(p)
	return port, port != 0
}

// parsePort is the value of a port of 1 to 5 digits in 1-65535, else 0.
func parsePort(s string) int {
	if len(s) == 0 || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 65535 {
		return 0
	}
	return n
}

// defaultPort is the port of an http or https origin without one.
func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}
