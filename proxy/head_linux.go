//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// Request heads that the event loops read themselves are parsed and
// checked as net/http's server parses and checks them, and answered the
// same way (the answers' status codes match net/http's: the fuzz test
// FuzzRequestHeadAsNetHTTP compares them).

// headEnd returns the length of the head in b (up to and including the
// empty line that ends it, CRLF or a bare LF as net/textproto reads
// lines), or -1 while it is incomplete. The search starts at from.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j + 1
		switch {
		case k < len(b) && b[k] == '\n':
			return k + 1
		case k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n':
			return k + 2
		}
		i = k
	}
}

// headReader reads a head that is already in memory.
type headReader struct {
	src bytes.Reader
	br  *bufio.Reader
}

var headReaders = sync.Pool{New: func() any {
	h := &headReader{}
	h.br = bufio.NewReaderSize(&h.src, 4096)
	return h
}}

// parseHead runs parse over a complete head in memory. The reader goes
// back to a pool: what parse returns must not read from it later.
func parseHead[T any](head []byte, parse func(*bufio.Reader) (T, error)) (T, error) {
	h := headReaders.Get().(*headReader)
	h.src.Reset(head)
	h.br.Reset(&h.src)
	v, err := parse(h.br)
	h.src.Reset(nil)
	h.br.Reset(&h.src)
	headReaders.Put(h)
	return v, err
}

// parseRequestHead parses a complete request head as net/http's server
// does, or returns its answer.
func parseRequestHead(head []byte) (*http.Request, *answer) {
	r, err := parseHead(head, func(br *bufio.Reader) (*http.Request, error) {
		r, err := http.ReadRequest(br)
		if err == nil {
			// A body is refused (checkHandshake), never read; it reads
			// from br, which goes back to its pool.
			r.Body = http.NoBody
		}
		return r, err
	})
	if err != nil {
		if strings.HasPrefix(err.Error(), "unsupported transfer encoding") {
			return nil, refuse(http.StatusNotImplemented, "unsupported transfer encoding")
		}
		return nil, refuse(http.StatusBadRequest, "malformed request")
	}
	if r.Method == "PRI" && r.RequestURI == "*" && r.ProtoMajor == 2 && r.ProtoMinor == 0 {
		// HTTP/2's preface: net/http hands it to the handler, which
		// refuses it for its method.
		return r, nil
	}
	// http.ReadRequest took the Host field into r.Host, unless the
	// request-target named a host too or the field was empty: then the
	// field's own values are read again, as net/http's server sees them.
	hosts := []string{r.Host}
	if r.Host == "" || r.URL.Host != "" {
		hosts = hostFields(head)
	}
	return r, checkRequestHead(r, hosts)
}

// hostFields returns the values of a parsed head's Host fields.
func hostFields(head []byte) []string {
	_, fields, _ := bytes.Cut(head, []byte("\n"))
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(fields))).ReadMIMEHeader()
	if err != nil {
		return nil
	}
	return h["Host"]
}

// checkRequestHead applies the rules net/http's server applies to a
// request head after parsing it (it answers 505, 400 and 417 for them),
// so that a head read by the gateway itself is held to the same rules;
// hosts are the head's Host field values (http.ReadRequest takes them out
// of r.Header). It returns the answer for a head that breaks one, or nil.
func checkRequestHead(r *http.Request, hosts []string) *answer {
	if r.ProtoMajor != 1 && (r.ProtoMajor != 2 || r.ProtoMinor != 0 || r.Method != "PRI" || r.RequestURI != "*") {
		return refuse(http.StatusHTTPVersionNotSupported, "unsupported protocol version")
	}
	if r.ProtoAtLeast(1, 1) && len(hosts) == 0 && r.Method != "CONNECT" {
		return refuse(http.StatusBadRequest, "missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return refuse(http.StatusBadRequest, "malformed Host header")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return refuse(http.StatusBadRequest, "invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return refuse(http.StatusBadRequest, "invalid header value")
			}
		}
	}
	if e := firstValue(r.Header["Expect"]); e != "" && !hasToken(e, "100-continue") {
		return refuse(http.StatusExpectationFailed, "expectation failed")
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
