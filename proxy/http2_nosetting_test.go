package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/routing"
)

// h2ChildPod, in a child process's environment, makes TestMain serve a
// gateway with Options.HTTP2 to that pod address instead of running the
// tests, in a process started without http2xconnect=1; with h2ChildEngine
// set to an engine's name, that engine serves HTTP/2.
const (
	h2ChildPod    = "WSGATE_TEST_HTTP2_CHILD_POD"
	h2ChildEngine = "WSGATE_TEST_HTTP2_CHILD_ENGINE"
)

// serveH2Child is that child: a gateway with a route to the pod, on a TLS
// listener, printing "listening <address>" and serving until its stdin
// closes.
func serveH2Child(pod string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cert, err := makeSelfSigned("ws.example.com")
	if err != nil {
		fail(err)
	}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{
		testRoute("echo", "/e", routing.Backend{Pod: "p", Addr: netip.MustParseAddrPort(pod)}),
	}))
	opts := Options{HTTP2: true}
	for _, e := range h2Engines {
		if e.name == os.Getenv(h2ChildEngine) {
			opts = e.opts(opts)
		}
	}
	s := New(tables, opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go func() { _ = s.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	fmt.Printf("listening %s\n", l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// TestHTTP2WithoutTheSetting: in a process started without
// GODEBUG=http2xconnect=1, the gateway's own HTTP/2 (on the loops) still
// takes websockets over HTTP/2, as it needs no setting of Go's; net/http's
// (the engine of other systems) offers HTTP/2 without SETTINGS_ENABLE_
// CONNECT_PROTOCOL, so a client does not send an extended CONNECT (as
// browsers then open their websockets over HTTP/1.1), and an HTTP/1.1
// websocket still works beside it.
func TestHTTP2WithoutTheSetting(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		addr := startH2Child(t, pod.Addr, e.name)
		tr := &http2.Transport{
			TLSClientConfig: &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2"}}, //nolint:gosec // a self-signed test certificate
			DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
				return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
			},
		}
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		defer func() { _ = pw.Close() }()
		req, err := http.NewRequest(http.MethodConnect, "https://ws.example.com/e/127.0.0.2/x", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(":protocol", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		resp, err := tr.RoundTrip(req)
		if !e.goroutines {
			if err != nil {
				t.Fatalf("an extended CONNECT to the gateway's own HTTP/2 without the setting: %v", err)
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("an extended CONNECT to the gateway's own HTTP/2 without the setting: %d, want 200", resp.StatusCode)
			}
			s := &h2Socket{resp: resp, out: pw}
			if got := s.echo(t, "over HTTP/2"); got != "over HTTP/2" {
				t.Fatalf("echo %q", got)
			}
			return
		}
		if err == nil {
			_ = resp.Body.Close()
			t.Fatalf("an extended CONNECT to net/http's server without the setting: %d, want the client to refuse it", resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "extended connect not supported") {
			t.Errorf("extended CONNECT: %v, want the client's 'not supported by peer'", err)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, wsResp, err := websocket.Dial(ctx, "wss://"+addr+"/e/127.0.0.2/x", &websocket.DialOptions{Host: "ws.example.com",
			HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}}}) //nolint:gosec // a self-signed test certificate
		if wsResp != nil && wsResp.Body != nil {
			_ = wsResp.Body.Close()
		}
		if err != nil {
			t.Fatalf("a websocket over HTTP/1.1 beside it: %v", err)
		}
		defer func() { _ = c.CloseNow() }()
		if err := echo(ctx, c, websocket.MessageText, []byte("over HTTP/1.1")); err != nil {
			t.Fatal(err)
		}
	})
}

// startH2Child starts the child gateway of engine, in a process without
// http2xconnect=1, and returns its TLS address.
func startH2Child(t *testing.T, pod, engine string) string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, h2ChildPod+"="+pod, h2ChildEngine+"="+engine)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("the child said %q (%v)", line, err)
	}
	return addr
}
