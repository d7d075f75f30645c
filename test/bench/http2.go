package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// Websockets over HTTP/2 (RFC 8441): a client that holds an HTTP/2
// connection to the gateway opens each websocket as a stream of it, an
// extended CONNECT with :protocol websocket answered 200, then carries
// the websocket's frames (its own masked) as the stream's data. These
// rows run on wsgate alone, with proxy.Options.HTTP2 on; their
// references are HTTP/1.1 TLS tunnels of the same run.

// h2MaxStreams is the gateway's bound on concurrent streams per HTTP/2
// connection (proxy.Server's MaxConcurrentStreams): the rows fill each
// connection up to it, and no further.
const h2MaxStreams = 250

// h2Transport makes the clients' HTTP/2 connections, one per TLS
// connection the rows dial themselves (golang.org/x/net/http2's client:
// net/http's refuses the :protocol pseudo-header).
var h2Transport = &http2.Transport{}

// dialH2 opens an HTTP/2 connection to addr: TCP from the next client
// address, a full TLS handshake offering h2 only, the client's preface
// and settings.
func dialH2(ctx context.Context, addr string) (*http2.ClientConn, error) {
	cfg := clientTLS()
	cfg.NextProtos = []string{"h2"}
	c, err := (&tls.Dialer{NetDialer: clientDialer(), Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		_ = c.Close()
		return nil, fmt.Errorf("ALPN %q, want h2", p)
	}
	cc, err := h2Transport.NewClientConn(c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return cc, nil
}

// dialH2Many opens n HTTP/2 connections to addr, up to 32 at a time.
func dialH2Many(ctx context.Context, addr string, n int) ([]*http2.ClientConn, error) {
	ccs := make([]*http2.ClientConn, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(32, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				cc, err := dialH2(ctx, addr)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("HTTP/2 connection %d: %w", i, err) })
					return
				}
				ccs[i] = cc
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		closeH2(ccs)
		return nil, firstErr
	}
	return ccs, nil
}

func closeH2(ccs []*http2.ClientConn) {
	for _, cc := range ccs {
		if cc != nil {
			_ = cc.Close()
		}
	}
}

// openStream opens a websocket on path as a new stream of cc: an
// extended CONNECT, which must be answered 200 within 10 s.
func openStream(cc *http2.ClientConn, path string) (*wsConn, error) {
	// The stream lives until Close: its request's context ends with it.
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+benchHost+path, pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	timer := time.AfterFunc(10*time.Second, cancel)
	resp, err := cc.RoundTrip(req)
	timer.Stop()
	if err != nil {
		cancel()
		_ = pw.Close()
		return nil, fmt.Errorf("extended CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		cancel()
		_ = pw.Close()
		return nil, fmt.Errorf("extended CONNECT answered %s", resp.Status)
	}
	s := &h2Stream{body: resp.Body, out: pw, cancel: cancel}
	return &wsConn{Conn: s, br: bufio.NewReaderSize(s, 512)}, nil
}

// h2Stream is a client's websocket stream as a connection: reads from
// the answer's body, writes into the request's body. A deadline, read
// or write alike, closes the stream when it passes.
type h2Stream struct {
	body   io.ReadCloser
	out    *io.PipeWriter
	cancel context.CancelFunc
	mu     sync.Mutex
	timer  *time.Timer
	once   sync.Once
}

func (s *h2Stream) Read(p []byte) (int, error)  { return s.body.Read(p) }
func (s *h2Stream) Write(p []byte) (int, error) { return s.out.Write(p) }

// Close ends the stream: END_STREAM on the request's side, and a reset
// of the answer's side, which the gateway has not ended.
func (s *h2Stream) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
		_ = s.out.Close()
		_ = s.body.Close()
		s.cancel()
	})
	return nil
}

func (s *h2Stream) LocalAddr() net.Addr  { return h2StreamAddr{} }
func (s *h2Stream) RemoteAddr() net.Addr { return h2StreamAddr{} }

func (s *h2Stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), func() { _ = s.Close() })
	}
	return nil
}

func (s *h2Stream) SetReadDeadline(t time.Time) error  { return s.SetDeadline(t) }
func (s *h2Stream) SetWriteDeadline(t time.Time) error { return s.SetDeadline(t) }

