package proxy

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

// authRoute is a route on /me whose tokens, signed by sg, are bound to
// the pods by their sub claim.
func authRoute(t *testing.T, sg *signer, backends ...routing.Backend) *routing.Route {
	t.Helper()
	r := testRoute("private", "/me", backends...)
	r.Auth = &routing.Auth{
		Tokens:        sg.verifier(t),
		BindingClaim:  "sub",
		SubjectHeader: "X-User",
		CloseOnExpiry: true,
	}
	return r
}

func boundBackend(pod, value, addr string) routing.Backend {
	return routing.Backend{Pod: pod, Addr: netip.MustParseAddrPort(addr), Bound: value}
}

func bearerOpts(tok string) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}}
}

// TestAuthTunnelsEndWithTheirRight: a tunnel is closed with 1008 when
// its token expires, and when its pod's bound value changes away from
// the subject; other tunnels go on.
func TestAuthTunnelsEndWithTheirRight(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		sg := newES256Signer(t, "k1")
		podA, podB := echoPod(t, "127.0.0.2"), echoPod(t, "127.0.0.3")
		route := authRoute(t, sg, boundBackend("a", "alice", podA.Addr), boundBackend("b", "bob", podB.Addr))
		g := startGateway(t, e.opts, route)
		cl := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		aPath := "/me/127.0.0.2/"
		bPath := "/me/127.0.0.3/"

		// The identity reaches the pod, the token does not.
		alice := sg.sign(t, claimsFor("alice", nil), nil, false)
		ca := cl.mustDial(t, aPath, &websocket.DialOptions{
			HTTPHeader:   http.Header{"X-User": {"mallory"}},
			Subprotocols: []string{bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(alice)), "chat"},
		})
		seen, err := seenByPod(ctx, ca)
		if err != nil {
			t.Fatal(err)
		}
		if got := seen.Header.Values("X-User"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("the pod saw X-User %q, want [alice]", got)
		}
		if got := seen.Header.Get("Sec-WebSocket-Protocol"); got != "chat" || seen.Subprotocol != "chat" || ca.Subprotocol() != "chat" {
			t.Errorf("subprotocols: pod saw %q and chose %q, client got %q; want chat", got, seen.Subprotocol, ca.Subprotocol())
		}

		// Expiry: a token valid for one more second (its exp passed 29
		// seconds ago; the leeway is 30).
		soon := sg.sign(t, claimsFor("bob", map[string]any{"exp": time.Now().Add(time.Second - auth.DefaultLeeway).Unix()}), nil, false)
		cb := cl.mustDial(t, bPath, bearerOpts(soon))
		if err := echo(ctx, cb, websocket.MessageText, []byte("before expiry")); err != nil {
			t.Fatal(err)
		}
		if code, reason := closeStatus(ctx, cb); code != websocket.StatusPolicyViolation {
			t.Fatalf("at expiry: close %d %q, want 1008", code, reason)
		}
		if err := echo(ctx, ca, websocket.MessageText, []byte("alice goes on")); err != nil {
			t.Fatalf("alice's tunnel after bob's token expired: %v", err)
		}

		// The bound value changes: alice's pod now belongs to carol.
		bob := sg.sign(t, claimsFor("bob", nil), nil, false)
		cb = cl.mustDial(t, bPath, bearerOpts(bob))
		moved := *route
		moved.Backends = []routing.Backend{boundBackend("a", "carol", podA.Addr), boundBackend("b", "bob", podB.Addr)}
		g.publish(&moved)
		if code, reason := closeStatus(ctx, ca); code != websocket.StatusPolicyViolation {
			t.Fatalf("after the pod was rebound: close %d %q, want 1008", code, reason)
		}
		if err := echo(ctx, cb, websocket.MessageText, []byte("bob goes on")); err != nil {
			t.Fatalf("bob's tunnel after alice's pod was rebound: %v", err)
		}
		if st, _, _ := cl.status(t, aPath, bearerOpts(alice)); st != http.StatusNotFound {
			t.Errorf("alice on carol's pod: %d, want 404", st)
		}
		_ = cb.Close(websocket.StatusNormalClosure, "")
		waitNoTunnels(t, g)
	})
}

// forwardAuthServer is a forward-auth service on a loopback address that
// decides by the X-Session header: "ok" admits (and names the user),
// "deny" is 403, "slow" does not answer in time, anything else is 500.
type forwardAuthServer struct {
	addr netip.AddrPort
	hits atomic.Int64
	last atomic.Pointer[http.Header]
}

