package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/routing"
)

// fuzzBackends are the backends each fuzz route allowlists (by route
// name); routing.New drops the non-canonical ones.
var fuzzBackends = map[string][]string{
	"rooms":  {"127.0.0.2:80", "[::1]:81", "[fd00::ab]:82", "10.1.2.3:83", "[::ffff:127.0.0.9]:84"},
	"root":   {"127.0.0.3:80", "[2001:db8::1]:80", "[2001:db8:0:0:1::]:81"},
	"tenant": {"192.168.1.1:80", "[fe80::1]:80"},
	"any":    {"127.0.0.4:80", "[::]:80", "0.0.0.0:80"},
}

// fuzzTable is the fixed table the fuzz tests resolve against: IPv4 and
// IPv6 backends on exact, wildcard and catch-all hosts, nested prefixes.
func fuzzTable() *routing.Table {
	mk := func(name, prefix, backendPath string, hosts ...string) *routing.Route {
		r := &routing.Route{
			Key:         routing.RouteKey{Namespace: "fuzz", Name: name},
			Hosts:       hosts,
			PathPrefix:  prefix,
			BackendPath: backendPath,
		}
		for _, a := range fuzzBackends[name] {
			r.Backends = append(r.Backends, routing.Backend{Pod: name + "-" + a, Addr: netip.MustParseAddrPort(a)})
		}
		return r
	}
	return routing.New(1, time.Now(), []*routing.Route{
		mk("rooms", "/rooms", "/", "ws.example.com"),
		mk("root", "/", "/api/ws/", "ws.example.com"),
		mk("tenant", "/a/b", "/t", "*.tenant.example"),
		mk("any", "/x", "/" /* catch-all */),
	})
}

// fuzzHostileSegments are address segments from the hostile suite.
var fuzzHostileSegments = []string{
	"127.0.0.2", "::1", "fd00::ab", "10.1.2.3", "127.0.0.3", "2001:db8::1", "2001:db8::1:0:0:0", "192.168.1.1", "fe80::1", "127.0.0.4", "::",
	"127.000.0.2", "127.0.0.02", "0127.0.0.2", "127.2", "127.0.2", "2130706434", "0x7f.0.0.2", "0x7f000002", "0177.0.0.2",
	"::ffff:127.0.0.2", "::ffff:127.0.0.9", "::FFFF:127.0.0.9", "::ffff:7f00:2", "::127.0.0.2",
	"0:0::1", "0::1", "0:0:0:0:0:0:0:1", "::0001", "[::1]", "FD00::AB", "fd00::00ab", "fd00:0::ab", "2001:db8:0:0:1::",
	"fe80::1%25eth0", "fe80::1%eth0", "::1%lo", "127.0.0.2.", "127.0.0.250", "127.0.0.2:80", "%31%32%37.0.0.2", "localhost", "",
}

func FuzzResolve(f *testing.F) {
	tbl := fuzzTable()
	hosts := []string{"ws.example.com", "WS.Example.COM.:443", "a.tenant.example", "x.y.tenant.example", "evil.example", "", "[::1]:80", "127.0.0.250"}
	for _, seg := range fuzzHostileSegments {
		for _, h := range hosts {
			f.Add(h, "/rooms/"+seg+"/x?y=1")
		}
		f.Add("ws.example.com", "/"+seg)
		f.Add("a.tenant.example", "/a/b/"+seg+"/")
		f.Add("anything", "/x/"+seg)
	}
	for _, p := range []string{
		"/rooms/../127.0.0.2", "/rooms/./127.0.0.2", "/rooms//127.0.0.2", `/rooms\127.0.0.2`, "/rooms/127.0.0.2#x",
		"http://127.0.0.250/", "//127.0.0.250/", "*", "127.0.0.250:80", "/rooms/127.0.0.2/\xc3\xa9", "/rooms%2f127.0.0.2",
		"/rooms/127.0.0.2/..", "/rooms/127.0.0.2/x/../../127.0.0.250", "/rooms/127.0.0.2?/../127.0.0.250", "/a/b", "/a/bc/192.168.1.1",
		"/rooms", "/rooms/", "/", "", "?", "/?127.0.0.2", "/rooms/::1/", "/rooms/::1//", "/x/127.0.0.4/.",
	} {
		f.Add("ws.example.com", p)
		f.Add("a.tenant.example", p)
	}
	f.Fuzz(func(t *testing.T, host, requestURI string) {
		// resolve gets a normalized host from ServeHTTP; it must also
		// survive any other.
		tgt, rf := resolve(tbl, host, requestURI)
		checkResolved(t, tbl, host, requestURI, tgt, rf)
		if h, ok := normalizeHost(host); ok {
			tgt, rf := resolve(tbl, h, requestURI)
			checkResolved(t, tbl, h, requestURI, tgt, rf)
		}
	})
}

