package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// canaryIP is a loopback address that no test route ever allowlists. The
// hostile tests use it as the attacker's target: requests try every way to
// make the gateway connect to it.
const canaryIP = "127.0.0.250"

// canaryAddr is where the canary listens (canaryIP and a port chosen at
// start). Fake pods of the hostile tests listen on the same port on other
// addresses, so a gateway that took the address from the request and the
// port from the route would reach the canary.
var canaryAddr netip.AddrPort

// canary counts the connections that reached the canary listener.
var canary struct {
	hits atomic.Int64
	mu   sync.Mutex
	log  []string
}

// canaryHits is the number of connections the canary has accepted.
func canaryHits() int64 { return canary.hits.Load() }

// TestMain runs the package's tests with the canary listening, and fails
// the run if anything connected to it.
func TestMain(m *testing.M) {
	if pod := os.Getenv(h2ChildPod); pod != "" {
		serveH2Child(pod)
	}
	// The tests of websockets over HTTP/2 need http2xconnect=1 in
	// GODEBUG at start.
	xconnect.Rerun()
	l, err := net.Listen("tcp", net.JoinHostPort(canaryIP, "0"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "canary: cannot listen on %s: %v\n", canaryIP, err)
		os.Exit(2)
	}
	canaryAddr = netip.MustParseAddrPort(l.Addr().String())

	var conns sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			canary.hits.Add(1)
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				// Record what the intruder sent first, then hang up.
				_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				buf := make([]byte, 512)
				n, _ := c.Read(buf)
				canary.mu.Lock()
				canary.log = append(canary.log, fmt.Sprintf("from %s: %q", c.RemoteAddr(), buf[:n]))
				canary.mu.Unlock()
			}()
		}
	}()

	code := m.Run()

	_ = l.Close()
	<-acceptDone
	conns.Wait()
	if n := canary.hits.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "CANARY: %d connection(s) reached %s, which no route allowlists:\n", n, canaryAddr)
		for _, line := range canary.log {
			fmt.Fprintf(os.Stderr, "  %s\n", line)
		}
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
