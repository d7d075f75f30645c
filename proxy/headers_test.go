package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// podRequestWithHeader and upgradeHeaderWithHeader build the pod's
// request and the client's 101 head with http.Header's own methods
// (Clone, Del, Set, Write). podRequest and upgradeHeader must write the
// same bytes.
func podRequestWithHeader(r *http.Request, uri string) []byte {
	h := r.Header.Clone()
	removeHopByHop(h)
	h.Del("Forwarded")
	h.Del("X-Real-Ip")
	for k := range h {
		if strings.TrimLeft(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			delete(h, k)
		}
	}
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h.Set("X-Forwarded-For", clientIP)
	h.Set("X-Forwarded-Proto", proto)
	h.Set("X-Forwarded-Host", r.Host)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", uri, r.Host)
	_ = h.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
}

func upgradeHeaderWithHeader(resp *http.Response) []byte {
	h := resp.Header.Clone()
	removeHopByHop(h)
	var buf bytes.Buffer
	buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	_ = h.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
}

// checkSameHeaders compares the two ways of writing heads for header h.
func checkSameHeaders(t *testing.T, h http.Header, remoteAddr string, useTLS bool) {
	t.Helper()
	r := &http.Request{Header: h, Host: "ws.example.com", RemoteAddr: remoteAddr}
	if useTLS {
		r.TLS = &tls.ConnectionState{}
	}
	if got, want := podRequest(r, "/a/b?c=d"), podRequestWithHeader(r, "/a/b?c=d"); !bytes.Equal(got, want) {
		t.Fatalf("podRequest for %q:\n got %q\nwant %q", h, got, want)
	}
	resp := &http.Response{Header: h}
	if got, want := upgradeHeader(resp), upgradeHeaderWithHeader(resp); !bytes.Equal(got, want) {
		t.Fatalf("upgradeHeader for %q:\n got %q\nwant %q", h, got, want)
	}
}

func TestHeadersAsHeaderWriteWritesThem(t *testing.T) {
	many := http.Header{"Connection": {"upgrade"}}
	for i := range 50 {
		many[fmt.Sprintf("X-H%02d", i)] = []string{fmt.Sprint(i)}
	}
	for _, h := range []http.Header{
		{},
		many,
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}},
		// Hop-by-hop fields, those Connection names (in any case, with
		// empty items and spaces), and the ones the gateway sets.
		{"Connection": {"keep-alive, Upgrade, x-secret", " ,, X-Other ,"}, "X-Secret": {"s"}, "X-Other": {"o"},
			"Keep-Alive": {"5"}, "Te": {"trailers"}, "Trailer": {"x"}, "Transfer-Encoding": {"chunked"},
			"Proxy-Authorization": {"x"}, "Proxy-Authenticate": {"x"}, "Proxy-Connection": {"x"},
			"Forwarded": {"for=6.6.6.6"}, "X-Real-Ip": {"6.6.6.6"}, "X-Forwarded-For": {"6.6.6.6", "7.7.7.7"},
			"X-Forwarded-Proto": {"gopher"}, "X-Forwarded-Host": {"evil"}, "X-Kept": {"k"}},
		// Connection naming the fields the gateway sets, and itself.
		{"Connection": {"X-Forwarded-For, Connection, Host"}, "X-Forwarded-For": {"1.1.1.1"}},
		// Values that Header.Write rewrites, several values, nil values.
		{"X-A": {" padded\t", "line\r\nbreak", "\r\n"}, "X-B": nil, "X-C": {}, "X-D": {""}},
		// Names that Header.Write leaves out, or that are not canonical.
		{"Bad Name": {"x"}, "": {"empty"}, "x-lower": {"l"}, "X-Ünicode": {"u"}, "Colon:": {"c"}},
		{"Connection": {"x-lower, Bad Name"}, "x-lower": {"l"}, "X-Lower": {"L"}, "Bad Name": {"b"}},
		{"Connection": {"\u212aeep-Alive"}, "Keep-Alive": {"5"}, "K": {"k"}},
		// Names with underscores, dots and other token characters: the
		// pod's request drops them, the client's 101 keeps them.
		{"X_Forwarded_For": {"6.6.6.6"}, "X_real_ip": {"6.6.6.6"}, "x_forwarded_host": {"evil"}, "Foo_Bar": {"f"}, "_": {"u"}, "X-Kept": {"k"}},
		{"X.Forwarded.For": {"6.6.6.6"}, "Client.Ip": {"6.6.6.6"}, "X~Real~Ip": {"t"}, "X!Y": {"b"}, "X-Kept": {"k"}},
		{"Connection": {"Foo_Bar"}, "Foo_Bar": {"f"}, "X_Forwarded_Proto": {"gopher"}},
	} {
		for _, addr := range []string{"192.0.2.1:1234", "[2001:db8::1]:443", "unix-socket"} {
			checkSameHeaders(t, h, addr, false)
			checkSameHeaders(t, h, addr, true)
		}
	}
}