// h2StreamAddr is the address of a stream.
type h2StreamAddr struct{}

func (h2StreamAddr) Network() string { return "h2" }
func (h2StreamAddr) String() string  { return "h2 stream" }

// streamJob is one stream to open: on connection conn, to pod.
type streamJob struct{ conn, pod int }

// openStreams opens a stream for each job, up to 32 at a time, through
// inst's TLS listener.
func openStreams(ctx context.Context, inst *instance, ccs []*http2.ClientConn, jobs []streamJob) ([]*wsConn, error) {
	out := make([]*wsConn, len(jobs))
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(32, len(jobs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) || ctx.Err() != nil {
					return
				}
				_, path := inst.dial(jobs[i].pod, true)
				s, err := openStream(ccs[jobs[i].conn], path)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("stream %d: %w", i, err) })
					cancel()
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		closeAll(out)
		return nil, firstErr
	}
	return out, nil
}

// h2Conns is how many HTTP/2 connections carry n streams: as few as
// the gateway's bound on streams per connection allows.
func h2Conns(n int) int { return (n + h2MaxStreams - 1) / h2MaxStreams }

// spread is n streams over conns connections, evenly (the first ones
// get one more), to the pods in turn.
func spread(n, conns, pods int) []streamJob {
	var jobs []streamJob
	k := 0
	for c := range conns {
		for range evenShare(n, conns, c) {
			jobs = append(jobs, streamJob{conn: c, pod: k % pods})
			k++
		}
	}
	return jobs
}

// evenShare is connection c's share of n streams over conns.
func evenShare(n, conns, c int) int {
	s := n / conns
	if c < n%conns {
		s++
	}
	return s
}

// h2ConnsText is "n HTTP/2 connections".
func h2ConnsText(n int) string {
	if n == 1 {
		return "1 HTTP/2 connection"
	}
	return benchdoc.Thousands(float64(n)) + " HTTP/2 connections"
}

// The idle row --------------------------------------------------------------

type idleH2Result struct {
	perStream float64 // bytes of RSS growth per stream added
	rss       int64   // RSS with every stream open
	conns     int     // HTTP/2 connections
	warm      int     // streams open at the first reading
	added     int     // streams opened between the readings
}

// idleH2Row opens h2Conns(total) HTTP/2 connections and, on each, an
// even share of warmup streams (at least one); lets the gateway settle
// and reads its RSS; opens the rest of total, an even share on each
// connection (so every stream added is beyond its connection's first),
// settles again and reads the RSS: the growth per stream added. A
// sample of streams then echo.
func idleH2Row(ctx context.Context, inst *instance, pods, warmup, total int, settle time.Duration) (idleH2Result, error) {
	addr, _ := inst.dial(0, true)
	nc := h2Conns(total)
	ccs, err := dialH2Many(ctx, addr, nc)
	if err != nil {
		return idleH2Result{}, err
	}
	defer closeH2(ccs)
	var open []*wsConn
	defer func() { closeAll(open) }()
	warmPer := func(c int) int { return min(max(1, evenShare(warmup, nc, c)), evenShare(total, nc, c)) }
	var warmJobs []streamJob
	k := 0
	for c := range nc {
		for range warmPer(c) {
			warmJobs = append(warmJobs, streamJob{conn: c, pod: k % pods})
			k++
		}
	}
	cs, err := openStreams(ctx, inst, ccs, warmJobs)
	if err != nil {
		return idleH2Result{}, err
	}
	open = append(open, cs...)
	sleep(ctx, settle)
	before, err := procRSS(inst.pids())
	if err != nil {
		return idleH2Result{}, err
	}
	var more []streamJob
	for c := range nc {
		for range evenShare(total, nc, c) - warmPer(c) {
			more = append(more, streamJob{conn: c, pod: k % pods})
			k++
		}
	}
	if len(more) == 0 {
		return idleH2Result{}, errors.New("no streams to add: -idle-warmup leaves none")
	}
	cs, err = openStreams(ctx, inst, ccs, more)
	if err != nil {
		return idleH2Result{}, err
	}
	open = append(open, cs...)
	sleep(ctx, settle)
	after, err := procRSS(inst.pids())
	if err != nil {
		return idleH2Result{}, err
	}
	if ctx.Err() != nil {
		return idleH2Result{}, ctx.Err()
	}
	if inst.snapshot != nil {
		if err := inst.snapshot(); err != nil {
			return idleH2Result{}, err
		}
	}
	// The streams are real: a sample of them still echo.
	payload := []byte("still open")
	frame := binaryFrame(payload)
	buf := make([]byte, 64)
	for i := 0; i < len(cs); i += max(1, len(cs)/50) {
		_ = cs[i].SetDeadline(time.Now().Add(5 * time.Second))
		if err := cs[i].echo(frame, payload, buf); err != nil {
			return idleH2Result{}, fmt.Errorf("idle stream %d after the measure: %w", i, err)
		}
		_ = cs[i].SetDeadline(time.Time{})
	}
	return idleH2Result{perStream: float64(after-before) / float64(len(more)), rss: after, conns: nc, warm: len(warmJobs), added: len(more)}, nil
}

