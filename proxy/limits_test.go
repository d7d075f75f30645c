package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/routing"
)

// try opens a websocket from src to path; it returns 101 with the open
// connection, or the refusal's status and Retry-After.
func (eg *edgeGateway) try(t *testing.T, src, path string, h http.Header) (int, string, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := eg.dialPath(ctx, edgeDial{src: src}, path, h)
	if err == nil {
		t.Cleanup(func() { _ = c.CloseNow() })
		return http.StatusSwitchingProtocols, "", c
	}
	if resp == nil {
		t.Fatalf("dial %s from %s: %v, and no answer", path, src, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

func (eg *edgeGateway) limitedCount(t *testing.T, reason string) float64 {
	t.Helper()
	return value(t, eg.reg, "wsgate_client_limited_total", map[string]string{"reason": reason})
}

// want429 checks a refusal by a per-client limit.
func want429(t *testing.T, what string, status int, retryAfter string) {
	t.Helper()
	if status != http.StatusTooManyRequests {
		t.Fatalf("%s: answer %d, want 429", what, status)
	}
	if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 {
		t.Errorf("%s: Retry-After %q, want whole seconds, at least 1", what, retryAfter)
	}
}

func TestClientHandshakeRate(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ClientLimits: ClientLimits{HandshakeRate: 0.2, HandshakeBurst: 3}})
		path := "/e/" + eg.pod + "/x"
		for i := range 3 {
			if st, _, c := eg.try(t, "127.0.0.71", path, nil); st != http.StatusSwitchingProtocols {
				t.Fatalf("handshake %d within the burst: %d", i, st)
			} else {
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
		}
		dials := eg.g.dials.Load()
		st, retry, _ := eg.try(t, "127.0.0.71", path, nil)
		want429(t, "past the burst", st, retry)
		if n, _ := strconv.Atoi(retry); n > 5 {
			t.Errorf("Retry-After %s: one token comes in 5 s", retry)
		}
		// An address the pod does not have is limited the same, before it
		// is looked up.
		st, retry, _ = eg.try(t, "127.0.0.71", "/e/127.0.0.99/x", nil)
		want429(t, "an unknown address past the burst", st, retry)
		if eg.g.dials.Load() != dials {
			t.Error("a limited handshake was dialled")
		}
		if got := eg.limitedCount(t, limitRate); got != 2 {
			t.Errorf("wsgate_client_limited_total{reason=handshake_rate} = %v, want 2", got)
		}
		// Another client is not affected.
		if st, _, _ := eg.try(t, "127.0.0.72", path, nil); st != http.StatusSwitchingProtocols {
			t.Errorf("another client: %d", st)
		}
	})
}