// checkResolved holds resolve's answer to the invariants of the data
// plane rules.
func checkResolved(t *testing.T, tbl *routing.Table, host, requestURI string, tgt target, rf *answer) {
	t.Helper()
	if rf != nil {
		if tgt.route != nil || tgt.backend != (routing.Backend{}) || tgt.uri != "" {
			t.Fatalf("refusal %d with a target %+v", rf.status, tgt)
		}
		if rf.status != http.StatusBadRequest && rf.status != http.StatusNotFound {
			t.Fatalf("refusal status %d, want 400 or 404", rf.status)
		}
		return
	}
	if tgt.route == nil {
		t.Fatalf("accepted %q without a route", requestURI)
	}
	path, query, hasQuery := strings.Cut(requestURI, "?")
	if strings.ContainsAny(path, `%\#`) {
		t.Fatalf("accepted %q: the path has percent-encoding, a backslash or a fragment", requestURI)
	}
	for i := 0; i < len(path); i++ {
		if path[i] <= ' ' || path[i] >= 0x7f {
			t.Fatalf("accepted %q: byte %#x in the path", requestURI, path[i])
		}
	}
	if !strings.HasPrefix(path, "/") {
		t.Fatalf("accepted %q: not an absolute path", requestURI)
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || s == "" && i != len(segs)-1 {
			t.Fatalf("accepted %q: dot or empty segment", requestURI)
		}
	}
	route, rest, ok := tbl.Match(host, path)
	if !ok || route != tgt.route {
		t.Fatalf("accepted %q on host %q with route %v; the table matches %v", requestURI, host, tgt.route.Key, ok)
	}
	seg, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	addr := tgt.backend.Addr.Addr()
	if !addr.IsValid() || addr.Zone() != "" || addr.Is4In6() {
		t.Fatalf("accepted %q: backend address %v is not canonical", requestURI, addr)
	}
	if seg != addr.String() {
		t.Fatalf("accepted %q: address segment %q is not the canonical %q", requestURI, seg, addr.String())
	}
	if b, ok := route.Backend(addr); !ok || b != tgt.backend {
		t.Fatalf("accepted %q: the route has %v %v for %v, the target %v", requestURI, b, ok, addr, tgt.backend)
	}
	listed := false
	for _, a := range fuzzBackends[route.Key.Name] {
		listed = listed || netip.MustParseAddrPort(a) == tgt.backend.Addr
	}
	if !listed {
		t.Fatalf("accepted %q: backend %v is not in the route's list", requestURI, tgt.backend.Addr)
	}
	// The pod's request-target: the backend path, the rest, the query.
	uriPath, uriQuery, uriHasQuery := strings.Cut(tgt.uri, "?")
	if uriHasQuery != hasQuery || uriQuery != query {
		t.Fatalf("accepted %q: the pod's target %q changed the query", requestURI, tgt.uri)
	}
	if !strings.HasPrefix(uriPath, strings.TrimSuffix(route.BackendPath, "/")+"/") && uriPath != route.BackendPath {
		t.Fatalf("accepted %q: the pod's target %q is outside the backend path %q", requestURI, tgt.uri, route.BackendPath)
	}
	if strings.Contains(uriPath, "/../") || strings.HasSuffix(uriPath, "/..") || strings.Contains(uriPath, "%") {
		t.Fatalf("accepted %q: the pod's target %q has a dot segment or percent-encoding", requestURI, tgt.uri)
	}
}