func idleH2RowDef(cfg *config) row {
	return row{
		name:       "h2 websockets, idle",
		key:        "idleh2",
		metrics:    []string{"idleh2", "idleh2rss", "idleh2conns", "idleh2warm", "idleh2added"},
		rounds:     1,
		heap:       true,
		wsgateOnly: true,
		http2:      true,
		run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
			return idleH2Row(ctx, inst, cfg.pods, cfg.idleWarmup, cfg.idleTunnels, cfg.settle)
		},
		values: func(part any) map[string]float64 {
			r := part.(idleH2Result)
			return map[string]float64{"idleh2": r.perStream / 1024, "idleh2rss": float64(r.rss) / (1 << 20),
				"idleh2conns": float64(r.conns), "idleh2warm": float64(r.warm), "idleh2added": float64(r.added)}
		},
		line: func(v map[string]float64, _ []any) string {
			return fmt.Sprintf("%.2f KiB per stream beyond the first, RSS %.0f MiB at %d streams on %.0f HTTP/2 connections (%.0f open at the first reading, %.0f added)",
				v["idleh2"], v["idleh2rss"], cfg.idleTunnels, v["idleh2conns"], v["idleh2warm"], v["idleh2added"])
		},
	}
}

// The round-trip row ----------------------------------------------------------

// rtH2Pair is one round of the round-trip row: the same load over HTTP/2
// streams and over HTTP/1.1 TLS tunnels, on the same gateway.
type rtH2Pair struct{ h2, h1 latencyResult }