// FuzzHeaders: for any request or response head that net/http parses,
// podRequest and upgradeHeader write what http.Header's methods write.
func FuzzHeaders(f *testing.F) {
	for _, h := range []string{
		wsHead("/rooms/127.0.0.2/x?y=1"),
		wsHead("/rooms/127.0.0.2", "Connection: Upgrade, X-Secret, Host, Sec-WebSocket-Key", "+X-Secret: s", "+Keep-Alive: 5", "+Te: trailers"),
		wsHead("/rooms/127.0.0.2", "+X-Forwarded-For: 6.6.6.6", "+Forwarded: for=6.6.6.6", "+Proxy-Authorization: x", "+Trailer: y"),
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Pod\r\nX-Pod: p\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTransfer-Encoding: chunked\r\nTe: x\r\n\r\n",
	} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data))); err == nil {
			checkSameHeaders(t, r.Header, "192.0.2.1:1234", false)
		}
		if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil); err == nil {
			_ = resp.Body.Close()
			checkSameHeaders(t, resp.Header, "192.0.2.1:1234", true)
		}
	})
}

// TestSpelledHeadersNeverReachThePod: a client's header whose name has
// other characters than letters, digits and "-" is dropped before the pod
// (CGI-style frameworks read X_Forwarded_For, X.Forwarded.For and
// X-Forwarded-For as the same HTTP_X_FORWARDED_FOR), whatever its case;
// the pod sees exactly the gateway's X-Forwarded-* fields, and the
// client's other fields.
func TestSpelledHeadersNeverReachThePod(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		pod := echoPod(t, "127.0.0.2")
		g := startGateway(t, e.opts, testRoute("echo", "/rooms", backendOf("p", pod)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		forged := http.Header{
			// Written as given: Go's client does not canonicalize keys.
			"X_Forwarded_For":   {"6.6.6.6"},
			"x_forwarded_for":   {"6.6.6.7"},
			"X-Forwarded_For":   {"6.6.6.8"},
			"X_Real_Ip":         {"6.6.6.9"},
			"x_REAL_ip":         {"6.6.6.10"},
			"X_Forwarded_Host":  {"evil-host.example"},
			"X_FORWARDED_HOST":  {"evil-host2.example"},
			"X_Forwarded_Proto": {"gopher"},
			"x_forwarded_proto": {"gopher2"},
			"Foo_Bar":           {"foo-secret"},
			"foo_bar":           {"foo-secret2"},
			"_":                 {"lone-underscore"},
			"X.Forwarded.For":   {"6.6.6.12"},
			"Client.Ip":         {"6.6.6.13"},
			"X~Forwarded~Host":  {"evil-host3.example"},
			"X-Forwarded-For":   {"6.6.6.11"},
			"X-Kept":            {"kept"},
		}
		c := newWSClient(t, g, e).mustDial(t, "/rooms/127.0.0.2", &websocket.DialOptions{HTTPHeader: forged})
		checkEngine(t, g, e)
		seen, err := seenByPod(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for name, vals := range seen.Header {
			if !plainName(name) {
				t.Errorf("the pod got %s: %q", name, vals)
			}
			for _, v := range vals {
				if strings.Contains(v, "6.6.6.") || strings.Contains(v, "evil-host") || strings.Contains(v, "gopher") ||
					strings.Contains(v, "foo-secret") || v == "lone-underscore" {
					t.Errorf("a forged value reached the pod in %s: %q", name, v)
				}
			}
		}
		proto := "http"
		if e.tls {
			proto = "https"
		}
		for name, want := range map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "ws.example.com", "X-Forwarded-Proto": proto, "X-Kept": "kept",
		} {
			if got := seen.Header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("%s at the pod: %q, want exactly [%q]", name, got, want)
			}
		}
	})
}
