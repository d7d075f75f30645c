package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// Websockets over HTTP/2 (RFC 8441), with Options.HTTP2: the TLS
// listener offers h2, and a browser that holds an HTTP/2 connection to
// the gateway opens a websocket as one stream of it, an extended CONNECT
// with :protocol websocket. The gateway decides it as the HTTP/1.1
// handshake it stands for (http1Form: the same admit, the same answers),
// reaches the pod with an ordinary HTTP/1.1 upgrade, and carries the
// tunnel between the stream and the pod's connection.
//
// On Linux, with pods dialled by the default dialer, the gateway serves
// HTTP/2 itself on its event loops (loop_h2_linux.go, package h2), where
// every stream's tunnel is carried too. Elsewhere (or with Options.Dial)
// net/http's HTTP/2 server serves it and the tunnels run on goroutines
// (below): Go's HTTP/2 server (1.26) advertises SETTINGS_ENABLE_CONNECT_
// PROTOCOL and accepts :protocol only when the process starts with
// GODEBUG=http2xconnect=1 in its environment (net/http reads it once, at
// init): without it, extended CONNECTs are refused as malformed streams.

// ExtendedConnect reports whether a gateway of this process that dials
// pods with the default dialer accepts websockets over HTTP/2: on Linux
// its own HTTP/2 always does; elsewhere net/http's does when the process
// started with http2xconnect=1 in GODEBUG.
func ExtendedConnect() bool { return ownHTTP2() || xconnect.On() }

// serveHTTP2Request decides an HTTP/2 request as its HTTP/1.1 form, on
// either engine (c is its stream): the same admit and answers as over
// HTTP/1.1, the pod reached with an HTTP/1.1 upgrade.
func (s *Server) serveHTTP2Request(c client, r *http.Request) {
	h1 := http1Form(r)
	adm, a := s.admit(h1)
	if a != nil {
		s.reply(c, h1, a)
		return
	}
	s.dialPod(c, h1, adm)
}

// serveHTTP2 handles one request of an HTTP/2 connection.
func (s *Server) serveHTTP2(w http.ResponseWriter, r *http.Request) {
	c := &h2Client{w: w, r: r, done: make(chan struct{}), m: s.opts.Metrics, conns: &s.h2conns}
	if (r.Method != http.MethodConnect || r.Header.Get(":protocol") != "") && !h2PathOK(r.RequestURI) {
		c.answer(refuse(http.StatusBadRequest, errMalformedPath.Error()))
		return
	}
	s.serveHTTP2Request(c, r)
	// The stream lives as long as its handler: once the tunnel opened
	// (dialPod returns once it is carried), until the tunnel closes it.
	if c.upgraded {
		<-c.done
	}
}

// h2PathOK reports whether an HTTP/2 request's :path is one an HTTP/1.1
// request line can carry: an absolute path (RFC 9113 §8.3.1), without
// spaces. (An absolute URI there would be routed by its path part.)
func h2PathOK(path string) bool {
	return strings.HasPrefix(path, "/") && !strings.ContainsAny(path, " \t")
}

// errMalformedPath is the answer's text for a :path h2PathOK refuses.
var errMalformedPath = errors.New("malformed request path")

// http1Form is the HTTP/1.1 request that an HTTP/2 request stands for,
// which the gateway decides and the pod receives: an extended CONNECT
// with :protocol websocket is a GET upgrade to websocket, with a key of
// the gateway's (RFC 8441 has none; the pod's answer is checked against
// it); any other request keeps its method and header, so that it gets
// the answer of its HTTP/1.1 form.
func http1Form(r *http.Request) *http.Request {
	c := *r
	// Proto keeps the client's "HTTP/2.0", for the access log; the
	// version numbers are HTTP/1.1's, which the checks read.
	c.ProtoMajor, c.ProtoMinor = 1, 1
	c.Header = r.Header.Clone()
	protocol := c.Header.Get(":protocol")
	delete(c.Header, ":protocol")
	if r.Method == http.MethodConnect && protocol == "websocket" {
		c.Method = http.MethodGet
		c.Header.Set("Connection", "Upgrade")
		c.Header.Set("Upgrade", "websocket")
		c.Header.Set("Sec-WebSocket-Key", newWebsocketKey())
		c.TransferEncoding, c.Body = nil, http.NoBody
		// A handshake has no body: a stated length other than 0 makes
		// checkHandshake refuse it, as over HTTP/1.1.
		c.ContentLength = 0
		if v := c.Header.Values("Content-Length"); r.ContentLength > 0 || len(v) > 0 && (len(v) > 1 || strings.TrimSpace(v[0]) != "0") {
			c.ContentLength = -1
		}
	}
	if c.RequestURI == "" || !strings.HasPrefix(c.RequestURI, "/") {
		c.RequestURI = r.URL.RequestURI()
	}
	return &c
}

// newWebsocketKey is a Sec-WebSocket-Key: 16 random bytes in base64.
func newWebsocketKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// h2Client is a client that speaks HTTP/2: the stream of its request.
type h2Client struct {
	w     http.ResponseWriter
	r     *http.Request
	done  chan struct{}
	once  sync.Once
	m     *Metrics
	conns *h2Conns
	// upgraded: the stream was handed over to a tunnel (set on the
	// handler's goroutine, which dialPod runs on).
	upgraded bool
}

// h2Conns counts the tunnels of each HTTP/2 connection (by the client's
// address and port, one connection's), for the gauge of connections
// carrying tunnels.
type h2Conns struct {
	mu      sync.Mutex
	streams map[string]int
}

