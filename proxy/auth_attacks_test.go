package proxy

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/routing"
)

// Attacks on spec.auth in the data plane, each checking the rule it
// tries to break.

// TestIdentityHeadersCannotBeListedInConnection: the identity headers
// the gateway sets for the pod (X-User, claim headers) reach it whatever
// the client says: a client that names them in its own Connection field
// (to have them dropped as hop-by-hop) does not remove them, as it does
// not remove X-Forwarded-*.
func TestIdentityHeadersCannotBeListedInConnection(t *testing.T) {
	f := newAuthFixture(t)
	alice := f.good.sign(t, claimsFor("alice", map[string]any{"email": "alice@example.com"}), nil, false)
	aPath := "/me/" + f.podA.addr.Addr().String() + "/x"
	before := f.podA.accepted()
	ans := exchange(t, f.g.addr, wsHead(aPath, "Authorization: Bearer "+alice, "Connection: Upgrade, X-User, X-Email, X-Forwarded-For"))
	if ans.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d %q", ans.resp.StatusCode, ans.body)
	}
	_ = ans.conn.Close()
	pc := f.podA.conn(before)
	pc.wait(t)
	_, req, _, _ := pc.recorded()
	if req.Header.Get("X-Forwarded-For") == "" {
		t.Error("X-Forwarded-For was dropped too")
	}
	if got := req.Header.Values("X-User"); len(got) != 1 || got[0] != "alice" {
		t.Errorf("the pod got X-User %q, want [alice]: the client's Connection field removed the gateway's identity header", got)
	}
	if got := req.Header.Values("X-Email"); len(got) != 1 || got[0] != "alice@example.com" {
		t.Errorf("the pod got X-Email %q, want [alice@example.com]", got)
	}
	waitNoTunnels(t, f.g)
}

// TestForwardAuthHeadersCannotBeListedInConnection: the same with the
// headers a forward-auth service passes on (passHeaders).
func TestForwardAuthHeadersCannotBeListedInConnection(t *testing.T) {
	f := newHostileFixture(t, Options{})
	svc := startForwardAuth(t, "127.0.0.5")
	route := testRoute("app", "/fa", f.podA.backend("a"))
	route.Auth = &routing.Auth{Forward: &routing.ForwardAuth{
		Service: "ns/auth", Addrs: []netip.AddrPort{svc.addr}, Path: "/check", Timeout: time.Second,
		PassHeaders: []string{"X-User"},
	}}
	f.g.publish(route)
	before := f.podA.accepted()
	ans := exchange(t, f.g.addr, wsHead("/fa/"+f.podA.addr.Addr().String()+"/", "X-Session: ok", "Connection: Upgrade, X-User"))
	if ans.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d %q", ans.resp.StatusCode, ans.body)
	}
	_ = ans.conn.Close()
	pc := f.podA.conn(before)
	pc.wait(t)
	_, req, _, _ := pc.recorded()
	if got := req.Header.Values("X-User"); len(got) != 1 || got[0] != "alice" {
		t.Errorf("the pod got X-User %q, want the service's [alice]", got)
	}
	waitNoTunnels(t, f.g)
}

// TestReboundPodClosesTunnelsEvenWhenDraining: revokePolicy Drain lets
// the tunnels of a pod that leaves the route run on, but a pod whose
// bound label moves from alice to carol closes alice's tunnel at once:
// she must not go on talking to carol's pod.
func TestReboundPodClosesTunnelsEvenWhenDraining(t *testing.T) {
	sg := newES256Signer(t, "k1")
	podA := echoPod(t, "127.0.0.2")
	route := authRoute(t, sg, boundBackend("a", "alice", podA.Addr))
	route.DrainOnRevoke = true
	g := startGateway(t, Options{}, route)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := sg.sign(t, claimsFor("alice", nil), nil, false)
	ca := g.mustDial(t, "/me/127.0.0.2/", bearerOpts(alice))

	moved := *route
	moved.Backends = []routing.Backend{boundBackend("a", "carol", podA.Addr)}
	g.publish(&moved)
	// New handshakes follow the new binding...
	if st, _, _ := (&wsClient{g: g}).status(t, "/me/127.0.0.2/", bearerOpts(alice)); st != http.StatusNotFound {
		t.Fatalf("alice's new handshake to carol's pod: %d, want 404", st)
	}
	// ...the open one must end too.
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if code, reason := closeStatus(wctx, ca); code != websocket.StatusPolicyViolation {
		t.Errorf("alice's tunnel after her pod was rebound to carol: close %d %q, want 1008", code, reason)
	}
}

