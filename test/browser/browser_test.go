// Package browser tests wsgate with the client it exists for: a real
// browser (headless Chromium, and Firefox ESR for websockets over
// HTTP/2) on a page from an app's own web origin, opening wss://
// websockets through the gateway to pods.
package browser

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// page opens a websocket to the URL in its query, sends a message, and
// reports what happened in #result: "echo:<reply>" or "closed:<code>".
const page = `<!doctype html>
<html><head><title>wsgate browser test</title></head><body>
<div id="result">pending</div>
<script>
const target = new URLSearchParams(location.search).get("ws");
const ws = new WebSocket(target, ["chat"]);
const result = document.getElementById("result");
ws.onopen = () => ws.send("hello from " + location.origin);
ws.onmessage = (e) => { result.textContent = "echo:" + e.data + " protocol:" + ws.protocol; ws.close(1000); };
ws.onclose = (e) => { if (!result.textContent.startsWith("echo:")) result.textContent = "closed:" + e.code; };
</script></body></html>`

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium on this machine: .ci/run installs Debian's chromium package")
	}
	t.Skip("no Chromium on this machine (apt-get install chromium)")
	return ""
}

// spkiHash is what Chromium's --ignore-certificate-errors-spki-list takes:
// trust exactly this key, and nothing else that is not otherwise trusted.
func spkiHash(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// serve runs handler on a loopback listener and returns its port.
func serve(t *testing.T, handler http.Handler) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func TestBrowserReachesAPodThroughTheGatewayOnlyFromAnAllowedOrigin(t *testing.T) {
	bin := chromium(t)
	pod, err := echopod.Start("127.0.0.31:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pod.Close() })

	// Two web origins serve the same page: the app's own, and another site.
	site := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	})
	appPort, evilPort := serve(t, site), serve(t, site)
	appOrigin := fmt.Sprintf("http://app.test:%d", appPort)

	// The gateway, with a certificate for ws.test and a route that allows
	// only the app's origin.
	ca := testcerts.NewCA(t, "browser test CA")
	cert := ca.Issue(t, time.Hour, "ws.test").TLS(t)
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{{
		Key:            routing.RouteKey{Namespace: "games", Name: "rooms"},
		Hosts:          []string{"ws.test"},
		PathPrefix:     "/rooms",
		BackendPath:    "/",
		AllowedOrigins: []string{appOrigin},
		Backends:       []routing.Backend{{Pod: "room-1", Addr: netip.MustParseAddrPort(pod.Addr)}},
	}}, routing.WithCertificates(routing.Certificates{ByHost: map[string]*tls.Certificate{"ws.test": &cert}})))
	gw := proxy.New(tables, proxy.Options{Log: logr.Discard()})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gw.ServeTLS(l, gw.TLSConfig(nil)) }()
	t.Cleanup(func() { _ = gw.Shutdown(context.Background(), 0) })
	gwPort := l.Addr().(*net.TCPAddr).Port
	wsURL := fmt.Sprintf("wss://ws.test:%d/rooms/%s/lobby", gwPort, netip.MustParseAddrPort(pod.Addr).Addr())

	allocCtx, cancelAlloc := chromiumAllocator(t, bin, cert, "app.test", "evil.test", "ws.test")
	defer cancelAlloc()

	visit := func(t *testing.T, origin string) string {
		t.Helper()
		ctx, cancel := chromedp.NewContext(allocCtx)
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
		defer cancelT()
		if _, err := chromedp.Run(ctx, chromedp.Navigate(origin+"/?ws="+wsURL)); err != nil {
			t.Fatalf("browser on %s: navigate: %v", origin, err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("result").textContent !== "pending"`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("browser on %s: the page never finished: %v", origin, err)
		}
		result, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("result")))
		if err != nil {
			t.Fatalf("browser on %s: read the result: %v", origin, err)
		}
		return result
	}

	t.Run("the app's own page exchanges messages with the pod", func(t *testing.T) {
		got := visit(t, appOrigin)
		want := "echo:hello from " + appOrigin + " protocol:chat"
		if got != want {
			t.Fatalf("page shows %q, want %q", got, want)
		}
		if pod.Accepted() != 1 {
			t.Errorf("the pod accepted %d websockets, want 1", pod.Accepted())
		}
	})
	t.Run("a page from another origin is refused", func(t *testing.T) {
		before := pod.Accepted()
		got := visit(t, fmt.Sprintf("http://evil.test:%d", evilPort))
		// The browser sees a failed handshake (403) as close code 1006.
		if !strings.HasPrefix(got, "closed:") || got == "closed:1000" {
			t.Fatalf("page shows %q, want a refused websocket", got)
		}
		if pod.Accepted() != before {
			t.Error("the pod saw a websocket from the refused origin")
		}
	})
}

// chromiumAllocator returns an allocator of headless Chromium (bin) in which hosts
// resolve to 127.0.0.1 and nothing else resolves, and the TLS key of cert
// is trusted by its hash, nothing else is.
func chromiumAllocator(t *testing.T, bin string, cert tls.Certificate, hosts ...string) (context.Context, context.CancelFunc) {
	t.Helper()
	var rules []string
	for _, h := range hosts {
		rules = append(rules, "MAP "+h+" 127.0.0.1")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("host-resolver-rules", strings.Join(append(rules, "EXCLUDE localhost"), ", ")),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, cert)),
	)
	return chromedp.NewExecAllocator(context.Background(), opts...)
}
