package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// podRequest writes the handshake request for the pod: the client's
// headers without hop-by-hop ones (and without Forwarded, which the client
// could forge, nor any field whose name has other characters than
// letters, digits and "-"), then X-Forwarded-For/-Proto/-Host, which the
// gateway overwrites rather than appends to, as the edge of the cluster.
// The fields come out as http.Header.Write writes them, sorted by name.
//
// Names with other characters are dropped as nginx drops them by default
// (ignore_invalid_headers on, underscores_in_headers off): CGI-style
// frameworks map "-", "_" and "." to the same variable, so X_Forwarded_For
// or X.Forwarded.For would reach the pod as HTTP_X_FORWARDED_FOR next to
// the gateway's own X-Forwarded-For.
func podRequest(r *http.Request, uri string) []byte {
	set := forwardedFields(r)
	const head = "GET  HTTP/1.1\r\nHost: \r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	buf := make([]byte, 0, len(head)+len(uri)+len(r.Host)+headerSize(r.Header, set[:]))
	buf = append(buf, "GET "...)
	buf = append(buf, uri...)
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	buf = append(buf, r.Host...)
	buf = append(buf, "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"...)
	buf = appendHeader(buf, r.Header, podRequestDropped, true, set[:])
	return append(buf, "\r\n"...)
}

// forwardedFields are the X-Forwarded-For, -Host and -Proto fields the
// gateway sets from what it saw of r's connection, in place of the
// client's.
func forwardedFields(r *http.Request) [3]field {
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	return [...]field{{"X-Forwarded-For", clientIP}, {"X-Forwarded-Host", r.Host}, {"X-Forwarded-Proto", proto}}
}

