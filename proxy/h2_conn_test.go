package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// TestHTTP2ClientGoneWithStreamsOpen: a client whose HTTP/2 connection
// breaks (a TCP reset) while many of its websockets are open takes all
// their tunnels down with it, pods' connections closed, and the gateway
// goes on serving others.
func TestHTTP2ClientGoneWithStreamsOpen(t *testing.T) {
	eachH2Engine(t, func(t *testing.T, e h2Engine) {
		h := startH2Gateway(t, e.opts(Options{}))
		var (
			mu    sync.Mutex
			conns []*net.TCPConn
		)
		// A client of its own, whose TCP connection the test can reset.
		tr := &http2.Transport{
			TLSClientConfig: &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2"}}, //nolint:gosec // a self-signed test certificate
			DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
				raw, err := (&net.Dialer{}).DialContext(ctx, network, h.tlsAddr)
				if err != nil {
					return nil, err
				}
				mu.Lock()
				conns = append(conns, raw.(*net.TCPConn))
				mu.Unlock()
				c := tls.Client(raw, cfg)
				return c, c.HandshakeContext(ctx)
			},
		}
		defer tr.CloseIdleConnections()
		own := &h2Gateway{g: h.g, tlsAddr: h.tlsAddr, client: &http.Client{Transport: tr}}
		const n = 40
		var socks []*h2Socket
		for i := range n {
			_, s := own.open(t, http.MethodConnect, "websocket", fmt.Sprintf("/e/127.0.0.2/%d", i), nil)
			if s == nil {
				t.Fatalf("stream %d did not open", i)
			}
			socks = append(socks, s)
		}
		for i, s := range socks {
			if got := s.echo(t, fmt.Sprint(i)); got != fmt.Sprint(i) {
				t.Fatalf("echo %d: %q", i, got)
			}
		}
		waitTunnels(t, h.g, n)
		// Echoes on their way back when the connection breaks: the
		// gateway's writes to it fail while its streams are open.
		burst := bytes.Repeat(maskedFrame(0x2, strings.Repeat("x", 125)), 200)
		for _, s := range socks {
			if _, err := s.out.Write(burst); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		if len(conns) != 1 {
			t.Fatalf("%d connections, want the streams on one", len(conns))
		}
		_ = conns[0].SetLinger(0)
		_ = conns[0].Close()
		mu.Unlock()
		waitTunnels(t, h.g, 0)
		_, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/after", nil)
		if s == nil {
			t.Fatal("a new client's stream did not open")
		}
		if got := s.echo(t, "after"); got != "after" {
			t.Fatalf("echo after: %q", got)
		}
	})
}