func TestClientTunnelCaps(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod2 := echoPod(t, "127.0.0.3")
		eg := startEdgeGateway(t, e, Options{ClientLimits: ClientLimits{MaxTunnels: 3}})
		capped := testRoute("capped", "/c", backendOf("p2", pod2))
		capped.Limits = &routing.ClientLimits{MaxTunnels: 1}
		eg.g.publish(testRoute("echo", "/e", backendOf("p", echoPod(t, "127.0.0.2"))), capped)
		open := "/e/127.0.0.2/x"

		st, _, first := eg.try(t, "127.0.0.73", "/c/127.0.0.3/x", nil)
		if st != http.StatusSwitchingProtocols {
			t.Fatalf("first tunnel on the capped route: %d", st)
		}
		st, retry, _ := eg.try(t, "127.0.0.73", "/c/127.0.0.3/x", nil)
		want429(t, "second tunnel on a route with maxTunnelsPerClient 1", st, retry)
		if got := eg.limitedCount(t, limitRouteTunnels); got != 1 {
			t.Errorf("route_open_tunnels counted %v", got)
		}
		// The gateway's cap of 3 counts every route: 1 + 2 more.
		var conns []*websocket.Conn
		for i := range 2 {
			st, _, c := eg.try(t, "127.0.0.73", open, nil)
			if st != http.StatusSwitchingProtocols {
				t.Fatalf("tunnel %d under the gateway's cap: %d", i+2, st)
			}
			conns = append(conns, c)
		}
		st, retry, _ = eg.try(t, "127.0.0.73", open, nil)
		want429(t, "a fourth tunnel under --client-max-tunnels 3", st, retry)
		if got := eg.limitedCount(t, limitTunnels); got != 1 {
			t.Errorf("open_tunnels counted %v", got)
		}
		if st, _, _ := eg.try(t, "127.0.0.74", open, nil); st != http.StatusSwitchingProtocols {
			t.Errorf("another client: %d", st)
		}
		// Closing tunnels gives their places back, exactly once.
		_ = first.Close(websocket.StatusNormalClosure, "")
		_ = conns[0].Close(websocket.StatusNormalClosure, "")
		waitFor(t, "the closed tunnels' places", func() bool {
			st, _, c := eg.try(t, "127.0.0.73", "/c/127.0.0.3/x", nil)
			if c != nil {
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
			return st == http.StatusSwitchingProtocols
		})
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientLimitsBySubject: on a route with tokens, a client is its
// token's subject, not its address: people behind one address do not
// share a limit, and one person does not escape it from many addresses.
func TestClientLimitsBySubject(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{})
	sg := newES256Signer(t, "k1")
	pod := echoPod(t, "127.0.0.2")
	rt := testRoute("private", "/p", backendOf("p", pod))
	rt.Auth = &routing.Auth{Tokens: sg.verifier(t)}
	rt.Limits = &routing.ClientLimits{MaxTunnels: 1, HandshakeRate: 0.1, HandshakeBurst: 3}
	eg.g.publish(rt)
	bearer := func(sub string) http.Header {
		return http.Header{"Authorization": {"Bearer " + sg.sign(t, claimsFor(sub, nil), nil, false)}}
	}
	path := "/p/127.0.0.2/x"
	if st, _, _ := eg.try(t, "127.0.0.75", path, bearer("alice")); st != http.StatusSwitchingProtocols {
		t.Fatalf("alice: %d", st)
	}
	st, retry, _ := eg.try(t, "127.0.0.76", path, bearer("alice"))
	want429(t, "alice's second tunnel from another address", st, retry)
	if st, _, _ := eg.try(t, "127.0.0.75", path, bearer("bob")); st != http.StatusSwitchingProtocols {
		t.Errorf("bob, from alice's address: %d", st)
	}
	// Bob's tunnel is open: his next two handshakes are over the tunnel
	// cap, and take tokens of his bucket (3 at once) all the same.
	for _, src := range []string{"127.0.0.77", "127.0.0.78"} {
		st, retry, _ := eg.try(t, src, path, bearer("bob"))
		want429(t, "bob's second tunnel", st, retry)
	}
	if got := eg.limitedCount(t, limitRouteTunnels); got != 3 {
		t.Errorf("route_open_tunnels counted %v, want 3", got)
	}
	st, retry, _ = eg.try(t, "127.0.0.79", path, bearer("bob"))
	want429(t, "bob's fourth handshake", st, retry)
	if got := eg.limitedCount(t, limitRouteRate); got != 1 {
		t.Errorf("route_handshake_rate counted %v, want 1", got)
	}
}

// TestScanThrottled: a client collecting refusals past its budget gets
// 429 for a while, for every address, valid or not; others do not.
func TestScanThrottled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ClientLimits: ClientLimits{RefusalBudget: 5, RefusalBlock: 1500 * time.Millisecond}})
		scanner, path := "127.0.0.79", "/e/"+eg.pod+"/x"
		for i := range 6 {
			if st, _, _ := eg.try(t, scanner, fmt.Sprintf("/e/127.0.1.%d/x", i+1), nil); st != http.StatusNotFound {
				t.Fatalf("scan step %d: %d, want 404", i, st)
			}
		}
		st, retry, _ := eg.try(t, scanner, "/e/127.0.1.7/x", nil)
		want429(t, "the scanner past its budget", st, retry)
		st, retry, _ = eg.try(t, scanner, path, nil)
		want429(t, "the scanner, to a pod that exists", st, retry)
		if eg.g.dials.Load() != 0 {
			t.Errorf("%d dials", eg.g.dials.Load())
		}
		if st, _, _ := eg.try(t, "127.0.0.80", path, nil); st != http.StatusSwitchingProtocols {
			t.Errorf("another client: %d", st)
		}
		if got := value(t, eg.reg, "wsgate_client_blocks_total", nil); got != 1 {
			t.Errorf("wsgate_client_blocks_total = %v", got)
		}
		if got := eg.limitedCount(t, limitRefusals); got != 2 {
			t.Errorf("refusals counted %v", got)
		}
		waitFor(t, "a log line for the block", func() bool { return len(eg.log.withMsg("client blocked for its refused handshakes")) == 1 })
		time.Sleep(1600 * time.Millisecond)
		if st, _, _ := eg.try(t, scanner, path, nil); st != http.StatusSwitchingProtocols {
			t.Errorf("after the block: %d", st)
		}
	})
}

