package browser

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// h2Page first fetches a resource from the gateway's host (over HTTP/2,
// which makes the browser hold an HTTP/2 connection there; with
// credentials, as websockets are sent, or the browser keeps the two in
// separate pools of connections), then opens
// one websocket to each URL in its fragment (a JSON list) and echoes a
// message on each: #result shows "open" once every socket echoed. Then
// window.closes lists the sockets' close codes as they close, and
// window.echoAll() sends on every socket still open and shows
// "again:<n>" in #result when n echoes came back.
const h2Page = `<!doctype html>
<html><head><title>wsgate HTTP/2 test</title></head><body>
<div id="result">pending</div>
<script>
const urls = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const result = document.getElementById("result");
window.closes = {};
const sockets = [];
(async () => {
  try { await fetch(new URL(urls[0]).origin.replace("wss:", "https:") + "/warm-up", {mode: "no-cors", credentials: "include"}); } catch (e) {}
  let echoed = 0;
  urls.forEach((u, i) => {
    const ws = new WebSocket(u, ["chat"]);
    sockets.push(ws);
    ws.onopen = () => ws.send("hello " + i);
    ws.onmessage = () => { if (++echoed === urls.length) result.textContent = "open"; };
    ws.onclose = (e) => { window.closes[i] = e.code; if (echoed < urls.length) result.textContent = "closed:" + i + ":" + e.code; };
  });
})();
window.echoAll = () => {
  const open = sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
  let n = 0;
  open.forEach((ws) => { ws.onmessage = () => { if (++n === open.length) result.textContent = "again:" + n; }; ws.send("again"); });
};
window.closeAll = () => sockets.forEach((ws) => ws.close(1000));
</script></body></html>`

// TestBrowserWebsocketsOverHTTP2: headless Chromium opens three
// websockets to two pods through a gateway that offers HTTP/2: they are
// streams of the one HTTP/2 connection the page's first request made,
// messages flow, and revoking one pod closes only its stream with 1008.
// h2Fixture is a gateway offering websockets over HTTP/2 on ws.test,
// with a route to two echo pods that admits the page origin's websockets.
type h2Fixture struct {
	pods   []*echopod.Server
	tables *routing.Publisher
	route  func(pods ...*echopod.Server) *routing.Table
	log    *accessLines
	reg    *prometheus.Registry
	cert   tls.Certificate
	ca     *testcerts.CA
	// urls are the page's websockets: two to the first pod, one to the
	// second, as a JSON list.
	urls []byte
}

// newH2Fixture starts the pods, the gateway and a web server on
// app.test serving page (its origin is appOrigin).
func newH2Fixture(t *testing.T, page http.Handler) (f *h2Fixture, appOrigin string) {
	t.Helper()
	f = &h2Fixture{log: &accessLines{}, reg: prometheus.NewRegistry()}
	for _, ip := range []string{"127.0.0.41", "127.0.0.42"} {
		p, err := echopod.Start(ip + ":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		f.pods = append(f.pods, p)
	}
	appOrigin = fmt.Sprintf("http://app.test:%d", serve(t, page))

	f.ca = testcerts.NewCA(t, "browser test CA")
	f.cert = f.ca.Issue(t, time.Hour, "ws.test").TLS(t)
	f.route = func(pods ...*echopod.Server) *routing.Table {
		var bs []routing.Backend
		for i, p := range pods {
			bs = append(bs, routing.Backend{Pod: fmt.Sprintf("room-%d", i), Addr: netip.MustParseAddrPort(p.Addr)})
		}
		return routing.New(uint64(len(pods)), time.Now(), []*routing.Route{{
			Key: routing.RouteKey{Namespace: "games", Name: "rooms"}, Hosts: []string{"ws.test"},
			PathPrefix: "/rooms", BackendPath: "/", AllowedOrigins: []string{appOrigin}, Backends: bs,
		}}, routing.WithCertificates(routing.Certificates{ByHost: map[string]*tls.Certificate{"ws.test": &f.cert}}))
	}
	f.tables = routing.NewPublisher()
	f.tables.Publish(f.route(f.pods...))
	gw := proxy.New(f.tables, proxy.Options{Log: logr.Discard(), HTTP2: true, Metrics: proxy.NewMetrics(f.reg),
		AccessLog: funcr.NewJSON(f.log.add, funcr.Options{})})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gw.ServeTLS(l, gw.TLSConfig(nil)) }()
	t.Cleanup(func() { _ = gw.Shutdown(context.Background(), 0) })
	gwPort := l.Addr().(*net.TCPAddr).Port
	url := func(p *echopod.Server, rest string) string {
		return fmt.Sprintf("wss://ws.test:%d/rooms/%s/%s", gwPort, netip.MustParseAddrPort(p.Addr).Addr(), rest)
	}
	f.urls, _ = json.Marshal([]string{url(f.pods[0], "a"), url(f.pods[0], "b"), url(f.pods[1], "c")})
	return f, appOrigin
}

