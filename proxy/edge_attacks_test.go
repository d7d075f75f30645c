package proxy

// Attacks on the public edge, as a hostile internet client and as a
// hostile tenant (who writes the WsRoutes of its namespace, their
// spec.limits and spec.auth, and runs its pods): spoofing the client's
// address through PROXY headers and X-Forwarded-For, escaping or abusing
// the per-client limits, stalling and crashing the PROXY header reader.
// Every test asserts the secure behaviour.
//
// Only loopback sockets are used: clients bind 127.0.0.x source
// addresses; other client addresses (IPv6 /64s, documentation ranges)
// exist only inside PROXY headers and X-Forwarded-For values.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pires/go-proxyproto"

	"github.com/wsgate/wsgate/proxy/internal/clientlimit"
	"github.com/wsgate/wsgate/routing"
)

// ---------------------------------------------------------------------
// Helpers.

// attackConn connects to eg from src, writes pre in the clear (PROXY
// headers, say) and, on a TLS engine, makes the TLS handshake. nil: the
// gateway closed the connection before the TLS handshake completed.
func attackConn(t *testing.T, eg *edgeGateway, src string, pre ...[]byte) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := eg.conn(ctx, edgeDial{src: src, pieces: pre})
	if err != nil {
		// The gateway may close a refused connection while the pieces
		// are being written.
		return nil
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(8 * time.Second))
	if eg.tlsAddr == "" {
		return c
	}
	tc := tls.Client(c, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // a self-signed test certificate
	if err := tc.Handshake(); err != nil {
		if isTimeout(err) {
			t.Fatalf("the gateway neither finished the TLS handshake nor closed: %v", err)
		}
		return nil
	}
	return tc
}

// ask connects from src, writes pre, then data, and returns the status.
func (eg *edgeGateway) ask(t *testing.T, src string, pre [][]byte, data string) int {
	t.Helper()
	return askOn(t, attackConn(t, eg, src, pre...), data)
}

// lastRequest is the handshake a fake pod received last (nil: none).
func lastRequest(p *fakePod) *http.Request {
	n := p.accepted()
	if n == 0 {
		return nil
	}
	_, req, _, _ := p.conn(n - 1).recorded()
	return req
}

// free reports whether no open tunnel is counted for any of keys in the
// gateway's client table (probing with Acquire under a limit of 1).
func (eg *edgeGateway) free(keys ...clientlimit.Key) bool {
	tb := eg.g.srv.edge.clients
	for _, k := range keys {
		now := tb.Now()
		ok, tracked := tb.Acquire(k, 1, now)
		if ok && tracked {
			tb.Release(k, now)
		}
		if !ok {
			return false
		}
	}
	return true
}

// bearerHead is a handshake head for path carrying tok.
func bearerHead(path, tok string, edits ...string) string {
	return wsHead(path, append([]string{"Authorization: Bearer " + tok}, edits...)...)
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(l.Addr().String())
	_ = l.Close()
	return a
}

// v2Raw is a PROXY v2 header: command (0x20 LOCAL, 0x21 PROXY), family
// and transport byte, and the bytes after the fixed part.
func v2Raw(cmd, fam byte, rest []byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:16], uint16(len(rest)))
	return append(b, rest...)
}

// settle makes the end of a test wait for the gateway's tunnels to end
// (the clients' connections, made later, close first) before the pods
// started after the gateway close: an echo pod's Close must not race
// with a handshake it is still finishing. Call it once the pods exist.
func settle(t *testing.T, g *testGateway) { t.Cleanup(func() { waitNoTunnels(t, g) }) }

// ---------------------------------------------------------------------
// Spoofing the client's address.

// TestAttackProxyUnknownForgesForwardedFor: a trusted layer-4 load
// balancer relays a client's bytes behind "PROXY UNKNOWN" (the v1 form
// for "source address not known"; HAProxy sends it for connections it
// cannot describe). The client is then unknown (the unspecified
// address), not the balancer: what the relayed client writes in
// X-Forwarded-For is never believed.
func TestAttackProxyUnknownForgesForwardedFor(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true})
		got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{[]byte("PROXY UNKNOWN\r\n")}},
			http.Header{"X-Forwarded-For": {"198.51.100.66"}})
		if got != "0.0.0.0" {
			t.Errorf("behind PROXY UNKNOWN the pod saw X-Forwarded-For %q, want the unknown client 0.0.0.0", got)
		}
	})
}

// TestAttackProxyUnknownBlocksAnInnocentAddress: scanning behind PROXY
// UNKNOWN with another address in X-Forwarded-For spends no one's
// refusal budget but the unknown client's: the named address is never
// blocked.
func TestAttackProxyUnknownBlocksAnInnocentAddress(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true, ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute}})
		const victim = "127.0.0.96"
		for i := range 6 {
			eg.ask(t, trustedPeer, [][]byte{[]byte("PROXY UNKNOWN\r\n")},
				wsHead(fmt.Sprintf("/e/127.0.1.%d/x", i+1), "X-Forwarded-For: "+victim))
		}
		if st := eg.ask(t, victim, nil, wsHead("/e/"+eg.pod+"/x")); st != http.StatusSwitchingProtocols {
			t.Errorf("the victim %s, who never sent a refused handshake, was answered %d (want 101)", victim, st)
		}
	})
}

// TestAttackProxyV2MappedSourceIsOneSpelling: a dual-stack balancer
// describes an IPv4 client as ::ffff:a.b.c.d in a TCPv6 header. Limits
// key it as a.b.c.d; the pods and the access log must see one spelling
// for one client, whatever the listener.
func TestAttackProxyV2MappedSourceIsOneSpelling(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true})
		hdr := v2(t, netip.MustParseAddrPort("[::ffff:203.0.113.7]:5000"))
		if got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{hdr}}, nil); got != "203.0.113.7" {
			t.Errorf("a TCPv6 header with source ::ffff:203.0.113.7: the pod saw X-Forwarded-For %q, want 203.0.113.7", got)
		}
	})
}