// rtH2RowDef is the round-trip row over HTTP/2: each round, -latency-conns
// websockets each send a 32-byte message every -latency-interval for the
// round's share of -latency-duration, once as streams of
// h2Conns(-latency-conns) HTTP/2 connections and once as as many
// HTTP/1.1 TLS tunnels, the order alternating by round.
func rtH2RowDef(cfg *config) row {
	d := cfg.latencyDuration / time.Duration(cfg.rounds)
	ratio := func(r rtH2Pair, pct float64) float64 {
		a, b := slices.Clone(r.h2.all), slices.Clone(r.h1.all)
		slices.Sort(a)
		slices.Sort(b)
		return float64(a.p(pct)) / float64(b.p(pct))
	}
	return row{
		name:       "h2 websockets, round trips",
		key:        "rth2",
		metrics:    []string{"rth250", "rth299", "rth2tls50", "rth2tls99", "rth2cpu", "rth2tlscpu", "rth2ratio50", "rth2ratio99", "rth2ratio99min", "rth2ratio99max", "rth2n", "rth2tlsn"},
		rounds:     cfg.rounds,
		wsgateOnly: true,
		http2:      true,
		run: func(ctx context.Context, _ *env, inst *instance, round int) (any, error) {
			var pr rtH2Pair
			halves := []func() error{
				func() error {
					addr, _ := inst.dial(0, true)
					nc := h2Conns(cfg.latencyConns)
					ccs, err := dialH2Many(ctx, addr, nc)
					if err != nil {
						return err
					}
					defer closeH2(ccs)
					cs, err := openStreams(ctx, inst, ccs, spread(cfg.latencyConns, nc, cfg.pods))
					if err != nil {
						return err
					}
					defer closeAll(cs)
					pr.h2, err = latencyOver(ctx, inst, cs, cfg.latencyInterval, d)
					return err
				},
				func() error {
					cs, err := openMany(ctx, inst, cfg.pods, cfg.latencyConns, true)
					if err != nil {
						return err
					}
					defer closeAll(cs)
					pr.h1, err = latencyOver(ctx, inst, cs, cfg.latencyInterval, d)
					return err
				},
			}
			if err := runPaired(ctx, round, min(time.Second, cfg.settle), halves); err != nil {
				return nil, err
			}
			return pr, nil
		},
		values: func(part any) map[string]float64 {
			r := part.(rtH2Pair)
			slices.Sort(r.h2.all)
			slices.Sort(r.h1.all)
			return map[string]float64{
				"rth250": us(r.h2.all.p(50)), "rth299": us(r.h2.all.p(99)),
				"rth2tls50": us(r.h1.all.p(50)), "rth2tls99": us(r.h1.all.p(99)),
				"rth2cpu": 100 * r.h2.cpu / r.h2.dur.Seconds(), "rth2tlscpu": 100 * r.h1.cpu / r.h1.dur.Seconds(),
				"rth2ratio50": ratio(r, 50), "rth2ratio99": ratio(r, 99),
			}
		},
		over: func(parts []any) (map[string]float64, []string) {
			var r99 []float64
			var n, n1 float64
			for _, p := range parts {
				q := p.(rtH2Pair)
				r99 = append(r99, ratio(q, 99))
				n += float64(len(q.h2.all))
				n1 += float64(len(q.h1.all))
			}
			return map[string]float64{"rth2ratio99min": slices.Min(r99), "rth2ratio99max": slices.Max(r99), "rth2n": n, "rth2tlsn": n1}, nil
		},
		line: func(v map[string]float64, parts []any) string {
			var rs []string
			for _, p := range parts {
				rs = append(rs, fmt.Sprintf("×%.2f", ratio(p.(rtH2Pair), 99)))
			}
			return fmt.Sprintf("HTTP/2 streams p50 %.0f µs, p99 %.0f µs, CPU %.0f%% of a core; HTTP/1.1 TLS tunnels, same gateway, p50 %.0f µs, p99 %.0f µs, CPU %.0f%%; ratio p50 ×%.2f, p99 ×%.2f (rounds' p99: %s; %.0f and %.0f round trips)",
				v["rth250"], v["rth299"], v["rth2cpu"], v["rth2tls50"], v["rth2tls99"], v["rth2tlscpu"], v["rth2ratio50"], v["rth2ratio99"], strings.Join(rs, ", "), v["rth2n"], v["rth2tlsn"])
		},
	}
}

// The handshake-rate row ----------------------------------------------------

// rateH2Pair is one round of the handshake-rate row: websockets opened
// as streams of open HTTP/2 connections, and new HTTP/1.1 TLS
// connections, on the same gateway.
type rateH2Pair struct{ h2, h1 rateResult }

