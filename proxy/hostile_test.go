package proxy

// The security suite of the data plane: raw clients and raw fake pods try
// to break every data-plane rule of DESIGN.md. Every refused request is
// checked for its exact status, for "no dial" (the gateway's dial counter)
// and for the canary of TestMain (nothing reaches 127.0.0.250).

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/routing"
)

// sampleAccept is Sec-WebSocket-Accept for the key that wsHead sends
// (RFC 6455, section 1.3), written out rather than computed.
const sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

// ---------------------------------------------------------------------
// Fake pods: raw TCP listeners that record what they receive and answer
// with scripted bytes.

// podScript is what a fake pod does with one connection.
type podScript func(pc *podConn)

// fakePod is a raw "pod" on a loopback address.
type fakePod struct {
	addr   netip.AddrPort
	l      net.Listener
	script atomic.Pointer[podScript]

	mu    sync.Mutex
	conns []*podConn
	wg    sync.WaitGroup
}

// podConn is one connection a fake pod accepted.
type podConn struct {
	c    net.Conn
	br   *bufio.Reader
	done chan struct{} // closed when the script has returned and c is closed

	mu    sync.Mutex
	head  string        // the raw request head received
	req   *http.Request // head parsed; nil if none arrived
	after []byte        // bytes received after the head
	eof   bool          // the gateway ended the stream cleanly
}

// startFakePod listens on ip at the canary's port (any port if that one
// is taken there) and runs script on each connection.
func startFakePod(t *testing.T, ip string, script podScript) *fakePod {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(canaryAddr.Port()))))
	if err != nil {
		t.Logf("fake pod: port %d is taken on %s (%v): using another", canaryAddr.Port(), ip, err)
		if l, err = net.Listen("tcp", net.JoinHostPort(ip, "0")); err != nil {
			t.Fatalf("fake pod on %s: %v", ip, err)
		}
	}
	p := &fakePod{addr: netip.MustParseAddrPort(l.Addr().String()), l: l}
	p.setScript(script)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *fakePod) setScript(s podScript) { p.script.Store(&s) }

func (p *fakePod) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		pc := &podConn{c: c, br: bufio.NewReader(c), done: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		script := *p.script.Load()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer close(pc.done)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			script(pc)
		}()
	}
}