// TestAttackForwardedForHeaderTricks: odd spellings of X-Forwarded-For
// from trusted and untrusted peers never put an address that no trusted
// proxy vouched for in front of the pod.
func TestAttackForwardedForHeaderTricks(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix(trustedPeer + "/32"), netip.MustParsePrefix("10.1.0.0/16"),
		}})
		pod := startFakePod(t, "127.0.0.3", podAnswers(ok101))
		eg.g.publish(testRoute("f", "/f", pod.backend("f")))
		path := "/f/127.0.0.3/x"
		long := "6.6.6.6, " + strings.Repeat("10.1.0.1, ", 1400) + "10.1.0.2"
		cases := []struct {
			name  string
			src   string
			edits []string
			want  string // "": anything but the spoofed 6.6.6.6 / 7.7.7.7
			ok400 bool   // a 400 is as good
		}{
			{"lower-case name from the trusted proxy", trustedPeer, []string{"x-forwarded-for: 203.0.113.5"}, "203.0.113.5", false},
			{"two lines of two cases: the last is the right-most", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6", "+x-FORWARDED-for: 203.0.113.5"}, "203.0.113.5", false},
			{"untrusted: X-Forwarded-For listed in Connection", untrustedPeer, []string{"X-Forwarded-For: 6.6.6.6", "Connection: Upgrade, X-Forwarded-For"}, untrustedPeer, false},
			{"untrusted: obs-fold", untrustedPeer, []string{"X-Forwarded-For: 6.6.6.6,\r\n 7.7.7.7"}, untrustedPeer, true},
			{"untrusted: a header folded into another", untrustedPeer, []string{"X-Note: a\r\n X-Forwarded-For: 6.6.6.6"}, untrustedPeer, true},
			{"trusted: obs-fold", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6,\r\n\t203.0.113.5"}, "", true},
			{"trusted: a chain far longer than the walk", trustedPeer, []string{"X-Forwarded-For: " + long}, "", false},
			{"trusted: bracketed IPv6 without a port", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6, [2001:db8::5]"}, trustedPeer, false},
			{"trusted: a percent-encoded zone", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6, fe80::1%25eth0"}, trustedPeer, false},
			{"trusted: leading zeros", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6, 203.000.113.005"}, trustedPeer, false},
			{"trusted: space-separated entries", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6 203.0.113.5"}, trustedPeer, false},
			{"trusted: trailing comma", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6, 203.0.113.5,"}, "203.0.113.5", false},
			{"trusted: a trusted hop written IPv4-mapped", trustedPeer, []string{"X-Forwarded-For: 6.6.6.6, 203.0.113.5, ::ffff:10.1.0.9"}, "203.0.113.5", false},
			{"trusted: Forwarded is not read", trustedPeer, []string{"Forwarded: for=6.6.6.6"}, trustedPeer, false},
			{"untrusted: X_Forwarded_For", untrustedPeer, []string{"X_Forwarded_For: 6.6.6.6"}, untrustedPeer, true},
		}
		for _, c := range cases {
			before := pod.accepted()
			start := time.Now()
			st := eg.ask(t, c.src, nil, wsHead(path, c.edits...))
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("%s: answered after %v", c.name, took)
			}
			if st == http.StatusBadRequest && c.ok400 {
				t.Logf("%s: 400", c.name)
				continue
			}
			if st != http.StatusSwitchingProtocols {
				t.Errorf("%s: %d, want 101", c.name, st)
				continue
			}
			if pod.accepted() != before+1 {
				t.Errorf("%s: %d pod connections, want 1", c.name, pod.accepted()-before)
				continue
			}
			req := lastRequest(pod)
			xff := req.Header.Values("X-Forwarded-For")
			if len(xff) != 1 {
				t.Errorf("%s: the pod saw X-Forwarded-For %q, want one value", c.name, xff)
				continue
			}
			switch {
			case strings.Contains(xff[0], "6.6.6.6") || strings.Contains(xff[0], "7.7.7.7"):
				t.Errorf("%s: the pod saw the spoofed X-Forwarded-For %q", c.name, xff[0])
			case c.want != "" && xff[0] != c.want:
				t.Errorf("%s: the pod saw X-Forwarded-For %q, want %q", c.name, xff[0], c.want)
			}
			for name := range req.Header {
				if strings.Contains(strings.ToLower(name), "forwarded") && name != "X-Forwarded-For" && name != "X-Forwarded-Host" && name != "X-Forwarded-Proto" {
					t.Errorf("%s: the pod got header %q", c.name, name)
				}
			}
		}
	})
}

// TestAttackProxyHeaderPlacement: PROXY headers anywhere but first from
// a trusted proxy are never read as one: after the request head, a
// second one, one inside TLS, one after a blank line or in lower case.
func TestAttackProxyHeaderPlacement(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true})
		pod := startFakePod(t, "127.0.0.3", podAnswers(ok101))
		eg.g.publish(testRoute("f", "/f", pod.backend("f")))
		path := "/f/127.0.0.3/x"
		spoof := v1("6.6.6.6")

		// After the request head, from an untrusted peer: the bytes are
		// the tunnel's, and the client is the peer.
		if st := eg.ask(t, untrustedPeer, nil, wsHead(path)+string(spoof)); st != http.StatusSwitchingProtocols {
			t.Errorf("a PROXY line after the head: %d, want 101", st)
		} else if got := lastRequest(pod).Header.Get("X-Forwarded-For"); got != untrustedPeer {
			t.Errorf("a PROXY line after the head: the pod saw %q", got)
		}
		// A trusted header, then the client's X-Forwarded-For: the
		// header's source is not a proxy, its X-Forwarded-For is not read.
		if st := eg.ask(t, trustedPeer, [][]byte{v1("203.0.113.7")}, wsHead(path, "X-Forwarded-For: 6.6.6.6")); st != http.StatusSwitchingProtocols {
			t.Errorf("header then X-Forwarded-For: %d", st)
		} else if got := lastRequest(pod).Header.Get("X-Forwarded-For"); got != "203.0.113.7" {
			t.Errorf("header then X-Forwarded-For: the pod saw %q, want 203.0.113.7", got)
		}

		dials := eg.g.dials.Load()
		refusedCases := []struct {
			name string
			src  string
			pre  [][]byte
			data string
		}{
			{"a second v1 header", trustedPeer, [][]byte{append(v1("203.0.113.7"), spoof...)}, wsHead(path)},
			{"a v2 header after a v1", trustedPeer, [][]byte{append(v1("203.0.113.7"), v2(t, netip.MustParseAddrPort("6.6.6.6:1"))...)}, wsHead(path)},
			{"a header in the client's first bytes (inside TLS on TLS)", trustedPeer, [][]byte{v1("203.0.113.7")}, string(spoof) + wsHead(path)},
			{"an untrusted peer's header in its first bytes", untrustedPeer, nil, string(spoof) + wsHead(path)},
			{"a blank line, then a header", untrustedPeer, nil, "\r\n" + string(spoof) + wsHead(path)},
			{"a lower-case header", untrustedPeer, nil, strings.ToLower(string(spoof)) + wsHead(path)},
		}
		for _, c := range refusedCases {
			if st := eg.ask(t, c.src, c.pre, c.data); st == http.StatusSwitchingProtocols {
				t.Errorf("%s: 101 (the pod saw %q)", c.name, lastRequest(pod).Header.Get("X-Forwarded-For"))
			}
		}
		if d := eg.g.dials.Load() - dials; d != 0 {
			t.Errorf("misplaced PROXY headers dialled %d times", d)
		}
	})
}

