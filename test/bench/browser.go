package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// The browser-like client opens each connection as a browser does: a
// websocket client library (github.com/coder/websocket) over net/http, a
// new TCP (and TLS) connection each time, Go's default TLS key-exchange
// preferences (X25519MLKEM768 first, with an X25519 key share beside it,
// as current Chrome and Firefox offer), the request headers a page's
// `new WebSocket(...)` sends (Origin, User-Agent, permessage-deflate
// offered), masked frames, and a close handshake at the end: a Close
// frame, the peer's Close back, then the TCP close.

// benchOrigins are the Origin headers the browser-like clients send (a
// page on benchHost), which wsgate's open route allows.
var benchOrigins = []string{"http://" + benchHost, "https://" + benchHost}

// browserUserAgent is a current desktop browser's.
const browserUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36"

// browserMode is how the browser-like client connects.
type browserMode struct {
	tls bool
	// x25519: offer X25519 only, as the raw client does, rather than
	// Go's default groups.
	x25519 bool
	// resume: one TLS session cache per client loop, so that every
	// connection of a loop after its first resumes the session (TLS 1.3
	// PSK with a fresh key exchange), as a browser reconnecting does.
	resume bool
}

// tlsConfig is the client's TLS configuration in mode m (nil: plain).
func (m browserMode) tlsConfig() *tls.Config {
	if !m.tls {
		return nil
	}
	c := &tls.Config{
		ServerName:         benchHost,
		InsecureSkipVerify: true, //nolint:gosec // self-signed certificate of this run, on loopback
		NextProtos:         []string{"http/1.1"},
	}
	if m.x25519 {
		c.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	if m.resume {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return c
}

// browserLoop is one client loop's HTTP client and request headers.
type browserLoop struct {
	client *http.Client
	header http.Header
	scheme string
}

// newBrowserLoop returns a client loop in mode m: its transport keeps no
// connection alive, so every handshake is on a new TCP (and TLS)
// connection, from the next client address.
func newBrowserLoop(m browserMode) *browserLoop {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return clientDialer().DialContext(ctx, network, addr)
		},
		TLSClientConfig:     m.tlsConfig(),
		TLSHandshakeTimeout: 10 * time.Second,
		DisableKeepAlives:   true,
		DisableCompression:  true,
	}
	l := &browserLoop{client: &http.Client{Transport: tr}, scheme: "ws", header: http.Header{}}
	origin := benchOrigins[0]
	if m.tls {
		l.scheme, origin = "wss", benchOrigins[1]
	}
	l.header.Set("Origin", origin)
	l.header.Set("User-Agent", browserUserAgent)
	l.header.Set("Cache-Control", "no-cache")
	l.header.Set("Pragma", "no-cache")
	l.header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	l.header.Set("Accept-Language", "en-US,en;q=0.9")
	return l
}

// connect opens one websocket to addr with path, echoes payload once and
// ends with a close handshake; it returns the TLS state of the
// connection (nil when plain).
func (l *browserLoop) connect(ctx context.Context, addr, path string, payload []byte) (*tls.ConnectionState, error) {
	c, resp, err := websocket.Dial(ctx, l.scheme+"://"+addr+path, &websocket.DialOptions{
		HTTPClient: l.client,
		Host:       benchHost,
		HTTPHeader: l.header,
		// Browsers offer permessage-deflate; the pods accept it. The
		// 32-byte echo is below the library's 128-byte threshold and
		// goes uncompressed.
		CompressionMode: websocket.CompressionContextTakeover,
	})
	if resp != nil && resp.Body != nil {
		// The start of a refused answer's body; none after a 101.
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.CloseNow() }()
	if err := c.Write(ctx, websocket.MessageBinary, payload); err != nil {
		return nil, err
	}
	typ, got, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary || !bytes.Equal(got, payload) {
		return nil, fmt.Errorf("echo differs: sent %q, got %v %q", payload, typ, got)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		return nil, fmt.Errorf("close handshake: %w", err)
	}
	return resp.TLS, nil
}

// handshakeTally counts TLS connections by the key-exchange group they
// negotiated, and those that resumed a session.
type handshakeTally struct {
	conns, resumed int64
	groups         map[tls.CurveID]int64
}

func (t *handshakeTally) count(st *tls.ConnectionState) {
	if st == nil {
		return
	}
	if t.groups == nil {
		t.groups = map[tls.CurveID]int64{}
	}
	t.conns++
	t.groups[st.CurveID]++
	if st.DidResume {
		t.resumed++
	}
}

func (t *handshakeTally) add(o handshakeTally) {
	if o.conns == 0 {
		return
	}
	if t.groups == nil {
		t.groups = map[tls.CurveID]int64{}
	}
	t.conns += o.conns
	t.resumed += o.resumed
	for g, n := range o.groups {
		t.groups[g] += n
	}
}

// groupsText names the groups negotiated, the most frequent first, with
// their shares when there is more than one ("" when no TLS connection).
func (t handshakeTally) groupsText() string {
	gs := slices.Collect(maps.Keys(t.groups))
	slices.SortFunc(gs, func(a, b tls.CurveID) int { return cmp.Or(cmp.Compare(t.groups[b], t.groups[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, g := range gs {
		name := g.String()
		if g == 0 {
			name = "none recorded"
		}
		if len(gs) > 1 {
			name += fmt.Sprintf(" (%.1f%%)", 100*float64(t.groups[g])/float64(t.conns))
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, ", ")
}

// mainGroup is the group most connections negotiated.
func (t handshakeTally) mainGroup() (tls.CurveID, bool) {
	var best tls.CurveID
	var n int64
	for g, k := range t.groups {
		if k > n || k == n && g < best {
			best, n = g, k
		}
	}
	return best, n > 0
}

// resumedShare is the share of TLS connections that resumed, in percent.
func (t handshakeTally) resumedShare() float64 {
	if t.conns == 0 {
		return 0
	}
	return 100 * float64(t.resumed) / float64(t.conns)
}

// browserRateRow is connRateRow with the browser-like client in mode m:
// concurrency loops for duration, each with its own client, opening a
// connection (TCP, TLS when m.tls, websocket handshake), echoing one
// 32-byte message and closing it with a close handshake.
func browserRateRow(ctx context.Context, inst *instance, pods, concurrency int, duration time.Duration, m browserMode) (rateResult, error) {
	payload := make([]byte, 32)
	r, err := rateLoops(ctx, inst, concurrency, duration, func() (rateConn, func()) {
		l := newBrowserLoop(m)
		return func(ctx context.Context, k int) (*tls.ConnectionState, error) {
			addr, path := inst.dial(k%pods, m.tls)
			return l.connect(ctx, addr, path, payload)
		}, l.client.CloseIdleConnections
	})
	if err == nil && m.tls && r.hs.conns != r.count {
		return r, errors.New("a TLS connection without TLS state")
	}
	return r, err
}