// htmlPage serves page as HTML.
func htmlPage(page string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	}
}

// checkOpen checks the gateway's metrics while the page's three
// websockets are open: three HTTP/2 streams, on one connection.
func (f *h2Fixture) checkOpen(t *testing.T) {
	t.Helper()
	if n := counter(t, f.reg, "wsgate_http2_tunnels_active", nil); n != 3 {
		t.Errorf("wsgate_http2_tunnels_active = %v, want the page's 3 websockets", n)
	}
	if n := counter(t, f.reg, "wsgate_http2_connections_active", nil); n != 1 {
		t.Errorf("wsgate_http2_connections_active = %v, want 1: the streams share the page's connection", n)
	}
}

// revokeSecond publishes the table without the second pod.
func (f *h2Fixture) revokeSecond() { f.tables.Publish(f.route(f.pods[0])) }

// checkStreams checks the access log once the page closed its sockets:
// three tunnels over HTTP/2, from one connection (one client port).
func (f *h2Fixture) checkStreams(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.log.tunnels()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	lines := f.log.tunnels()
	if len(lines) != 3 {
		t.Fatalf("%d tunnel lines in the access log, want 3", len(lines))
	}
	clients := map[string]bool{}
	for _, ln := range lines {
		if ln["protocol"] != "HTTP/2" {
			t.Errorf("a tunnel over %v, want HTTP/2: %v", ln["protocol"], ln)
		}
		clients[fmt.Sprint(ln["client"])] = true
	}
	if len(clients) != 1 {
		t.Errorf("the tunnels came from %d client connections (%v), want the page's one HTTP/2 connection", len(clients), clients)
	}
}

func TestBrowserWebsocketsOverHTTP2(t *testing.T) {
	bin := chromium(t)
	if !proxy.ExtendedConnect() {
		t.Fatal("this system has no websockets over HTTP/2 (the gateway's own HTTP/2 runs on Linux)")
	}
	f, appOrigin := newH2Fixture(t, htmlPage(h2Page))
	allocCtx, cancelAlloc := chromiumAllocator(t, bin, f.cert, "app.test", "ws.test")
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()
	wait := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			res, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("result")))
			t.Fatalf("%s: %v (the page shows %q)", what, err, res)
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(appOrigin+"/#"+string(f.urls))); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	wait("three websockets echo", `document.getElementById("result").textContent === "open"`)
	if a, b := f.pods[0].Accepted(), f.pods[1].Accepted(); a != 2 || b != 1 {
		t.Fatalf("the pods accepted %d and %d websockets, want 2 and 1", a, b)
	}
	f.checkOpen(t)

	// Revoking the second pod closes its stream only.
	f.revokeSecond()
	wait("the revoked pod's socket closes", `window.closes[2] !== undefined`)
	closes, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`window.closes`))
	if err != nil {
		t.Fatal(err)
	}
	if len(closes) != 1 || closes["2"] != 1008 {
		t.Fatalf("close codes %v, want only socket 2, with 1008", closes)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.echoAll()`)); err != nil {
		t.Fatal(err)
	}
	wait("the other two sockets echo again", `document.getElementById("result").textContent === "again:2"`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.closeAll()`)); err != nil {
		t.Fatal(err)
	}
	f.checkStreams(t)
}

// accessLines collects the gateway's JSON access log lines.
type accessLines struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *accessLines) add(obj string) {
	var m map[string]any
	if json.Unmarshal([]byte(obj), &m) != nil {
		return
	}
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
}

// tunnels are the lines of closed tunnels.
func (l *accessLines) tunnels() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, m := range l.lines {
		if m["msg"] == "tunnel closed" && !strings.Contains(fmt.Sprint(m["path"]), "warm-up") {
			out = append(out, m)
		}
	}
	return out
}