// ---------------------------------------------------------------------
// Stalling and crashing the PROXY header reader.

// TestAttackProxyHeaderFramingAndStalls: huge, odd and partial headers
// from the trusted proxy are refused at once or within the read-head
// timeout, dial nothing, hold up no one and crash nothing.
func TestAttackProxyHeaderFramingAndStalls(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		const headTimeout = 2 * time.Second
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true, ReadHeaderTimeout: headTimeout})
		path := "/e/" + eg.pod + "/x"

		// The largest header go-proxyproto takes (4096 bytes after the
		// fixed part: addresses and a NOOP TLV), in three pieces.
		big := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr:      net.TCPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.20:1")),
			DestinationAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.1:443"))}
		if err := big.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 4096-12-3)}}); err != nil {
			t.Fatal(err)
		}
		bigHdr, err := big.Format()
		if err != nil {
			t.Fatal(err)
		}
		if got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{bigHdr[:10], bigHdr[10:2000], bigHdr[2000:]}}, nil); got != "203.0.113.20" {
			t.Errorf("a 4112-byte header: the pod saw %q", got)
		}
		// LOCAL with an address block and TLVs: the proxy itself.
		local := v2Raw(0x20, 0x11, append(make([]byte, 12), 0x04, 0, 2, 'h', 'i'))
		if got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{local}}, nil); got != trustedPeer {
			t.Errorf("LOCAL with addresses: the pod saw %q", got)
		}

		dials := eg.g.dials.Load()
		unix := make([]byte, 216)
		copy(unix, "/tmp/a")
		immediate := []struct {
			name string
			hdr  []byte
		}{
			{"v2 length 65535", append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff)},
			{"v2 length 4097", v2Raw(0x21, 0x11, make([]byte, 4097))},
			{"v2 AF_UNIX stream", v2Raw(0x21, 0x31, unix)},
			{"v2 AF_UNIX datagram", v2Raw(0x21, 0x32, unix)},
			{"v2 family 0x13 (IPv4, no such transport)", v2Raw(0x21, 0x13, make([]byte, 12))},
			{"v2 PROXY with AF_UNSPEC", v2Raw(0x21, 0x00, nil)},
			{"v2 command 2", v2Raw(0x22, 0x11, make([]byte, 12))},
			{"v2 version 1", append(append([]byte{}, proxyproto.SIGV2...), 0x11, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)},
			{"v2 TCPv4 with a short address block", v2Raw(0x21, 0x11, make([]byte, 6))},
			{"v2 TCPv6 with a v4-sized block", v2Raw(0x21, 0x21, make([]byte, 12))},
			{"v1 with LF only", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 41000 443\n")},
			{"v1 with two spaces", []byte("PROXY TCP4  203.0.113.7 10.0.0.1 41000 443\r\n")},
			{"v1 TCP4 with an IPv6 source", []byte("PROXY TCP4 2001:db8::1 10.0.0.1 41000 443\r\n")},
			{"v1 port 70000", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 70000 443\r\n")},
			{"v1 107 bytes without LF", append([]byte("PROXY UNKNOWN "), []byte(strings.Repeat("f", 93))...)},
		}
		for _, c := range immediate {
			start := time.Now()
			if st := eg.ask(t, trustedPeer, [][]byte{c.hdr}, wsHead(path)); st == http.StatusSwitchingProtocols {
				t.Errorf("%s: 101", c.name)
			}
			if took := time.Since(start); took > headTimeout-500*time.Millisecond {
				t.Errorf("%s: refused only after %v (the read-head timeout is %v)", c.name, took, headTimeout)
			}
		}

		// Two hundred trusted connections stuck in their headers, and one
		// that sent a whole header and nothing more: others are served
		// meanwhile, and the stuck ones are cut by the read-head timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var stuck []net.Conn
		for i := range 200 {
			pieces := [][]byte{[]byte("PROXY TCP4 203.0.")}
			if i%2 == 1 {
				pieces = [][]byte{v2(t, netip.MustParseAddrPort("203.0.113.30:1"))[:20]}
			}
			c, err := eg.conn(ctx, edgeDial{trustedPeer, pieces})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			stuck = append(stuck, c)
		}
		silentAfter, err := eg.conn(ctx, edgeDial{trustedPeer, [][]byte{v1("203.0.113.31")}})
		if err != nil {
			t.Fatal(err)
		}
		defer silentAfter.Close()
		stuck = append(stuck, silentAfter)
		start := time.Now()
		if got := eg.forwardedFor(t, edgeDial{trustedPeer, [][]byte{v1("203.0.113.32")}}, nil); got != "203.0.113.32" {
			t.Errorf("beside stuck headers: %q", got)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("beside 200 stuck headers a handshake took %v", took)
		}
		for i, c := range stuck {
			_ = c.SetReadDeadline(time.Now().Add(3*headTimeout + time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("stuck connection %d: read %v, want it closed by the gateway", i, err)
			}
		}
		if took := time.Since(start); took > 3*headTimeout+time.Second {
			t.Errorf("the stuck connections were cut after %v", took)
		}
		if d := eg.g.dials.Load() - dials; d != 1 {
			t.Errorf("%d dials, want the one handshake that completed", d)
		}
		// Still alive.
		if got := eg.forwardedFor(t, edgeDial{untrustedPeer, nil}, nil); got != untrustedPeer {
			t.Errorf("after the attack: %q", got)
		}
	})
}

