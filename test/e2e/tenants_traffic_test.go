package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// The tenant-isolation tests about traffic: whose pod a request reaches,
// what it carries there, and what happens to open tunnels when a name
// changes hands (see tenants_test.go for the setting).

// victimSecrets are the credentials a victim's browser sends to the
// victim's host.
var victimSecrets = http.Header{
	"Cookie":        {"session=victim-secret"},
	"Authorization": {"Bearer victim-token"},
}

// TestTenantHostAndPathTakeover: an attacker claims a longer prefix on the
// victim's host, pointing at its own pod; the victim's requests (with
// their cookies) still reach the victim's pod only. A victim's catch-all
// route keeps every host that the attacker was not granted, and the
// catch-all itself.
func TestTenantHostAndPathTakeover(t *testing.T) {
	victim, attacker := env.Namespace(t), env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{})
	grant(t, victim, []string{"victim.example.com"}, catchAll)
	ag := grant(t, attacker, []string{"*.example.com"})
	victimIP, attackerIP := tenantIP(3), tenantIP(4)
	vport, vsrv := echoPod(t, victim, "victim", victimIP, "victim")
	aport, asrv := echoPod(t, attacker, "attacker", attackerIP, "attacker")

	rooms := createTenantRoute(t, victim, tenantRoute{name: "rooms", hostnames: []string{"victim.example.com"}, prefix: "/rooms", app: "victim", port: vport, origins: []string{"*"}})
	waitRouteServes(t, victim, "rooms", "victim")
	afterCreationSecond(rooms)
	createTenantRoute(t, attacker, tenantRoute{name: "shadow", hostnames: []string{"victim.example.com"}, prefix: "/rooms/" + victimIP, app: "attacker", port: aport, origins: []string{"*"}})
	// Whatever the status says, the traffic checks below run.
	r := waitObserved(t, attacker, "shadow")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonHostnameConflict, fmt.Sprintf("namespace %q", victim), victim+"/rooms")
	t.Logf("the attacker's longer prefix on the victim's host: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))

	// reachesVictim opens a tunnel with the victim's credentials (and,
	// on the victim's route that admits any Origin, an Origin) and checks
	// that the victim's pod answers, with them.
	reachesVictim := func(t *testing.T, host, path string) {
		t.Helper()
		before, attacked := vsrv.Accepted(), asrv.Accepted()
		header := victimSecrets.Clone()
		if strings.HasPrefix(path, "/rooms/") {
			header.Set("Origin", "https://app.victim.example")
		}
		c := g.openAs(t, dialSpec{host: host, path: path, header: header})
		mustEcho(t, c.Conn, "to the victim")
		seen := podSees(t, c.Conn)
		if seen.Header.Get("Cookie") != "session=victim-secret" || seen.Header.Get("Authorization") != "Bearer victim-token" {
			t.Errorf("the victim's pod saw Cookie %q, Authorization %q", seen.Header.Get("Cookie"), seen.Header.Get("Authorization"))
		}
		if n := asrv.Accepted() - attacked; n != 0 {
			t.Errorf("%s%s: the attacker's pod got the handshake, with the victim's Cookie and Authorization", host, path)
		}
		if n := vsrv.Accepted() - before; n != 1 {
			t.Errorf("%s%s: the victim's pod accepted %d handshakes, want 1", host, path, n)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	}

	t.Run("the victim's host and prefix", func(t *testing.T) {
		for _, path := range []string{
			// Under the attacker's prefix, an address of its pod.
			harness.PodPath("/rooms", victimIP, "/"+attackerIP+"/"),
			harness.PodPath("/rooms", victimIP, "/"+attackerIP),
			harness.PodPath("/rooms", victimIP, "/"),
		} {
			reachesVictim(t, "victim.example.com", path)
		}
		// The host as clients may spell it.
		for _, host := range []string{"VICTIM.Example.COM", "victim.example.com.", "victim.example.com:80"} {
			reachesVictim(t, host, harness.PodPath("/rooms", victimIP, "/"))
		}
		// The attacker's pod is not an address of the victim's host.
		for _, path := range []string{harness.PodPath("/rooms", attackerIP, "/"), harness.PodPath("/", attackerIP, "/")} {
			if got := g.statusAs(t, dialSpec{host: "victim.example.com", path: path, header: victimSecrets}); got != http.StatusNotFound {
				t.Errorf("victim.example.com%s: %d, want 404", path, got)
			}
		}
		// A look-alike name (a Cyrillic letter; the client sends it as
		// punycode) is another name, which no route has.
		if got := g.statusAs(t, dialSpec{host: "vict\u0456m.example.com", path: harness.PodPath("/rooms", victimIP, "/"), header: victimSecrets}); got != http.StatusNotFound {
			t.Errorf("a look-alike Host: %d, want 404", got)
		}
	})

	t.Run("the victim's catch-all", func(t *testing.T) {
		lobby := createTenantRoute(t, victim, tenantRoute{name: "lobby", prefix: "/lobby", app: "victim", port: vport})
		waitRouteServes(t, victim, "lobby", "victim")
		afterCreationSecond(lobby)
		const anyHost = "anything.example.net"
		path := harness.PodPath("/lobby", victimIP, "/")
		g.waitStatusAs(t, dialSpec{host: anyHost, path: path}, http.StatusSwitchingProtocols)

		// The attacker now has only its own names.
		updateGrant(t, ag, func(s *wsgatev1alpha1.WsGrantSpec) {
			s.Hostnames = []wsgatev1alpha1.HostnamePattern{"*.attacker.example.com"}
		})
		createTenantRoute(t, attacker, tenantRoute{name: "squat", hostnames: []string{anyHost}, prefix: "/lobby/" + victimIP, app: "attacker", port: aport})
		createTenantRoute(t, attacker, tenantRoute{name: "squat-wild", hostnames: []string{"*.example.net"}, prefix: "/", app: "attacker", port: aport})
		createTenantRoute(t, attacker, tenantRoute{name: "catch", prefix: "/lobby/" + victimIP, app: "attacker", port: aport})
		createTenantRoute(t, attacker, tenantRoute{name: "own", hostnames: []string{"x.attacker.example.com"}, prefix: "/", app: "attacker", port: aport})
		waitAccepted(t, attacker, "squat", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, fmt.Sprintf("%q", anyHost), fmt.Sprintf("namespace %q", attacker))
		waitAccepted(t, attacker, "squat-wild", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, `"*.example.net"`)
		waitAccepted(t, attacker, "catch", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, "catch-all")
		waitAccepted(t, attacker, "shadow", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, `"victim.example.com"`)
		waitRouteServes(t, attacker, "own", "attacker")
		for _, host := range []string{anyHost, "y.example.net", "127.0.0.1", "x.attacker.example.org"} {
			reachesVictim(t, host, path)
		}
		reachesVictim(t, "victim.example.com", harness.PodPath("/rooms", victimIP, "/"))
		// What the attacker was granted, it has: its name leaves the
		// catch-all.
		if got := g.statusAs(t, dialSpec{host: "x.attacker.example.com", path: path}); got != http.StatusNotFound {
			t.Errorf("x.attacker.example.com%s: %d, want 404 (the name is the attacker's)", path, got)
		}

		// Granted the catch-all too, the attacker still does not get it:
		// one namespace owns it.
		updateGrant(t, ag, catchAll)
		r := waitAccepted(t, attacker, "catch", "False/"+wsgatev1alpha1.ReasonHostnameConflict, "catch-all", fmt.Sprintf("namespace %q", victim), victim+"/lobby")
		t.Logf("the attacker's catch-all route: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))
		reachesVictim(t, anyHost, path)
	})

	if n := asrv.Accepted(); n != 0 {
		t.Errorf("the attacker's pod accepted %d handshakes", n)
	}
}

// TestTenantHeaderSpoofingBySpelling: forwarding headers spelled with
// underscores (which CGI-style frameworks read as the dashed ones) never
// reach the pod, on plain and TLS connections; the pod sees only the
// gateway's X-Forwarded-*.
func TestTenantHeaderSpoofingBySpelling(t *testing.T) {
	ns := env.Namespace(t)
	ca := testcerts.NewCA(t, "wsgate e2e tenants CA")
	g := startTenantGateway(t, gatewayConfig{})
	const hostname = "headers.example.com"
	grant(t, ns, []string{hostname})
	ip := tenantIP(5)
	port, _ := echoPod(t, ns, "echo", ip, "echo")
	createSecret(t, harness.TLSSecret(ns, "headers-tls", ca.Issue(t, time.Hour, hostname)))
	createTenantRoute(t, ns, tenantRoute{name: "headers", hostnames: []string{hostname}, app: "echo", port: port, secret: "headers-tls"})
	waitRouteServes(t, ns, "headers", "echo")
	waitCertificateReady(t, ns, "headers", "True/"+wsgatev1alpha1.ReasonCertificateIssued)

	// Names as the client writes them (not canonicalized).
	spoofed := http.Header{
		"X_Forwarded_For":   {"6.6.6.6"},
		"X_Real_Ip":         {"6.6.6.6"},
		"X_Forwarded_Host":  {"victim.example.com"},
		"X_Forwarded_Proto": {"https"},
		"x_forwarded_for":   {"6.6.6.7"},
		"X-Forwarded_For":   {"6.6.6.8"},
		"Client_Ip":         {"6.6.6.6"},
		"X-Forwarded-For":   {"6.6.6.9"},
		"X-Real-Ip":         {"6.6.6.6"},
		"Forwarded":         {"for=6.6.6.6;host=victim.example.com;proto=https"},
		"X-Forwarded-Host":  {"victim.example.com"},
		"X-Forwarded-Proto": {"https"},
	}
	for _, overTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls %v", overTLS), func(t *testing.T) {
			c := g.openAs(t, dialSpec{host: hostname, path: harness.PodPath("/", ip, "/"), header: spoofed, tls: overTLS, roots: ca.Pool()})
			seen := podSees(t, c.Conn)
			for k, vs := range seen.Header {
				if strings.ContainsRune(k, '_') {
					t.Errorf("the pod got %s: %q", k, vs)
				}
				for _, v := range vs {
					if strings.Contains(v, "6.6.6.") || strings.Contains(v, "victim.example.com") {
						t.Errorf("the pod got %s: %q, which the client wrote", k, v)
					}
				}
			}
			proto := "http"
			if overTLS {
				proto = "https"
			}
			for name, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": hostname, "X-Forwarded-Proto": proto} {
				if got := seen.Header.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("the pod got %s %q, want only the gateway's %q", name, got, want)
				}
			}
			for _, name := range []string{"X-Real-Ip", "Forwarded"} {
				if got := seen.Header.Values(name); len(got) != 0 {
					t.Errorf("the pod got %s %q", name, got)
				}
			}
		})
	}
}

