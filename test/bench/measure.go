package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// latencies is a sorted set of round-trip times.
type latencies []time.Duration

func (l latencies) p(pct int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, len(l)*pct/100)].Round(time.Microsecond)
}

// roundTrips measures message round trips over conns connections spread
// over the backends, first directly, then through the gateway.
func roundTrips(ctx context.Context, backends []string, gateway string, conns, messages int) (direct, via latencies, err error) {
	urls := func(throughGateway bool) []string {
		var out []string
		for i := range conns {
			b := backends[i%len(backends)]
			if throughGateway {
				ap := netip.MustParseAddrPort(b)
				out = append(out, "ws://"+gateway+"/"+ap.Addr().String()+"/")
			} else {
				out = append(out, "ws://"+b+"/")
			}
		}
		return out
	}
	if direct, err = echoAll(ctx, urls(false), messages); err != nil {
		return nil, nil, err
	}
	if via, err = echoAll(ctx, urls(true), messages); err != nil {
		return nil, nil, err
	}
	return direct, via, nil
}

// echoAll runs one sequential echo loop per URL, concurrently, and returns
// every round trip, sorted.
func echoAll(ctx context.Context, urls []string, messages int) (latencies, error) {
	var (
		mu   sync.Mutex
		all  latencies
		wg   sync.WaitGroup
		errs = make(chan error, len(urls))
	)
	msg := bytes.Repeat([]byte("x"), 32)
	for _, u := range urls {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, u, nil)
			if err != nil {
				errs <- fmt.Errorf("dial %s: %w", u, err)
				return
			}
			defer func() { _ = c.CloseNow() }()
			own := make(latencies, 0, messages)
			for range messages {
				start := time.Now()
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					errs <- err
					return
				}
				if _, _, err := c.Read(ctx); err != nil {
					errs <- err
					return
				}
				own = append(own, time.Since(start))
			}
			_ = c.Close(websocket.StatusNormalClosure, "")
			mu.Lock()
			all = append(all, own...)
			mu.Unlock()
		}(u)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	slices.Sort(all)
	return all, nil
}

// idleMemory opens n idle tunnels through the gateway and returns the
// gateway's RSS growth per tunnel, in bytes.
func idleMemory(ctx context.Context, gw *gatewayProcess, backends []string, n int) (float64, error) {
	const warmup = 200
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	dial := func(count int) error {
		for i := range count {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ap := netip.MustParseAddrPort(backends[(len(open)+i)%len(backends)])
			c, err := rawUpgrade(gw.addr, "/"+ap.Addr().String()+"/")
			if err != nil {
				return fmt.Errorf("tunnel %d: %w", len(open)+i, err)
			}
			open = append(open, c)
		}
		return nil
	}
	if err := dial(warmup); err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	before, err := rss(gw.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	if err := dial(n); err != nil {
		return 0, err
	}
	time.Sleep(3 * time.Second)
	after, err := rss(gw.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// rawUpgrade opens a websocket with a hand-written handshake and returns
// the raw connection, holding no client-side buffers.
func rawUpgrade(addr, path string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		_ = c.Close()
		return nil, err
	}
	var head []byte
	buf := make([]byte, 512)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("read answer: %w", err)
		}
		head = append(head, buf[:n]...)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		_ = c.Close()
		return nil, fmt.Errorf("answer %q", head)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
