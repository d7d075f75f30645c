//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"
)

// connResponse is an http.ResponseWriter (and http.Hijacker) over a raw
// client connection whose request head the gateway read itself. It
// answers as net/http's server does for the gateway's answers, which all
// close the connection: status line, the header sorted, Date, and
// Content-Length when the whole body is written before finish; a longer
// body is streamed and ends with the connection.
type connResponse struct {
	conn net.Conn
	// pending are the bytes the client sent after its request head.
	pending []byte

	header      http.Header
	status      int
	wroteHeader bool // the head is written (or buffered in buf)
	flushed     bool // the head went out: the body streams
	hijacked    bool
	buf         []byte
}

// maxBufferedBody is how much body connResponse holds back to send a
// Content-Length.
const maxBufferedBody = 4 << 10

func newConnResponse(conn net.Conn, pending []byte) *connResponse {
	return &connResponse{conn: conn, pending: pending, header: http.Header{}}
}

func (w *connResponse) Header() http.Header { return w.header }

func (w *connResponse) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *connResponse) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if !w.flushed && len(w.buf)+len(p) <= maxBufferedBody {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if !w.flushed {
		if err := w.writeHead(-1); err != nil {
			return 0, err
		}
	}
	return w.conn.Write(p)
}

// writeHead writes the status line and header, then the body held back
// so far; contentLength < 0 leaves Content-Length out.
func (w *connResponse) writeHead(contentLength int) error {
	w.flushed = true
	body := w.buf
	h := w.header
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if contentLength >= 0 && bodyAllowed(w.status) {
		h.Set("Content-Length", strconv.Itoa(contentLength))
	}
	var head bytes.Buffer
	head.Grow(256 + len(body))
	head.WriteString("HTTP/1.1 ")
	head.WriteString(strconv.Itoa(w.status))
	if text := http.StatusText(w.status); text != "" {
		head.WriteByte(' ')
		head.WriteString(text)
	}
	head.WriteString("\r\n")
	// Header.Write sorts, drops invalid names and cleans values.
	if err := h.Write(&head); err != nil {
		return err
	}
	head.WriteString("\r\n")
	head.Write(body)
	w.buf = nil
	_, err := w.conn.Write(head.Bytes())
	return err
}

// bodyAllowed reports whether a response with this status has a body.
func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// Hijack hands the connection over, with the bytes the client sent after
// its head buffered in the reader.
func (w *connResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.wroteHeader {
		return nil, nil, errors.New("proxy: hijack after the answer began")
	}
	w.hijacked = true
	br := bufio.NewReaderSize(bytes.NewReader(w.pending), max(len(w.pending), 16))
	if len(w.pending) > 0 {
		_, _ = br.Peek(len(w.pending))
	}
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriter(w.conn)), nil
}

// finish sends what is held back and closes the connection, unless it
// was hijacked.
func (w *connResponse) finish() {
	if w.hijacked {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.flushed {
		_ = w.writeHead(len(w.buf))
	}
	_ = w.conn.Close()
}

// headError is the answer to a request head the gateway cannot take,
// written as net/http's server writes it; nil means no answer (the
// connection just closes).
func headError(status int, text string) []byte {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	line := strconv.Itoa(status) + " " + http.StatusText(status)
	if text != "" {
		line += ": " + text
	}
	return []byte("HTTP/1.1 " + line + errorHeaders + line)
}

// checkRequestHead applies the rules net/http's server applies to a
// request head after parsing it (it answers 505, 400 and 417 for them),
// so that a head read by the gateway itself is held to the same rules;
// hosts are the head's Host field values (http.ReadRequest takes them out
// of r.Header). It returns the answer for a head that breaks one, or nil.
func checkRequestHead(r *http.Request, hosts []string) []byte {
	if r.ProtoMajor != 1 && (r.ProtoMajor != 2 || r.ProtoMinor != 0 || r.Method != "PRI" || r.RequestURI != "*") {
		return headError(http.StatusHTTPVersionNotSupported, "unsupported protocol version")
	}
	if r.ProtoAtLeast(1, 1) && len(hosts) == 0 && r.Method != "CONNECT" {
		return headError(http.StatusBadRequest, "missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return headError(http.StatusBadRequest, "malformed Host header")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return headError(http.StatusBadRequest, "invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return headError(http.StatusBadRequest, "invalid header value")
			}
		}
	}
	if e := firstValue(r.Header["Expect"]); e != "" && !hasToken(e, "100-continue") {
		return []byte("HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	}
	return nil
}

// hasToken reports whether v holds token, in any case, between token
// boundaries (space, comma, tab or either end), as net/http's server
// looks for "100-continue" in Expect: more loosely than a comma-separated
// list ("0 100-continue" holds it).
func hasToken(v, token string) bool {
	boundary := func(b byte) bool { return b == ' ' || b == ',' || b == '\t' }
	for sp := 0; sp+len(token) <= len(v); sp++ {
		if sp > 0 && !boundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !boundary(v[end]) {
			continue
		}
		if asciiEqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

// asciiEqualFold reports whether a and b are equal but for the case of
// ASCII letters (no Unicode folding, as net/http compares tokens).
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	lower := func(c byte) byte {
		if 'A' <= c && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}