// podRequestDropped are the client's fields that never reach the pod
// besides hop-by-hop ones: Forwarded and X-Real-Ip, which the client could
// forge, and the X-Forwarded fields, which the gateway sets.
var podRequestDropped = []string{"Forwarded", "X-Real-Ip", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// field is a header field that the gateway sets.
type field struct{ name, value string }

// appendHeader appends h's fields in wire format, as http.Header.Write
// writes them (sorted by name, each value with CR and LF turned into
// spaces and trimmed, names that are not valid tokens left out), without
// the hop-by-hop fields, the fields that Connection names, the names in
// drop and, with plainNamesOnly, every name that is not plainName; the
// fields in set are written instead, in their sorted place. Every name in
// set must be in drop.
func appendHeader(buf []byte, h http.Header, drop []string, plainNamesOnly bool, set []field) []byte {
	var namedBuf [8]string
	named := connectionNames(namedBuf[:0], h["Connection"])
	var keysBuf [32]string
	keys := keysBuf[:0]
	for k := range h {
		if plainNamesOnly && !plainName(k) {
			continue
		}
		if !slices.Contains(hopByHop, k) && !slices.Contains(drop, k) && !slices.Contains(named, k) {
			keys = append(keys, k)
		}
	}
	for _, f := range set {
		keys = append(keys, f.name)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		if i := slices.IndexFunc(set, func(f field) bool { return f.name == k }); i >= 0 {
			buf = appendField(buf, k, set[i].value)
			continue
		}
		for _, v := range h[k] {
			buf = appendField(buf, k, v)
		}
	}
	return buf
}

// connectionNames appends the canonical names that Connection values
// list, as removeHopByHop finds them.
func connectionNames(dst, values []string) []string {
	for _, v := range values {
		for v != "" {
			var name string
			name, v, _ = strings.Cut(v, ",")
			if name = textproto.TrimString(name); name != "" {
				dst = append(dst, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	return dst
}

// newlineToSpace is what http.Header.Write does to CR and LF in values.
var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func appendField(buf []byte, name, value string) []byte {
	if strings.ContainsAny(value, "\r\n") {
		value = newlineToSpace.Replace(value)
	}
	buf = append(buf, name...)
	buf = append(buf, ": "...)
	buf = append(buf, textproto.TrimString(value)...)
	return append(buf, "\r\n"...)
}

// headerSize bounds what appendHeader writes for h and set.
func headerSize(h http.Header, set []field) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	for _, f := range set {
		n += len(f.name) + len(f.value) + 4
	}
	return n
}

// errBadUpgrade: the pod answered 101 without a valid websocket upgrade.
var errBadUpgrade = errors.New("pod answered 101 without a valid websocket upgrade")

// checkUpgradeResponse verifies that a 101 answer is a websocket upgrade
// for this request: Upgrade is websocket, Connection lists upgrade, the
// accept key matches, and a subprotocol, if any, is one the client offered.
func checkUpgradeResponse(resp *http.Response, r *http.Request) error {
	if !httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade") {
		return fmt.Errorf("%w: Connection does not list upgrade", errBadUpgrade)
	}
	if up := resp.Header.Values("Upgrade"); len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket") {
		return fmt.Errorf("%w: Upgrade is %q", errBadUpgrade, up)
	}
	// Headers are looked up by their canonical names, as Get and Values
	// would, without canonicalizing each time.
	if got, want := firstValue(resp.Header["Sec-Websocket-Accept"]), acceptKey(strings.TrimSpace(firstValue(r.Header["Sec-Websocket-Key"]))); got != want {
		return fmt.Errorf("%w: wrong Sec-WebSocket-Accept", errBadUpgrade)
	}
	if p := resp.Header["Sec-Websocket-Protocol"]; len(p) > 0 {
		if len(p) > 1 || !httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Protocol"], strings.TrimSpace(p[0])) {
			return fmt.Errorf("%w: subprotocol %q was not offered", errBadUpgrade, p)
		}
	}
	return nil
}

// firstValue is what http.Header.Get returns for a field with values vs.
func firstValue(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// upgradeHeader is what the client gets with a 101: the pod's headers
// without hop-by-hop ones, plus the upgrade itself.
func upgradeHeader(resp *http.Response) []byte {
	const head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	buf := make([]byte, 0, len(head)+headerSize(resp.Header, nil)+2)
	buf = append(buf, head...)
	buf = appendHeader(buf, resp.Header, nil, false, nil)
	return append(buf, "\r\n"...)
}

// dialStatus maps a failed dial or handshake with the pod to the client's
// status: 504 when the pod did not answer in time, 502 otherwise.
func dialStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// budgetReader fails reads once more than n bytes were read; it bounds
// the pod's handshake answer. n < 0 lifts the bound.
type budgetReader struct {
	r io.Reader
	n int
}

var errAnswerTooLarge = errors.New("pod's handshake answer is too large")

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n < 0 {
		return b.r.Read(p)
	}
	if b.n == 0 {
		return 0, errAnswerTooLarge
	}
	if len(p) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= n
	return n, err
}

// errBadStatus: the pod's status code is not an HTTP status (100-599).
var errBadStatus = errors.New("pod answered with a status code outside 100-599")

// maxInterim bounds the interim (1xx) answers skipped before the final one.
const maxInterim = 5

// podReader buffers the pod's answer to the handshake, within a budget.
// They are pooled: each handshake needs one only until its tunnel opens
// or its answer is relayed.
type podReader struct {
	budget budgetReader
	*bufio.Reader
}

var podReaders = sync.Pool{New: func() any {
	p := &podReader{}
	p.Reader = bufio.NewReaderSize(&p.budget, 4096)
	return p
}}

// release returns p to the pool. Nothing read through p, such as the body
// of a response, may be used afterwards.
func (p *podReader) release() {
	p.budget = budgetReader{}
	podReaders.Put(p)
}

// readPodResponse reads the pod's answer to the handshake within the
// deadline already set on conn, reading at most maxBytes of head. Interim
// answers (100 Continue, 103 Early Hints) are skipped: relaying one would
// make the client's final answer a 200 that the pod never sent. A status
// outside 100-599 is an error (and would make the relay panic). The
// caller releases the podReader, which holds what the pod sent after the
// head, and lifts its budget to read a body.
func readPodResponse(conn io.Reader, r *http.Request, maxBytes int) (*http.Response, *podReader, error) {
	p := podReaders.Get().(*podReader)
	p.budget = budgetReader{r: conn, n: maxBytes}
	p.Reset(&p.budget)
	for range maxInterim + 1 {
		resp, err := http.ReadResponse(p.Reader, r)
		if err != nil {
			p.release()
			return nil, nil, err
		}
		switch code := resp.StatusCode; {
		case code < 100 || code > 599:
			p.release()
			return nil, nil, fmt.Errorf("%w: %d", errBadStatus, code)
		case code >= 200 || code == http.StatusSwitchingProtocols:
			return resp, p, nil
		}
	}
	p.release()
	return nil, nil, fmt.Errorf("pod sent more than %d interim answers", maxInterim)
}

// plainName reports whether a header name has only ASCII letters, digits
// and "-": the names nginx passes on by default, and the only ones that
// CGI-style frameworks cannot confuse with another.
func plainName[T string | []byte](name T) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return len(name) > 0
}
