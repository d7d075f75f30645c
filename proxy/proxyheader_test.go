package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"
)

// FuzzProxyHeader checks the gateway's framing of PROXY headers against
// go-proxyproto reading the same bytes whole: a header the gateway takes
// is one the library takes, with the same client; every cut of it is
// incomplete, never refused (headers may come in pieces); bytes the
// gateway calls incomplete are not a header to the library either.
func FuzzProxyHeader(f *testing.F) {
	v2 := func(src, dst string, cmd proxyproto.ProtocolVersionAndCommand, tlvs []proxyproto.TLV) []byte {
		h := &proxyproto.Header{Version: 2, Command: cmd, TransportProtocol: proxyproto.UNSPEC}
		if src != "" {
			s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
			h.TransportProtocol = proxyproto.TCPv4
			if s.Addr().Is6() {
				h.TransportProtocol = proxyproto.TCPv6
			}
			h.SourceAddr, h.DestinationAddr = net.TCPAddrFromAddrPort(s), net.TCPAddrFromAddrPort(d)
		}
		if tlvs != nil {
			if err := h.SetTLVs(tlvs); err != nil {
				f.Fatal(err)
			}
		}
		b, err := h.Format()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 10.0.0.1 41000 443\r\nGET / HTTP/1.1\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 fd00::1 1 2\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
		[]byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
		[]byte("PROXY"),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x00, 0x10},
		v2("203.0.113.7:1", "10.0.0.1:443", proxyproto.PROXY, nil),
		v2("[2001:db8::7]:1", "[fd00::1]:443", proxyproto.PROXY, []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("ws.example.com")}}),
		v2("", "", proxyproto.LOCAL, nil),
		append(v2("203.0.113.7:1", "10.0.0.1:443", proxyproto.PROXY, nil), "GET /"...),
	} {
		f.Add(s)
	}
	peer := netip.MustParseAddrPort("192.0.2.1:7")
	f.Fuzz(func(t *testing.T, b []byte) {
		n, client, err := proxyHeader(b, peer)
		ref, refErr := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(b), len(b)+16))
		var refused *proxyHeaderError
		switch {
		case err == nil:
			if refErr != nil {
				t.Fatalf("the gateway took %q (client %s), the library refused it: %v", b[:n], client, refErr)
			}
			want := peer
			switch {
			case ref.Version == 1 && (ref.Command.IsLocal() || ref.TransportProtocol == proxyproto.UNSPEC):
				want = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			case !ref.Command.IsLocal() && ref.TransportProtocol != proxyproto.UNSPEC:
				src, _, _ := ref.TCPAddrs()
				want = netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port())
			}
			if client != want {
				t.Fatalf("client %s, the library says %s", client, want)
			}
			for i := range n {
				if _, _, err := proxyHeader(b[:i], peer); !errors.Is(err, errProxyIncomplete) {
					t.Fatalf("the header's first %d of %d bytes: %v, want incomplete", i, n, err)
				}
			}
			if m, c2, err := proxyHeader(b[:n], peer); err != nil || m != n || c2 != client {
				t.Fatalf("the header alone: %d %s %v", m, c2, err)
			}
		case errors.Is(err, errProxyIncomplete):
			if refErr == nil {
				t.Fatalf("the library read a header from %q, which the gateway waits to complete", b)
			}
		case errors.As(err, &refused):
			if refErr == nil && ref.TransportProtocol.IsStream() && !ref.TransportProtocol.IsUnix() {
				t.Fatalf("the gateway refused (%s) a TCP header the library takes: %q", refused.reason, b)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