// streamRateRow runs concurrency loops for duration, each on its own
// HTTP/2 connection, opened (with one stream opened and closed on it)
// before the time starts: each loop opens a stream (an extended CONNECT
// answered 200), echoes one 32-byte message and closes the stream.
func streamRateRow(ctx context.Context, inst *instance, pods, concurrency int, duration time.Duration) (rateResult, error) {
	addr, _ := inst.dial(0, true)
	ccs, err := dialH2Many(ctx, addr, concurrency)
	if err != nil {
		return rateResult{}, err
	}
	defer closeH2(ccs)
	payload := make([]byte, 32)
	frame := binaryFrame(payload)
	buf := make([]byte, 64)
	// Each connection's first websocket, not counted.
	for i, cc := range ccs {
		_, path := inst.dial(i%pods, true)
		s, err := openStream(cc, path)
		if err != nil {
			return rateResult{}, fmt.Errorf("first stream of connection %d: %w", i, err)
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		err = s.echo(frame, payload, buf)
		_ = s.Close()
		if err != nil {
			return rateResult{}, fmt.Errorf("first stream of connection %d: %w", i, err)
		}
	}
	var loop atomic.Int64
	return rateLoops(ctx, inst, concurrency, duration, func() (rateConn, func()) {
		cc := ccs[int(loop.Add(1)-1)]
		buf := make([]byte, 64)
		return func(_ context.Context, k int) (*tls.ConnectionState, error) {
			_, path := inst.dial(k%pods, true)
			s, err := openStream(cc, path)
			if err != nil {
				return nil, err
			}
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			return nil, s.echo(frame, payload, buf)
		}, nil
	})
}

// rateH2RowDef is the handshake-rate row over HTTP/2: each round, for
// the round's share of -rate-duration, -rate-concurrency loops open
// websockets as streams of their already-open HTTP/2 connections
// (streamRateRow), and as long new HTTP/1.1 TLS connections (the
// ratetls client), the order alternating by round, on the same gateway.
func rateH2RowDef(cfg *config) row {
	d := cfg.rateDuration / time.Duration(cfg.rounds)
	ratio := func(r rateH2Pair) float64 { return r.h2.perSecond() / r.h1.perSecond() }
	return row{
		name:       "h2 websockets, handshakes",
		key:        "rateh2",
		metrics:    []string{"rateh2", "rateh2cpu", "rateh2tls", "rateh2tlscpu", "rateh2paired", "rateh2pairedmin", "rateh2pairedmax", "rateh2n", "rateh2tlsn"},
		rounds:     cfg.rounds,
		wsgateOnly: true,
		http2:      true,
		run: func(ctx context.Context, _ *env, inst *instance, round int) (any, error) {
			var pr rateH2Pair
			halves := []func() error{
				func() (err error) {
					pr.h2, err = streamRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d)
					return err
				},
				func() (err error) {
					pr.h1, err = connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d, true, "", nil)
					return err
				},
			}
			if err := runPaired(ctx, round, min(time.Second, cfg.settle), halves); err != nil {
				return nil, err
			}
			return pr, nil
		},
		values: func(part any) map[string]float64 {
			r := part.(rateH2Pair)
			return map[string]float64{
				"rateh2": r.h2.perSecond(), "rateh2cpu": 1e6 * r.h2.cpuPerConn(),
				"rateh2tls": r.h1.perSecond(), "rateh2tlscpu": 1e6 * r.h1.cpuPerConn(),
				"rateh2paired": ratio(r),
			}
		},
		over: func(parts []any) (map[string]float64, []string) {
			var rs []float64
			var n, n1 float64
			var notes []string
			for i, p := range parts {
				q := p.(rateH2Pair)
				rs = append(rs, ratio(q))
				n += float64(q.h2.count)
				n1 += float64(q.h1.count)
				for _, h := range []struct {
					what string
					r    rateResult
				}{{"HTTP/2 streams", q.h2}, {"HTTP/1.1 TLS connections", q.h1}} {
					if h.r.failed > 0 {
						notes = append(notes, fmt.Sprintf("round %d, %s failed: %d, first: %v", i+1, h.what, h.r.failed, h.r.firstErr))
					}
				}
			}
			return map[string]float64{"rateh2pairedmin": slices.Min(rs), "rateh2pairedmax": slices.Max(rs), "rateh2n": n, "rateh2tlsn": n1}, notes
		},
		line: func(v map[string]float64, parts []any) string {
			var rs []string
			for _, p := range parts {
				rs = append(rs, fmt.Sprintf("×%.2f", ratio(p.(rateH2Pair))))
			}
			return fmt.Sprintf("streams of open HTTP/2 connections %.0f/s, %.0f µs CPU each; new HTTP/1.1 TLS connections, same gateway, %.0f/s, %.0f µs CPU each; paired ratio ×%.2f (rounds: %s; %.0f and %.0f websockets)",
				v["rateh2"], v["rateh2cpu"], v["rateh2tls"], v["rateh2tlscpu"], v["rateh2paired"], strings.Join(rs, ", "), v["rateh2n"], v["rateh2tlsn"])
		},
	}
}

// The report's section ------------------------------------------------------