// TestRouteMadePrivateClosesAnonymousTunnels: a route made private
// (spec.auth added, here without podBinding, whose bound values would
// revoke them anyway) closes the anonymous tunnels opened while it was
// open.
func TestRouteMadePrivateClosesAnonymousTunnels(t *testing.T) {
	sg := newES256Signer(t, "k1")
	podA := echoPod(t, "127.0.0.2")
	open := testRoute("private", "/me", backendOf("a", podA))
	g := startGateway(t, Options{}, open)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	anon := g.mustDial(t, "/me/127.0.0.2/", nil)

	private := *open
	private.Auth = authRoute(t, sg).Auth
	private.Auth.BindingClaim = "" // token required, no binding
	g.publish(&private)
	if st, _, _ := (&wsClient{g: g}).status(t, "/me/127.0.0.2/", nil); st != http.StatusUnauthorized {
		t.Fatalf("anonymous handshake on the private route: %d, want 401", st)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if code, reason := closeStatus(wctx, anon); code != websocket.StatusPolicyViolation {
		t.Errorf("anonymous tunnel after the route required tokens: close %d %q, want 1008", code, reason)
	}
}

// TestForwardAuthHoldsNoSlotWhileAsking: on a forward-auth route, a
// handshake takes one of the pod's slots (maxConnectionsPerPod) only
// once the service has admitted it, so strangers whose handshakes the
// service is still considering cannot lock the pod's owner out.
func TestForwardAuthHoldsNoSlotWhileAsking(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	svc := startForwardAuth(t, "127.0.0.5")
	route := testRoute("app", "/app", backendOf("a", pod))
	route.MaxConnectionsPerPod = 1
	route.Auth = &routing.Auth{Forward: &routing.ForwardAuth{
		Service: "ns/auth", Addrs: []netip.AddrPort{svc.addr}, Path: "/check", Timeout: 2 * time.Second,
	}}
	g := startGateway(t, Options{}, route)
	cl := &wsClient{g: g}
	done := make(chan int, 1)
	go func() {
		// A stranger: the service takes its time with this one ("slow"),
		// then refuses it (timeout: 503).
		st, _, _ := cl.status(t, "/app/127.0.0.2/", &websocket.DialOptions{HTTPHeader: http.Header{"X-Session": {"slow"}}})
		done <- st
	}()
	deadline := time.Now().Add(2 * time.Second)
	for svc.hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st, body, _ := cl.status(t, "/app/127.0.0.2/", &websocket.DialOptions{HTTPHeader: http.Header{"X-Session": {"ok"}}})
	if st != http.StatusSwitchingProtocols {
		t.Errorf("the owner's handshake while a stranger waits on forward auth: %d %q, want 101", st, body)
	}
	if s := <-done; s == http.StatusSwitchingProtocols {
		t.Errorf("the stranger got in")
	}
}

// TestTokenPlacesAndClaimGames: token places that parse differently are
// stripped consistently, JSON games on the claims are refused, and a
// case-variant claim binds nothing.
func TestTokenPlacesAndClaimGames(t *testing.T) {
	f := newAuthFixture(t)
	a, b := f.podA, f.podB
	aPath, bPath := "/me/"+a.addr.Addr().String()+"/x", "/me/"+b.addr.Addr().String()+"/x"
	alice := f.good.sign(t, claimsFor("alice", nil), nil, false)
	bob := f.good.sign(t, claimsFor("bob", nil), nil, false)
	// rawSigned signs a raw JSON payload (duplicate members, case variants).
	rawSigned := func(payload string) string { return f.good.signPayload(t, []byte(payload), nil, false) }
	now := time.Now().Unix()
	std := `"iss":"` + testIssuer + `","aud":"` + testAudience + `","exp":` + strconv.FormatInt(now+3600, 10)
	ok := func(name, req string, pod *fakePod, target string) hostileCase {
		return hostileCase{name: name, req: req, want: 101, dial: pod.addr.String(), pod: pod, podTarget: target}
	}
	no := func(name, req string, want int) hostileCase { return hostileCase{name: name, req: req, want: want} }
	cases := []hostileCase{
		ok("raw-signed control: alice", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"alice"}`)), a, "/x"),
		no("duplicate sub: bob then alice", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"bob","sub":"alice"}`)), 401),
		no("duplicate sub: alice then bob", wsHead(bPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"alice","sub":"bob"}`)), 401),
		no("case-variant SUB binds nothing", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"bob","SUB":"alice","Sub":"alice"}`)), 404),
		no("escaped member name su\\u0062", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"bob","su\u0062":"alice"}`)), 401),
		no("sub with a NUL", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"alice\u0000"}`)), 404),
		no("unicode look-alike", wsHead(aPath, "Authorization: Bearer "+rawSigned(`{`+std+`,"sub":"аlice"}`)), 404),
		ok("quoted cookie value", wsHead(aPath, `Cookie: wsg="`+alice+`"`), a, "/x"),
		ok("percent-encoded query name", wsHead(aPath+"?access%5Ftoken="+alice+"&q=1"), a, "/x?q=1"),
		no("plus-encoded query name is another name", wsHead(aPath+"?access+token="+alice), 401),
		no("bob's bearer first, alice's cookie: bob's is used", wsHead(aPath, "Authorization: Bearer "+bob, "Cookie: wsg="+alice), 404),
		no("bearer with a tab is no bearer; alice's cookie on bob's pod", wsHead(bPath, "Authorization: Bearer\t"+bob, "Cookie: wsg="+alice), 404),
		no("upper-case subprotocol prefix is no token", wsHead(aPath, "Sec-WebSocket-Protocol: "+strings.ToUpper(bearerProtocolPrefix)+base64.RawURLEncoding.EncodeToString([]byte(alice))), 401),
		no("token split over two subprotocol entries", wsHead(aPath, "Sec-WebSocket-Protocol: "+bearerProtocolPrefix+base64.RawURLEncoding.EncodeToString([]byte(alice)), "+Sec-WebSocket-Protocol: "+bearerProtocolPrefix+base64.RawURLEncoding.EncodeToString([]byte(bob))), 400),
		no("a cookie and a second Cookie line", wsHead(aPath, "Cookie: wsg="+alice, "+Cookie: wsg="+bob), 400),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { f.run(t, tc) })
	}

	// Every copy of every token is gone from what the pod gets, whichever
	// place was used and however it was written.
	before := a.accepted()
	ans := exchange(t, f.g.addr, wsHead(aPath+"?access%5Ftoken="+bob+"&q=1",
		`Cookie: x=1; wsg="`+bob+`"`, "+Cookie: wsg ="+bob,
		"Authorization: bearer   "+alice+"  ",
		"Sec-WebSocket-Protocol: chat,"+bearerProtocolPrefix+base64.RawURLEncoding.EncodeToString([]byte(bob))))
	if ans.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d %q", ans.resp.StatusCode, ans.body)
	}
	_ = ans.conn.Close()
	pc := a.conn(before)
	pc.wait(t)
	head, _, _, _ := pc.recorded()
	for _, tok := range []string{alice, bob} {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(head, sig) || strings.Contains(head, base64.RawURLEncoding.EncodeToString([]byte(tok))[:60]) {
			t.Errorf("the pod got a token:\n%s", head)
		}
	}
	waitNoTunnels(t, f.g)
}