// TestAttackProxyHeaderOnAUnixListener: a listener whose peers have no IP
// address (a Unix socket) with PROXY headers on: no panic, every
// connection answered or closed, and the TCP listener keeps serving.
func TestAttackProxyHeaderOnAUnixListener(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{ProxyProtocol: true})
	sock := filepath.Join(t.TempDir(), "gw.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = eg.g.srv.Serve(l) }()
	t.Cleanup(func() { _ = l.Close() })
	for _, pre := range []string{"", string(v1("203.0.113.40")), "PROXY UNKNOWN\r\n"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		st := askOn(t, c, pre+wsHead("/e/"+eg.pod+"/x", "X-Forwarded-For: 6.6.6.6"))
		t.Logf("over a Unix socket after %q: %d", pre, st)
		_ = c.Close()
	}
	if got := eg.forwardedFor(t, edgeDial{untrustedPeer, nil}, nil); got == "" {
		t.Error("the gateway stopped serving")
	}
}

// TestAttackTLSProxyHeaderCoalescedWithClientHello: the balancer's header
// and the client's ClientHello in one segment; the tunnel then moves to
// an event loop with nothing of the client's left behind.
func TestAttackTLSProxyHeaderCoalescedWithClientHello(t *testing.T) {
	for _, e := range engines {
		if !e.e.tls {
			continue
		}
		t.Run(e.name, func(t *testing.T) {
			eg := startEdgeGateway(t, e.e, Options{ProxyProtocol: true})
			hdr := v1("203.0.113.12")
			tr := &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(trustedPeer)}}
					c, err := dl.DialContext(ctx, "tcp", eg.tlsAddr)
					if err != nil {
						return nil, err
					}
					return &prefixConn{Conn: c, prefix: hdr}, nil
				},
				TLSClientConfig: &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}, //nolint:gosec // a self-signed test certificate
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, "wss://ws.example.com/e/"+eg.pod+"/x", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
			if resp != nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.CloseNow() }()
			seen, err := seenByPod(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if got := seen.Header.Get("X-Forwarded-For"); got != "203.0.113.12" {
				t.Errorf("X-Forwarded-For %q", got)
			}
			for i := range 20 {
				if err := echo(ctx, c, websocket.MessageBinary, []byte(strings.Repeat(fmt.Sprint(i), 3000))); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// prefixConn writes prefix together with the first bytes written.
type prefixConn struct {
	net.Conn
	once   sync.Once
	prefix []byte
}

func (c *prefixConn) Write(p []byte) (int, error) {
	first := false
	c.once.Do(func() { first = true })
	if !first {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(append(append([]byte{}, c.prefix...), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ---------------------------------------------------------------------
// Escaping and abusing the per-client limits.

// TestAttackIPv6AndMappedAddressesShareTheirKey: rotating addresses
// within a /64, and the IPv4-mapped spelling of an IPv4 client (in a
// PROXY header or in X-Forwarded-For), do not make a new client.
func TestAttackIPv6AndMappedAddressesShareTheirKey(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true, ClientLimits: ClientLimits{MaxTunnels: 1}})
		path := "/e/" + eg.pod + "/x"
		hdr := func(s string) [][]byte { return [][]byte{v2(t, netip.MustParseAddrPort(s))} }
		if st := eg.ask(t, trustedPeer, hdr("[2001:db8:1:2::1]:1000"), wsHead(path)); st != http.StatusSwitchingProtocols {
			t.Fatalf("first tunnel of 2001:db8:1:2::/64: %d", st)
		}
		for _, src := range []string{"[2001:db8:1:2::2]:1000", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", "[2001:db8:1:2:8000::1]:2"} {
			if st := eg.ask(t, trustedPeer, hdr(src), wsHead(path)); st != http.StatusTooManyRequests {
				t.Errorf("%s, in the same /64: %d, want 429", src, st)
			}
		}
		if st := eg.ask(t, trustedPeer, hdr("[2001:db8:1:3::1]:1000"), wsHead(path)); st != http.StatusSwitchingProtocols {
			t.Errorf("another /64: %d", st)
		}
		if st := eg.ask(t, trustedPeer, hdr("198.51.100.9:1"), wsHead(path)); st != http.StatusSwitchingProtocols {
			t.Fatalf("198.51.100.9: %d", st)
		}
		if st := eg.ask(t, trustedPeer, hdr("[::ffff:198.51.100.9]:1"), wsHead(path)); st != http.StatusTooManyRequests {
			t.Errorf("::ffff:198.51.100.9 in a TCPv6 header: %d, want 429", st)
		}
	})
	// X-Forwarded-For from a trusted proxy, without PROXY headers.
	eg := startEdgeGateway(t, engine{}, Options{ClientLimits: ClientLimits{MaxTunnels: 1}})
	path := "/e/" + eg.pod + "/x"
	if st := eg.ask(t, trustedPeer, nil, wsHead(path, "X-Forwarded-For: 198.51.100.9")); st != http.StatusSwitchingProtocols {
		t.Fatalf("198.51.100.9: %d", st)
	}
	for _, spelling := range []string{"::ffff:198.51.100.9", "[::ffff:198.51.100.9]:80", "198.51.100.9:81"} {
		if st := eg.ask(t, trustedPeer, nil, wsHead(path, "X-Forwarded-For: "+spelling)); st != http.StatusTooManyRequests {
			t.Errorf("X-Forwarded-For %s: %d, want 429", spelling, st)
		}
	}
	if st := eg.ask(t, trustedPeer, nil, wsHead(path, "X-Forwarded-For: 2001:db8:9:9::1")); st != http.StatusSwitchingProtocols {
		t.Fatalf("2001:db8:9:9::1: %d", st)
	}
	if st := eg.ask(t, trustedPeer, nil, wsHead(path, "X-Forwarded-For: [2001:db8:9:9:1:2:3:4]:5")); st != http.StatusTooManyRequests {
		t.Errorf("another address of 2001:db8:9:9::/64 with a port: %d, want 429", st)
	}
}

// TestAttackUntrustedCannotChargeAnotherAddress: a scanner that writes
// X-Forwarded-For or a PROXY header naming someone else, without being a
// trusted proxy, is charged itself, and the other address is not.
func TestAttackUntrustedCannotChargeAnotherAddress(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ProxyProtocol: true, ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute}})
		const attacker, victim = "127.0.0.97", "127.0.0.98"
		for i := range 8 {
			eg.ask(t, attacker, nil, wsHead(fmt.Sprintf("/e/127.0.1.%d/x", i+1), "X-Forwarded-For: "+victim, "X-Real-Ip: "+victim, "Forwarded: for="+victim))
			eg.ask(t, attacker, [][]byte{v1(victim)}, wsHead(fmt.Sprintf("/e/127.0.1.%d/x", i+1)))
		}
		if st := eg.ask(t, victim, nil, wsHead("/e/"+eg.pod+"/x")); st != http.StatusSwitchingProtocols {
			t.Errorf("the victim: %d, want 101", st)
		}
		if st := eg.ask(t, attacker, nil, wsHead("/e/"+eg.pod+"/x")); st != http.StatusTooManyRequests {
			t.Errorf("the scanner itself: %d, want 429", st)
		}
	})
}