func (p *fakePod) close() {
	_ = p.l.Close()
	p.mu.Lock()
	for _, pc := range p.conns {
		_ = pc.c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// backend is the routing.Backend of the fake pod.
func (p *fakePod) backend(name string) routing.Backend {
	return routing.Backend{Pod: name, Addr: p.addr}
}

// accepted is the number of connections the pod has accepted.
func (p *fakePod) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// conn returns the pod's i-th connection.
func (p *fakePod) conn(i int) *podConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[i]
}

// readHead reads and records a request head (bounded); false if none
// arrived.
func (pc *podConn) readHead() bool {
	var head strings.Builder
	for head.Len() < 64<<10 {
		line, err := pc.br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return false
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	req, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
	pc.mu.Lock()
	pc.head, pc.req = head.String(), req
	pc.mu.Unlock()
	return req != nil
}

// drain records everything that arrives until the stream ends (or the
// connection's deadline passes).
func (pc *podConn) drain() {
	buf := make([]byte, 4096)
	for {
		n, err := pc.br.Read(buf)
		pc.mu.Lock()
		pc.after = append(pc.after, buf[:n]...)
		if errors.Is(err, io.EOF) {
			pc.eof = true
		}
		pc.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (pc *podConn) recorded() (head string, req *http.Request, after []byte, eof bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.head, pc.req, append([]byte(nil), pc.after...), pc.eof
}

// wait waits for the pod's side of the connection to end.
func (pc *podConn) wait(t *testing.T) {
	t.Helper()
	select {
	case <-pc.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway kept the pod's connection open")
	}
}

// podAnswers is a pod script: read the head, write tmpl ("{accept}" becomes
// the right Sec-WebSocket-Accept) in one write, then record what follows.
func podAnswers(tmpl string) podScript {
	return func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, req, _, _ := pc.recorded()
		out := strings.ReplaceAll(tmpl, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		if _, err := pc.c.Write([]byte(out)); err != nil {
			return
		}
		pc.drain()
	}
}

// answerAndCloseWrite is answer with the pod's side half-closed after
// the answer, which then ends at the end of stream.
func answerAndCloseWrite(tmpl string) podScript {
	return func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		if _, err := pc.c.Write([]byte(tmpl)); err != nil {
			return
		}
		_ = pc.c.(*net.TCPConn).CloseWrite()
		pc.drain()
	}
}

// ok101 is a valid websocket upgrade answer for answer.
const ok101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"

// silent reads the head and never answers.
func silent(pc *podConn) {
	if pc.readHead() {
		pc.drain()
	}
}

// hangUp closes the connection before reading or sending anything.
func hangUp(*podConn) {}

// ---------------------------------------------------------------------
// Raw clients.

// wsRequest is a valid websocket request head with requestLine, edited:
// "Name: value" replaces the header Name (or adds it), "+Name: value"
// adds another line, "-Name" removes every Name line.
func wsRequest(requestLine string, edits ...string) string {
	lines := []string{
		"Host: ws.example.com",
		"Connection: Upgrade",
		"Upgrade: websocket",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
	}
	name := func(line string) string { n, _, _ := strings.Cut(line, ":"); return strings.ToLower(n) }
	for _, e := range edits {
		switch {
		case strings.HasPrefix(e, "+"):
			lines = append(lines, e[1:])
		case strings.HasPrefix(e, "-"):
			kept := lines[:0]
			for _, l := range lines {
				if name(l) != strings.ToLower(e[1:]) {
					kept = append(kept, l)
				}
			}
			lines = kept
		default:
			replaced := false
			for i, l := range lines {
				if name(l) == name(e) {
					lines[i], replaced = e, true
					break
				}
			}
			if !replaced {
				lines = append(lines, e)
			}
		}
	}
	return requestLine + "\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// wsHead is wsRequest for "GET path HTTP/1.1".
func wsHead(path string, edits ...string) string {
	return wsRequest("GET "+path+" HTTP/1.1", edits...)
}

// rawAnswer is what a raw client got.
type rawAnswer struct {
	resp   *http.Response // resp.Close: the answer said Connection: close
	body   string
	closed bool // the gateway closed the connection after the answer
	conn   net.Conn
	br     *bufio.Reader
}

// exchange connects to the gateway at addr, sends data in one write and
// reads the answer; see roundTrip.
func exchange(t *testing.T, addr, data string) *rawAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return roundTrip(t, c, data)
}

// roundTrip sends data on c in one write and reads the answer. A 101
// leaves the connection open to the caller; any other answer is read to
// its end, and closed tells whether the gateway then closed the
// connection. Interim (1xx) answers are errors: the gateway must not
// relay them.
func roundTrip(t *testing.T, c net.Conn, data string) *rawAnswer {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(data)) // the gateway may refuse before reading it all
	br := bufio.NewReader(c)
	method, _, _ := strings.Cut(data, " ")
	var resp *http.Response
	for range 5 {
		var err error
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("no answer to %q: %v", truncate([]byte(data)), err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		_ = resp.Body.Close()
		t.Errorf("the gateway relayed an interim answer %q", resp.Status)
	}
	a := &rawAnswer{resp: resp, conn: c, br: br}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		_ = resp.Body.Close() // no body: the connection is the caller's
		return a
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	a.body = string(body)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	n, err := br.Read(b[:])
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	a.closed = n == 0 && err != nil && !timedOut
	return a
}

// maskedFrame is a client frame (FIN set, fixed masking key).
func maskedFrame(opcode byte, payload string) []byte {
	if len(payload) > 125 {
		panic("maskedFrame: payload too long")
	}
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	f := []byte{0x80 | opcode, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
}

// waitNoTunnels waits until the gateway has no tunnel or handshake open.
func waitNoTunnels(t *testing.T, g *testGateway) {
	t.Helper()
	waitTunnels(t, g, 0)
}

// waitTunnels waits until g has n tunnels and handshakes open.
func waitTunnels(t *testing.T, g *testGateway, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.srv.OpenTunnels() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels open, want %d", g.srv.OpenTunnels(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------
// The shared fixture: routes on two hosts, all fake pods on the canary's
// port.

type hostileFixture struct {
	g                       *testGateway
	podA, podB, podC, podV6 *fakePod
	pods                    []*fakePod
	port                    string         // the fake pods' (and the canary's) port
	farV6Addr               netip.AddrPort // allowlisted, not loopback
	routeRooms, routeApp    *routing.Route
	routeOther, routeTenant *routing.Route
	routeAny, routeWild     *routing.Route
	routeClaimed            *routing.Route
	canaryHost              string // the canary's host:port
}

func newHostileFixture(t *testing.T, opts Options) *hostileFixture {
	t.Helper()
	f := &hostileFixture{
		podA:  startFakePod(t, "127.0.0.2", podAnswers(ok101)),
		podB:  startFakePod(t, "127.0.0.3", podAnswers(ok101)),
		podC:  startFakePod(t, "127.0.0.4", podAnswers(ok101)),
		podV6: startFakePod(t, "::1", podAnswers(ok101)),
		port:  strconv.Itoa(int(canaryAddr.Port())),
	}
	f.pods = []*fakePod{f.podA, f.podB, f.podC, f.podV6}
	f.farV6Addr = netip.AddrPortFrom(netip.MustParseAddr("fd00::ab"), canaryAddr.Port())
	f.canaryHost = canaryAddr.String()
	// /ws.example.com/rooms: 127.0.0.2, ::1 and fd00::ab (never reachable).
	f.routeRooms = testRoute("rooms", "/rooms", f.podA.backend("a"), f.podV6.backend("v6"), routing.Backend{Pod: "far", Addr: f.farV6Addr})
	// ws.example.com/other: 127.0.0.3 only.
	f.routeOther = testRoute("other", "/other", f.podB.backend("b"))
	// other.example.com/rooms: 127.0.0.4 only.
	f.routeTenant = testRoute("tenant", "/rooms", f.podC.backend("c"))
	f.routeTenant.Key.Namespace = "tenant"
	f.routeTenant.Hosts = []string{"other.example.com"}
	// ws.example.com/app: 127.0.0.2 for one origin only.
	f.routeApp = testRoute("app", "/app", f.podA.backend("a"))
	f.routeApp.AllowedOrigins = []string{"https://app.example.com"}
	// Every other host/any: 127.0.0.2 (the catch-all route).
	f.routeAny = testRoute("any", "/any", f.podA.backend("a"))
	f.routeAny.Hosts = nil
	// *.wild.example/rooms: 127.0.0.3, in a namespace of its own...
	f.routeWild = testRoute("wild", "/rooms", f.podB.backend("b"))
	f.routeWild.Key.Namespace = "wild"
	f.routeWild.Hosts = []string{"*.wild.example"}
	// ...but claimed.wild.example/rooms is another namespace's: 127.0.0.4.
	f.routeClaimed = testRoute("claimed", "/rooms", f.podC.backend("c"))
	f.routeClaimed.Key.Namespace = "claimer"
	f.routeClaimed.Hosts = []string{"claimed.wild.example"}
	f.g = startGateway(t, opts, f.routeRooms, f.routeOther, f.routeTenant, f.routeApp, f.routeAny, f.routeWild, f.routeClaimed)
	return f
}

// snapshot counts dials, canary hits and pod connections.
type snapshot struct {
	dials, canary int64
	pods          []int
}

func (f *hostileFixture) snap() snapshot {
	s := snapshot{dials: f.g.dials.Load(), canary: canaryHits()}
	for _, p := range f.pods {
		s.pods = append(s.pods, p.accepted())
	}
	return s
}

// checkNoDial fails t if anything was dialled or reached a pod or the
// canary since s.
func (f *hostileFixture) checkNoDial(t *testing.T, s snapshot) {
	t.Helper()
	if d := f.g.dials.Load() - s.dials; d != 0 {
		t.Errorf("%d dial(s), want none: %v", d, f.g.dialedAddrs()[s.dials:])
	}
	if c := canaryHits() - s.canary; c != 0 {
		t.Errorf("the canary %s was reached %d time(s)", canaryAddr, c)
	}
	for i, p := range f.pods {
		if n := p.accepted() - s.pods[i]; n != 0 {
			t.Errorf("fake pod %s got %d connection(s), want none", p.addr, n)
		}
	}
}

// ---------------------------------------------------------------------
// Requests: addresses, paths, hosts, handshake rules, origins.

// hostileCase is one request sent in one write to the fixture's gateway.
type hostileCase struct {
	name string
	req  string
	want int
	// header is "Name: value" that the answer must carry.
	header string
	// dial is the address the gateway must dial (once); "" for no dial.
	dial string
	// pod must receive the handshake with request-target podTarget.
	pod       *fakePod
	podTarget string
}

func TestHostileRequests(t *testing.T) {
	f := newHostileFixture(t, Options{})
	P := f.port
	a, b, c, v6 := f.podA, f.podB, f.podC, f.podV6
	ok := func(name, req string, pod *fakePod, target string) hostileCase {
		return hostileCase{name: name, req: req, want: 101, dial: pod.addr.String(), pod: pod, podTarget: target}
	}
	no := func(name, req string, want int) hostileCase { return hostileCase{name: name, req: req, want: want} }
	addr404 := func(seg string) hostileCase {
		return no("address "+strconv.Quote(seg), wsHead("/rooms/"+seg+"/x"), 404)
	}

	groups := []struct {
		group string
		cases []hostileCase
	}{
		{"controls", []hostileCase{
			ok("canonical IPv4", wsHead("/rooms/127.0.0.2/chat?x=1"), a, "/chat?x=1"),
			ok("canonical IPv6", wsHead("/rooms/::1/chat"), v6, "/chat"),
			ok("trailing slash", wsHead("/rooms/127.0.0.2/"), a, "/"),
			ok("another route", wsHead("/other/127.0.0.3"), b, "/"),
			ok("another host", wsHead("/rooms/127.0.0.4", "Host: other.example.com"), c, "/"),
			ok("Host in upper case with port and trailing dot", wsHead("/rooms/127.0.0.2", "Host: WS.Example.COM.:8080"), a, "/"),
			ok("Upgrade and Connection tokens in any case", wsHead("/rooms/127.0.0.2", "Upgrade: WebSocket", "Connection: keep-alive, UPGRADE"), a, "/"),
			ok("the query is not a path", wsHead("/rooms/127.0.0.2/x?next=/../127.0.0.250/%2e%2e"), a, "/x?next=/../127.0.0.250/%2e%2e"),
			ok("the route's own origin", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com"), a, "/"),
			ok("a wildcard route", wsHead("/rooms/127.0.0.3", "Host: x.wild.example"), b, "/"),
			ok("the name another route claims in a wildcard", wsHead("/rooms/127.0.0.4", "Host: claimed.wild.example"), c, "/"),
			ok("the catch-all route, any Host, no Origin (not a browser)", wsHead("/any/127.0.0.2", "Host: attacker.test"), a, "/"),
			ok("allowed origin", wsHead("/app/127.0.0.2", "Origin: https://app.example.com"), a, "/"),
			// Browsers always send Origin on websockets; a client that
			// sends none is not a browser and could forge any value.
			ok("no Origin where the route lists origins (not a browser)", wsHead("/app/127.0.0.2"), a, "/"),
			ok("allowed origin in upper case", wsHead("/app/127.0.0.2", "Origin: HTTPS://APP.EXAMPLE.COM"), a, "/"),
			// The canonical form of an allowlisted address that is not
			// loopback is dialled; the test dialer refuses it (502). The
			// non-canonical forms of it below are not.
			{name: "canonical IPv6 beyond loopback", req: wsHead("/rooms/fd00::ab"), want: 502, dial: f.farV6Addr.String()},
		}},
		{"non-canonical addresses", []hostileCase{
			addr404("127.000.0.2"), addr404("127.0.0.02"), addr404("127.0.0.002"), addr404("0127.0.0.2"),
			addr404("127.2"), addr404("127.0.2"), addr404("2130706434"),
			addr404("0x7f.0.0.2"), addr404("0x7f000002"), addr404("0x7F.0x0.0x0.0x2"),
			addr404("0177.0.0.2"), addr404("017700000002"),
			addr404("::ffff:127.0.0.2"), addr404("::FFFF:127.0.0.2"), addr404("::ffff:7f00:2"), addr404("::127.0.0.2"),
			addr404("0:0::1"), addr404("0::1"), addr404("::0:1"), addr404("0:0:0:0:0:0:0:1"), addr404("::0001"), addr404("::01"), addr404("0000::1"),
			addr404("[::1]"), addr404("[::1]:" + P),
			addr404("FD00::AB"), addr404("fd00::AB"), addr404("fd00::00ab"), addr404("fd00:0::ab"), addr404("fd00:0:0:0:0:0:0:ab"), addr404("fd00:0000::ab"),
			addr404("127.0.0.2."), addr404("::1."), addr404(".127.0.0.2"),
			addr404("127.0.0.2:" + P), addr404("127.0.0.2;x"), addr404("127.0.0.2,127.0.0.250"), addr404("127.0.0.2@127.0.0.250"),
			addr404("localhost"), addr404("ws.example.com"),
			// Zones need a '%': refused as percent-encoding, before any lookup.
			no("zone fe80::1%25eth0", wsHead("/rooms/fe80::1%25eth0/x"), 400),
			no("zone ::1%25lo", wsHead("/rooms/::1%25lo/x"), 400),
			no("raw zone ::1%lo", wsHead("/rooms/::1%lo/x"), 400),
			no("raw zone fe80::1%eth0", wsHead("/rooms/fe80::1%eth0/x"), 400),
		}},
		{"addresses outside the route", []hostileCase{
			addr404(canaryIP),
			addr404("127.0.0.1"), // the gateway itself
			addr404("127.0.0.3"), // allowlisted on /other
			addr404("127.0.0.4"), // allowlisted on other.example.com
			addr404("0.0.0.0"), addr404("::"), addr404("169.254.169.254"), addr404("255.255.255.255"),
			no("another route's pod on another prefix", wsHead("/other/127.0.0.2"), 404),
			no("another host's pod", wsHead("/rooms/127.0.0.2", "Host: other.example.com"), 404),
			no("canary through the origin-checked route", wsHead("/app/"+canaryIP, "Origin: https://evil.example"), 404),
			no("no address", wsHead("/rooms"), 404),
			no("empty address", wsHead("/rooms/"), 404),
			no("no route prefix", wsHead("/127.0.0.2"), 404),
			no("prefix look-alike", wsHead("/roomsx/127.0.0.2"), 404),
			no("prefix in upper case", wsHead("/ROOMS/127.0.0.2"), 404),
		}},
		{"path tricks", []hostileCase{
			no("percent-encoded digits", wsHead("/rooms/%31%32%37.0.0.2"), 400),
			no("percent-encoded slash", wsHead("/rooms%2f127.0.0.2"), 400),
			no("percent-encoded slash after the address", wsHead("/rooms/127.0.0.2%2f..%2f127.0.0.250"), 400),
			no("percent-encoded dots", wsHead("/rooms/%2e%2e/127.0.0.2"), 400),
			no("percent-encoded prefix", wsHead("/%72ooms/127.0.0.2"), 400),
			no("dot-dot segment", wsHead("/rooms/../127.0.0.2"), 400),
			no("dot-dot to the canary", wsHead("/rooms/127.0.0.2/../../"+canaryIP), 400),
			no("dot segment", wsHead("/rooms/./127.0.0.2"), 400),
			no("trailing dot-dot", wsHead("/rooms/127.0.0.2/.."), 400),
			no("empty segment", wsHead("/rooms//127.0.0.2"), 400),
			no("empty segment after the address", wsHead("/rooms/127.0.0.2//x"), 400),
			no("backslash", wsHead(`/rooms\127.0.0.2`), 400),
			no("backslash dot-dot", wsHead(`/rooms/127.0.0.2\..\`+canaryIP), 400),
			no("absolute-form to the canary", wsRequest("GET http://"+f.canaryHost+"/ HTTP/1.1"), 400),
			no("absolute-form to an allowlisted pod", wsRequest("GET http://ws.example.com/rooms/127.0.0.2 HTTP/1.1"), 400),
			no("scheme-relative form", wsRequest("GET //"+f.canaryHost+"/rooms/127.0.0.2 HTTP/1.1"), 400),
			no("asterisk-form", wsRequest("GET * HTTP/1.1"), 400),
			no("fragment", wsHead("/rooms/127.0.0.2#x"), 400),
			no("fragment hiding a dot-dot", wsHead("/rooms/127.0.0.2#/../"+canaryIP), 400),
			no("non-ASCII bytes", wsHead("/rooms/127.0.0.2/\xc3\xa9"), 400),
			no("full-width digits", wsHead("/rooms/\uff11\uff12\uff17.0.0.2"), 400),
			no("a lone 0xff byte", wsHead("/rooms/127.0.0.2\xff"), 400),
			no("DEL byte", wsHead("/rooms/127.0.0.2\x7f"), 400),
			no("NUL byte", wsHead("/rooms/127.0.0.2\x00"), 400),
			no("empty request-target", wsRequest("GET  HTTP/1.1"), 400),
		}},
		{"host tricks", []hostileCase{
			no("Host of another route, address of this one", wsHead("/rooms/127.0.0.2", "Host: other.example.com"), 404),
			no("Host with no route", wsHead("/rooms/127.0.0.2", "Host: evil.example"), 404),
			no("Host is the canary", wsHead("/rooms/127.0.0.2", "Host: "+f.canaryHost), 404),
			no("Host missing", wsHead("/rooms/127.0.0.2", "-Host"), 400),
			no("Host twice", wsHead("/rooms/127.0.0.2", "+Host: other.example.com"), 400),
			no("Host empty", wsHead("/rooms/127.0.0.2", "Host: "), 400),
			no("Host with userinfo", wsHead("/rooms/127.0.0.2", "Host: user@ws.example.com"), 400),
			no("Host with a path", wsHead("/rooms/127.0.0.2", "Host: ws.example.com/rooms"), 400),
			no("Host with percent", wsHead("/rooms/127.0.0.2", "Host: ws.example.com%00"), 400),
			no("Host with an open bracket", wsHead("/rooms/127.0.0.2", "Host: [::1"), 400),
			no("Host with a comma", wsHead("/rooms/127.0.0.2", "Host: ws.example.com,other.example.com"), 400),
			no("absolute-form naming another host than Host", wsRequest("GET http://other.example.com/rooms/127.0.0.4 HTTP/1.1"), 400),
			no("absolute-form naming Host, pod of another host", wsRequest("GET http://ws.example.com/rooms/127.0.0.4 HTTP/1.1", "Host: other.example.com"), 400),
		}},
		{"handshake rules", []hostileCase{
			{name: "POST with a body", req: wsRequest("POST /rooms/127.0.0.2 HTTP/1.1", "Content-Length: 5") + "hello", want: 405, header: "Allow: GET"},
			{name: "PUT", req: wsRequest("PUT /rooms/127.0.0.2 HTTP/1.1"), want: 405, header: "Allow: GET"},
			{name: "DELETE", req: wsRequest("DELETE /rooms/127.0.0.2 HTTP/1.1"), want: 405},
			{name: "OPTIONS on a path", req: wsRequest("OPTIONS /rooms/127.0.0.2 HTTP/1.1"), want: 405},
			{name: "OPTIONS * (asterisk-form)", req: "OPTIONS * HTTP/1.1\r\nHost: ws.example.com\r\n\r\n", want: 405},
			{name: "CONNECT to the canary", req: "CONNECT " + f.canaryHost + " HTTP/1.1\r\nHost: " + f.canaryHost + "\r\n\r\n", want: 405},
			{name: "CONNECT to an allowlisted pod", req: "CONNECT 127.0.0.2:" + P + " HTTP/1.1\r\nHost: 127.0.0.2:" + P + "\r\n\r\n", want: 405},
			{name: "HTTP/2 prior-knowledge preface", req: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: 405},
			no("HTTP/1.0", wsRequest("GET /rooms/127.0.0.2 HTTP/1.0"), 400),
			no("HTTP/1.2", wsRequest("GET /rooms/127.0.0.2 HTTP/1.2"), 400),
			no("HTTP/2.0 request line", wsRequest("GET /rooms/127.0.0.2 HTTP/2.0"), 505),
			{name: "plain GET", req: wsHead("/rooms/127.0.0.2", "-Connection", "-Upgrade"), want: 426, header: "Upgrade: websocket"},
			{name: "Upgrade missing", req: wsHead("/rooms/127.0.0.2", "-Upgrade"), want: 426, header: "Upgrade: websocket"},
			{name: "Connection without the upgrade token", req: wsHead("/rooms/127.0.0.2", "Connection: keep-alive"), want: 426, header: "Upgrade: websocket"},
			{name: "Connection missing", req: wsHead("/rooms/127.0.0.2", "-Connection"), want: 426},
			{name: "upgrade named in Proxy-Connection only", req: wsHead("/rooms/127.0.0.2", "-Connection", "+Proxy-Connection: Upgrade"), want: 426},
			no("Upgrade: h2c", wsHead("/rooms/127.0.0.2", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "+HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), 400),
			no("Upgrade: websocket, h2c", wsHead("/rooms/127.0.0.2", "Upgrade: websocket, h2c"), 400),
			no("Upgrade: h2c, websocket", wsHead("/rooms/127.0.0.2", "Upgrade: h2c, websocket"), 400),
			no("two Upgrade lines", wsHead("/rooms/127.0.0.2", "+Upgrade: h2c"), 400),
			no("Upgrade: TLS/1.2", wsHead("/rooms/127.0.0.2", "Upgrade: TLS/1.2"), 400),
			{name: "Sec-WebSocket-Version 8", req: wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Version: 8"), want: 426, header: "Sec-WebSocket-Version: 13"},
			{name: "Sec-WebSocket-Version missing", req: wsHead("/rooms/127.0.0.2", "-Sec-WebSocket-Version"), want: 426, header: "Sec-WebSocket-Version: 13"},
			{name: "Sec-WebSocket-Version twice", req: wsHead("/rooms/127.0.0.2", "+Sec-WebSocket-Version: 8"), want: 426, header: "Sec-WebSocket-Version: 13"},
			no("Sec-WebSocket-Key missing", wsHead("/rooms/127.0.0.2", "-Sec-WebSocket-Key"), 400),
			no("Sec-WebSocket-Key not base64", wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Key: !!not*base64!!"), 400),
			no("Sec-WebSocket-Key of 15 bytes", wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"), 400),
			no("Sec-WebSocket-Key of 17 bytes", wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="), 400),
			no("Sec-WebSocket-Key empty", wsHead("/rooms/127.0.0.2", "Sec-WebSocket-Key: "), 400),
			no("Sec-WebSocket-Key twice", wsHead("/rooms/127.0.0.2", "+Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), 400),
			no("Content-Length body", wsHead("/rooms/127.0.0.2", "Content-Length: 5")+"hello", 400),
			no("Content-Length body smuggling a request to the canary", wsHead("/rooms/127.0.0.2", "Content-Length: "+strconv.Itoa(len(wsHead("/rooms/"+canaryIP))))+wsHead("/rooms/"+canaryIP), 400),
			no("Transfer-Encoding chunked", wsHead("/rooms/127.0.0.2", "Transfer-Encoding: chunked")+"5\r\nhello\r\n0\r\n\r\n", 400),
			no("Transfer-Encoding and Content-Length", wsHead("/rooms/127.0.0.2", "Transfer-Encoding: chunked", "Content-Length: 5")+"0\r\n\r\n", 400),
			no("Transfer-Encoding identity", wsHead("/rooms/127.0.0.2", "Transfer-Encoding: identity"), 501),
			no("oversized header line", wsHead("/rooms/127.0.0.2", "X-Pad: "+strings.Repeat("a", 32<<10)), 431),
			no("too many header lines", wsHead("/rooms/127.0.0.2", strings.Repeat("X-Many: v\r\n", 4000)+"X-Last: v"), 431),
		}},
		{"origins", []hostileCase{
			no("cross-origin on a same-origin route", wsHead("/rooms/127.0.0.2", "Origin: https://evil.example"), 403),
			no("Origin null", wsHead("/rooms/127.0.0.2", "Origin: null"), 403),
			no("Origin that is not a URL", wsHead("/rooms/127.0.0.2", "Origin: ws.example.com"), 403),
			no("same origin plus a second Origin", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com", "+Origin: https://evil.example"), 403),
			no("Origin with the host as a prefix", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com.evil.example"), 403),
			no("Origin with the host as userinfo", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com@evil.example"), 403),
			no("Origin of another port", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com:8080"), 403),
			no("Origin not allowed by the route", wsHead("/app/127.0.0.2", "Origin: https://evil.example"), 403),
			no("two allowed Origins", wsHead("/app/127.0.0.2", "Origin: https://app.example.com", "+Origin: https://app.example.com"), 403),
			no("allowed Origin as a prefix", wsHead("/app/127.0.0.2", "Origin: https://app.example.com.evil.example"), 403),
			no("allowed Origin with another port", wsHead("/app/127.0.0.2", "Origin: https://app.example.com:8443"), 403),
			no("allowed Origin with another scheme", wsHead("/app/127.0.0.2", "Origin: http://app.example.com"), 403),
			no("allowed Origin with a path", wsHead("/app/127.0.0.2", "Origin: https://app.example.com/"), 403),
			no("the route's own origin is not enough where the route lists origins", wsHead("/app/127.0.0.2", "Origin: http://ws.example.com"), 403),
			// Without allowedOrigins, an Origin passes only when it names
			// one of the route's own hostnames (never the Host the client
			// chose), with a scheme that fits the connection, on the port
			// Host names.
			no("Host and Origin of the client's choice on the catch-all route", wsHead("/any/127.0.0.2", "Host: attacker.test", "Origin: http://attacker.test"), 403),
			no("https Origin of the client's Host on the catch-all route", wsHead("/any/127.0.0.2", "Host: attacker.test", "Origin: https://attacker.test"), 403),
			no("Origin of a route's host on the catch-all route", wsHead("/any/127.0.0.2", "Host: attacker.test", "Origin: http://ws.example.com"), 403),
			no("Origin with another scheme", wsHead("/rooms/127.0.0.2", "Origin: foo://ws.example.com"), 403),
			no("Origin with the ws scheme", wsHead("/rooms/127.0.0.2", "Origin: ws://ws.example.com"), 403),
			no("Origin with the wss scheme", wsHead("/rooms/127.0.0.2", "Origin: wss://ws.example.com"), 403),
			no("Origin with userinfo before the route's host", wsHead("/rooms/127.0.0.2", "Origin: http://evil@ws.example.com"), 403),
			no("Origin of the route's host with a path", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com/"), 403),
			no("Origin of the route's host with an empty port", wsHead("/rooms/127.0.0.2", "Origin: http://ws.example.com:"), 403),
			ok("https Origin of the route's host on a plain connection (TLS ended in front)", wsHead("/rooms/127.0.0.2", "Origin: https://ws.example.com"), a, "/"),
			ok("Origin in upper case with a trailing dot", wsHead("/rooms/127.0.0.2", "Origin: HTTPS://WS.Example.com."), a, "/"),
			ok("Origin with the port that Host names", wsHead("/rooms/127.0.0.2", "Host: ws.example.com:8080", "Origin: http://ws.example.com:8080"), a, "/"),
			no("Origin without the port that Host names", wsHead("/rooms/127.0.0.2", "Host: ws.example.com:8080", "Origin: https://ws.example.com"), 403),
			no("Origin naming port 80 while Host names none, https", wsHead("/rooms/127.0.0.2", "Origin: https://ws.example.com:80"), 403),
			ok("Origin naming a wildcard route's one-label name", wsHead("/rooms/127.0.0.3", "Host: x.wild.example", "Origin: https://y.wild.example"), b, "/"),
			no("Origin naming a two-label name under a wildcard route", wsHead("/rooms/127.0.0.3", "Host: x.wild.example", "Origin: https://a.b.wild.example"), 403),
			no("Origin naming the wildcard's suffix itself", wsHead("/rooms/127.0.0.3", "Host: x.wild.example", "Origin: https://wild.example"), 403),
			no("Origin naming a wildcard's name that another namespace's route claims", wsHead("/rooms/127.0.0.3", "Host: x.wild.example", "Origin: https://claimed.wild.example"), 403),
			no("Origin naming another route's host", wsHead("/rooms/127.0.0.2", "Origin: http://other.example.com"), 403),
			no("Origin naming another route's host, sent with that Host", wsHead("/rooms/127.0.0.4", "Host: other.example.com", "Origin: http://ws.example.com"), 403),
		}},
	}
	for _, grp := range groups {
		t.Run(grp.group, func(t *testing.T) {
			for _, tc := range grp.cases {
				t.Run(tc.name, func(t *testing.T) { f.run(t, tc) })
			}
		})
	}
	waitNoTunnels(t, f.g)
}

// run sends one hostile case and checks the answer, the dials, the pods
// and the canary.
func (f *hostileFixture) run(t *testing.T, tc hostileCase) {
	t.Helper()
	before := f.snap()
	var podBefore int
	if tc.pod != nil {
		podBefore = tc.pod.accepted()
	}
	a := exchange(t, f.g.addr, tc.req)
	if a.resp.StatusCode != tc.want {
		t.Fatalf("status %q, want %d (body %q)", a.resp.Status, tc.want, a.body)
	}
	if tc.header != "" {
		k, v, _ := strings.Cut(tc.header, ": ")
		if got := a.resp.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("answer has %s: %q, want %q", k, got, v)
		}
	}
	if tc.want == http.StatusSwitchingProtocols {
		if got := a.resp.Header.Get("Sec-WebSocket-Accept"); got != sampleAccept {
			t.Errorf("Sec-WebSocket-Accept %q, want %q", got, sampleAccept)
		}
		_ = a.conn.Close()
	} else {
		if !a.resp.Close {
			t.Errorf("answer %d without Connection: close (header %v)", a.resp.StatusCode, a.resp.Header)
		}
		if !a.closed {
			t.Errorf("the gateway kept the connection open after answering %d", a.resp.StatusCode)
		}
	}
	if tc.dial == "" {
		f.checkNoDial(t, before)
		return
	}
	dialled := f.g.dialedAddrs()[before.dials:]
	if len(dialled) != 1 || dialled[0] != tc.dial {
		t.Errorf("dialled %v, want exactly [%s]", dialled, tc.dial)
	}
	if c := canaryHits() - before.canary; c != 0 {
		t.Errorf("the canary was reached %d time(s)", c)
	}
	if tc.pod == nil {
		return
	}
	if n := tc.pod.accepted() - podBefore; n != 1 {
		t.Fatalf("pod %s got %d connections, want 1", tc.pod.addr, n)
	}
	pc := tc.pod.conn(podBefore)
	pc.wait(t)
	_, req, after, _ := pc.recorded()
	if req == nil {
		t.Fatal("the pod got no request head")
	}
	if req.RequestURI != tc.podTarget {
		t.Errorf("the pod got request-target %q, want %q", req.RequestURI, tc.podTarget)
	}
	if len(after) != 0 {
		t.Errorf("the pod got %q after the head, want nothing", after)
	}
}

// ---------------------------------------------------------------------
// Headers that reach the pod.

func TestHopByHopHeadersNeverReachThePod(t *testing.T) {
	f := newHostileFixture(t, Options{})
	req := wsHead("/rooms/127.0.0.2/x",
		"Connection: Upgrade, X-Secret, X-Other-Secret",
		"+Connection: X-Third-Secret",
		"+X-Secret: s1",
		"+X-Other-Secret: s2",
		"+X-Third-Secret: s3",
		"+Keep-Alive: timeout=5",
		"+Te: trailers",
		"+Trailer: X-Trailer",
		"+Proxy-Authorization: Basic dXNlcjpwYXNz",
		"+Proxy-Authenticate: Basic",
		"+Proxy-Connection: keep-alive",
		"+X-Forwarded-For: 6.6.6.6",
		"+X-Forwarded-For: 7.7.7.7",
		"+X-Forwarded-Proto: https",
		"+X-Forwarded-Host: evil.example",
		"+Forwarded: for=6.6.6.6;host=evil.example;proto=https",
		"+X-Real-IP: 6.6.6.6",
		"+Cookie: session=s",
		"+Authorization: Bearer t",
		"+Sec-WebSocket-Protocol: chat",
	)
	before := f.podA.accepted()
	a := exchange(t, f.g.addr, req)
	if a.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %q, want 101", a.resp.Status)
	}
	_ = a.conn.Close()
	pc := f.podA.conn(before)
	pc.wait(t)
	head, got, _, _ := pc.recorded()
	if got == nil {
		t.Fatalf("no request head at the pod: %q", head)
	}
	lower := strings.ToLower(head)
	for _, name := range []string{"x-secret", "x-other-secret", "x-third-secret", "keep-alive", "te", "trailer",
		"proxy-authorization", "proxy-authenticate", "proxy-connection", "forwarded", "x-real-ip", "transfer-encoding"} {
		if strings.Contains(lower, "\r\n"+name+":") {
			t.Errorf("hop-by-hop or client-forged header %s reached the pod:\n%s", name, head)
		}
	}
	for _, secret := range []string{"s1", "s2", "s3", "6.6.6.6", "7.7.7.7", "evil.example", "dXNlcjpwYXNz"} {
		if strings.Contains(head, secret) {
			t.Errorf("%q reached the pod:\n%s", secret, head)
		}
	}
	exact := []struct{ name, want string }{
		{"Host", "ws.example.com"},
		{"Connection", "Upgrade"},
		{"Upgrade", "websocket"},
		{"X-Forwarded-For", "127.0.0.1"},
		{"X-Forwarded-Proto", "http"},
		{"X-Forwarded-Host", "ws.example.com"},
		{"Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"Sec-Websocket-Version", "13"},
		{"Sec-Websocket-Protocol", "chat"},
		{"Cookie", "session=s"},
		{"Authorization", "Bearer t"},
	}
	for _, e := range exact {
		var vals []string
		if e.name == "Host" {
			vals = []string{got.Host}
		} else {
			vals = got.Header.Values(e.name)
		}
		if len(vals) != 1 || vals[0] != e.want {
			t.Errorf("%s at the pod: %q, want exactly [%q]", e.name, vals, e.want)
		}
	}
	if strings.Count(lower, "\r\nhost:") != 1 {
		t.Errorf("Host lines at the pod: %d, want 1:\n%s", strings.Count(lower, "\r\nhost:"), head)
	}
	if got.RequestURI != "/x" || got.Method != http.MethodGet || got.Proto != "HTTP/1.1" {
		t.Errorf("request line at the pod: %s %s %s", got.Method, got.RequestURI, got.Proto)
	}
}

// ---------------------------------------------------------------------
// Answers from the pod.

// TestNon101AnswersAreRelayedAndNeverTunnelled: an answer other than 101
// reaches the client as a plain response with Connection: close, the
// client's connection ends after it, and nothing the client sends (in the
// same write as its handshake, or later) reaches the pod.
func TestNon101AnswersAreRelayedAndNeverTunnelled(t *testing.T) {
	f := newHostileFixture(t, Options{HandshakeTimeout: 2 * time.Second})
	pipelined := wsHead("/rooms/"+canaryIP) + string(maskedFrame(1, "smuggled"))
	cases := []struct {
		name   string
		answer string
		want   int
		body   string
		header string // "Name: value" the client must get
		absent []string
		script podScript // instead of answer(answer)
	}{
		{name: "200 with a body",
			answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Pod-Secret\r\nX-Pod-Secret: p\r\nKeep-Alive: timeout=60\r\nX-Visible: v\r\n\r\nhello",
			want:   200, body: "hello", header: "X-Visible: v", absent: []string{"X-Pod-Secret", "Keep-Alive"}},
		{name: "200 chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: 200, body: "hello"},
		{name: "200 followed by a forged 101", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n\x81\x05hello",
			want: 200, body: "ok"},
		{name: "302 with Location", answer: "HTTP/1.1 302 Found\r\nLocation: http://" + canaryIP + "/\r\nContent-Length: 0\r\n\r\n", want: 302, header: "Location: http://" + canaryIP + "/"},
		{name: "400", answer: "HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad", want: 400, body: "bad"},
		{name: "401 with a challenge", answer: "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n", want: 401, header: "Www-Authenticate: Bearer"},
		{name: "426", answer: "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", want: 426, header: "Sec-Websocket-Version: 13", absent: []string{"Upgrade"}},
		{name: "204", answer: "HTTP/1.1 204 No Content\r\n\r\n", want: 204},
		{name: "500 with a body until close", script: answerAndCloseWrite("HTTP/1.1 500 Internal Server Error\r\n\r\noops"), want: 500, body: "oops"},
		{name: "HTTP/1.0 200", answer: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", want: 200, body: "ok"},
		// Interim answers are not relayed (a relayed 1xx would be followed
		// by a 200 the pod never sent); the final answer is.
		{name: "100 Continue then 403", answer: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", want: 403, body: "no"},
		{name: "103 Early Hints then 302", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n", want: 302, header: "Location: /b"},
		// Status codes outside 100-599 are not HTTP.
		{name: "status 000", answer: "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n", want: 502},
		{name: "status 099", answer: "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n", want: 502},
		{name: "status 600", answer: "HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n", want: 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.script != nil {
				f.podA.setScript(tc.script)
			} else {
				f.podA.setScript(podAnswers(tc.answer))
			}
			before := f.podA.accepted()
			dials, canaryBefore := f.g.dials.Load(), canaryHits()
			c, err := net.Dial("tcp", f.g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The handshake, a pipelined second request and a frame, in one write.
			a := roundTrip(t, c, wsHead("/rooms/127.0.0.2")+pipelined)
			if a.resp.StatusCode != tc.want {
				t.Fatalf("status %q, want %d", a.resp.Status, tc.want)
			}
			if tc.body != "" && a.body != tc.body {
				t.Errorf("body %q, want %q", a.body, tc.body)
			}
			if strings.Contains(a.body, "\x81\x05hello") || strings.Contains(a.body, "HTTP/1.1 101") {
				t.Errorf("bytes after the pod's answer reached the client: %q", a.body)
			}
			if tc.header != "" {
				k, v, _ := strings.Cut(tc.header, ": ")
				if got := a.resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if v := a.resp.Header.Values(k); len(v) > 0 {
					t.Errorf("hop-by-hop header %s: %q was relayed", k, v)
				}
			}
			if !a.resp.Close {
				t.Errorf("answer without Connection: close (header %v)", a.resp.Header)
			}
			if !a.closed {
				t.Error("the client connection stayed open after the relayed answer")
			}
			// Later bytes from the client: another request and a frame.
			_, _ = c.Write([]byte(wsHead("/rooms/127.0.0.2")))
			_, _ = c.Write(maskedFrame(1, "late"))

			if n := f.podA.accepted() - before; n != 1 {
				t.Fatalf("pod connections: %d, want 1", n)
			}
			pc := f.podA.conn(before)
			pc.wait(t)
			_, req, after, eof := pc.recorded()
			if req == nil || req.RequestURI != "/" {
				t.Errorf("pod request %v", req)
			}
			if len(after) != 0 {
				t.Errorf("bytes reached the pod after its answer: %q", after)
			}
			if !eof {
				t.Error("the gateway did not end the pod's connection")
			}
			if d := f.g.dials.Load() - dials; d != 1 {
				t.Errorf("%d dials, want 1", d)
			}
			if canaryHits() != canaryBefore {
				t.Error("the canary was reached")
			}
			waitNoTunnels(t, f.g)
		})
	}
	f.podA.setScript(podAnswers(ok101))
}

// TestInvalid101AnswersAre502: a 101 that is not a valid websocket
// upgrade for this request never opens a tunnel.
func TestInvalid101AnswersAre502(t *testing.T) {
	f := newHostileFixture(t, Options{HandshakeTimeout: 2 * time.Second})
	const tail = "\x81\x05hello" // a frame the pod sends at once
	cases := []struct {
		name, answer string
		offer        string // Sec-WebSocket-Protocol the client offers
		want         int
	}{
		{name: "valid (control)", answer: ok101 + tail, want: 101},
		{name: "valid with an offered subprotocol (control)", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: b\r\n\r\n" + tail, offer: "a, b", want: 101},
		{name: "100 Continue, then a valid 101 (control)", answer: "HTTP/1.1 100 Continue\r\n\r\n" + ok101 + tail, want: 101},
		{name: "no Upgrade", answer: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "Upgrade: h2c", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "Upgrade: websocket, h2c", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "two Upgrade lines", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "no Connection: upgrade", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "wrong Sec-WebSocket-Accept", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey("AAAAAAAAAAAAAAAAAAAAAA==") + "\r\n\r\n" + tail, want: 502},
		{name: "no Sec-WebSocket-Accept", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + tail, want: 502},
		{name: "two Sec-WebSocket-Accept", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" + tail, want: 502},
		{name: "subprotocol not offered", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n" + tail, want: 502},
		{name: "subprotocol other than offered", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: c\r\n\r\n" + tail, offer: "a, b", want: 502},
		{name: "two subprotocols", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n" + tail, offer: "a, b", want: 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.podA.setScript(podAnswers(tc.answer))
			before := f.podA.accepted()
			var extra []string
			if tc.offer != "" {
				extra = append(extra, "Sec-WebSocket-Protocol: "+tc.offer)
			}
			c, err := net.Dial("tcp", f.g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			a := roundTrip(t, c, wsHead("/rooms/127.0.0.2", extra...)+string(maskedFrame(1, "early")))
			if a.resp.StatusCode != tc.want {
				t.Fatalf("status %q, want %d", a.resp.Status, tc.want)
			}
			pc := f.podA.conn(before)
			if tc.want == http.StatusSwitchingProtocols {
				// The control: the tunnel carries bytes both ways.
				got := make([]byte, len(tail))
				if _, err := io.ReadFull(a.br, got); err != nil || string(got) != tail {
					t.Fatalf("frame from the pod: %q, %v", got, err)
				}
				_ = c.Close()
				pc.wait(t)
				if _, _, after, _ := pc.recorded(); string(after) != string(maskedFrame(1, "early")) {
					t.Errorf("the pod got %q after the head, want the client's frame", after)
				}
				return
			}
			if strings.Contains(a.body, "hello") {
				t.Errorf("the pod's frame reached the client: %q", a.body)
			}
			if !a.closed {
				t.Error("the client connection stayed open")
			}
			pc.wait(t)
			if _, _, after, _ := pc.recorded(); len(after) != 0 {
				t.Errorf("client bytes reached the pod without a tunnel: %q", after)
			}
			waitNoTunnels(t, f.g)
		})
	}
	f.podA.setScript(podAnswers(ok101))
}

// TestFailingPods: pods that never answer, answer garbage, hang up or
// refuse get 504 or 502, within the handshake timeout.
func TestFailingPods(t *testing.T) {
	const hs = 300 * time.Millisecond
	f := newHostileFixture(t, Options{HandshakeTimeout: hs})
	// A route whose own handshake timeout overrides the gateway's.
	slowRoute := testRoute("slow", "/slow", f.podB.backend("b"))
	slowRoute.Timeouts.Handshake = 800 * time.Millisecond
	// Nothing listens on 127.0.0.7 at the pods' port.
	refused, err := net.Listen("tcp", net.JoinHostPort("127.0.0.7", "0"))
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := netip.MustParseAddrPort(refused.Addr().String())
	_ = refused.Close()
	refusedRoute := testRoute("refused", "/refused", routing.Backend{Pod: "gone", Addr: refusedAddr})
	f.g.publish(f.routeRooms, f.routeOther, f.routeTenant, f.routeApp, slowRoute, refusedRoute)

	bigHead := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Pad: " + strings.Repeat("p", 64<<10) + "\r\n\r\n"
	manyLines := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Line: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n", 2000) + "\r\n"
	cases := []struct {
		name     string
		path     string
		pod      *fakePod
		script   podScript
		want     int
		min, max time.Duration
	}{
		{name: "never answers", path: "/rooms/127.0.0.2", pod: f.podA, script: silent, want: 504, min: hs - 50*time.Millisecond, max: hs + 1500*time.Millisecond},
		{name: "never answers, route timeout", path: "/slow/127.0.0.3", pod: f.podB, script: silent, want: 504, min: 750 * time.Millisecond, max: 2500 * time.Millisecond},
		{name: "half an answer head, then nothing", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs"), want: 504, min: hs - 50*time.Millisecond, max: hs + 1500*time.Millisecond},
		{name: "100 Continue, then nothing", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("HTTP/1.1 100 Continue\r\n\r\n"), want: 504, min: hs - 50*time.Millisecond, max: hs + 1500*time.Millisecond},
		{name: "garbage", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("SSH-2.0-OpenSSH_9.6\r\n\r\n"), want: 502},
		{name: "binary garbage", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"), want: 502},
		{name: "bad header line", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n"), want: 502},
		{name: "bad version", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers("HTTP/9.9 101 Switching Protocols\r\n\r\n"), want: 502},
		{name: "closes before any byte", path: "/rooms/127.0.0.2", pod: f.podA, script: hangUp, want: 502},
		{name: "closes after the request head", path: "/rooms/127.0.0.2", pod: f.podA, script: func(pc *podConn) { pc.readHead() }, want: 502},
		{name: "closes mid-head", path: "/rooms/127.0.0.2", pod: f.podA, script: func(pc *podConn) {
			if pc.readHead() {
				_, _ = pc.c.Write([]byte("HTTP/1.1 101 Switching"))
			}
		}, want: 502},
		{name: "refuses the connection", path: "/refused/127.0.0.7", want: 502},
		{name: "oversized answer head (one line)", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers(bigHead), want: 502},
		{name: "oversized answer head (many lines)", path: "/rooms/127.0.0.2", pod: f.podA, script: podAnswers(manyLines), want: 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pod != nil {
				tc.pod.setScript(tc.script)
				defer tc.pod.setScript(podAnswers(ok101))
			}
			canaryBefore := canaryHits()
			start := time.Now()
			a := exchange(t, f.g.addr, wsHead(tc.path))
			took := time.Since(start)
			if a.resp.StatusCode != tc.want {
				t.Fatalf("status %q, want %d (body %q)", a.resp.Status, tc.want, a.body)
			}
			if !a.closed || !a.resp.Close {
				t.Errorf("connection not closed after %d", tc.want)
			}
			maxT := tc.max
			if maxT == 0 {
				maxT = hs + time.Second
			}
			if took < tc.min || took > maxT {
				t.Errorf("answered after %s, want between %s and %s", took, tc.min, maxT)
			}
			if canaryHits() != canaryBefore {
				t.Error("the canary was reached")
			}
			waitNoTunnels(t, f.g)
		})
	}
}

// ---------------------------------------------------------------------
// Bytes around the handshake, slow clients, half-close.

func TestBytesAroundTheHandshakeAreNotLost(t *testing.T) {
	f := newAuthFixture(t)
	alice := f.good.sign(t, claimsFor("alice", nil), nil, false)
	for _, tc := range []struct{ name, head string }{
		{"open route", wsHead("/rooms/127.0.0.2")},
		// The identity is checked off the loop: the bytes wait meanwhile.
		{"route with tokens", wsHead("/me/127.0.0.2/x", "Authorization: Bearer "+alice)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fromPod := "\x81\x05hello\x82\x03\x00\x01\x02"
			f.podA.setScript(podAnswers(ok101 + fromPod)) // the frames in the same write as the 101
			before := f.podA.accepted()
			fromClient := string(maskedFrame(1, "ping")) + string(maskedFrame(2, "\x00\xff"))

			c, err := net.Dial("tcp", f.g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			a := roundTrip(t, c, tc.head+fromClient) // the frames in the same write as the head
			if a.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %q, want 101", a.resp.Status)
			}
			got := make([]byte, len(fromPod))
			if _, err := io.ReadFull(a.br, got); err != nil || string(got) != fromPod {
				t.Errorf("the client got %q (%v), want the pod's frames %q", got, err, fromPod)
			}
			pc := f.podA.conn(before)
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, _, after, _ := pc.recorded()
				if string(after) == fromClient {
					break
				}
				if len(after) > len(fromClient) || time.Now().After(deadline) {
					t.Fatalf("the pod got %q, want the client's frames %q", after, fromClient)
				}
				time.Sleep(5 * time.Millisecond)
			}
			_ = c.Close()
			pc.wait(t)
		})
	}
}

func TestSlowClientsAreCut(t *testing.T) {
	const rht = 300 * time.Millisecond
	f := newHostileFixture(t, Options{ReadHeaderTimeout: rht})
	before := f.snap()

	// cut reports when the gateway ends c's connection.
	cut := func(c net.Conn) <-chan time.Duration {
		start := time.Now()
		ch := make(chan time.Duration, 1)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			var got []byte
			for {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					var ne net.Error
					if bytes.HasPrefix(got, []byte("HTTP/1.1 101")) || errors.As(err, &ne) && ne.Timeout() {
						ch <- -1 // not cut
					} else {
						ch <- time.Since(start)
					}
					return
				}
			}
		}()
		return ch
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", f.g.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	head := wsHead("/rooms/127.0.0.2")
	// Half a request head, then silence.
	stalled := dial()
	_, _ = stalled.Write([]byte(head[:len(head)/2]))
	stalledCut := cut(stalled)
	// Nothing at all.
	silentC := dial()
	silentCut := cut(silentC)
	// One byte every 20ms: never a whole head within the timeout.
	trickle := dial()
	trickleCut := cut(trickle)
	stopTrickle := make(chan struct{})
	var trickling sync.WaitGroup
	trickling.Add(1)
	go func() {
		defer trickling.Done()
		for i := 0; i < len(head); i++ {
			select {
			case <-stopTrickle:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := trickle.Write([]byte{head[i]}); err != nil {
				return
			}
		}
	}()

	// Meanwhile the gateway serves others at once.
	for i := range 3 {
		start := time.Now()
		a := exchange(t, f.g.addr, head)
		if a.resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("another client during the stall: %q", a.resp.Status)
		}
		_ = a.conn.Close()
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Errorf("handshake %d during the stall took %s", i, took)
		}
		if s := exchange(t, f.g.addr, wsHead("/rooms/"+canaryIP)); s.resp.StatusCode != 404 {
			t.Errorf("refusal during the stall: %q", s.resp.Status)
		}
	}

	for _, s := range []struct {
		name string
		ch   <-chan time.Duration
	}{{"half a head", stalledCut}, {"silent", silentCut}, {"trickle", trickleCut}} {
		took := <-s.ch
		if took < 0 {
			t.Errorf("%s client: not cut", s.name)
			continue
		}
		if took < rht-50*time.Millisecond || took > rht+1500*time.Millisecond {
			t.Errorf("%s client cut after %s, want about %s", s.name, took, rht)
		}
	}
	close(stopTrickle)
	trickling.Wait()
	if d := f.g.dials.Load() - before.dials; d != 3 {
		t.Errorf("%d dials, want the 3 complete handshakes only", d)
	}
	if canaryHits() != before.canary {
		t.Error("the canary was reached")
	}
}

func TestHalfCloseReachesThePodAndTheAnswerComesBack(t *testing.T) {
	f := newHostileFixture(t, Options{})
	reply := "\x81\x03bye\x88\x02\x03\xe8" // a text frame and Close 1000, unmasked
	f.podA.setScript(func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, req, _, _ := pc.recorded()
		ans := strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		if _, err := pc.c.Write([]byte(ans)); err != nil {
			return
		}
		pc.drain() // until the client's end of stream
		if _, _, _, eof := pc.recorded(); eof {
			_, _ = pc.c.Write([]byte(reply))
		}
	})
	before := f.podA.accepted()
	c, err := net.Dial("tcp", f.g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := roundTrip(t, c, wsHead("/rooms/127.0.0.2"))
	if a.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %q, want 101", a.resp.Status)
	}
	closeMsg := string(maskedFrame(8, "\x03\xe8"))
	if _, err := c.Write([]byte(closeMsg)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(a.br)
	if err != nil {
		t.Errorf("reading the pod's reply: %v", err)
	}
	if string(got) != reply {
		t.Errorf("the client got %q after its half-close, want the pod's reply %q", got, reply)
	}
	pc := f.podA.conn(before)
	pc.wait(t)
	if _, _, after, eof := pc.recorded(); string(after) != closeMsg || !eof {
		t.Errorf("the pod got %q (end of stream %v), want the Close frame and then EOF", after, eof)
	}
	waitNoTunnels(t, f.g)
}

// ---------------------------------------------------------------------
// TLS: the server name and the Host header must agree.

func TestTLSServerNameMustMatchHost(t *testing.T) {
	f := newHostileFixture(t, Options{})
	cert := selfSigned(t, "ws.example.com", "other.example.com")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = f.g.srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}()

	cases := []struct {
		name, sni, host, path string
		want                  int
		pod                   *fakePod
	}{
		{"SNI and Host agree", "ws.example.com", "ws.example.com", "/rooms/127.0.0.2", 101, f.podA},
		{"SNI and Host agree up to case, port and dot", "WS.example.com", "ws.EXAMPLE.com.:443", "/rooms/127.0.0.2", 101, f.podA},
		{"no SNI", "", "other.example.com", "/rooms/127.0.0.4", 101, f.podC},
		{"SNI of another route", "other.example.com", "ws.example.com", "/rooms/127.0.0.2", 421, nil},
		{"Host of another route", "ws.example.com", "other.example.com", "/rooms/127.0.0.4", 421, nil},
		{"SNI of an unknown name", "evil.example", "ws.example.com", "/rooms/127.0.0.2", 421, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snap()
			var podBefore int
			if tc.pod != nil {
				podBefore = tc.pod.accepted()
			}
			conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
				ServerName:         tc.sni,
				InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
				NextProtos:         []string{"http/1.1"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			a := roundTrip(t, conn, wsHead(tc.path, "Host: "+tc.host))
			if a.resp.StatusCode != tc.want {
				t.Fatalf("status %q, want %d", a.resp.Status, tc.want)
			}
			if tc.pod == nil {
				if !a.closed {
					t.Error("connection open after 421")
				}
				f.checkNoDial(t, before)
				return
			}
			_ = conn.Close()
			pc := tc.pod.conn(podBefore)
			pc.wait(t)
			_, req, _, _ := pc.recorded()
			if got := req.Header.Get("X-Forwarded-Proto"); got != "https" {
				t.Errorf("X-Forwarded-Proto %q, want https", got)
			}
		})
	}
	waitNoTunnels(t, f.g)
}

// selfSigned returns a certificate for names, signed by itself.
func selfSigned(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	c, err := makeSelfSigned(names...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeSelfSigned is a self-signed ECDSA certificate for names, valid for
// an hour.
func makeSelfSigned(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
