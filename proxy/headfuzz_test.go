//go:build linux

package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pipeListener hands the connections sent on it to an http.Server.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// FuzzRequestHeadAsNetHTTP holds the event loops' reading of a request
// head (headEnd to frame it, parseRequestHead to parse it under net/http's
// server rules) to what net/http's server does with the same bytes: both
// refuse it with the same status, or both hand the same request on.
func FuzzRequestHeadAsNetHTTP(f *testing.F) {
	for _, h := range []string{
		wsHead("/rooms/127.0.0.2"),
		strings.ReplaceAll(wsHead("/rooms/127.0.0.2"), "\r\n", "\n"),
		wsRequest("GET /rooms/127.0.0.2 HTTP/1.0"),
		wsRequest("GET /x HTTP/0.9"),
		"PRI * HTTP/2.0\r\n\r\n",
		wsHead("/x", "-Host"),
		wsHead("/x", "+Host: b"),
		wsHead("/x", "Host: a b"),
		wsHead("/x", "X-A : b"),
		wsHead("/x", "X-A: b\x00c"),
		wsHead("/x", "X-A: b\r\n c"),
		wsHead("/x", "Expect: fly"),
		wsHead("/x", "Expect: 100-continue"),
		wsHead("/x", "Transfer-Encoding: gzip"),
		wsHead("/x", "Transfer-Encoding: chunked"),
		wsHead("/x", "Content-Length: 3", "+Content-Length: 4"),
		wsRequest("GET http://a/x HTTP/1.1"),
		wsRequest("GET * HTTP/1.1"),
		wsRequest("get /x HTTP/1.1"),
		wsRequest("GET  /x HTTP/1.1"),
		"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(h))
	}
	reached := make(chan *http.Request, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached <- r
			w.WriteHeader(299)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		MaxHeaderBytes:    16 << 10,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// As the gateway's server: "OPTIONS *" goes to the handler.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     log.New(io.Discard, "", 0),
	}
	// One request a connection, as the gateway: net/http then answers at
	// once, without reading a body first.
	srv.SetKeepAlivesEnabled(false)
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	go func() { _ = srv.Serve(l) }()
	f.Cleanup(func() { _ = srv.Close() })

	f.Fuzz(func(t *testing.T, head []byte) {
		// Heads that the loops would read whole: framed by headEnd, well
		// inside the size limit.
		if len(head) > 8<<10 || headEnd(head, 0) != len(head) {
			return
		}
		r, answer := parseRequestHead(head)

		client, server := net.Pipe()
		defer client.Close()
		_ = client.SetDeadline(time.Now().Add(5 * time.Second))
		l.conns <- server
		go func() { _, _ = client.Write(head) }()
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			// net/http hung up without an answer: only for reads that
			// fail, which a whole head does not.
			t.Fatalf("net/http did not answer %q: %v", head, err)
		}
		_ = resp.Body.Close()
		var std *http.Request
		select {
		case std = <-reached:
		default:
		}
		if resp.StatusCode == 299 {
			if answer != nil {
				t.Fatalf("%q: net/http took the request, the loops answer %d %s", head, answer.status, answer.text)
			}
			if r.Method != std.Method || r.RequestURI != std.RequestURI || r.Proto != std.Proto || r.Host != std.Host ||
				r.ContentLength != std.ContentLength || !reflect.DeepEqual(r.TransferEncoding, std.TransferEncoding) ||
				!reflect.DeepEqual(r.Header, std.Header) {
				t.Fatalf("%q: the loops read %s %q %s Host %q %v, net/http %s %q %s Host %q %v",
					head, r.Method, r.RequestURI, r.Proto, r.Host, r.Header, std.Method, std.RequestURI, std.Proto, std.Host, std.Header)
			}
			return
		}
		if answer == nil {
			t.Fatalf("%q: net/http answered %d, the loops took the request", head, resp.StatusCode)
		}
		line, _, _ := strings.Cut(string(answer.head()), "\r\n")
		if got := strings.Fields(line); len(got) < 2 || got[1] != strconv.Itoa(resp.StatusCode) {
			t.Fatalf("%q: net/http answered %d, the loops %q", head, resp.StatusCode, line)
		}
	})
}