// TestAttackTenantLimitsStayOnTheirRoute: a tenant's spec.limits refuse
// its own route's clients (429), which neither blocks them elsewhere nor
// touches another route's clients.
func TestAttackTenantLimitsStayOnTheirRoute(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		eg := startEdgeGateway(t, e, Options{ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute}})
		echoP := echoPod(t, "127.0.0.2")
		evil := testRoute("evil", "/t", backendOf("t", echoP))
		evil.Key.Namespace = "tenant-b"
		evil.Limits = &routing.ClientLimits{HandshakeRate: 1.0 / 60, HandshakeBurst: 1, MaxTunnels: 1}
		good := testRoute("echo", "/e", backendOf("p", echoP))
		eg.g.publish(good, evil)
		settle(t, eg.g)
		const client = "127.0.0.99"
		for range 8 {
			eg.ask(t, client, nil, wsHead("/t/127.0.0.2/x"))
		}
		if st := eg.ask(t, client, nil, wsHead("/t/127.0.0.2/x")); st != http.StatusTooManyRequests {
			t.Errorf("the tenant's own limit: %d, want 429", st)
		}
		for range 3 {
			if st := eg.ask(t, client, nil, wsHead("/e/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
				t.Errorf("the same client on another route: %d, want 101", st)
			}
		}
		if got := value(t, eg.reg, "wsgate_client_blocks_total", nil); got != 0 {
			t.Errorf("%v clients blocked", got)
		}
	})
}

// TestAttackEmptyAndAddressLikeSubjects: a token without sub counts by
// address; a sub that looks like an address is not that address.
func TestAttackEmptyAndAddressLikeSubjects(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{})
	sg := newES256Signer(t, "k1")
	rt := testRoute("private", "/p", backendOf("p", echoPod(t, "127.0.0.2")))
	rt.Auth = &routing.Auth{Tokens: sg.verifier(t)}
	rt.Limits = &routing.ClientLimits{MaxTunnels: 1}
	eg.g.publish(rt)
	settle(t, eg.g)
	path := "/p/127.0.0.2/x"
	tok := func(sub string) string { return sg.sign(t, claimsFor(sub, nil), nil, false) }
	if st := eg.ask(t, "127.0.0.100", nil, bearerHead(path, tok(""))); st != http.StatusSwitchingProtocols {
		t.Fatalf("empty sub: %d", st)
	}
	if st := eg.ask(t, "127.0.0.100", nil, bearerHead(path, tok(""))); st != http.StatusTooManyRequests {
		t.Errorf("a second empty sub from the same address: %d, want 429", st)
	}
	if st := eg.ask(t, "127.0.0.102", nil, bearerHead(path, tok("127.0.0.101"))); st != http.StatusSwitchingProtocols {
		t.Errorf("sub 127.0.0.101: %d", st)
	}
	if st := eg.ask(t, "127.0.0.101", nil, bearerHead(path, tok(""))); st != http.StatusSwitchingProtocols {
		t.Errorf("address 127.0.0.101 after sub 127.0.0.101: %d, want 101", st)
	}
}

// tenantsSharingAnIssuer is two tenants' token routes that name the same
// issuer: tenant A's real identity provider's, and tenant B's, who wrote
// that issuer in its own route with keys from its own Secret (keys.source
// Secret: no WsGrant is asked for the issuer).
func tenantsSharingAnIssuer(t *testing.T, opts Options) (eg *edgeGateway, idp, forger *signer) {
	t.Helper()
	eg = startEdgeGateway(t, engine{}, opts)
	idp, forger = newES256Signer(t, "idp-1"), newES256Signer(t, "b-1")
	a := testRoute("app", "/a", backendOf("a", echoPod(t, "127.0.0.2")))
	a.Key.Namespace = "tenant-a"
	a.Auth = &routing.Auth{Tokens: idp.verifier(t)}
	b := testRoute("evil", "/b", backendOf("b", echoPod(t, "127.0.0.3")))
	b.Key.Namespace = "tenant-b"
	b.Auth = &routing.Auth{Tokens: forger.verifier(t)} // the same Issuer string, B's keys
	eg.g.publish(a, b)
	settle(t, eg.g)
	return eg, idp, forger
}

// TestAttackForgedIssuerSpendsAnotherTenantsUser: tenant B writes
// tenant A's issuer on its own route (keys from its own Secret) and mints
// tokens for A's user alice. The gateway's own per-client limits count
// such subjects by address, so B's tokens cannot spend alice's tunnels
// or handshakes on tenant A's route.
func TestAttackForgedIssuerSpendsAnotherTenantsUser(t *testing.T) {
	t.Run("open tunnels", func(t *testing.T) {
		eg, idp, forger := tenantsSharingAnIssuer(t, Options{ClientLimits: ClientLimits{MaxTunnels: 1}})
		if st, _, _ := eg.try(t, "127.0.0.85", "/b/127.0.0.3/x", bearerHeader(forger.sign(t, claimsFor("alice", nil), nil, false))); st != http.StatusSwitchingProtocols {
			t.Fatalf("tenant B's forged alice: %d", st)
		}
		if st, _, _ := eg.try(t, "127.0.0.86", "/a/127.0.0.2/x", bearerHeader(idp.sign(t, claimsFor("alice", nil), nil, false))); st != http.StatusSwitchingProtocols {
			t.Errorf("the real alice on tenant A's route while tenant B holds a tunnel as 'alice': %d, want 101", st)
		}
	})
	t.Run("handshakes", func(t *testing.T) {
		eg, idp, forger := tenantsSharingAnIssuer(t, Options{ClientLimits: ClientLimits{HandshakeRate: 0.01, HandshakeBurst: 2}})
		for range 3 {
			eg.try(t, "127.0.0.85", "/b/127.0.0.3/x", bearerHeader(forger.sign(t, claimsFor("alice", nil), nil, false)))
		}
		if st, _, _ := eg.try(t, "127.0.0.86", "/a/127.0.0.2/x", bearerHeader(idp.sign(t, claimsFor("alice", nil), nil, false))); st != http.StatusSwitchingProtocols {
			t.Errorf("the real alice's first handshake after tenant B spent 'alice''s bucket: %d, want 101", st)
		}
	})
}

