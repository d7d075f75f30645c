package browser

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testissuer"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// authPage opens a websocket to the URL its fragment names with the token
// the fragment carries, either in the subprotocol list (mode=protocol,
// next to "chat") or in the cookie wsgate_token (mode=cookie, set for the
// gateway's host: the page is served from that host, on another port).
// It sends a message, then asks the echo pod for the handshake it
// received, and reports in #result "echo:<reply> protocol:<protocol>" or
// "closed:<code>", and in #seen the pod's answer.
const authPage = `<!doctype html>
<html><head><title>wsgate auth browser test</title></head><body>
<div id="result">pending</div>
<pre id="seen"></pre>
<script>
const p = new URLSearchParams(location.hash.slice(1));
const target = p.get("ws"), token = p.get("token"), mode = p.get("mode");
let protocols = ["chat"];
if (mode === "protocol") {
  const b64url = btoa(token).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  protocols = ["base64url.bearer.authorization.k8s.io." + b64url, "chat"];
} else if (mode === "cookie") {
  document.cookie = "wsgate_token=" + token + "; path=/; Secure; SameSite=Strict";
}
const result = document.getElementById("result");
const seen = document.getElementById("seen");
let echoed = "";
const ws = new WebSocket(target, protocols);
ws.onopen = () => ws.send("hello from " + location.origin);
ws.onmessage = (e) => {
  if (!echoed) {
    echoed = "echo:" + e.data + " protocol:" + ws.protocol;
    ws.send("request?");
    return;
  }
  seen.textContent = e.data;
  result.textContent = echoed;
  ws.close(1000);
};
ws.onclose = (e) => { if (!result.textContent.startsWith("echo:")) result.textContent = "closed:" + e.code; };
</script></body></html>`

