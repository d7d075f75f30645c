// Package echopod is a websocket echo server that stands in for a pod in
// tests, benchmarks and the demo. It echoes every message, and answers the
// text message "request?" with the handshake request it received (path,
// query and headers) as JSON.
package echopod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Seen is what the server reports about a handshake it accepted.
type Seen struct {
	Path        string      `json:"path"`
	RawQuery    string      `json:"rawQuery"`
	Host        string      `json:"host"`
	Header      http.Header `json:"header"`
	Subprotocol string      `json:"subprotocol"`
}

// InfoRequest is the text message answered with Seen.
const InfoRequest = "request?"

// Server is a running echo server.
type Server struct {
	// Addr is the listening address, e.g. "127.0.0.2:41234".
	Addr string

	srv      *http.Server
	accepted atomic.Int64

	mu     sync.Mutex
	closed bool // Close has begun: no connection joins conns
	open   map[*websocket.Conn]struct{}
	conns  sync.WaitGroup
}

// Start listens on addr (use a loopback address, port 0 for any) and
// serves until Close.
func Start(addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Serve(l), nil
}

// Serve serves on l until Close.
func Serve(l net.Listener) *Server {
	s := &Server{Addr: l.Addr().String(), open: make(map[*websocket.Conn]struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(l) }()
	return s
}

// Accepted counts the websocket handshakes accepted so far.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Close stops the server and drops its open connections (no Close
// frame: as a pod that vanishes).
func (s *Server) Close() error {
	err := s.srv.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		_ = c.CloseNow()
	}
	s.mu.Unlock()
	s.conns.Wait()
	return err
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{"chat", "echo.v2"},
		// The gateway checks origins; the pod accepts what it forwards.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionContextTakeover,
	})
	if err != nil {
		return
	}
	s.accepted.Add(1)
	s.mu.Lock()
	if s.closed {
		// A handshake that raced Close: the pod is gone.
		s.mu.Unlock()
		_ = c.CloseNow()
		return
	}
	s.open[c] = struct{}{}
	s.conns.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		s.conns.Done()
	}()
	c.SetReadLimit(64 << 20)
	seen := Seen{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header, Subprotocol: c.Subprotocol()}
	ctx := context.Background()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				_ = c.Close(websocket.StatusNormalClosure, "")
			} else {
				_ = c.CloseNow()
			}
			return
		}
		if typ == websocket.MessageText && string(msg) == InfoRequest {
			msg, _ = json.Marshal(seen)
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			_ = c.CloseNow()
			return
		}
	}
}

// StartAll starts one server per address, all on the same port (a WsRoute
// names one port for all its pods), and returns the port and the servers
// in the order of ips. It retries with another port when one is taken on
// some address.
func StartAll(ips ...string) (uint16, []*Server, error) {
	var lastErr error
	for range 20 {
		first, err := Start(net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return 0, nil, err
		}
		port := netip.MustParseAddrPort(first.Addr).Port()
		servers := []*Server{first}
		for _, ip := range ips[1:] {
			s, err := Start(net.JoinHostPort(ip, strconv.Itoa(int(port))))
			if err != nil {
				// The port is taken on this address: try another one.
				lastErr = err
				break
			}
			servers = append(servers, s)
		}
		if len(servers) == len(ips) {
			return port, servers, nil
		}
		for _, s := range servers {
			_ = s.Close()
		}
	}
	return 0, nil, fmt.Errorf("no port free on all of %v: %w", ips, lastErr)
}