func startForwardAuth(t *testing.T, ip string) *forwardAuthServer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	fa := &forwardAuthServer{addr: netip.MustParseAddrPort(l.Addr().String())}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fa.hits.Add(1)
		h := r.Header.Clone()
		fa.last.Store(&h)
		switch r.Header.Get("X-Session") {
		case "ok":
			w.Header().Set("X-User", "alice")
			w.Header().Set("X-Not-Passed", "secret")
			w.WriteHeader(http.StatusNoContent)
		case "deny":
			w.Header().Set("Www-Authenticate", `Session realm="app"`)
			w.WriteHeader(http.StatusForbidden)
		case "slow":
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fa
}

// TestForwardAuth: the service decides, its named headers reach the pod,
// and it fails closed.
func TestForwardAuth(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		svc := startForwardAuth(t, "127.0.0.5")
		route := testRoute("app", "/app", backendOf("a", pod))
		route.Auth = &routing.Auth{SubjectHeader: "", Forward: &routing.ForwardAuth{
			Service: "ns/auth", Addrs: []netip.AddrPort{svc.addr}, Path: "/check", Timeout: 500 * time.Millisecond,
			PassHeaders: []string{"X-User"},
		}}
		g := startGateway(t, e.opts, route)
		cl := newWSClient(t, g, e)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		path := "/app/127.0.0.2/room?x=1"
		session := func(v string) *websocket.DialOptions {
			return &websocket.DialOptions{HTTPHeader: http.Header{"X-Session": {v}, "X-User": {"mallory"}, "X-Wsgate-Pod-Name": {"forged"}}}
		}

		c := cl.mustDial(t, path, session("ok"))
		seen, err := seenByPod(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got := seen.Header.Values("X-User"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("the pod saw X-User %q, want the service's [alice]", got)
		}
		if seen.Header.Get("X-Not-Passed") != "" {
			t.Error("a header the route does not pass reached the pod")
		}
		asked := *svc.last.Load()
		if asked.Get("X-Wsgate-Pod-Name") != "a" || asked.Get("X-Wsgate-Pod-Namespace") != "ns" || asked.Get("X-Wsgate-Pod-Address") != "127.0.0.2" {
			t.Errorf("the service was asked with pod headers %q %q %q", asked.Get("X-Wsgate-Pod-Namespace"), asked.Get("X-Wsgate-Pod-Name"), asked.Get("X-Wsgate-Pod-Address"))
		}
		if asked.Get("X-Forwarded-Uri") != "/app/127.0.0.2/room" || asked.Get("Upgrade") != "" || asked.Get("Sec-Websocket-Key") == "" {
			t.Errorf("the service was asked with X-Forwarded-Uri %q, Upgrade %q", asked.Get("X-Forwarded-Uri"), asked.Get("Upgrade"))
		}
		_ = c.Close(websocket.StatusNormalClosure, "")

		for _, tc := range []struct {
			session string
			want    int
		}{{"deny", 403}, {"boom", 503}, {"slow", 503}} {
			before := pod.Accepted()
			st, _, _ := cl.status(t, path, session(tc.session))
			if st != tc.want {
				t.Errorf("session %q: %d, want %d", tc.session, st, tc.want)
			}
			if n := pod.Accepted() - before; n != 0 {
				t.Errorf("session %q: the pod got %d handshakes, want none", tc.session, n)
			}
		}
		// A service without ready pods: 503, nothing dialled.
		down := *route
		au := *route.Auth
		fwd := *au.Forward
		fwd.Addrs = nil
		au.Forward = &fwd
		down.Auth = &au
		g.publish(&down)
		before := g.dials.Load()
		if st, _, _ := cl.status(t, path, session("ok")); st != http.StatusServiceUnavailable {
			t.Errorf("no auth pod: %d, want 503", st)
		}
		if d := g.dials.Load() - before; d != 0 {
			t.Errorf("no auth pod: %d dials", d)
		}
		if strings.Contains(strings.Join(g.dialedAddrs(), ","), "169.254") {
			t.Error("dialled outside loopback")
		}
		waitNoTunnels(t, g)
	})
}

// Handshakes waiting for forward auth hold no slot, so they are bounded
// on their own, per namespace.
func TestForwardAuthWaitsAreBoundedPerNamespace(t *testing.T) {
	var w forwardAuthWaits
	var releases []func()
	for range maxForwardAuthWaits {
		r, ok := w.take("a")
		if !ok {
			t.Fatalf("refused before %d waits", maxForwardAuthWaits)
		}
		releases = append(releases, r)
	}
	if _, ok := w.take("a"); ok {
		t.Fatalf("namespace a got wait %d", maxForwardAuthWaits+1)
	}
	if r, ok := w.take("b"); !ok {
		t.Fatal("namespace b was refused for namespace a's waits")
	} else {
		r()
	}
	releases[0]()
	if r, ok := w.take("a"); !ok {
		t.Fatal("a released wait was not given back")
	} else {
		r()
	}
	for _, r := range releases[1:] {
		r()
	}
	if len(w.n) != 0 {
		t.Errorf("counts left after every release: %v", w.n)
	}
}