// TestTenantOriginRules: a route without allowedOrigins admits only
// Origins of its own hostnames, with a scheme that fits the connection; a
// catch-all route (no hostnames) admits no Origin at all, whatever the
// Host says.
func TestTenantOriginRules(t *testing.T) {
	ns := env.Namespace(t)
	ca := testcerts.NewCA(t, "wsgate e2e tenants CA")
	g := startTenantGateway(t, gatewayConfig{})
	const hostname = "ws.tenant.example.com"
	grant(t, ns, []string{hostname}, catchAll)
	ip := tenantIP(6)
	port, _ := echoPod(t, ns, "echo", ip, "echo")
	createSecret(t, harness.TLSSecret(ns, "ws-tls", ca.Issue(t, time.Hour, hostname)))
	createTenantRoute(t, ns, tenantRoute{name: "any", prefix: "/any", app: "echo", port: port})
	createTenantRoute(t, ns, tenantRoute{name: "named", hostnames: []string{hostname}, prefix: "/named", app: "echo", port: port, secret: "ws-tls"})
	waitRouteServes(t, ns, "any", "echo")
	waitRouteServes(t, ns, "named", "echo")
	waitCertificateReady(t, ns, "named", "True/"+wsgatev1alpha1.ReasonCertificateIssued)

	anyPath, namedPath := harness.PodPath("/any", ip, "/"), harness.PodPath("/named", ip, "/")
	cases := []struct {
		what, host, path, origin string
		tls                      bool
		want                     int
	}{
		{"catch-all: the Host's own origin", "attacker.test", anyPath, "http://attacker.test", false, http.StatusForbidden},
		{"catch-all: the Host's https origin", "attacker.test", anyPath, "https://attacker.test", false, http.StatusForbidden},
		{"catch-all: another scheme", "ws.example.com", anyPath, "foo://ws.example.com", false, http.StatusForbidden},
		{"catch-all: a named route's origin", "attacker.test", anyPath, "https://" + hostname, false, http.StatusForbidden},
		{"catch-all: no Origin (not a browser)", "attacker.test", anyPath, "", false, http.StatusSwitchingProtocols},
		{"named, plain: its http origin", hostname, namedPath, "http://" + hostname, false, http.StatusSwitchingProtocols},
		{"named, plain: its https origin (TLS ended in front)", hostname, namedPath, "https://" + hostname, false, http.StatusSwitchingProtocols},
		{"named, plain: another scheme", hostname, namedPath, "foo://" + hostname, false, http.StatusForbidden},
		{"named, plain: a sibling", hostname, namedPath, "http://evil.tenant.example.com", false, http.StatusForbidden},
		{"named, TLS: its https origin", hostname, namedPath, "https://" + hostname, true, http.StatusSwitchingProtocols},
		{"named, TLS: its http origin", hostname, namedPath, "http://" + hostname, true, http.StatusForbidden},
		{"named, TLS: its http origin on port 443", hostname, namedPath, "http://" + hostname + ":443", true, http.StatusForbidden},
		{"named, TLS: another scheme", hostname, namedPath, "foo://" + hostname, true, http.StatusForbidden},
		{"named, TLS: another port", hostname, namedPath, "https://" + hostname + ":8443", true, http.StatusForbidden},
		{"named, TLS: a sibling", hostname, namedPath, "https://evil.tenant.example.com", true, http.StatusForbidden},
		{"named, TLS: a parent", hostname, namedPath, "https://tenant.example.com", true, http.StatusForbidden},
		{"named, TLS: null", hostname, namedPath, "null", true, http.StatusForbidden},
	}
	for _, c := range cases {
		header := http.Header{}
		if c.origin != "" {
			header.Set("Origin", c.origin)
		}
		d := dialSpec{host: c.host, path: c.path, header: header, tls: c.tls, roots: ca.Pool()}
		dials := g.dials.Load()
		if got := g.statusAs(t, d); got != c.want {
			t.Errorf("%s (Host %s, Origin %q): %d, want %d", c.what, c.host, c.origin, got, c.want)
		}
		if c.want == http.StatusForbidden && g.dials.Load() != dials {
			t.Errorf("%s: the gateway dialled the pod for a refused Origin", c.what)
		}
	}
}

