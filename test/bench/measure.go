package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// openMany opens n websockets through inst (over TLS when useTLS), spread
// over the pods, with up to 32 handshakes at a time.
func openMany(ctx context.Context, inst *instance, pods, n int, useTLS bool) ([]*wsConn, error) {
	conns := make([]*wsConn, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(32, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				addr, path := inst.dial(i%pods, useTLS)
				c, err := dialWS(ctx, addr, path, "", useTLS)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					cancel()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

func closeAll(conns []*wsConn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// latencies is a set of round-trip times; p needs it sorted.
type latencies []time.Duration

func (l latencies) p(pct float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(float64(len(l))*pct/100))]
}

type latencyResult struct {
	all latencies
	cpu float64 // CPU seconds of the peer's processes
	dur time.Duration
}

// latencyRow opens conns connections; each sends a 32-byte message every
// interval, at its own phase, waits for the echo and records the round
// trip, for duration.
func latencyRow(ctx context.Context, inst *instance, pods, conns int, interval, duration time.Duration) (latencyResult, error) {
	cs, err := openMany(ctx, inst, pods, conns, false)
	if err != nil {
		return latencyResult{}, err
	}
	defer closeAll(cs)
	return latencyOver(ctx, inst, cs, interval, duration)
}

// latencyOver has each of the open websockets cs send a 32-byte message
// every interval, at its own phase, wait for the echo and record the
// round trip, for duration; the CPU is inst's over that time.
func latencyOver(ctx context.Context, inst *instance, cs []*wsConn, interval, duration time.Duration) (latencyResult, error) {
	cpu0, err := procCPU(inst.pids())
	if err != nil {
		return latencyResult{}, err
	}
	start := time.Now().Add(100 * time.Millisecond)
	end := start.Add(duration)
	var (
		mu    sync.Mutex
		all   latencies
		wg    sync.WaitGroup
		errMu sync.Mutex
		errs  []error
	)
	for i, c := range cs {
		wg.Go(func() {
			_ = c.SetDeadline(end.Add(10 * time.Second))
			// The frame is written as is: its payload is updated in place.
			frame := binaryFrame(make([]byte, 32))
			payload := frame[len(frame)-32:]
			binary.BigEndian.PutUint64(payload, uint64(i))
			buf := make([]byte, 64)
			own := make(latencies, 0, int(duration/interval)+1)
			next := start.Add(interval * time.Duration(i) / time.Duration(len(cs)))
			for seq := uint64(0); ; seq++ {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				if time.Now().After(end) || ctx.Err() != nil {
					break
				}
				binary.BigEndian.PutUint64(payload[8:], seq)
				t0 := time.Now()
				if err := c.echo(frame, payload, buf); err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("connection %d: %w", i, err))
					errMu.Unlock()
					return
				}
				own = append(own, time.Since(t0))
				next = next.Add(interval)
				if late := time.Since(next); late > interval {
					// Far behind (a stall): start again from now rather
					// than send a burst.
					next = time.Now()
				}
			}
			mu.Lock()
			all = append(all, own...)
			mu.Unlock()
		})
	}
	wg.Wait()
	dur := time.Since(start)
	if len(errs) > 0 {
		return latencyResult{}, fmt.Errorf("%d of %d connections failed, first: %w", len(errs), len(cs), errs[0])
	}
	cpu1, err := procCPU(inst.pids())
	if err != nil {
		return latencyResult{}, err
	}
	return latencyResult{all: all, cpu: cpu1 - cpu0, dur: dur}, nil
}

type throughputResult struct {
	bytes int64 // payload bytes that went through the peer, both ways
	dur   time.Duration
	cpu   float64
}

func (r throughputResult) mbps() float64 { return float64(r.bytes) / 1e6 / r.dur.Seconds() }

// cpuPerGB is CPU seconds per 10^9 payload bytes moved.
func (r throughputResult) cpuPerGB() float64 { return r.cpu / (float64(r.bytes) / 1e9) }

