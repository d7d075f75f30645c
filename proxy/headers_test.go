package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
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