// fuzzOriginRoutes are the routes whose Origin rules FuzzCheckHandshake
// holds to their invariant: a route with hostnames (an exact name, and a
// wildcard one of whose names another namespace's route claims), the
// catch-all, and a route that lists origins; and the table of them all.
func fuzzOriginRoutes() (*routing.Table, []*routing.Route) {
	own := &routing.Route{Key: routing.RouteKey{Namespace: "fuzz", Name: "own"}, Hosts: []string{"ws.example.com", "*.tenant.example"}, PathPrefix: "/"}
	claimed := &routing.Route{Key: routing.RouteKey{Namespace: "other", Name: "claimed"}, Hosts: []string{"b.tenant.example"}, PathPrefix: "/"}
	catchAll := &routing.Route{Key: routing.RouteKey{Namespace: "fuzz", Name: "any"}, PathPrefix: "/"}
	listed := &routing.Route{Key: routing.RouteKey{Namespace: "fuzz", Name: "listed"}, Hosts: []string{"listed.example"}, PathPrefix: "/",
		AllowedOrigins: []string{"https://app.example.com", "http://localhost:8080"}}
	return routing.New(1, time.Now(), []*routing.Route{own, claimed, catchAll, listed}), []*routing.Route{own, catchAll, listed}
}

func FuzzCheckHandshake(f *testing.F) {
	tbl := fuzzTable()
	originTable, originRoutes := fuzzOriginRoutes()
	for _, h := range []string{
		wsHead("/rooms/127.0.0.2/x?y=1"),
		wsHead("/a/b/192.168.1.1", "Host: a.tenant.example"),
		wsHead("/rooms/::1/", "Origin: http://ws.example.com", "Sec-WebSocket-Protocol: chat, b"),
		wsHead("/rooms/::1/", "Origin: https://ws.example.com"),
		wsHead("/rooms/::1/", "Host: ws.example.com:8443", "Origin: https://WS.example.com.:8443"),
		wsHead("/rooms/::1/", "Host: a.tenant.example", "Origin: https://a.tenant.example"),
		wsHead("/rooms/::1/", "Host: a.tenant.example", "Origin: https://b.tenant.example"),
		wsHead("/rooms/::1/", "Host: a.tenant.example", "Origin: https://x.a.tenant.example"),
		wsHead("/rooms/::1/", "Host: attacker.test", "Origin: http://attacker.test"),
		wsHead("/rooms/::1/", "Origin: foo://ws.example.com"),
		wsHead("/rooms/::1/", "Origin: http://user@ws.example.com"),
		wsHead("/rooms/::1/", "Origin: https://listed.example"),
		wsHead("/rooms/127.0.0.2", "Connection: Upgrade, X-Secret, Host, Sec-WebSocket-Key", "+X-Secret: s", "+Keep-Alive: 5", "+Te: trailers"),
		wsHead("/rooms/127.0.0.2", "+X-Forwarded-For: 6.6.6.6", "+Forwarded: for=6.6.6.6", "+Proxy-Authorization: x", "+Trailer: y"),
		wsHead("/rooms/127.0.0.2", "+X_Forwarded_For: 6.6.6.6", "+x_real_IP: 6.6.6.6", "+Foo_Bar: f"),
		wsHead("/rooms/127.0.0.2", "Upgrade: h2c"),
		wsHead("/rooms/127.0.0.2", "Upgrade: websocket, h2c"),
		wsHead("/rooms/127.0.0.2", "-Upgrade"),
		wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Version: 8"),
		wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Key: AAAA"),
		wsHead("/rooms/127.0.0.2", "Content-Length: 5") + "hello",
		wsHead("/rooms/127.0.0.2", "Transfer-Encoding: chunked") + "0\r\n\r\n",
		wsHead("/rooms/127.0.0.2", "Origin: https://app.example.com", "+Origin: https://evil.example"),
		wsRequest("POST /rooms/127.0.0.2 HTTP/1.1", "Content-Length: 1") + "x",
		wsRequest("GET /rooms/127.0.0.2 HTTP/1.0"),
		wsRequest("GET http://127.0.0.250/ HTTP/1.1"),
		wsRequest("CONNECT 127.0.0.250:80 HTTP/1.1"),
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		r.RemoteAddr = "192.0.2.1:1234"
		rf := checkHandshake(r)
		path, _, _ := strings.Cut(r.RequestURI, "?")
		overTLS := *r
		overTLS.TLS = &tls.ConnectionState{}
		for _, route := range originRoutes {
			checkOriginInvariant(t, r, originTable, target{route: route, path: path})
			checkOriginInvariant(t, &overTLS, originTable, target{route: route, path: path})
		}
		if rf != nil {
			switch rf.status {
			case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUpgradeRequired:
			default:
				t.Fatalf("refusal status %d", rf.status)
			}
			return
		}
		checkAcceptedHandshake(t, r)
		if !serverWouldAccept(r) {
			return
		}
		// What the pod gets for an accepted handshake is one well-formed
		// websocket request, nothing more, and no hop-by-hop headers.
		host, ok := normalizeHost(r.Host)
		if !ok {
			return
		}
		tgt, rf := resolve(tbl, host, r.RequestURI)
		if rf != nil {
			return
		}
		checkPodRequest(t, r, tgt.uri)
	})
}

