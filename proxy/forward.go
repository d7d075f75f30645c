package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// podRequest writes the handshake request for the pod: the client's
// headers without hop-by-hop ones (and without Forwarded, which the client
// could forge), then X-Forwarded-For/-Proto/-Host, which the gateway
// overwrites rather than appends to, as the edge of the cluster.
func podRequest(r *http.Request, uri string) []byte {
	h := r.Header.Clone()
	removeHopByHop(h)
	h.Del("Forwarded")
	h.Del("X-Real-Ip")
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h.Set("X-Forwarded-For", clientIP)
	h.Set("X-Forwarded-Proto", proto)
	h.Set("X-Forwarded-Host", r.Host)

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", uri, r.Host)
	_ = h.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
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
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))); got != want {
		return fmt.Errorf("%w: wrong Sec-WebSocket-Accept", errBadUpgrade)
	}
	if p := resp.Header.Values("Sec-WebSocket-Protocol"); len(p) > 0 {
		if len(p) > 1 || !httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Protocol"], strings.TrimSpace(p[0])) {
			return fmt.Errorf("%w: subprotocol %q was not offered", errBadUpgrade, p)
		}
	}
	return nil
}

// upgradeHeader is what the client gets with a 101: the pod's headers
// without hop-by-hop ones, plus the upgrade itself.
func upgradeHeader(resp *http.Response) []byte {
	h := resp.Header.Clone()
	removeHopByHop(h)
	var buf bytes.Buffer
	buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	_ = h.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
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

// readPodResponse reads the pod's answer to the handshake within the
// deadline already set on conn, reading at most maxBytes of head. Interim
// answers (100 Continue, 103 Early Hints) are skipped: relaying one would
// make the client's final answer a 200 that the pod never sent. A status
// outside 100-599 is an error (and would make the relay panic).
func readPodResponse(conn net.Conn, r *http.Request, maxBytes int) (*http.Response, *bufio.Reader, *budgetReader, error) {
	budget := &budgetReader{r: conn, n: maxBytes}
	br := bufio.NewReaderSize(budget, 4096)
	for range maxInterim + 1 {
		resp, err := http.ReadResponse(br, r)
		if err != nil {
			return nil, nil, nil, err
		}
		switch code := resp.StatusCode; {
		case code < 100 || code > 599:
			return nil, nil, nil, fmt.Errorf("%w: %d", errBadStatus, code)
		case code >= 200 || code == http.StatusSwitchingProtocols:
			return resp, br, budget, nil
		}
	}
	return nil, nil, nil, fmt.Errorf("pod sent more than %d interim answers", maxInterim)
}
