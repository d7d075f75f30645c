package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
)

// The echo pods run in a child process of their own (-role=echo) so that
// their CPU time can be read apart from the client's: it is the "direct"
// baseline of CPU per GB. They listen on 127.0.0.11 and up, all on one
// port (the nginx recipe proxies to $1:PORT, one port for every pod).

// firstPodIP is the last byte of the first pod's address, 127.0.0.11.
const firstPodIP = 11

func podIP(i int) string { return "127.0.0." + strconv.Itoa(firstPodIP+i) }

// runEcho starts pods echo pods (internal/echopod) on one port, and two
// TLS echo listeners (the "direct" TLS baseline: a pod that terminates
// TLS itself), the first without session resumption, the second issuing
// session tickets, prints "echo <port> <tls address> <tickets address>"
// and serves until SIGTERM.
func runEcho(pods int, certFile, keyFile string) error {
	servers, port, err := startPods(pods)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	var addrs []string
	var tlsSrvs []*http.Server
	for _, tickets := range []bool{false, true} {
		l, err := net.Listen("tcp", podIP(0)+":0")
		if err != nil {
			return err
		}
		tlsSrv := &http.Server{
			Handler:           http.HandlerFunc(tlsEcho),
			ReadHeaderTimeout: 10 * time.Second,
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		}
		go func() {
			_ = tlsSrv.Serve(tls.NewListener(l, &tls.Config{
				Certificates:           []tls.Certificate{cert},
				MinVersion:             tls.VersionTLS12,
				NextProtos:             []string{"http/1.1"},
				SessionTicketsDisabled: !tickets,
			}))
		}()
		addrs = append(addrs, l.Addr().String())
		tlsSrvs = append(tlsSrvs, tlsSrv)
	}
	fmt.Printf("echo %d %s %s\n", port, addrs[0], addrs[1])

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	for _, s := range tlsSrvs {
		_ = s.Close()
	}
	for _, s := range servers {
		_ = s.Close()
	}
	return nil
}

// startPods starts the echo pods on one port shared by every address.
func startPods(pods int) ([]*echopod.Server, int, error) {
	var lastErr error
	for range 5 {
		first, err := echopod.Start(podIP(0) + ":0")
		if err != nil {
			return nil, 0, err
		}
		_, portText, _ := net.SplitHostPort(first.Addr)
		port, _ := strconv.Atoi(portText)
		servers := []*echopod.Server{first}
		for i := 1; i < pods && err == nil; i++ {
			var s *echopod.Server
			if s, err = echopod.Start(podIP(i) + ":" + portText); err == nil {
				servers = append(servers, s)
			}
		}
		if err == nil {
			return servers, port, nil
		}
		lastErr = err
		for _, s := range servers {
			_ = s.Close()
		}
	}
	return nil, 0, fmt.Errorf("no port free on all pod addresses: %w", lastErr)
}

// tlsEcho echoes every message, like echopod, behind the TLS listener.
func tlsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(64 << 20)
	ctx := context.Background()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// echoProcess is the running echo child.
type echoProcess struct {
	*child
	port    int
	tlsAddr string
	// ticketsAddr is the TLS listener that issues session tickets.
	ticketsAddr string
}

func startEcho(ctx context.Context, pods int, tc *tlsFiles) (*echoProcess, error) {
	ch, line, err := startChild(ctx, "echo", "-role=echo", "-pods="+strconv.Itoa(pods),
		"-tls-cert="+tc.cert, "-tls-key="+tc.key)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "echo" {
		ch.stop()
		return nil, fmt.Errorf("echo child said %q", line)
	}
	port, err := strconv.Atoi(f[1])
	if err != nil {
		ch.stop()
		return nil, fmt.Errorf("echo child said %q", line)
	}
	return &echoProcess{child: ch, port: port, tlsAddr: f[2], ticketsAddr: f[3]}, nil
}