// checkAcceptedHandshake holds an accepted request to RFC 6455, 4.2.1.
func checkAcceptedHandshake(t *testing.T, r *http.Request) {
	t.Helper()
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		t.Fatalf("accepted %s %s", r.Method, r.Proto)
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		t.Fatalf("accepted Connection %q", r.Header["Connection"])
	}
	if up := r.Header["Upgrade"]; len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket") {
		t.Fatalf("accepted Upgrade %q", up)
	}
	if v := r.Header["Sec-Websocket-Version"]; len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		t.Fatalf("accepted Sec-WebSocket-Version %q", v)
	}
	keys := r.Header["Sec-Websocket-Key"]
	if len(keys) != 1 {
		t.Fatalf("accepted Sec-WebSocket-Key %q", keys)
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		t.Fatalf("accepted Sec-WebSocket-Key %q", keys[0])
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) != 0 {
		t.Fatalf("accepted a body: Content-Length %d, Transfer-Encoding %q", r.ContentLength, r.TransferEncoding)
	}
}

// checkOriginInvariant: checkOrigin never panics, and what it lets
// through is no Origin, an allowed one, or (with no list) an origin of
// the route's own: an http(s) URL of nothing but scheme, host and port,
// https on TLS, naming one of the route's hostnames that no other route
// claims, on the port the Host header names.
func checkOriginInvariant(t *testing.T, r *http.Request, tbl *routing.Table, tgt target) {
	t.Helper()
	route := tgt.route
	if rf := checkOrigin(r, tbl, tgt); rf != nil {
		if rf.status != http.StatusForbidden {
			t.Fatalf("origin refusal %d", rf.status)
		}
		return
	}
	origins := r.Header.Values("Origin")
	if len(origins) > 1 {
		t.Fatalf("accepted %d Origin headers", len(origins))
	}
	if len(origins) == 0 {
		return // not a browser: nothing to protect
	}
	o := strings.ToLower(strings.TrimSpace(origins[0]))
	if len(route.AllowedOrigins) > 0 {
		if !slices.Contains(route.AllowedOrigins, o) {
			t.Fatalf("accepted Origin %q, not in %q", origins[0], route.AllowedOrigins)
		}
		return
	}
	u, err := url.Parse(o)
	if err != nil || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(u.Host, ":") {
		t.Fatalf("accepted Origin %q (%v): not scheme://host[:port]", origins[0], err)
	}
	if u.Scheme != "https" && (u.Scheme != "http" || r.TLS != nil) {
		t.Fatalf("accepted Origin %q with scheme %q (TLS %v)", origins[0], u.Scheme, r.TLS != nil)
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	own := false
	for _, h := range route.Hosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			label, found := strings.CutSuffix(host, "."+suffix)
			own = own || found && label != "" && !strings.Contains(label, ".")
		} else {
			own = own || h == host
		}
	}
	if !own || host == "b.tenant.example" {
		t.Fatalf("accepted Origin %q: not a hostname of its own among %q", origins[0], route.Hosts)
	}
	port := map[string]string{"http": "80", "https": "443"}[u.Scheme]
	if u.Port() != "" {
		port = strings.TrimLeft(u.Port(), "0")
	}
	_, want, err := net.SplitHostPort(r.Host)
	if err != nil || want == "" {
		want = port // no port: the default of the Origin's scheme on a plain connection
		if r.TLS != nil {
			want = "443"
		}
	}
	if strings.TrimLeft(want, "0") != port {
		t.Fatalf("accepted Origin %q for Host %q (TLS %v): another port", origins[0], r.Host, r.TLS != nil)
	}
}