// throughputRow sends size-byte messages over conns connections, each
// keeping window messages in flight, for duration; every echoed message
// counts 2*size bytes moved.
func throughputRow(ctx context.Context, inst *instance, pods, conns, window, size int, duration time.Duration) (throughputResult, error) {
	cs, err := openMany(ctx, inst, pods, conns, false)
	if err != nil {
		return throughputResult{}, err
	}
	defer closeAll(cs)
	frame := binaryFrame(make([]byte, size))
	cpu0, err := procCPU(inst.pids())
	if err != nil {
		return throughputResult{}, err
	}
	start := time.Now()
	end := start.Add(duration)
	var (
		moved atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		errs  []error
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	for _, c := range cs {
		_ = c.SetDeadline(end.Add(15 * time.Second))
		// A token per message sent; the reader takes one per echo it
		// reads. The buffer keeps up to window messages in flight.
		pending := make(chan struct{}, window-1)
		wg.Go(func() {
			defer close(pending)
			for time.Now().Before(end) && ctx.Err() == nil {
				pending <- struct{}{}
				if _, err := c.Write(frame); err != nil {
					fail(err)
					_ = c.Close() // wakes the reader
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, size)
			for range pending {
				msg, err := c.readMessage(buf)
				if err == nil && len(msg) != size {
					err = fmt.Errorf("echo of %d bytes, sent %d", len(msg), size)
				}
				if err != nil {
					fail(err)
					// Stop the writer, and let it end.
					_ = c.Close()
					for range pending {
					}
					return
				}
				moved.Add(2 * int64(size))
			}
		})
	}
	wg.Wait()
	dur := time.Since(start)
	if len(errs) > 0 {
		return throughputResult{}, fmt.Errorf("%d failures, first: %w", len(errs), errs[0])
	}
	cpu1, err := procCPU(inst.pids())
	if err != nil {
		return throughputResult{}, err
	}
	return throughputResult{bytes: moved.Load(), dur: dur, cpu: cpu1 - cpu0}, nil
}

type rateResult struct {
	count, failed int64
	dur           time.Duration
	cpu           float64
	firstErr      error
	// hs tallies the TLS connections: groups negotiated, resumed.
	hs handshakeTally
}

func (r rateResult) perSecond() float64 { return float64(r.count) / r.dur.Seconds() }

// cpuPerConn is the peer's CPU time per connection, in seconds.
func (r rateResult) cpuPerConn() float64 { return r.cpu / float64(r.count) }

// connRateRow runs concurrency loops for duration, each opening a
// connection (TCP, TLS when useTLS, handshake, upgrade), echoing one
// 32-byte message and closing it. The handshakes go to the paths inst
// dials under the route prefix, each with the extra header lines hdr
// returns for it (none when hdr is nil).
func connRateRow(ctx context.Context, inst *instance, pods, concurrency int, duration time.Duration, useTLS bool, prefix string, hdr func() string) (rateResult, error) {
	payload := make([]byte, 32)
	frame := binaryFrame(payload)
	return rateLoops(ctx, inst, concurrency, duration, func() (rateConn, func()) {
		buf := make([]byte, 64)
		return func(ctx context.Context, k int) (*tls.ConnectionState, error) {
			addr, path := inst.dial(k%pods, useTLS)
			h := ""
			if hdr != nil {
				h = hdr()
			}
			c, err := dialWS(ctx, addr, prefix+path, h, useTLS)
			if err != nil {
				return nil, err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := c.echo(frame, payload, buf); err != nil {
				return nil, err
			}
			if tc, ok := c.Conn.(*tls.Conn); ok {
				st := tc.ConnectionState()
				return &st, nil
			}
			return nil, nil
		}, nil
	})
}

// rateConn makes the k-th connection of a new-connection row, bounded by
// ctx, and returns its TLS state (nil for plain connections).
type rateConn func(ctx context.Context, k int) (*tls.ConnectionState, error)

// rateLoops runs concurrency loops for duration, each with the rateConn
// (and the cleanup, maybe nil) that newLoop makes for it, connecting
// until the time is up, each connection within 10 s, and measures them:
// connections made and failed, the peer's CPU over the row, and the TLS
// states. More than 1 % failed is an error.
func rateLoops(ctx context.Context, inst *instance, concurrency int, duration time.Duration, newLoop func() (rateConn, func())) (rateResult, error) {
	cpu0, err := procCPU(inst.pids())
	if err != nil {
		return rateResult{}, err
	}
	start := time.Now()
	end := start.Add(duration)
	var (
		count, failed atomic.Int64
		errOnce       sync.Once
		firstErr      error
		wg            sync.WaitGroup
		mu            sync.Mutex
		hs            handshakeTally
	)
	for w := range concurrency {
		wg.Go(func() {
			conn, cleanup := newLoop()
			if cleanup != nil {
				defer cleanup()
			}
			var own handshakeTally
			defer func() {
				mu.Lock()
				hs.add(own)
				mu.Unlock()
			}()
			for k := w; time.Now().Before(end) && ctx.Err() == nil; k += concurrency {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				st, err := conn(cctx, k)
				cancel()
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				own.count(st)
				count.Add(1)
			}
		})
	}
	wg.Wait()
	dur := time.Since(start)
	cpu1, err := procCPU(inst.pids())
	if err != nil {
		return rateResult{}, err
	}
	r := rateResult{count: count.Load(), failed: failed.Load(), dur: dur, cpu: cpu1 - cpu0, firstErr: firstErr, hs: hs}
	if r.count == 0 || r.failed*100 > r.count+r.failed {
		return r, fmt.Errorf("%d of %d connections failed, first: %w", r.failed, r.count+r.failed, firstErr)
	}
	return r, nil
}

type idleResult struct {
	perTunnel float64 // bytes of RSS growth per tunnel
	rss       int64   // RSS with every tunnel open
	tunnels   int
}

// idleRow opens warmup tunnels (over TLS when useTLS), lets the peer
// settle, reads its RSS, opens n more, settles again and reads the RSS:
// the growth per tunnel over the n. The clients then check that a sample
// of tunnels still echo.
func idleRow(ctx context.Context, inst *instance, pods, warmup, n int, settle time.Duration, useTLS bool) (idleResult, error) {
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	add := func(count int) ([]*wsConn, error) {
		cs, err := openMany(ctx, inst, pods, count, useTLS)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			raw, err := c.idle()
			if err != nil {
				closeAll(cs)
				return nil, err
			}
			open = append(open, raw)
		}
		return cs, nil
	}
	if _, err := add(warmup); err != nil {
		return idleResult{}, err
	}
	sleep(ctx, settle)
	before, err := procRSS(inst.pids())
	if err != nil {
		return idleResult{}, err
	}
	cs, err := add(n)
	if err != nil {
		return idleResult{}, err
	}
	sleep(ctx, settle)
	after, err := procRSS(inst.pids())
	if err != nil {
		return idleResult{}, err
	}
	if ctx.Err() != nil {
		return idleResult{}, ctx.Err()
	}
	if inst.snapshot != nil {
		if err := inst.snapshot(); err != nil {
			return idleResult{}, err
		}
	}
	// The tunnels are real: a sample of them still echo.
	payload := []byte("still open")
	frame := binaryFrame(payload)
	buf := make([]byte, 64)
	for i := 0; i < len(cs); i += max(1, len(cs)/50) {
		_ = cs[i].SetDeadline(time.Now().Add(5 * time.Second))
		if err := cs[i].echo(frame, payload, buf); err != nil {
			return idleResult{}, fmt.Errorf("idle tunnel %d after the measure: %w", i, err)
		}
	}
	return idleResult{perTunnel: float64(after-before) / float64(n), rss: after, tunnels: warmup + n}, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