// TestBrowserAuth: a page in a real browser opens wss:// websockets
// through a route that requires tokens bound to pods, with the token in
// the subprotocol list and in a cookie. The person's own pod echoes and
// never sees the token; another person's pod is refused (404, which the
// browser sees as close code 1006) and never sees a handshake.
func TestBrowserAuth(t *testing.T) {
	bin := chromium(t)
	iss := testissuer.Start(t)
	const audience = "wsgate-browser"

	alicePod, err := echopod.Start("127.0.8.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alicePod.Close() })
	bobPod, err := echopod.Start("127.0.8.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bobPod.Close() })
	aliceAddr, bobAddr := netip.MustParseAddrPort(alicePod.Addr), netip.MustParseAddrPort(bobPod.Addr)

	// The page is served over HTTPS from the gateway's own host name, on
	// another port: its cookie goes with the gateway's handshakes.
	ca := testcerts.NewCA(t, "browser auth test CA")
	cert := ca.Issue(t, time.Hour, "ws.test").TLS(t)
	pagePort := serveTLS(t, cert, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(authPage))
	}))
	pageOrigin := fmt.Sprintf("https://ws.test:%d", pagePort)

	// The gateway: one route whose tokens come from the issuer, bound to
	// pods by sub, with the cookie wsgate_token as a place for them.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	keys := auth.NewRemoteKeys(iss.URL(), auth.IssuerFetcher(iss.URL(), iss.HTTPClient()), auth.RemoteOptions{})
	keys.Start(ctx)
	key := routing.RouteKey{Namespace: "desks", Name: "desks"}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{{
		Key:            key,
		Hosts:          []string{"ws.test"},
		PathPrefix:     "/desks",
		BackendPath:    "/",
		AllowedOrigins: []string{pageOrigin},
		Auth: &routing.Auth{
			Tokens:        auth.NewVerifier(auth.Config{Issuer: iss.URL(), Audiences: []string{audience}, Keys: keys}),
			Cookie:        "wsgate_token",
			BindingClaim:  "sub",
			CloseOnExpiry: true,
		},
		Backends: []routing.Backend{
			{Pod: "alice-desk", Addr: aliceAddr, Bound: "alice"},
			{Pod: "bob-desk", Addr: bobAddr, Bound: "bob"},
		},
	}}, routing.WithCertificates(routing.Certificates{ByHost: map[string]*tls.Certificate{"ws.test": &cert}})))
	reg := prometheus.NewRegistry()
	metrics := proxy.NewMetrics(reg)
	gw := proxy.New(tables, proxy.Options{Log: logr.Discard(), Metrics: metrics})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gw.ServeTLS(l, gw.TLSConfig(nil)) }()
	t.Cleanup(func() { _ = gw.Shutdown(context.Background(), 0) })
	gwPort := l.Addr().(*net.TCPAddr).Port
	wsURL := func(pod netip.AddrPort) string {
		return fmt.Sprintf("wss://ws.test:%d/desks/%s/desk", gwPort, pod.Addr())
	}

	allocCtx, cancelAlloc := chromiumAllocator(t, bin, cert, "ws.test")
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if _, err := chromedp.Run(browserCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start the browser: %v", err)
	}

	// visit loads the page in a browser context of its own (its own
	// cookies) and returns #result and #seen.
	visit := func(t *testing.T, mode, token string, pod netip.AddrPort) (string, string) {
		t.Helper()
		ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
		defer cancelT()
		frag := url.Values{"ws": {wsURL(pod)}, "token": {token}, "mode": {mode}}.Encode()
		if _, err := chromedp.Run(ctx, chromedp.Navigate(pageOrigin+"/#"+frag)); err != nil {
			t.Fatalf("navigate: %v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("result").textContent !== "pending"`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("the page never finished: %v", err)
		}
		result, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("result")))
		if err != nil {
			t.Fatalf("read the result: %v", err)
		}
		seen, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("seen")))
		if err != nil {
			t.Fatalf("read the pod's request: %v", err)
		}
		return result, seen
	}
	// checkSeen fails the test if the pod's request held the token.
	checkSeen := func(t *testing.T, raw, token string) {
		t.Helper()
		var s echopod.Seen
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			t.Fatalf("the pod's request %q: %v", raw, err)
		}
		if s.Subprotocol != "chat" {
			t.Errorf("the pod chose subprotocol %q, want chat", s.Subprotocol)
		}
		for name, values := range s.Header {
			for _, v := range values {
				if strings.Contains(v, token) || strings.Contains(v, "base64url.bearer.authorization.k8s.io") || strings.Contains(v, "wsgate_token") {
					t.Errorf("the pod received the token in its %s header: %q", name, v)
				}
			}
		}
	}

	aliceTok := iss.Token(t, "alice", []string{audience}, 0, nil)
	want := "echo:hello from " + pageOrigin + " protocol:chat"
	for _, mode := range []string{"protocol", "cookie"} {
		t.Run("alice's token in the "+mode+" reaches alice's pod", func(t *testing.T) {
			before := alicePod.Accepted()
			result, seen := visit(t, mode, aliceTok, aliceAddr)
			if result != want {
				t.Fatalf("page shows %q, want %q", result, want)
			}
			if n := alicePod.Accepted() - before; n != 1 {
				t.Errorf("alice's pod accepted %d websockets, want 1", n)
			}
			checkSeen(t, seen, aliceTok)
		})
	}

	for _, mode := range []string{"protocol", "cookie"} {
		t.Run("alice's token in the "+mode+" on bob's pod is refused", func(t *testing.T) {
			// A pod that is not the token's is answered as an address
			// without a pod: a 404 of no route, and an unbound check
			// counted for the route.
			notFound := map[string]string{"namespace": "", "route": "", "code": "404"}
			unbound := map[string]string{"namespace": key.Namespace, "route": key.Name, "result": "unbound"}
			before404, beforeUnbound := counter(t, reg, "wsgate_handshakes_total", notFound), counter(t, reg, "wsgate_auth_total", unbound)
			result, _ := visit(t, mode, aliceTok, bobAddr)
			// The browser sees a refused handshake as close code 1006.
			if !strings.HasPrefix(result, "closed:") || result == "closed:1000" {
				t.Fatalf("page shows %q, want a refused websocket", result)
			}
			if n := bobPod.Accepted(); n != 0 {
				t.Errorf("bob's pod accepted %d websockets from alice's page", n)
			}
			if got := counter(t, reg, "wsgate_handshakes_total", notFound); got != before404+1 {
				t.Errorf("wsgate_handshakes_total%v went from %v to %v, want one more", notFound, before404, got)
			}
			if got := counter(t, reg, "wsgate_auth_total", unbound); got != beforeUnbound+1 {
				t.Errorf("wsgate_auth_total%v went from %v to %v, want one more", unbound, beforeUnbound, got)
			}
		})
	}

	t.Run("the page without a token is refused", func(t *testing.T) {
		before := alicePod.Accepted()
		result, _ := visit(t, "none", "", aliceAddr)
		if !strings.HasPrefix(result, "closed:") || result == "closed:1000" {
			t.Fatalf("page shows %q, want a refused websocket", result)
		}
		if alicePod.Accepted() != before {
			t.Error("alice's pod saw a websocket without a token")
		}
	})

	t.Run("bob's own token reaches bob's pod", func(t *testing.T) {
		bobTok := iss.Token(t, "bob", []string{audience}, 0, nil)
		result, seen := visit(t, "protocol", bobTok, bobAddr)
		if result != want {
			t.Fatalf("page shows %q, want %q", result, want)
		}
		if n := bobPod.Accepted(); n != 1 {
			t.Errorf("bob's pod accepted %d websockets, want bob's 1", n)
		}
		checkSeen(t, seen, bobTok)
	})
}

// counter is the value of the gateway's counter series name whose labels
// include want, gathered from reg (0 when there is no such series).
func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// serveTLS runs handler over TLS with cert on a loopback listener and
// returns its port.
func serveTLS(t *testing.T, cert tls.Certificate, handler http.Handler) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}
