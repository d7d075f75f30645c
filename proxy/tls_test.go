package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// tlsGateway serves g over TLS with its own configuration (TLSConfigWith
// opts, fallback certificate for ws.example.com) and returns the address.
func tlsGateway(t *testing.T, g *testGateway, opts TLSOptions) string {
	t.Helper()
	cert := selfSigned(t, "ws.example.com")
	opts.Fallback = &cert
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.srv.ServeTLS(l, g.srv.TLSConfigWith(opts)) }()
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

// browserDial opens a websocket over TLS as a browser does (Go's default
// key-exchange preferences, unless client says otherwise), echoes, and
// closes with the close handshake; it returns the TLS state.
func browserDial(t *testing.T, addr string, client *tls.Config) tls.ConnectionState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var state tls.ConnectionState
	client.ServerName = "ws.example.com"
	client.InsecureSkipVerify = true //nolint:gosec // a self-signed test certificate
	client.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: client}
	tr.DialTLSContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&tls.Dialer{Config: client}).DialContext(ctx, network, addr)
		if err == nil {
			state = c.(*tls.Conn).ConnectionState()
		}
		return c, err
	}
	c, resp, err := websocket.Dial(ctx, "wss://ws.example.com/rooms/127.0.0.2/", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if err := echo(ctx, c, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	return state
}

// TLS sessions resume by default; the key-exchange groups are the ones
// configured, in their order, and Go's default puts the post-quantum
// hybrid first, as browsers do.
func TestTLSResumptionAndGroups(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	g := startGateway(t, Options{}, testRoute("rooms", "/rooms", backendOf("a", pod)))

	def := tlsGateway(t, g, TLSOptions{})
	cache := tls.NewLRUClientSessionCache(8)
	first := browserDial(t, def, &tls.Config{ClientSessionCache: cache})
	if first.DidResume {
		t.Fatal("the first connection resumed")
	}
	if first.CurveID != tls.X25519MLKEM768 {
		t.Errorf("default group %v, want X25519MLKEM768", first.CurveID)
	}
	if again := browserDial(t, def, &tls.Config{ClientSessionCache: cache}); !again.DidResume {
		t.Error("the second connection with the session cache did not resume")
	}

	x := tlsGateway(t, g, TLSOptions{Groups: []tls.CurveID{tls.X25519}})
	if st := browserDial(t, x, &tls.Config{}); st.CurveID != tls.X25519 {
		t.Errorf("with groups [X25519]: %v negotiated", st.CurveID)
	}
	p := tlsGateway(t, g, TLSOptions{Groups: []tls.CurveID{tls.CurveP256}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
		CurvePreferences: []tls.CurveID{tls.X25519}}}).DialContext(ctx, "tcp", p)
	if err == nil {
		_ = c.Close()
		t.Error("a client offering X25519 only completed a handshake with a gateway that accepts CurveP256 only")
	}
}

func TestParseGroups(t *testing.T) {
	got, err := ParseGroups(" X25519MLKEM768, x25519,P-256,curvep384 ")
	if err != nil {
		t.Fatal(err)
	}
	want := []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if g, err := ParseGroups(""); g != nil || err != nil {
		t.Errorf(`"" gives %v, %v; want nil (Go's default)`, g, err)
	}
	for _, bad := range []string{"X448", "X25519,X25519", "X25519,,CurveP256"} {
		if _, err := ParseGroups(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
