package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/wsgate/wsgate/routing"
)

// target is where an allowlisted request goes.
type target struct {
	route   *routing.Route
	backend routing.Backend
	// uri is the request-target for the pod: the route's backendPath, the
	// rest of the request path, and the query, unchanged.
	uri string
	// host and path are what the table matched: the request's normalized
	// host and its path (without the query).
	host, path string
}

// errNotFound is the one answer for every address the gateway does not
// serve: no route, a non-canonical address, or an address that is not
// allowlisted all look the same to the client.
var errNotFound = refuse(http.StatusNotFound, "no allowlisted pod at this address")

// matched is a request whose host and path found a route; the pod
// address in its path is not looked up yet.
type matched struct {
	tbl   *routing.Table
	route *routing.Route
	// rest is the path after the route's prefix: "" or "/...".
	rest string
	// query is the request-target's query, with hasQuery.
	query    string
	hasQuery bool
	// host and path are what the table matched.
	host, path string
	// client is the client's address (see resolveClient).
	client netip.Addr
}

// match finds the route for a request's host and raw request-target. It
// rejects, before any lookup, request-targets that are not plain
// absolute paths (percent-encoding, dot or empty segments).
func match(tbl *routing.Table, host, requestURI string) (matched, *answer) {
	path, query, hasQuery := strings.Cut(requestURI, "?")
	if r := checkPath(path); r != nil {
		return matched{}, r
	}
	route, rest, ok := tbl.Match(host, path)
	if !ok {
		return matched{}, errNotFound
	}
	return matched{tbl: tbl, route: route, rest: rest, query: query, hasQuery: hasQuery, host: host, path: path}, nil
}

// target looks up the pod address that follows the route's prefix. An
// address segment that is not the canonical text of an IPv4 or IPv6
// address, or an address the route does not allowlist, is not found.
// Nothing that target returns lies outside the table.
func (m matched) target() (target, *answer) {
	// rest is "/<address>" or "/<address>/<more>".
	if m.rest == "" {
		return target{}, errNotFound
	}
	seg, more, _ := strings.Cut(m.rest[1:], "/")
	addr, ok := parseAddr(seg)
	if !ok {
		return target{}, errNotFound
	}
	b, ok := m.route.Backend(addr)
	if !ok {
		return target{}, errNotFound
	}
	route := m.route
	uri := route.BackendPath
	if rest := m.rest[1+len(seg):]; rest != "" {
		uri = strings.TrimSuffix(route.BackendPath, "/") + "/" + more
	}
	if m.hasQuery {
		uri += "?" + m.query
	}
	return target{route: route, backend: b, uri: uri, host: m.host, path: m.path}, nil
}

// resolve maps a request's host and raw request-target to a target:
// match, then target.
func resolve(tbl *routing.Table, host, requestURI string) (target, *answer) {
	m, a := match(tbl, host, requestURI)
	if a != nil {
		return target{}, a
	}
	return m.target()
}

// checkPath accepts an absolute path of plain segments: no
// percent-encoding, no "." or ".." segments, no empty segment except a
// trailing slash, and nothing outside visible ASCII.
func checkPath(path string) *answer {
	if !strings.HasPrefix(path, "/") {
		return refuse(http.StatusBadRequest, "the request-target must be an absolute path")
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '\\' || c == '#' {
			return refuse(http.StatusBadRequest, "the path must not contain percent-encoding, backslashes or non-ASCII bytes")
		}
	}
	for rest := path[1:]; ; {
		s, more, found := strings.Cut(rest, "/")
		switch {
		case s == "." || s == "..":
			return refuse(http.StatusBadRequest, "the path must not contain dot segments")
		case s == "" && found:
			return refuse(http.StatusBadRequest, "the path must not contain empty segments")
		case !found:
			return nil
		}
		rest = more
	}
}

// parseAddr accepts only the canonical text of an address: what
// netip.Addr.String prints, without zone, and never an IPv4-mapped IPv6
// address (the IPv4 form is the canonical one).
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.String() != s || !routing.Canonical(a) {
		return netip.Addr{}, false
	}
	return a, true
}

// normalizeHost returns the request's host, lower case, without port or
// trailing dot; ok is false for a host the gateway cannot route.
func normalizeHost(hostport string) (string, bool) {
	host, split := hostport, false
	// Without a colon, SplitHostPort can only fail (and allocate its
	// error).
	if strings.IndexByte(hostport, ':') >= 0 {
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			host, split = h, true
		}
	}
	if !split && strings.HasPrefix(hostport, "[") {
		// An IPv6 literal without port.
		inner, ok := strings.CutSuffix(hostport[1:], "]")
		if !ok {
			return "", false
		}
		host = inner
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || len(host) > 253 {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		if !hostByte(host[i]) {
			return "", false
		}
	}
	return host, true
}

// hostByte reports whether c may appear in a normalized host: a DNS name
// in lower case, or an IP literal.
func hostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':' || c == '_'
}