// TestTenantRevocationOnLoss: tunnels opened through a route on a host
// that the route then no longer serves are closed with 1008 at once:
// another namespace claims the name exactly (a wildcard never covers a
// name another route claims), the owner drops the name, or the cluster
// admin takes the grant back. Tunnels on the route's other names carry on.
func TestTenantRevocationOnLoss(t *testing.T) {
	a, b := env.Namespace(t), env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{})
	grant(t, a, []string{"*.example.com", "*.example.org"})
	bg := grant(t, b, []string{"x.example.com"})
	aIP, bIP := tenantIP(7), tenantIP(8)
	aport, _ := echoPod(t, a, "a", aIP, "a")
	bport, _ := echoPod(t, b, "b", bIP, "b")
	createTenantRoute(t, a, tenantRoute{name: "wild", hostnames: []string{"*.example.com"}, app: "a", port: aport})
	waitRouteServes(t, a, "wild", "a")
	onX := dialSpec{host: "x.example.com", path: harness.PodPath("/", aIP, "/")}
	onY := dialSpec{host: "y.example.com", path: harness.PodPath("/", aIP, "/")}
	g.waitStatusAs(t, onX, http.StatusSwitchingProtocols)

	// revoked checks that a closed tunnel got a 1008 within revokeWithin
	// of the API write.
	revoked := func(t *testing.T, what string, cl harness.Closed, written time.Time) {
		t.Helper()
		latency := cl.At.Sub(written)
		t.Logf("%s: close %d %q, %s after the API write", what, cl.Code, cl.Reason, latency.Round(time.Millisecond))
		if cl.Code != websocket.StatusPolicyViolation {
			t.Errorf("%s: close %d %q, want 1008", what, cl.Code, cl.Reason)
		}
		if latency > revokeWithin {
			t.Errorf("%s: closed %s after the API write, want under %s", what, latency, revokeWithin)
		}
	}
	// carriesOn checks that a chatting tunnel went on meanwhile.
	carriesOn := func(t *testing.T, what string, ch *chatter, c *websocket.Conn) {
		t.Helper()
		sent := ch.exchanged.Load()
		time.Sleep(200 * time.Millisecond)
		if err := ch.finish(); err != nil {
			t.Fatalf("%s failed: %v", what, err)
		}
		if ch.exchanged.Load() == sent {
			t.Errorf("%s exchanged no message after the revocation", what)
		}
		mustEcho(t, c, what+" is still here")
	}

	// The route of b outlives the subtest that creates it.
	parent := t
	t.Run("another namespace claims the name exactly", func(t *testing.T) {
		x, y := g.openAs(t, onX), g.openAs(t, onY)
		mustEcho(t, x.Conn, "x")
		busy := startChatter(y.Conn)
		waitClosed := watchClose(x.Conn)
		written := time.Now()
		createTenantRoute(parent, b, tenantRoute{name: "exact", hostnames: []string{"x.example.com"}, app: "b", port: bport})
		revoked(t, "the wildcard's tunnel on x.example.com", waitClosed(t)[0], written)
		carriesOn(t, "the wildcard's tunnel on y.example.com", busy, y.Conn)
		waitAccepted(t, b, "exact", "True/"+wsgatev1alpha1.ReasonAccepted)
		waitAccepted(t, a, "wild", "True/"+wsgatev1alpha1.ReasonAccepted)
		if got := g.statusAs(t, onX); got != http.StatusNotFound {
			t.Errorf("a's pod on x.example.com: %d, want 404", got)
		}
		g.openAs(t, dialSpec{host: "x.example.com", path: harness.PodPath("/", bIP, "/")})
	})

	t.Run("the owner drops a name", func(t *testing.T) {
		createTenantRoute(t, a, tenantRoute{name: "named", hostnames: []string{"keep.example.org", "drop.example.org"}, app: "a", port: aport})
		waitRouteServes(t, a, "named", "a")
		onKeep := dialSpec{host: "keep.example.org", path: harness.PodPath("/", aIP, "/")}
		onDrop := dialSpec{host: "drop.example.org", path: harness.PodPath("/", aIP, "/")}
		g.waitStatusAs(t, onDrop, http.StatusSwitchingProtocols)
		keep, drop := g.openAs(t, onKeep), g.openAs(t, onDrop)
		mustEcho(t, drop.Conn, "drop")
		busy := startChatter(keep.Conn)
		waitClosed := watchClose(drop.Conn)
		written := time.Now()
		setHostnames(t, a, "named", "keep.example.org")
		revoked(t, "the tunnel on the dropped name", waitClosed(t)[0], written)
		carriesOn(t, "the tunnel on the kept name", busy, keep.Conn)
		if got := g.statusAs(t, onDrop); got != http.StatusNotFound {
			t.Errorf("drop.example.org: %d, want 404", got)
		}
	})

	t.Run("the cluster admin takes the grant back", func(t *testing.T) {
		bx := g.openAs(t, dialSpec{host: "x.example.com", path: harness.PodPath("/", bIP, "/")})
		mustEcho(t, bx.Conn, "b on x")
		waitClosed := watchClose(bx.Conn)
		written := time.Now()
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, bg)
		revoked(t, "b's tunnel on x.example.com", waitClosed(t)[0], written)
		waitAccepted(t, b, "exact", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, `"x.example.com"`)
		// The name falls back to a's wildcard.
		g.waitStatusAs(t, onX, http.StatusSwitchingProtocols)
	})
}