// serverWouldAccept applies the checks net/http's server makes before
// ServeHTTP that http.ReadRequest does not (which, like the server, has
// already moved Host out of the header).
func serverWouldAccept(r *http.Request) bool {
	if r.Host == "" || !httpguts.ValidHostHeader(r.Host) {
		return false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// checkPodRequest parses what podRequest writes for r and checks it.
func checkPodRequest(t *testing.T, r *http.Request, uri string) {
	t.Helper()
	out := podRequest(r, uri)
	br := bufio.NewReader(bytes.NewReader(out))
	pr, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("the pod's request does not parse: %v\n%q", err, out)
	}
	if br.Buffered() != 0 {
		t.Fatalf("bytes after the pod's request head: %q", out)
	}
	if pr.Method != http.MethodGet || pr.RequestURI != uri || pr.Proto != "HTTP/1.1" {
		t.Fatalf("the pod's request line: %s %s %s, want GET %s HTTP/1.1", pr.Method, pr.RequestURI, pr.Proto, uri)
	}
	// (ReadRequest refuses a second Host line.)
	if pr.Host != r.Host {
		t.Fatalf("the pod's Host %q, want %q", pr.Host, r.Host)
	}
	if c := pr.Header["Connection"]; len(c) != 1 || c[0] != "Upgrade" {
		t.Fatalf("the pod's Connection %q", c)
	}
	if u := pr.Header["Upgrade"]; len(u) != 1 || u[0] != "websocket" {
		t.Fatalf("the pod's Upgrade %q", u)
	}
	if xff := pr.Header["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "192.0.2.1" {
		t.Fatalf("the pod's X-Forwarded-For %q", xff)
	}
	if pr.ContentLength != 0 || len(pr.TransferEncoding) != 0 {
		t.Fatalf("the pod's request has a body")
	}
	gatewaySets := map[string]bool{"Connection": true, "Upgrade": true, "Host": true,
		"X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Host": true}
	var gone []string
	for _, v := range r.Header["Connection"] {
		for _, name := range strings.Split(v, ",") {
			gone = append(gone, http.CanonicalHeaderKey(strings.TrimSpace(name)))
		}
	}
	gone = append(gone, "Keep-Alive", "Te", "Trailer", "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection", "Forwarded", "X-Real-Ip")
	for _, name := range gone {
		if name != "" && !gatewaySets[name] && len(pr.Header[name]) > 0 {
			t.Fatalf("%s reached the pod: %q", name, out)
		}
	}
	for name := range pr.Header {
		if strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			t.Fatalf("%s, a name of other characters than letters, digits and '-', reached the pod: %q", name, out)
		}
	}
}

// TestFuzzTableResolves keeps the fuzz tests honest: the canonical form
// of each backend resolves on the fixed table (so accepting paths are
// reachable), and the other forms do not.
func TestFuzzTableResolves(t *testing.T) {
	tbl := fuzzTable()
	cases := []struct {
		host, uri, wantURI string
		want               string // backend address; "" for a refusal
	}{
		{"ws.example.com", "/rooms/127.0.0.2/x?y=1", "/x?y=1", "127.0.0.2:80"},
		{"ws.example.com", "/rooms/::1/", "/", "[::1]:81"},
		{"ws.example.com", "/rooms/fd00::ab", "/", "[fd00::ab]:82"},
		{"ws.example.com", "/2001:db8:0:0:1::/a/b", "/api/ws/a/b", "[2001:db8:0:0:1::]:81"},
		{"ws.example.com", "/127.0.0.3", "/api/ws/", "127.0.0.3:80"},
		{"a.tenant.example", "/a/b/fe80::1/c", "/t/c", "[fe80::1]:80"},
		{"anything.example", "/x/0.0.0.0", "/", "0.0.0.0:80"},
		{"ws.example.com", "/rooms/::ffff:127.0.0.9", "", ""}, // dropped by the table
		{"ws.example.com", "/2001:db8::1:0:0:0", "", ""},
		{"ws.example.com", "/rooms/FD00::AB", "", ""},
		{"ws.example.com", "/rooms/127.0.0.3", "", ""},
		{"b.a.tenant.example", "/a/b/fe80::1", "", ""},
	}
	for _, tc := range cases {
		tgt, rf := resolve(tbl, tc.host, tc.uri)
		checkResolved(t, tbl, tc.host, tc.uri, tgt, rf)
		switch {
		case tc.want == "" && rf == nil:
			t.Errorf("%s%s resolved to %v, want a refusal", tc.host, tc.uri, tgt.backend.Addr)
		case tc.want != "" && rf != nil:
			t.Errorf("%s%s refused %d, want %s", tc.host, tc.uri, rf.status, tc.want)
		case tc.want != "" && (tgt.backend.Addr.String() != tc.want || tgt.uri != tc.wantURI):
			t.Errorf("%s%s resolved to %v %q, want %s %q", tc.host, tc.uri, tgt.backend.Addr, tgt.uri, tc.want, tc.wantURI)
		}
	}
}
