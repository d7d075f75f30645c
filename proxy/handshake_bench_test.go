package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

// BenchmarkNewConnection opens a websocket through the gateway to an echo
// pod and closes it: the handshake path end to end. Its allocations count
// the client's and the pod's as well as the gateway's.
func BenchmarkNewConnection(b *testing.B) {
	pod, err := echopod.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pod.Close()
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{
		testRoute("r", "/", routing.Backend{Pod: "p", Addr: netip.MustParseAddrPort(pod.Addr)}),
	}))
	srv := New(tables, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx, 0)
	}()

	head := []byte(handshake("/127.0.0.1/x?y=1"))
	end := []byte("\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(head); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.Contains(buf[:n], end) {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
		if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
			b.Fatalf("answer %q", buf[:n])
		}
		_ = c.Close()
	}
}

// BenchmarkHandshakeHeads writes the pod's request and the client's 101
// for a browser's handshake.
func BenchmarkHandshakeHeads(b *testing.B) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wsHead("/rooms/127.0.0.2/x?y=1",
		"Connection: keep-alive, Upgrade",
		"+User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"+Accept: */*", "+Accept-Language: en-US,en;q=0.5", "+Accept-Encoding: gzip, deflate, br",
		"+Origin: https://app.example.com", "+Sec-WebSocket-Extensions: permessage-deflate",
		"+Cookie: session=0123456789abcdef", "+Pragma: no-cache", "+Cache-Control: no-cache"))))
	if err != nil {
		b.Fatal(err)
	}
	r.RemoteAddr = "192.0.2.1:1234"
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nDate: Fri, 27 Nov 2026 11:33:51 GMT\r\n\r\n")), r)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	b.ReportAllocs()
	for b.Loop() {
		_ = podRequest(r, "/x?y=1")
		_ = upgradeHeader(resp)
	}
}