// TestAttackMintedSubjectsEscapeGatewayLimits: a tenant mints a new sub
// per handshake with the keys of its own Secret; the gateway's
// per-client limits (--client-max-tunnels, --client-handshake-rate) still
// count the one address behind them.
func TestAttackMintedSubjectsEscapeGatewayLimits(t *testing.T) {
	eg, _, forger := tenantsSharingAnIssuer(t, Options{ClientLimits: ClientLimits{MaxTunnels: 2, HandshakeRate: 0.1, HandshakeBurst: 3}})
	opened := 0
	for i := range 8 {
		st, _, _ := eg.try(t, "127.0.0.87", "/b/127.0.0.3/x", bearerHeader(forger.sign(t, claimsFor(fmt.Sprintf("bot-%d", i), nil), nil, false)))
		if st == http.StatusSwitchingProtocols {
			opened++
		}
	}
	if opened > 2 {
		t.Errorf("one address made 8 handshakes in a burst of 3 and holds %d tunnels under --client-max-tunnels 2, with subs its tenant minted", opened)
	}
}

// TestAttackTenantLimitsEvictGatewayBlocks: a tenant's route with
// handshakesPerMinute 1 makes each of its clients' states last a minute
// or more per handshake; filling a full table with them (one address,
// one token per sub, answers 502) cannot evict the gateway's block of a
// scanner: blocked clients, like clients with open tunnels, are never
// evicted.
func TestAttackTenantLimitsEvictGatewayBlocks(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute, MaxClients: 32}})
	forger := newES256Signer(t, "b-1")
	evil := testRoute("evil", "/t", routing.Backend{Pod: "t", Addr: closedPort(t, "127.0.0.9")})
	evil.Key.Namespace = "tenant-b"
	evil.Auth = &routing.Auth{Tokens: forger.verifier(t)}
	evil.Limits = &routing.ClientLimits{HandshakeRate: 1.0 / 60, HandshakeBurst: 1}
	eg.g.publish(testRoute("echo", "/e", backendOf("p", echoPod(t, "127.0.0.2"))), evil)

	const scanner = "127.0.0.90"
	for i := range 4 {
		eg.ask(t, scanner, nil, wsHead(fmt.Sprintf("/e/127.0.1.%d/x", i+1)))
	}
	if st := eg.ask(t, scanner, nil, wsHead("/e/127.0.1.9/x")); st != http.StatusTooManyRequests {
		t.Fatalf("the scanner past its budget: %d, want 429", st)
	}
	tb := eg.g.srv.edge.clients
	key := clientlimit.AddrKey("", netip.MustParseAddr(scanner))
	sent := 0
	for ; sent < 3000; sent++ {
		if sent%25 == 0 {
			if _, blocked := tb.Blocked(key, tb.Now()); !blocked {
				break
			}
		}
		st := eg.ask(t, "127.0.0.91", nil, bearerHead("/t/127.0.0.9/x", forger.sign(t, claimsFor(fmt.Sprintf("u%d", sent), nil), nil, false)))
		if st != http.StatusBadGateway {
			t.Fatalf("handshake %d of the tenant's client: %d, want 502", sent, st)
		}
	}
	if st := eg.ask(t, scanner, nil, wsHead("/e/127.0.1.10/x")); st != http.StatusTooManyRequests {
		t.Errorf("%d handshakes on another tenant's route with spec.limits unblocked the scanner: %d, want 429 for the rest of its minute", sent, st)
	}
}

// TestAttackTableStaysBounded: distinct clients (from PROXY headers, so
// without end) never grow the table past its bound.
func TestAttackTableStaysBounded(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{ProxyProtocol: true, ClientLimits: ClientLimits{HandshakeRate: 1, HandshakeBurst: 1, MaxClients: 40, RefusalBudget: 1000}})
	for i := range 400 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 1)
		if i%2 == 1 {
			src = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 1}), 1)
		}
		eg.ask(t, trustedPeer, [][]byte{v2(t, src)}, wsHead("/e/127.0.1.1/x"))
		if n := eg.g.srv.edge.clients.Len(); n > 40 {
			t.Fatalf("after %d clients the table holds %d, bound 40", i+1, n)
		}
	}
}

// TestAttackClientCountsReleasedOnEveryPath: with a cap of one tunnel
// per client (the gateway's and the route's), every way a handshake can
// fail after the limits were taken gives the client's place back, exactly
// once; an open tunnel keeps it until it ends (closed, revoked, shut
// down).
func TestAttackClientCountsReleasedOnEveryPath(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) { releasedOnEveryPath(t, e, Options{}) })
	// A dialer of the gateway's own: the event loop hands every admitted
	// handshake to a goroutine, which dials.
	t.Run("evented, own dialer", func(t *testing.T) {
		releasedOnEveryPath(t, engine{}, Options{Dial: (&net.Dialer{}).DialContext})
	})
}