// http2Part is the section of the HTTP/2 rows, between
// benchdoc.HTTP2Begin and HTTP2End, or "" when none of them ran.
func (r *report) http2Part() string {
	if !r.ranAny("idleh2", "rth250", "rateh2") {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.cfg
	w("%s\n## Websockets over HTTP/2\n\n", benchdoc.HTTP2Begin)
	w("Written by `go run ./test/bench %s` on %s, in %s, on %s cores shared with the clients and the pods. ",
		strings.Join(os.Args[1:], " "), r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second), nproc())
	w("The round-trip and handshake rows ran in %d rounds, each on a fresh gateway, each round in two halves on the same gateway, the order alternating by round; a figure is the median of its rounds. ", c.rounds)
	w("These rows run on wsgate alone (`proxy.Options.HTTP2` on: the gateway's own HTTP/2, on its event loops); their references are HTTP/1.1 TLS tunnels of the same run.\n\n")
	w("| Figure | wsgate over HTTP/2 | Reference (same run) | Goal |\n| --- | ---: | --- | --- |\n")
	if r.ranAny("idleh2") {
		ref := "`idletls` not run"
		if r.ranAny("idletls") {
			ref = fmt.Sprintf("%s KiB per HTTP/1.1 TLS tunnel (`idletls`, a gateway without HTTP/2, %s at %s tunnels; ×%s)",
				r.val("idletls", "wsgate", 1), r.val("idletlsrss", "wsgate", 0)+" MiB", benchdoc.Thousands(float64(c.idleTunnels)), r.crossRatio("idleh2", "wsgate", "idletls", "wsgate"))
		}
		if r.ranAny("idle") {
			ref += fmt.Sprintf(" · %s KiB per plain tunnel (`idle`)", r.val("idle", "wsgate", 1))
		}
		w("| Memory per idle websocket beyond the first of an HTTP/2 connection (`idleh2`), gateway RSS | %s KiB | %s | < 2.2 KiB (the plain tunnel's) |\n",
			r.val("idleh2", "wsgate", 2), ref)
		w("| Gateway RSS with %s idle websockets as streams of %s | %s MiB | | |\n",
			benchdoc.Thousands(float64(c.idleTunnels)), h2ConnsText(h2Conns(c.idleTunnels)), r.val("idleh2rss", "wsgate", 0))
	}
	if r.ranAny("rth250") {
		w("| Round trips of 32-byte messages, %s websockets, one message each every %s (`rth2`), p50 / p99 | %s / %s µs | HTTP/1.1 TLS tunnels, same gateway: %s / %s µs | |\n",
			benchdoc.Thousands(float64(c.latencyConns)), c.latencyInterval, r.val("rth250", "wsgate", 0), r.val("rth299", "wsgate", 0), r.val("rth2tls50", "wsgate", 0), r.val("rth2tls99", "wsgate", 0))
		w("| HTTP/2 ÷ HTTP/1.1 TLS, p50 / p99 (median of the rounds' ratios) | ×%s / ×%s | p99: rounds from ×%s to ×%s | |\n",
			r.val("rth2ratio50", "wsgate", 2), r.val("rth2ratio99", "wsgate", 2), r.val("rth2ratio99min", "wsgate", 2), r.val("rth2ratio99max", "wsgate", 2))
		w("| Gateway CPU during the round trips, in %% of one core | %s%% | HTTP/1.1 TLS tunnels: %s%% | |\n",
			r.val("rth2cpu", "wsgate", 0), r.val("rth2tlscpu", "wsgate", 0))
	}
	if r.ranAny("rateh2") {
		ref := ""
		if r.ranAny("ratetls") {
			ref = fmt.Sprintf(" · ×%s the `ratetls` row (a gateway without HTTP/2, %s conn/s, %s µs CPU each)",
				r.crossRatio("rateh2", "wsgate", "ratetls", "wsgate"), r.val("ratetls", "wsgate", 0), r.val("ratetlscpu", "wsgate", 0))
		}
		w("| Websockets opened as streams of open HTTP/2 connections (`rateh2`), %d at a time | %s /s, %s µs CPU each | ×%s (median of the rounds' ratios, from ×%s to ×%s) new HTTP/1.1 TLS connections, same gateway, %s conn/s, %s µs CPU each%s | |\n",
			c.rateConcurrency, r.val("rateh2", "wsgate", 0), r.val("rateh2cpu", "wsgate", 0), r.val("rateh2paired", "wsgate", 2), r.val("rateh2pairedmin", "wsgate", 2), r.val("rateh2pairedmax", "wsgate", 2),
			r.val("rateh2tls", "wsgate", 0), r.val("rateh2tlscpu", "wsgate", 0), ref)
	}
	w("\n")
	r.wsgateFailures(&b, []string{"idleh2", "rth250", "rateh2"}, "rateh2")
	if r.ranAny("idleh2") {
		w("- **Idle row** (`idleh2`): the client opens %s to the gateway's TLS listener (ALPN h2, a full TLS handshake each) and, on each, an even share of %s websockets (at least one), each an extended CONNECT with `:protocol` `websocket` answered 200, to the pods in turn; the gateway reaches each pod over its own HTTP/1.1 connection. After %s it reads the gateway's RSS (VmRSS), opens the rest of %s websockets, an even share on each connection (at most %d, the gateway's bound on concurrent streams per connection), so that every websocket added is beyond its connection's first, waits %s again and reads the RSS: the growth over the websockets added (%s). A sample of them then echo. `idletls` opens %s HTTP/1.1 TLS tunnels in the same way (%s, then the rest), each its own TLS connection.\n",
			h2ConnsText(h2Conns(c.idleTunnels)), r.val("idleh2warm", "wsgate", 0), c.settle, benchdoc.Thousands(float64(c.idleTunnels)), h2MaxStreams, c.settle, r.val("idleh2added", "wsgate", 0),
			benchdoc.Thousands(float64(c.idleTunnels)), benchdoc.Thousands(float64(c.idleWarmup)))
	}
	if r.ranAny("rth250") {
		w("- **Round-trip row** (`rth2`): each round, %s websockets each send a 32-byte message every %s, each at its own phase, wait for the echo and record the round trip, for %s: in one half as streams of %s (up to %d streams each), in the other as %s HTTP/1.1 TLS tunnels, each its own connection, the order alternating by round. Frames are the same bytes either way; over HTTP/2 the gateway carries them between the stream and the pod's connection. CPU: the gateway's user + system time over each half, from `/proc/<pid>/stat`.\n",
			benchdoc.Thousands(float64(c.latencyConns)), c.latencyInterval, c.latencyDuration/time.Duration(c.rounds), h2ConnsText(h2Conns(c.latencyConns)), h2MaxStreams, benchdoc.Thousands(float64(c.latencyConns)))
	}
	if r.ranAny("rateh2") {
		w("- **Handshake row** (`rateh2`): each round, two halves of %s: in one, %d loops, each on its own HTTP/2 connection opened before the half starts (with one websocket opened and closed on it, not counted), open a websocket as a new stream (extended CONNECT, 200 answer), echo one 32-byte message and close the stream (END_STREAM and a reset of the answer's side); in the other, the same loops make new HTTP/1.1 TLS connections as `ratetls` does (TCP connect, a full TLS handshake without resumption, websocket handshake, one echo, close). The paired ratio is HTTP/2 streams ÷ HTTP/1.1 TLS connections. A stream skips the TCP connect and the TLS handshake; the gateway's dial of the pod and the pod's upgrade stay.\n",
			c.rateDuration/time.Duration(c.rounds), c.rateConcurrency)
	}
	r.http2Noise(&b)
	w("%s", benchdoc.HTTP2End)
	return b.String()
}

// http2Noise says how much CPU other processes used while each HTTP/2
// row ran.
func (r *report) http2Noise(b *strings.Builder) {
	names := map[string]string{}
	for _, rw := range rows(r.cfg) {
		names[rw.name] = rw.key
	}
	var parts []string
	for _, n := range r.noise {
		k := names[n.row]
		if n.peer != "wsgate" || n.other < 0 || !slices.Contains([]string{"idleh2", "rth2", "rateh2"}, k) {
			continue
		}
		parts = append(parts, fmt.Sprintf("`%s` %.0f%%", k, 100*n.other))
	}
	if len(parts) == 0 {
		fmt.Fprintf(b, "\n")
		return
	}
	fmt.Fprintf(b, "- **Other work on the machine** (CPU of processes other than the benchmark's while each row ran, in %% of one core, from `/proc/stat`): %s.\n\n", strings.Join(parts, ", "))
}