// TestTenantAnswersBlockNoClient: only the gateway's own refusals count
// against a client's refusal budget. A pod answering 404 to every
// handshake, or a route's auth service refusing every one, is a tenant's
// decision: counted, it would let one tenant block clients from every
// other tenant's routes.
func TestTenantAnswersBlockNoClient(t *testing.T) {
	forEachPlainEngine(t, func(t *testing.T, opts Options) {
		eg := startEdgeGateway(t, engine{opts: opts}, Options{ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute}})
		refusing := startFakePod(t, "127.0.0.5", answerAndCloseWrite("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
		authSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		}))
		l, err := net.Listen("tcp", "127.0.0.6:0")
		if err != nil {
			t.Fatal(err)
		}
		authSrv.Listener = l
		authSrv.Start()
		t.Cleanup(authSrv.Close)
		guarded := testRoute("guarded", "/g", backendOf("p", echoPod(t, "127.0.0.7")))
		guarded.Auth = &routing.Auth{Forward: &routing.ForwardAuth{Service: "ns/auth", Addrs: []netip.AddrPort{netip.MustParseAddrPort(l.Addr().String())}, Path: "/", Timeout: 2 * time.Second}}
		eg.g.publish(testRoute("echo", "/e", backendOf("p", echoPod(t, "127.0.0.2"))),
			testRoute("refusing", "/r", refusing.backend("r")), guarded)
		for i := range 10 {
			if st, _, _ := eg.try(t, "127.0.0.81", "/r/127.0.0.5/x", nil); st != http.StatusNotFound {
				t.Fatalf("the pod's answer %d: %d, want its 404 relayed", i, st)
			}
			if st, _, _ := eg.try(t, "127.0.0.81", "/g/127.0.0.7/x", nil); st != http.StatusForbidden {
				t.Fatalf("the auth service's answer %d: %d, want its 403 relayed", i, st)
			}
		}
		if st, _, _ := eg.try(t, "127.0.0.81", "/e/127.0.0.2/x", nil); st != http.StatusSwitchingProtocols {
			t.Errorf("after 20 answers of tenants' pods and services, the client gets %d", st)
		}
		// The gateway's own refusals do count.
		for range 4 {
			eg.try(t, "127.0.0.81", "/e/127.0.9.9/x", nil)
		}
		if st, _, _ := eg.try(t, "127.0.0.81", "/e/127.0.0.2/x", nil); st != http.StatusTooManyRequests {
			t.Errorf("after 4 of the gateway's own 404s, budget 3: %d, want 429", st)
		}
	})
}

// TestGatewayLimitsBySubjectOnlyForTrustedIssuers: the gateway's own
// per-client limits count a token's subject as the client only when the
// route's namespace cannot mint subjects (an issuer the cluster admin
// granted, or the cluster's ServiceAccount issuer); with keys a tenant
// holds, they count by address, so that no tenant spends another's
// users' limits or escapes them with a subject per handshake.
func TestGatewayLimitsBySubjectOnlyForTrustedIssuers(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted subjects %v", trusted), func(t *testing.T) {
			eg := startEdgeGateway(t, engine{}, Options{ClientLimits: ClientLimits{MaxTunnels: 1}})
			sg := newES256Signer(t, "k1")
			rt := testRoute("private", "/p", backendOf("p", echoPod(t, "127.0.0.2")))
			rt.Auth = &routing.Auth{Tokens: sg.verifier(t), TrustedSubjects: trusted}
			eg.g.publish(rt)
			bearer := func(sub string) http.Header {
				return http.Header{"Authorization": {"Bearer " + sg.sign(t, claimsFor(sub, nil), nil, false)}}
			}
			path := "/p/127.0.0.2/x"
			if st, _, _ := eg.try(t, "127.0.0.85", path, bearer("alice")); st != http.StatusSwitchingProtocols {
				t.Fatalf("alice's first tunnel: %d", st)
			}
			// The same subject from another address: one client only when
			// subjects are trusted.
			st, _, _ := eg.try(t, "127.0.0.86", path, bearer("alice"))
			if want := map[bool]int{true: http.StatusTooManyRequests, false: http.StatusSwitchingProtocols}[trusted]; st != want {
				t.Errorf("alice from a second address: %d, want %d", st, want)
			}
			// Another subject from alice's address: one client only when
			// subjects are not trusted.
			st, _, _ = eg.try(t, "127.0.0.85", path, bearer("minted-1"))
			if want := map[bool]int{true: http.StatusSwitchingProtocols, false: http.StatusTooManyRequests}[trusted]; st != want {
				t.Errorf("a second subject from alice's address: %d, want %d", st, want)
			}
		})
	}
}