func releasedOnEveryPath(t *testing.T, e engine, opts Options) {
	{
		opts.ClientLimits = ClientLimits{MaxTunnels: 1}
		eg := startEdgeGateway(t, e, opts)
		echoP := echoPod(t, "127.0.0.2")
		notFound := startFakePod(t, "127.0.0.3", podAnswers("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
		bad101 := startFakePod(t, "127.0.0.4", podAnswers("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"))
		quiet := startFakePod(t, "127.0.0.5", silent)
		hangs := startFakePod(t, "127.0.0.6", hangUp)
		svc := startForwardAuth(t, "127.0.0.8")
		sg := newES256Signer(t, "k1")

		lim := &routing.ClientLimits{MaxTunnels: 1}
		route := func(name string, b routing.Backend) *routing.Route {
			r := testRoute(name, "/"+name, b)
			r.Limits = lim
			return r
		}
		okR := route("ok", backendOf("p", echoP))
		nfR := route("nf", notFound.backend("nf"))
		badR := route("bad", bad101.backend("bad"))
		slowR := route("slow", quiet.backend("slow"))
		slowR.Timeouts.Handshake = 300 * time.Millisecond
		hangR := route("hang", hangs.backend("hang"))
		deadR := route("dead", routing.Backend{Pod: "dead", Addr: closedPort(t, "127.0.0.7")})
		faR := route("fa", backendOf("p", echoP))
		faR.Auth = &routing.Auth{Forward: &routing.ForwardAuth{Service: "ns/auth", Addrs: []netip.AddrPort{svc.addr}, Path: "/check", Timeout: 300 * time.Millisecond}}
		originR := route("origin", backendOf("p", echoP))
		originR.AllowedOrigins = []string{"https://app.example.com"}
		fullR := route("full", backendOf("p", echoP))
		fullR.MaxConnectionsPerPod = 1
		tokR := route("tok", boundBackend("p", "bob", echoP.Addr))
		tokR.Auth = &routing.Auth{Tokens: sg.verifier(t), BindingClaim: "sub"}
		eg.g.publish(okR, nfR, badR, slowR, hangR, deadR, faR, originR, fullR, tokR)
		settle(t, eg.g)

		const client, other = "127.0.0.88", "127.0.0.89"
		ca := netip.MustParseAddr(client)
		alice := sg.sign(t, claimsFor("alice", nil), nil, false)
		aliceKey := func(scope string) clientlimit.Key { return clientlimit.SubjectKey(scope, testIssuer+"\x00alice") }
		keysOf := func(r *routing.Route) []clientlimit.Key {
			scope := r.Key.Namespace + "/" + r.Key.Name
			if r == tokR {
				return []clientlimit.Key{aliceKey(""), aliceKey(scope)}
			}
			return []clientlimit.Key{clientlimit.AddrKey("", ca), clientlimit.AddrKey(scope, ca)}
		}
		released := func(what string, r *routing.Route) {
			t.Helper()
			waitFor(t, what+": the client's places given back", func() bool { return eg.free(keysOf(r)...) })
		}

		// Someone else fills the /full route's pod.
		holder := attackConn(t, eg, other)
		if st := askOn(t, holder, wsHead("/full/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
			t.Fatalf("the other client on /full: %d", st)
		}

		cases := []struct {
			name  string
			r     *routing.Route
			data  string
			abort bool // the client hangs up right after its head
		}{
			{"pod answers 404 (relayed)", nfR, wsHead("/nf/127.0.0.3/x"), false},
			{"pod answers an invalid 101", badR, wsHead("/bad/127.0.0.4/x"), false},
			{"pod silent past the handshake timeout", slowR, wsHead("/slow/127.0.0.5/x"), false},
			{"pod silent, the client gone", slowR, wsHead("/slow/127.0.0.5/x"), true},
			{"pod hangs up", hangR, wsHead("/hang/127.0.0.6/x"), false},
			{"pod refuses the connection", deadR, wsHead("/dead/127.0.0.7/x"), false},
			{"forward auth denies", faR, wsHead("/fa/127.0.0.2/x", "X-Session: deny"), false},
			{"forward auth fails", faR, wsHead("/fa/127.0.0.2/x", "X-Session: boom"), false},
			{"forward auth too slow, the client gone", faR, wsHead("/fa/127.0.0.2/x", "X-Session: slow"), true},
			{"Origin refused", originR, wsHead("/origin/127.0.0.2/x", "Origin: https://evil.example"), false},
			{"the pod is full", fullR, wsHead("/full/127.0.0.2/x"), false},
			{"no token", tokR, wsHead("/tok/127.0.0.2/x"), false},
			{"a token the pod is not bound to", tokR, bearerHead("/tok/127.0.0.2/x", alice), false},
			{"an address the route does not have", okR, wsHead("/ok/127.0.0.77/x"), false},
		}
		for _, c := range cases {
			conn := attackConn(t, eg, client)
			if conn == nil {
				t.Fatalf("%s: no connection", c.name)
			}
			if c.abort {
				_, _ = io.WriteString(conn, c.data)
				time.Sleep(50 * time.Millisecond)
				_ = conn.Close()
			} else if st := askOn(t, conn, c.data); st == http.StatusSwitchingProtocols {
				t.Fatalf("%s: 101", c.name)
			} else {
				t.Logf("%s: %d", c.name, st)
			}
			released(c.name, c.r)
			// The places really are free: a tunnel opens, and holds them.
			tun := attackConn(t, eg, client)
			if st := askOn(t, tun, wsHead("/ok/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
				t.Fatalf("after %q: a tunnel on /ok: %d", c.name, st)
			}
			if st := eg.ask(t, client, nil, wsHead("/ok/127.0.0.2/x")); st != http.StatusTooManyRequests {
				t.Fatalf("after %q: a second tunnel on /ok: %d, want 429", c.name, st)
			}
			_ = tun.Close()
			released(c.name+", then a tunnel closed", okR)
		}

		// A tunnel revoked by a new table gives its places back.
		tun := attackConn(t, eg, client)
		if st := askOn(t, tun, wsHead("/ok/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
			t.Fatalf("a tunnel on /ok: %d", st)
		}
		gone := *okR
		gone.Backends = nil
		eg.g.publish(&gone, nfR, badR, slowR, hangR, deadR, faR, originR, fullR, tokR)
		released("revoked", okR)
		eg.g.publish(okR, nfR, badR, slowR, hangR, deadR, faR, originR, fullR, tokR)

		// And so do tunnels closed by a shutdown.
		tun = attackConn(t, eg, client)
		if st := askOn(t, tun, wsHead("/ok/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
			t.Fatalf("a tunnel on /ok before shutdown: %d", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := eg.g.srv.Shutdown(ctx, 0); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		released("shut down", okR)
		if !eg.free(clientlimit.AddrKey("", netip.MustParseAddr(other)), clientlimit.AddrKey("ns/full", netip.MustParseAddr(other))) {
			t.Error("the other client's places were not given back at shutdown")
		}
	}
}

// TestAttackLongSubjectsInflateTheTable: a tenant with spec.limits on its
// token route mints tokens whose sub is as long as a token allows
// (auth.MaxTokenBytes, 8 KiB: a sub of some 5.7 KB). A tracked client
// still costs a small, bounded amount (its key is a fixed-size digest),
// so --client-max-tracked bounds the table's memory whatever the tokens
// say.
func TestAttackLongSubjectsInflateTheTable(t *testing.T) {
	const clients = 600
	// No access log or metrics: only the gateway's own state grows.
	forger := newES256Signer(t, "b-1")
	b := testRoute("evil", "/b", backendOf("b", echoPod(t, "127.0.0.3")))
	b.Key.Namespace = "tenant-b"
	b.Auth = &routing.Auth{Tokens: forger.verifier(t)}
	// The tenant's own spec.limits (handshakesPerMinute 1) make the
	// entries; the gateway's flags are at their defaults.
	b.Limits = &routing.ClientLimits{HandshakeRate: 1.0 / 60, HandshakeBurst: 1}
	g := startGateway(t, Options{ClientLimits: ClientLimits{RefusalBudget: 100, MaxClients: 100_000}}, b)
	pad := strings.Repeat("x", 5_600)
	path := "/b/127.0.0.3/x"
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.93")}}
	// Warm up pools and the route's series first.
	for i := range 50 {
		c, err := dl.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = askOn(t, c, bearerHead(path, forger.sign(t, claimsFor(fmt.Sprintf("w%d", i), nil), nil, false)))
		_ = c.Close()
	}
	waitNoTunnels(t, g)
	var before, after runtimeMem
	before.read()
	n0 := g.srv.edge.clients.Len()
	for i := range clients {
		tok := forger.sign(t, claimsFor(fmt.Sprintf("%06d-%s", i, pad), nil), nil, false)
		c, err := dl.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if st := askOn(t, c, bearerHead(path, tok)); st != http.StatusSwitchingProtocols {
			t.Fatalf("handshake %d: %d", i, st)
		}
		_ = c.Close()
	}
	waitNoTunnels(t, g)
	// A new table (a new Verifier, whose cache of verified tokens starts
	// empty) lets the old one's cache go: what stays is the client table.
	b2 := *b
	b2.Auth = &routing.Auth{Tokens: forger.verifier(t)}
	g.publish(&b2)
	after.read()
	n := g.srv.edge.clients.Len() - n0
	if n < clients {
		t.Fatalf("%d clients tracked, want %d", n, clients)
	}
	per := (int64(after.heap) - int64(before.heap)) / int64(n)
	t.Logf("%d clients tracked; heap grew by %d bytes, %d bytes a client", n, after.heap-before.heap, per)
	if per > 2048 {
		t.Errorf("each tracked client costs %d bytes of heap (the flag's help says about 200): %d clients with long subs hold %d MB; at --client-max-tracked 100000, %d MB",
			per, n, (after.heap-before.heap)>>20, per*100_000>>20)
	}
}

// runtimeMem is the live heap after a collection.
type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	m.heap = ms.HeapAlloc
}

// TestAttackTranslatedIPv4ClientsAreNotOneSlash64: IPv4 clients that
// reach the gateway translated into the NAT64 well-known prefix
// (64:ff9b::/96, RFC 6052: an IPv4 host in the last 32 bits; an
// IPv6-only cluster behind stateless translation at its edge sees every
// IPv4 client so) are each their embedded IPv4 address, not one /64
// whose limits and refusal budget they would all share.
func TestAttackTranslatedIPv4ClientsAreNotOneSlash64(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{ProxyProtocol: true, ClientLimits: ClientLimits{MaxTunnels: 1}})
	path := "/e/" + eg.pod + "/x"
	hdr := func(s string) [][]byte { return [][]byte{v2(t, netip.MustParseAddrPort(s))} }
	if st := eg.ask(t, trustedPeer, hdr("[64:ff9b::c633:6401]:1"), wsHead(path)); st != http.StatusSwitchingProtocols {
		t.Fatalf("198.51.100.1 via 64:ff9b::/96: %d", st)
	}
	if st := eg.ask(t, trustedPeer, hdr("[64:ff9b::cb00:7109]:1"), wsHead(path)); st != http.StatusSwitchingProtocols {
		t.Errorf("203.0.113.9 via 64:ff9b::/96, a different IPv4 client: %d, want 101", st)
	}
}

// TestAttackTenantAnswersBlockClientsEverywhere: the refusal budget is
// the gateway's, per address. Were it to count the answers a tenant
// chose (a 401, 403 or 404 that its pod wrote, or that its route's
// forward-auth service decided), a tenant whose pod or service refuses a
// client that reconnects would get that client, and everyone behind its
// NAT address, refused 429 on every other tenant's route. Secure: those
// answers are not the gateway's refusals.
func TestAttackTenantAnswersBlockClientsEverywhere(t *testing.T) {
	eg := startEdgeGateway(t, engine{}, Options{ClientLimits: ClientLimits{RefusalBudget: 3, RefusalBlock: time.Minute}})
	pod := startFakePod(t, "127.0.0.3", podAnswers("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
	svc := startForwardAuth(t, "127.0.0.8")
	b := testRoute("evil", "/b", pod.backend("b"))
	b.Key.Namespace = "tenant-b"
	fa := testRoute("evilauth", "/f", backendOf("f", echoPod(t, "127.0.0.4")))
	fa.Key.Namespace = "tenant-b"
	fa.Auth = &routing.Auth{Forward: &routing.ForwardAuth{Service: "tenant-b/auth", Addrs: []netip.AddrPort{svc.addr}, Path: "/check", Timeout: time.Second}}
	a := testRoute("app", "/a", backendOf("a", echoPod(t, "127.0.0.2")))
	a.Key.Namespace = "tenant-a"
	eg.g.publish(a, b, fa)
	settle(t, eg.g)
	const client = "127.0.0.94"
	for i := range 5 {
		if st := eg.ask(t, client, nil, wsHead("/b/127.0.0.3/x")); st != http.StatusForbidden && st != http.StatusTooManyRequests {
			t.Fatalf("handshake %d on tenant B's route: %d", i, st)
		}
		if st := eg.ask(t, client, nil, wsHead("/f/127.0.0.4/x", "X-Session: deny")); st != http.StatusForbidden && st != http.StatusTooManyRequests {
			t.Fatalf("handshake %d on tenant B's forward-auth route: %d", i, st)
		}
	}
	if st := eg.ask(t, client, nil, wsHead("/a/127.0.0.2/x")); st != http.StatusSwitchingProtocols {
		t.Errorf("after tenant B's pod and auth service answered 403 five times each, tenant A's route answered the client %d, want 101", st)
	}
}
