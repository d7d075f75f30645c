package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/wsgate/wsgate/routing"
)

// answer is a plain HTTP answer that ends the connection: a refused
// handshake, the gateway's own failure, or the pod's answer that is not
// an upgrade, relayed. Every transport writes it the same way: through
// net/http's ResponseWriter (writeTo), or as bytes on a connection the
// gateway reads itself (head, writeConn).
type answer struct {
	status int
	// text is the reason, in the access log and, for the gateway's own
	// answers, as a plain-text body.
	text string
	// header lines to add, e.g. Sec-WebSocket-Version or Retry-After.
	header http.Header
	// route, when the request matched one (for metrics and logs).
	route *routing.Route
	// relayed is the pod's answer: its header (without hop-by-hop
	// fields) and body are passed on instead of text.
	relayed *http.Response
	// tenant: the route's own service decided the answer (forward auth),
	// not the gateway; like a pod's answer, it is no refusal of the
	// client by the gateway and counts against no refusal budget.
	tenant bool
}

func refuse(status int, text string) *answer { return &answer{status: status, text: text} }

// maxRelayedBody bounds the body of a pod's answer that is relayed.
const maxRelayedBody = 1 << 20

// relay is the answer that passes on a pod's answer that is not an
// upgrade.
func relay(resp *http.Response, route *routing.Route) *answer {
	return &answer{status: resp.StatusCode, text: "the pod answered without upgrading", route: route, relayed: resp}
}

// fields are the answer's header fields, but for Date and
// Content-Length.
func (a *answer) fields() http.Header {
	var h http.Header
	if a.relayed != nil {
		h = a.relayed.Header.Clone()
		removeHopByHop(h)
		h.Del("Content-Length")
	} else {
		h = make(http.Header, len(a.header)+3)
		for k, v := range a.header {
			h[k] = v
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
	}
	h.Set("Connection", "close")
	return h
}

// body is what follows the head, and its length (-1: up to the end of
// the connection).
func (a *answer) body() (io.Reader, int64) {
	if a.relayed == nil {
		return nil, int64(len(a.text) + 1)
	}
	if n := a.relayed.ContentLength; n >= 0 && n <= maxRelayedBody {
		return io.LimitReader(a.relayed.Body, n), n
	}
	return io.LimitReader(a.relayed.Body, maxRelayedBody), -1
}

// writeTo writes the answer through net/http.
func (a *answer) writeTo(w http.ResponseWriter) {
	for k, v := range a.fields() {
		w.Header()[k] = v
	}
	w.WriteHeader(a.status)
	if a.relayed == nil {
		_, _ = io.WriteString(w, a.text+"\n")
		return
	}
	body, _ := a.body()
	_, _ = io.Copy(w, body)
	_ = a.relayed.Body.Close()
}

// head is the answer as HTTP/1.1 bytes, as net/http's server writes it:
// status line, the header sorted with Date and Content-Length, and the
// plain-text body; a relayed body follows it (writeConn).
func (a *answer) head() []byte {
	h := a.fields()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	_, n := a.body()
	if n >= 0 && bodyAllowed(a.status) {
		h.Set("Content-Length", strconv.FormatInt(n, 10))
	}
	var buf bytes.Buffer
	buf.Grow(256 + len(a.text))
	buf.WriteString("HTTP/1.1 ")
	buf.WriteString(strconv.Itoa(a.status))
	if text := http.StatusText(a.status); text != "" {
		buf.WriteByte(' ')
		buf.WriteString(text)
	}
	buf.WriteString("\r\n")
	// Header.Write sorts, drops invalid names and cleans values.
	_ = h.Write(&buf)
	buf.WriteString("\r\n")
	if a.relayed == nil && bodyAllowed(a.status) {
		buf.WriteString(a.text)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// writeConn writes the answer on a connection the gateway reads itself,
// and closes it.
func (a *answer) writeConn(c net.Conn) {
	_, err := c.Write(a.head())
	if a.relayed != nil {
		if body, _ := a.body(); err == nil && bodyAllowed(a.status) {
			_, _ = io.Copy(c, body)
		}
		_ = a.relayed.Body.Close()
	}
	_ = c.Close()
}

// bodyAllowed reports whether a response with this status has a body.
func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// reply records a and writes it to the client.
func (s *Server) reply(c client, r *http.Request, a *answer) {
	s.record(r, a)
	c.answer(a)
}

// record counts an answer in the metrics and writes its access log line
// (sampled).
func (s *Server) record(r *http.Request, a *answer) {
	s.opts.Metrics.handshake(a.route, a.status)
	s.countRefusal(r, a)
	s.logRefusal(r, a.route, a.status, a.text)
}