// add moves the count of the connection from remote by delta, and
// returns how many connections carry tunnels.
func (c *h2Conns) add(remote string, delta int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams == nil {
		c.streams = make(map[string]int)
	}
	if c.streams[remote] += delta; c.streams[remote] <= 0 {
		delete(c.streams, remote)
	}
	return len(c.streams)
}

func (c *h2Client) finish() { c.once.Do(func() { close(c.done) }) }

// answer writes a on the stream, without the fields HTTP/2 forbids.
func (c *h2Client) answer(a *answer) {
	defer c.finish()
	c.m.http2Handshake(a.status)
	h := a.fields()
	h.Del("Connection")
	for k, v := range h {
		c.w.Header()[k] = v
	}
	c.w.WriteHeader(a.status)
	if a.relayed == nil {
		_, _ = c.w.Write([]byte(a.text + "\n"))
		return
	}
	body, _ := a.body()
	_, _ = bufio.NewReader(body).WriteTo(c.w)
	_ = a.relayed.Body.Close()
}

// upgrade answers the extended CONNECT 200, with the fields of head (the
// pod's 101, as an HTTP/1.1 client would get it) that mean something on
// HTTP/2 (the subprotocol and extensions; not Sec-WebSocket-Accept), and
// hands over the stream as a connection.
func (c *h2Client) upgrade(head []byte, deadline time.Time) (net.Conn, []byte, error) {
	h, err := upgradeFields(head)
	if err != nil {
		c.finish()
		return nil, nil, err
	}
	rc := http.NewResponseController(c.w)
	if err := rc.EnableFullDuplex(); err != nil {
		c.finish()
		return nil, nil, err
	}
	for k, v := range h {
		c.w.Header()[k] = v
	}
	_ = rc.SetWriteDeadline(deadline)
	c.w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		c.finish()
		return nil, nil, err
	}
	_ = rc.SetWriteDeadline(time.Time{})
	c.upgraded = true
	c.m.http2Handshake(http.StatusSwitchingProtocols)
	c.m.http2Tunnels(1, c.conns.add(c.r.RemoteAddr, 1))
	return &h2ReqStream{c: c, rc: rc, remote: addrOf(c.r.RemoteAddr)}, nil, nil
}

// upgradeFields are the fields of head (the pod's 101, as an HTTP/1.1
// client would get it) that go with the 200 of an extended CONNECT: the
// subprotocol and extensions, not Sec-WebSocket-Accept nor what HTTP/2
// forbids.
func upgradeFields(head []byte) (http.Header, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close()
	h := resp.Header
	removeHopByHop(h)
	h.Del("Sec-Websocket-Accept")
	return h, nil
}

// h2ReqStream is an HTTP/2 stream as a connection: reads from the request
// body, writes to the response, each write flushed; Close ends the
// handler, which ends the stream. The response's state goes with the
// handler: a call that comes after Close must not touch it, so each call
// counts itself in while it runs, and Close unblocks and waits for those
// in flight before it lets the handler return.
type h2ReqStream struct {
	c        *h2Client
	rc       *http.ResponseController
	remote   net.Addr
	wmu      sync.Mutex // writes and flushes come from the tunnel's goroutines
	inFlight atomic.Int64
	closed   atomic.Bool
	close    sync.Once
}

// use runs f unless the stream is closed.
func (s *h2ReqStream) use(f func() error) error {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if s.closed.Load() {
		return net.ErrClosed
	}
	return f()
}

func (s *h2ReqStream) Read(p []byte) (int, error) { return s.c.r.Body.Read(p) }

func (s *h2ReqStream) Write(p []byte) (n int, err error) {
	err = s.use(func() error {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		var err error
		if n, err = s.c.w.Write(p); err == nil {
			err = s.rc.Flush()
		}
		return err
	})
	return n, err
}

func (s *h2ReqStream) Close() error {
	s.close.Do(func() {
		s.closed.Store(true)
		past := time.Now().Add(-time.Second)
		_ = s.rc.SetReadDeadline(past)
		_ = s.rc.SetWriteDeadline(past)
		for s.inFlight.Load() > 0 {
			time.Sleep(time.Millisecond)
		}
		_ = s.c.r.Body.Close()
		s.c.m.http2Tunnels(-1, s.c.conns.add(s.c.r.RemoteAddr, -1))
		s.c.finish()
	})
	return nil
}

func (s *h2ReqStream) LocalAddr() net.Addr  { return h2Addr{} }
func (s *h2ReqStream) RemoteAddr() net.Addr { return s.remote }

func (s *h2ReqStream) SetDeadline(t time.Time) error {
	return s.use(func() error {
		_ = s.rc.SetReadDeadline(t)
		return s.rc.SetWriteDeadline(t)
	})
}

func (s *h2ReqStream) SetReadDeadline(t time.Time) error {
	return s.use(func() error { return s.rc.SetReadDeadline(t) })
}

func (s *h2ReqStream) SetWriteDeadline(t time.Time) error {
	return s.use(func() error { return s.rc.SetWriteDeadline(t) })
}

// h2Addr is the local address of a stream.
type h2Addr struct{}

func (h2Addr) Network() string { return "h2" }
func (h2Addr) String() string  { return "h2 stream" }

// addrOf is a request's RemoteAddr as a net.Addr.
func addrOf(s string) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return a
	}
	return h2Addr{}
}