// TestTenantFairShare: one namespace's routes together hold at most
// their share of the gateway's tunnels; beyond it, 503 with Retry-After
// and nothing dialled, while another namespace still opens its own.
func TestTenantFairShare(t *testing.T) {
	a, b := env.Namespace(t), env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{maxTunnels: 8, maxTunnelsPerNamespace: 4})
	grant(t, a, []string{"a.example.com"})
	grant(t, b, []string{"b.example.com"})
	aIP, bIP := tenantIP(13), tenantIP(14)
	aport, asrv := echoPod(t, a, "a", aIP, "a")
	bport, _ := echoPod(t, b, "b", bIP, "b")
	// Two routes of a: the share is the namespace's, not each route's.
	createTenantRoute(t, a, tenantRoute{name: "one", hostnames: []string{"a.example.com"}, prefix: "/one", app: "a", port: aport})
	createTenantRoute(t, a, tenantRoute{name: "two", hostnames: []string{"a.example.com"}, prefix: "/two", app: "a", port: aport})
	createTenantRoute(t, b, tenantRoute{name: "b", hostnames: []string{"b.example.com"}, app: "b", port: bport})
	aOne := dialSpec{host: "a.example.com", path: harness.PodPath("/one", aIP, "/")}
	aTwo := dialSpec{host: "a.example.com", path: harness.PodPath("/two", aIP, "/")}
	toB := dialSpec{host: "b.example.com", path: harness.PodPath("/", bIP, "/")}
	for _, d := range []dialSpec{aOne, aTwo, toB} {
		g.waitStatusAs(t, d, http.StatusSwitchingProtocols)
	}

	var held []*tenantConn
	for _, d := range []dialSpec{aOne, aOne, aTwo, aTwo} {
		c := g.openAs(t, d)
		mustEcho(t, c.Conn, "a holds a slot")
		held = append(held, c)
	}
	full := func(t *testing.T, d dialSpec) {
		t.Helper()
		accepted, dials := asrv.Accepted(), g.dials.Load()
		status, header := g.answerAs(t, d)
		if status != http.StatusServiceUnavailable || header.Get("Retry-After") == "" {
			t.Errorf("%s%s beyond the share: %d with Retry-After %q, want 503 with Retry-After", d.host, d.path, status, header.Get("Retry-After"))
		}
		if asrv.Accepted() != accepted || g.dials.Load() != dials {
			t.Errorf("%s%s beyond the share reached the pod", d.host, d.path)
		}
	}
	full(t, aOne)
	full(t, aTwo)

	// b still opens its own share, up to the gateway's cap.
	for i := range 4 {
		c := g.openAs(t, toB)
		mustEcho(t, c.Conn, fmt.Sprintf("b's tunnel %d", i+1))
	}
	for _, c := range held {
		mustEcho(t, c.Conn, "a's tunnels are untouched")
	}

	// A slot a gives back is a's again.
	if err := held[0].Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	g.waitStatusAs(t, aTwo, http.StatusSwitchingProtocols)
}
