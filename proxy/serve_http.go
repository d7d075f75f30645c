package proxy

import (
	"net"
	"net/http"
	"time"
)

// The net/http transport: listeners that the event loops do not serve
// (other systems; TLS, whose handshake crypto/tls makes) go through
// net/http's server, which parses each request and calls ServeHTTP.

// ServeHTTP handles one websocket handshake: admit it, dial the pod,
// forward the handshake and, on a valid 101, carry the tunnel.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// (HTTP/2's preface read as an HTTP/1.1 request, "PRI * HTTP/2.0",
	// is refused for its method below, as the event loops refuse it.)
	if r.ProtoMajor == 2 && r.Method != "PRI" {
		s.serveHTTP2(w, r)
		return
	}
	c := httpClient{w: w}
	adm, a := s.admit(r)
	if a != nil {
		s.reply(c, r, a)
		return
	}
	s.dialPod(c, r, adm)
}

// httpClient is a client that net/http carries.
type httpClient struct{ w http.ResponseWriter }

func (c httpClient) answer(a *answer) { a.writeTo(c.w) }

func (c httpClient) upgrade(head []byte, deadline time.Time) (net.Conn, []byte, error) {
	conn, brw, err := http.NewResponseController(c.w).Hijack()
	if err != nil {
		refuse(http.StatusInternalServerError, "cannot take over the connection").writeTo(c.w)
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	// Anything the client sent after its request head is already in the
	// reader.
	pending, _ := brw.Peek(brw.Reader.Buffered())
	return conn, append([]byte(nil), pending...), writeUpgrade(conn, head, deadline)
}
