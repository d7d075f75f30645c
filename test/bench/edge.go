package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// The public edge: what per-client limits cost a new connection, and
// what one client flooding handshakes and one walking pod addresses do
// to well-behaved clients when the gateway limits each client.

// wsgateDefaultLimits are the per-client limits the wsgate binary has
// by default (cmd/wsgate's --client-* flags): a refusal budget of 100 a
// minute, then a block of a minute, 100,000 clients tracked; no
// handshake rate, no tunnel cap.
var wsgateDefaultLimits = proxy.ClientLimits{RefusalBudget: 100, RefusalBlock: time.Minute, MaxClients: 100_000}

// edgeFloodLimits are the gateway's per-client limits in the flood row,
// those of the proxy's flood test: far above what a well-behaved client
// does, far below a flood.
var edgeFloodLimits = proxy.ClientLimits{HandshakeRate: 5, HandshakeBurst: 10, MaxTunnels: 20, RefusalBudget: 20, RefusalBlock: time.Minute}

// limitsRouteLimits are the per-client limits of the gateway child's
// "/lim" route: on, and so high that they never limit.
var limitsRouteLimits = routing.ClientLimits{HandshakeRate: 1e6, HandshakeBurst: 1 << 20, MaxTunnels: 1 << 20}

// limitsRoute is the route under "/lim": bs, open, with
// limitsRouteLimits.
func limitsRoute(bs []routing.Backend) *routing.Route {
	l := limitsRouteLimits
	return &routing.Route{
		Key: routing.RouteKey{Namespace: "bench", Name: "echo-limits"}, PathPrefix: "/lim", BackendPath: "/",
		Backends: slices.Clone(bs), Limits: &l,
	}
}

// formatLimits writes l as the gateway child's -client-limits value.
func formatLimits(l proxy.ClientLimits) string {
	return fmt.Sprintf("rate=%s,burst=%d,tunnels=%d,refusals=%d,block=%s,clients=%d",
		benchFloat(l.HandshakeRate), l.HandshakeBurst, l.MaxTunnels, l.RefusalBudget, l.RefusalBlock, l.MaxClients)
}

// parseLimits reads a -client-limits value ("": no limits).
func parseLimits(s string) (proxy.ClientLimits, error) {
	var l proxy.ClientLimits
	if s == "" {
		return l, nil
	}
	for _, f := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(f, "=")
		if !ok {
			return l, fmt.Errorf("%q is not name=value", f)
		}
		var err error
		switch name {
		case "rate":
			l.HandshakeRate, err = strconv.ParseFloat(v, 64)
		case "burst":
			l.HandshakeBurst, err = strconv.Atoi(v)
		case "tunnels":
			l.MaxTunnels, err = strconv.Atoi(v)
		case "refusals":
			l.RefusalBudget, err = strconv.Atoi(v)
		case "block":
			l.RefusalBlock, err = time.ParseDuration(v)
		case "clients":
			l.MaxClients, err = strconv.Atoi(v)
		default:
			return l, fmt.Errorf("unknown limit %q", name)
		}
		if err != nil {
			return l, fmt.Errorf("%s: %w", name, err)
		}
	}
	return l, nil
}

// The route-limit rows ----------------------------------------------------

// limitsRowKey names the route-limit rows in -rows.
func limitsRowKey(useTLS bool) string {
	if useTLS {
		return "ratetlslimits"
	}
	return "ratelimits"
}

// limitsRowName is the route-limit row's name, which also names its
// profile.
func limitsRowName(useTLS bool) string {
	if useTLS {
		return "new connections, TLS, route limits"
	}
	return "new connections, plain, route limits"
}

// limitsRatePair is one round of a route-limit row: new connections on
// "/lim" and on "/", on the same gateway.
type limitsRatePair struct {
	limited, open rateResult
	// cpu is the gateway's CPU time over both halves.
	cpu float64
}

// limitsRateRowDef is a route-limit row: each round runs new
// connections (plain, or TLS when useTLS) on "/lim", whose per-client
// limits are on but never limit, and, right before or after (the order
// alternates), as long on "/", without route limits, on the same
// gateway, which has the wsgate binary's default per-client limits for
// both.
func limitsRateRowDef(cfg *config, useTLS bool) row {
	k := limitsRowKey(useTLS)
	return row{
		name:       limitsRowName(useTLS),
		key:        k,
		metrics:    []string{k, k + "cpu", k + "open", k + "opencpu", k + "paired", k + "perlim", k + "perconn", k + "pairedmin", k + "pairedmax"},
		rounds:     cfg.rounds,
		profile:    true,
		wsgateOnly: true,
		limits:     formatLimits(wsgateDefaultLimits),
		run: func(ctx context.Context, _ *env, inst *instance, round int) (any, error) {
			d := cfg.rateDuration / time.Duration(cfg.rounds)
			var pr limitsRatePair
			halves := []func() error{
				func() (err error) {
					pr.limited, err = connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d, useTLS, "/lim", nil)
					return err
				},
				func() (err error) {
					pr.open, err = connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d, useTLS, "", nil)
					return err
				},
			}
			if err := runPaired(ctx, round, min(time.Second, cfg.settle), halves); err != nil {
				return nil, err
			}
			pr.cpu = pr.limited.cpu + pr.open.cpu
			return pr, nil
		},
		values: func(part any) map[string]float64 {
			r := part.(limitsRatePair)
			return map[string]float64{
				k: r.limited.perSecond(), k + "cpu": 1e6 * r.limited.cpuPerConn(),
				k + "open": r.open.perSecond(), k + "opencpu": 1e6 * r.open.cpuPerConn(),
				k + "paired": r.limited.perSecond() / r.open.perSecond(),
				// The gateway's CPU over both halves, per connection on
				// "/lim" (where the route's limits do their work) and per
				// connection of either half (where the refusal block is
				// checked): what a share of the row's profile is per
				// connection.
				k + "perlim":  1e6 * r.cpu / float64(r.limited.count),
				k + "perconn": 1e6 * r.cpu / float64(r.limited.count+r.open.count),
			}
		},
		over: func(parts []any) (map[string]float64, []string) {
			var ratios []float64
			for _, p := range parts {
				q := p.(limitsRatePair)
				ratios = append(ratios, q.limited.perSecond()/q.open.perSecond())
			}
			return map[string]float64{k + "pairedmin": slices.Min(ratios), k + "pairedmax": slices.Max(ratios)}, nil
		},
		line: func(v map[string]float64, parts []any) string {
			var count, failed int64
			var firstErr error
			for _, p := range parts {
				q := p.(limitsRatePair)
				count += q.limited.count + q.open.count
				failed += q.limited.failed + q.open.failed
				for _, e := range []error{q.limited.firstErr, q.open.firstErr} {
					if firstErr == nil {
						firstErr = e
					}
				}
			}
			var ratios []string
			for _, p := range parts {
				q := p.(limitsRatePair)
				ratios = append(ratios, fmt.Sprintf("×%.2f", q.limited.perSecond()/q.open.perSecond()))
			}
			s := fmt.Sprintf("with route limits %.0f/s, %.0f µs CPU each; without, same gateway, %.0f/s, %.0f µs CPU each; paired ratio ×%.2f (rounds: %s; %d connections in all)",
				v[k], v[k+"cpu"], v[k+"open"], v[k+"opencpu"], v[k+"paired"], strings.Join(ratios, ", "), count)
			if failed > 0 {
				s += fmt.Sprintf(", %d failed (first: %v)", failed, firstErr)
			}
			return s
		},
	}
}

// The flood row ------------------------------------------------------------

// The flood row's own source addresses, apart from the clients'
// (127.0.0.100 and up), the pods' (127.0.0.11 and up) and the
// forward-auth service's (127.0.0.9).
const (
	edgeFlooderAddr = "127.0.30.1"
	edgeScannerAddr = "127.0.30.2"
	// maxEdgeClients well-behaved clients fit below edgeFlooderAddr.
	maxEdgeClients = 2000
)

// goodAddr is the i-th well-behaved client's source address: 127.0.20.1
// to 127.0.20.200, then 127.0.21.1 and on.
func goodAddr(i int) string { return fmt.Sprintf("127.0.%d.%d", 20+i/200, 1+i%200) }

// edgePhase is what the well-behaved clients saw in one phase.
type edgePhase struct {
	hs                   latencies // each handshake, sorted
	failed, dropped      int64     // handshakes refused or failed; tunnels that failed before their client closed them
	firstFail, firstDrop error
	messages             int64 // messages echoed
	// cpu, own and busy are the CPU seconds over the phase of the
	// gateway, of this process (the clients; in the flood phase, the
	// flooder and the scanner too) and of the whole machine.
	cpu, own, busy float64
	dur            time.Duration
}

// edgeFloodResult is one round of the flood row.
type edgeFloodResult struct {
	quiet, flood edgePhase
	// The flooder's handshakes answered 429, answered 101 (tunnels),
	// and otherwise (other answers, failures).
	fl429, fl101, flOther int64
	flFirstOther          error
	// The scanner's answers before its block: 404, and 429 for its
	// handshake rate; after it: 429 for the block, and 404 (none while
	// the block lasts); and otherwise (other answers, failures).
	sc404, sc429Rate, sc429Block, sc404After, scOther int64
	scFirstOther                                      error
	// scBlockAt is when the scanner's first answer of its block came,
	// from the flooder's start; 0: no block.
	scBlockAt time.Duration
	// floodDur is from the flooder's start to its stop.
	floodDur time.Duration
}

// edgeFloodKeys are the flood row's per-round metrics; edgeFloodOver its
// figures over all rounds.
var (
	edgeFloodKeys = []string{"edgeq50", "edgeq99", "edgef50", "edgef99", "edgeratio50", "edgeratio99", "edgeqcpu", "edgefcpu",
		"edgeqown", "edgefown", "edgeqbusy", "edgefbusy",
		"edgefl429", "edgefl101", "edgeflrate", "edgesc404", "edgesc429rate", "edgesc429", "edgescblock", "edgephase"}
	edgeFloodOver = []string{"edgehs", "edgefailed", "edgedropped", "edgemsgs", "edgefl101max", "edgesc404max", "edgesc404after", "edgescnoblock",
		"edgeratio99min", "edgeratio99max", "edgeqmax", "edgefmax"}
)

// edgeFloodRowDef is the flood row: each round, on a gateway with
// edgeFloodLimits, the well-behaved clients alone, then beside a flooder
// and a scanner (edgeFloodRow).
func edgeFloodRowDef(cfg *config) row {
	return row{
		name:       "handshakes under a flood and a scan",
		key:        "edgeflood",
		metrics:    append(slices.Clone(edgeFloodKeys), edgeFloodOver...),
		rounds:     cfg.rounds,
		wsgateOnly: true,
		limits:     formatLimits(edgeFloodLimits),
		run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
			return edgeFloodRow(ctx, inst, cfg, cfg.edgeDuration/time.Duration(2*cfg.rounds))
		},
		values: func(part any) map[string]float64 {
			r := part.(edgeFloodResult)
			v := map[string]float64{
				"edgeq50": us(r.quiet.hs.p(50)), "edgeq99": us(r.quiet.hs.p(99)),
				"edgef50": us(r.flood.hs.p(50)), "edgef99": us(r.flood.hs.p(99)),
				"edgeqcpu": 100 * r.quiet.cpu / r.quiet.dur.Seconds(), "edgefcpu": 100 * r.flood.cpu / r.flood.dur.Seconds(),
				"edgeqown": 100 * r.quiet.own / r.quiet.dur.Seconds(), "edgefown": 100 * r.flood.own / r.flood.dur.Seconds(),
				"edgeqbusy": 100 * r.quiet.busy / r.quiet.dur.Seconds(), "edgefbusy": 100 * r.flood.busy / r.flood.dur.Seconds(),
				"edgefl429": float64(r.fl429), "edgefl101": float64(r.fl101),
				"edgeflrate": float64(r.fl429+r.fl101) / r.floodDur.Seconds(),
				"edgesc404":  float64(r.sc404), "edgesc429rate": float64(r.sc429Rate), "edgesc429": float64(r.sc429Block),
				"edgephase": r.floodDur.Seconds(),
			}
			if r.scBlockAt > 0 {
				v["edgescblock"] = r.scBlockAt.Seconds()
			}
			v["edgeratio50"] = v["edgef50"] / v["edgeq50"]
			v["edgeratio99"] = v["edgef99"] / v["edgeq99"]
			return v
		},
		over: func(parts []any) (map[string]float64, []string) {
			v := map[string]float64{"edgescnoblock": 0}
			var ratios []float64
			var notes []string
			note := func(what string, n int64, err error) {
				if n > 0 {
					notes = append(notes, fmt.Sprintf("%s: %d, first: %v", what, n, err))
				}
			}
			for i, p := range parts {
				r := p.(edgeFloodResult)
				for _, ph := range []edgePhase{r.quiet, r.flood} {
					v["edgehs"] += float64(len(ph.hs))
					v["edgefailed"] += float64(ph.failed)
					v["edgedropped"] += float64(ph.dropped)
					v["edgemsgs"] += float64(ph.messages)
				}
				ratios = append(ratios, float64(r.flood.hs.p(99))/float64(r.quiet.hs.p(99)))
				v["edgeqmax"] = max(v["edgeqmax"], us(r.quiet.hs[len(r.quiet.hs)-1]))
				v["edgefmax"] = max(v["edgefmax"], us(r.flood.hs[len(r.flood.hs)-1]))
				v["edgefl101max"] = max(v["edgefl101max"], float64(r.fl101))
				v["edgesc404max"] = max(v["edgesc404max"], float64(r.sc404))
				v["edgesc404after"] += float64(r.sc404After)
				if r.scBlockAt == 0 {
					v["edgescnoblock"]++
				}
				round := fmt.Sprintf("round %d, ", i+1)
				note(round+"well-behaved handshakes refused or failed, quiet", r.quiet.failed, r.quiet.firstFail)
				note(round+"well-behaved handshakes refused or failed, under the flood", r.flood.failed, r.flood.firstFail)
				note(round+"well-behaved tunnels dropped, quiet", r.quiet.dropped, r.quiet.firstDrop)
				note(round+"well-behaved tunnels dropped, under the flood", r.flood.dropped, r.flood.firstDrop)
				note(round+"the flooder's other answers and failures", r.flOther, r.flFirstOther)
				note(round+"the scanner's other answers and failures", r.scOther, r.scFirstOther)
			}
			v["edgeratio99min"], v["edgeratio99max"] = slices.Min(ratios), slices.Max(ratios)
			return v, notes
		},
		line: func(v map[string]float64, parts []any) string {
			var ratios []string
			for _, p := range parts {
				r := p.(edgeFloodResult)
				ratios = append(ratios, fmt.Sprintf("×%.2f", float64(r.flood.hs.p(99))/float64(r.quiet.hs.p(99))))
			}
			blocked := "not blocked"
			if at, ok := v["edgescblock"]; ok {
				blocked = fmt.Sprintf("blocked after %.1fs", at)
			}
			return fmt.Sprintf("rounds' p99 ratios %s; ", strings.Join(ratios, ", ")) + fmt.Sprintf("well-behaved handshakes quiet p50 %.0f µs, p99 %.0f µs; under the flood p50 %.0f µs, p99 %.0f µs (×%.2f, ×%.2f); "+
				"%.0f handshakes, %.0f refused or failed, %.0f tunnels dropped, %.0f messages in all; "+
				"a round: the flooder %.0f answered 429, %.0f tunnels (%.0f handshakes/s), the scanner %.0f 404 and %.0f 429 for its rate, then %s, %.0f 429; CPU quiet / under the flood: gateway %.0f%% / %.0f%%, benchmark process %.0f%% / %.0f%%, machine %.0f%% / %.0f%%",
				v["edgeq50"], v["edgeq99"], v["edgef50"], v["edgef99"], v["edgeratio50"], v["edgeratio99"],
				v["edgehs"], v["edgefailed"], v["edgedropped"], v["edgemsgs"],
				v["edgefl429"], v["edgefl101"], v["edgeflrate"], v["edgesc404"], v["edgesc429rate"], blocked, v["edgesc429"], v["edgeqcpu"], v["edgefcpu"], v["edgeqown"], v["edgefown"], v["edgeqbusy"], v["edgefbusy"])
		},
	}
}

// edgeFloodRow is one round of the flood row: the well-behaved clients
// for d alone, then for d again while the flooder and the scanner run.
func edgeFloodRow(ctx context.Context, inst *instance, cfg *config, d time.Duration) (edgeFloodResult, error) {
	var res edgeFloodResult
	var err error
	if res.quiet, err = goodClients(ctx, inst, cfg, d); err != nil {
		return res, fmt.Errorf("quiet phase: %w", err)
	}
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return ctx.Err() != nil
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		fl   [2]atomic.Int64 // 429, 101
		flOt atomic.Int64
	)
	other := func(n *atomic.Int64, first *error, err error) {
		n.Add(1)
		mu.Lock()
		if *first == nil {
			*first = err
		}
		mu.Unlock()
	}
	addr, path := inst.dial(0, false)
	t0 := time.Now()
	for range cfg.edgeFloodConn {
		wg.Go(func() {
			dialer := dialerFrom(net.ParseIP(edgeFlooderAddr))
			for !stopped() {
				code, _, err := answerFrom(ctx, dialer, addr, path)
				switch {
				case err != nil:
					other(&flOt, &res.flFirstOther, err)
					// A failing dial must not spin.
					time.Sleep(time.Millisecond)
				case code == 429:
					fl[0].Add(1)
				case code == 101:
					fl[1].Add(1)
				default:
					other(&flOt, &res.flFirstOther, fmt.Errorf("answer %d", code))
				}
			}
		})
	}
	var scOt atomic.Int64
	wg.Go(func() {
		dialer := dialerFrom(net.ParseIP(edgeScannerAddr))
		for i := 0; !stopped(); i++ {
			code, text, err := answerFrom(ctx, dialer, addr, fmt.Sprintf("/10.%d.%d.%d/", i>>16&255, i>>8&255, i&255))
			blocked := res.scBlockAt > 0
			switch {
			case err != nil:
				other(&scOt, &res.scFirstOther, err)
				time.Sleep(time.Millisecond)
			case code == 404 && !blocked:
				res.sc404++
			case code == 404:
				res.sc404After++
			case code == 429 && strings.Contains(text, "refused"):
				// "too many refused handshakes from this client"
				res.sc429Block++
				if !blocked {
					res.scBlockAt = time.Since(t0)
				}
			case code == 429:
				res.sc429Rate++
			default:
				other(&scOt, &res.scFirstOther, fmt.Errorf("answer %d", code))
			}
		}
	})
	res.flood, err = goodClients(ctx, inst, cfg, d)
	close(stop)
	wg.Wait()
	res.floodDur = time.Since(t0)
	res.fl429, res.fl101, res.flOther, res.scOther = fl[0].Load(), fl[1].Load(), flOt.Load(), scOt.Load()
	if err != nil {
		return res, fmt.Errorf("flood phase: %w", err)
	}
	return res, nil
}

// answerFrom opens a plain connection with dialer, sends a handshake for
// path, reads the answer's status code and, but for a 101, the first
// line of its body, then closes the connection.
func answerFrom(ctx context.Context, dialer *net.Dialer, addr, path string) (int, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialer.DialContext(cctx, "tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	status, _, br, err := handshake(c, path, "")
	if err != nil {
		return 0, "", err
	}
	code, err := statusCode(status)
	if err != nil || code == 101 {
		return code, "", err
	}
	text, _ := br.ReadString('\n')
	return code, strings.TrimSpace(text), nil
}

// goodClients runs the well-behaved clients for d: each, from its own
// address, holds a plain tunnel to a pod, sends a 32-byte message every
// edgeMsgEvery and checks its echo, and every edgeReconnect closes it
// and opens a new one, timing the handshake from the TCP connect to the
// 101. Their reconnects are spread evenly over the interval.
func goodClients(ctx context.Context, inst *instance, cfg *config, d time.Duration) (edgePhase, error) {
	cpu0, err := procCPU(inst.pids())
	if err != nil {
		return edgePhase{}, err
	}
	own0, err := procCPU([]int{os.Getpid()})
	if err != nil {
		return edgePhase{}, err
	}
	busy0, _, err := hostCPU()
	if err != nil {
		return edgePhase{}, err
	}
	start := time.Now()
	end := start.Add(d)
	var (
		mu sync.Mutex
		ph edgePhase
		wg sync.WaitGroup
	)
	for i := range cfg.edgeClients {
		wg.Go(func() {
			dialer := dialerFrom(net.ParseIP(goodAddr(i)))
			// The frame is written as is: its payload is updated in place.
			frame := binaryFrame(make([]byte, 32))
			payload := frame[len(frame)-32:]
			binary.BigEndian.PutUint64(payload, uint64(i))
			buf := make([]byte, 64)
			var own edgePhase
			sleep(ctx, time.Duration(i)*cfg.edgeReconnect/time.Duration(cfg.edgeClients))
			for time.Now().Before(end) && ctx.Err() == nil {
				addr, path := inst.dial(i%cfg.pods, false)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				c, err := dialWSWith(cctx, dialer, addr, path)
				took := time.Since(t0)
				cancel()
				if err != nil {
					own.failed++
					if own.firstFail == nil {
						own.firstFail = fmt.Errorf("client %s: %w", goodAddr(i), err)
					}
					sleep(ctx, cfg.edgeReconnect)
					continue
				}
				own.hs = append(own.hs, took)
				until := time.Now().Add(cfg.edgeReconnect)
				if until.After(end) {
					until = end
				}
				n, err := keepEchoing(c, until, cfg.edgeMsgEvery, frame, payload, buf)
				own.messages += n
				if err != nil {
					own.dropped++
					if own.firstDrop == nil {
						own.firstDrop = fmt.Errorf("client %s: %w", goodAddr(i), err)
					}
				}
				_ = c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			ph.hs = append(ph.hs, own.hs...)
			ph.failed += own.failed
			ph.dropped += own.dropped
			ph.messages += own.messages
			if ph.firstFail == nil {
				ph.firstFail = own.firstFail
			}
			if ph.firstDrop == nil {
				ph.firstDrop = own.firstDrop
			}
		})
	}
	wg.Wait()
	ph.dur = time.Since(start)
	cpu1, err := procCPU(inst.pids())
	if err != nil {
		return ph, err
	}
	own1, err := procCPU([]int{os.Getpid()})
	if err != nil {
		return ph, err
	}
	busy1, _, err := hostCPU()
	if err != nil {
		return ph, err
	}
	ph.cpu, ph.own, ph.busy = cpu1-cpu0, own1-own0, busy1-busy0
	slices.Sort(ph.hs)
	if ctx.Err() != nil {
		return ph, ctx.Err()
	}
	if len(ph.hs) == 0 {
		return ph, fmt.Errorf("no handshake of %d clients succeeded, first failure: %w", cfg.edgeClients, ph.firstFail)
	}
	return ph, nil
}

// dialWSWith connects to addr with dialer and upgrades to a websocket
// on path.
func dialWSWith(ctx context.Context, dialer *net.Dialer, addr, path string) (*wsConn, error) {
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	ws, err := upgrade(c, path, "")
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return ws, nil
}

// keepEchoing sends frame (whose payload it numbers) every interval
// until until and checks each echo; it returns the messages echoed, and
// why the tunnel failed if it did.
func keepEchoing(c *wsConn, until time.Time, interval time.Duration, frame, payload, buf []byte) (int64, error) {
	var n int64
	for time.Now().Before(until) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		binary.BigEndian.PutUint64(payload[8:], uint64(n))
		if err := c.echo(frame, payload, buf); err != nil {
			return n, err
		}
		n++
		time.Sleep(min(interval, time.Until(until)))
	}
	return n, nil
}

// The report's section -------------------------------------------------

// ordinal is n as "1st", "2nd", "3rd", "4th"...
func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// shortDuration is d as time.Duration prints it, without trailing zero
// units ("1m", not "1m0s").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// edgePart is the section of the edge rows, between benchdoc.EdgeBegin
// and EdgeEnd, or "" when none of them ran.
func (r *report) edgePart() string {
	plain, secure := limitsRowKey(false), limitsRowKey(true)
	if !r.ranAny(plain, secure, "edgeq99") {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.cfg
	phase := c.edgeDuration / time.Duration(2*c.rounds)
	fl, def := edgeFloodLimits, wsgateDefaultLimits
	w("%s\n## The public edge\n\n", benchdoc.EdgeBegin)
	w("Written by `go run ./test/bench %s` on %s, in %s, on %s cores shared with the clients and the pods. ",
		strings.Join(os.Args[1:], " "), r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second), nproc())
	w("Each row ran in %d rounds, each on a fresh gateway; a figure is the median of its rounds, except the counts marked \"all rounds\" (sums) and \"most in a round\" (maxima). ", c.rounds)
	w("Only wsgate limits clients: these rows run on wsgate alone, and their references are rows of the same run (not the tables above, which come from another run).\n\n")
	w("| Figure | wsgate | Reference (same run) | Goal |\n| --- | ---: | --- | --- |\n")
	var limitRows []struct{ key, base, what string }
	for _, t := range []struct{ key, base, what string }{
		{plain, "rate", "plain"},
		{secure, "ratetls", "TLS"},
	} {
		if r.ranAny(t.key) {
			limitRows = append(limitRows, t)
		}
	}
	for _, t := range limitRows {
		w("| New connections, %s, on a route with per-client limits (`%s`), %d at a time | %s conn/s | ×%s wsgate without per-client limits (`%s`, %s conn/s) · ×%s nginx (%s conn/s) | |\n",
			t.what, t.key, c.rateConcurrency, r.val(t.key, "wsgate", 0), r.crossRatio(t.key, "wsgate", t.base, "wsgate"), t.base, r.val(t.base, "wsgate", 0),
			r.crossRatio(t.key, "wsgate", t.base, "nginx"), r.val(t.base, "nginx", 0))
	}
	for _, t := range limitRows {
		w("| CPU per new connection, %s, route limits (`%s`) | %s µs | %s µs without per-client limits (`%s`; %s) · nginx %s µs | |\n",
			t.what, t.key, r.val(t.key+"cpu", "wsgate", 0), r.val(t.base+"cpu", "wsgate", 0), t.base, r.diffText(t.key+"cpu", t.base+"cpu"), r.val(t.base+"cpu", "nginx", 0))
	}
	for _, t := range limitRows {
		w("| Paired (route limits and none in turn on the same gateway, each round), %s (`%s`) | %s conn/s, %s µs | ×%s (median of the rounds' ratios, from ×%s to ×%s) against %s conn/s, %s µs on `/` without route limits (%s) | ≥ ×0.95 |\n",
			t.what, t.key, r.val(t.key, "wsgate", 0), r.val(t.key+"cpu", "wsgate", 0), r.val(t.key+"paired", "wsgate", 2),
			r.val(t.key+"pairedmin", "wsgate", 2), r.val(t.key+"pairedmax", "wsgate", 2),
			r.val(t.key+"open", "wsgate", 0), r.val(t.key+"opencpu", "wsgate", 0), r.diffText(t.key+"cpu", t.key+"opencpu"))
	}
	if r.ranAny("edgeq99") {
		bound := float64(fl.HandshakeBurst) + fl.HandshakeRate*phase.Seconds()
		w("| Handshakes of %d well-behaved clients, quiet (`edgeflood`), p50 / p99 | %s / %s µs | slowest of all rounds %s µs | |\n",
			c.edgeClients, r.val("edgeq50", "wsgate", 0), r.val("edgeq99", "wsgate", 0), r.val("edgeqmax", "wsgate", 0))
		w("| The same while one client floods handshakes and one walks pod addresses, p50 / p99 | %s / %s µs | slowest of all rounds %s µs | |\n",
			r.val("edgef50", "wsgate", 0), r.val("edgef99", "wsgate", 0), r.val("edgefmax", "wsgate", 0))
		w("| Under the flood ÷ quiet, p50 / p99 (median of the rounds' ratios) | ×%s / ×%s | p99: rounds from ×%s to ×%s | p99 ≤ ×2 |\n",
			r.val("edgeratio50", "wsgate", 2), r.val("edgeratio99", "wsgate", 2), r.val("edgeratio99min", "wsgate", 2), r.val("edgeratio99max", "wsgate", 2))
		w("| Well-behaved clients' tunnels dropped, all rounds | %s | of %s handshakes (%s refused or failed); %s messages echoed | 0 |\n",
			r.val("edgedropped", "wsgate", 0), r.val("edgehs", "wsgate", 0), r.val("edgefailed", "wsgate", 0), r.val("edgemsgs", "wsgate", 0))
		w("| The flooder's handshakes a round: answered 429 / tunnels opened (101) | %s / %s | %s handshakes a second; the limits let through at most %d + %s × %s = %s a round (most in a round: %s) | tunnels ≤ %s |\n",
			r.val("edgefl429", "wsgate", 0), r.val("edgefl101", "wsgate", 0), r.val("edgeflrate", "wsgate", 0),
			fl.HandshakeBurst, benchFloat(fl.HandshakeRate), phase, benchdoc.Thousands(bound), r.val("edgefl101max", "wsgate", 0), benchdoc.Thousands(bound))
		// The refusal budget refills while the scanner walks: a refusal
		// past the budget blocks it, plus what refilled until then.
		refill := float64(fl.RefusalBudget) / 60
		most := "?"
		if at, ok := r.res.get("edgescblock", "wsgate"); ok && at.err == nil {
			most = benchdoc.Thousands(math.Floor(float64(fl.RefusalBudget+1) + refill*at.v))
		}
		w("| The scanner's answers a round: 404 before its block / 429 after it | %s / %s | blocked %s s into the phase (median of the rounds with a block), after %s answers 429 for its handshake rate besides; a refusal budget of %d a minute: %d answers 404, plus what the budget refills until the block, then 429 for %s (most 404s in a round: %s; 404s after the block, all rounds: %s; rounds without a block: %s) | 404s ≤ %s |\n",
			r.val("edgesc404", "wsgate", 0), r.val("edgesc429", "wsgate", 0), r.val("edgescblock", "wsgate", 1), r.val("edgesc429rate", "wsgate", 0),
			fl.RefusalBudget, fl.RefusalBudget+1, shortDuration(fl.RefusalBlock),
			r.val("edgesc404max", "wsgate", 0), r.val("edgesc404after", "wsgate", 0), r.val("edgescnoblock", "wsgate", 0), most)
		w("| CPU, quiet / under the flood, in %% of one core: the gateway | %s%% / %s%% | the benchmark's process (the well-behaved clients; under the flood, the flooder and the scanner too) %s%% / %s%%; the whole machine %s%% / %s%% of %s00%% | |\n",
			r.val("edgeqcpu", "wsgate", 0), r.val("edgefcpu", "wsgate", 0), r.val("edgeqown", "wsgate", 0), r.val("edgefown", "wsgate", 0),
			r.val("edgeqbusy", "wsgate", 0), r.val("edgefbusy", "wsgate", 0), nproc())
	}
	w("\n")
	r.wsgateFailures(&b, []string{plain, secure, "edgeq99"}, "edgeflood")
	if len(limitRows) > 0 {
		w("- **Route-limit rows** (`%s`, `%s`): the new-connection rows with the raw client (%d loops; TCP connect, for TLS a full handshake, websocket handshake, one 32-byte echo, close), each round in two halves of %s on the same gateway, the order alternating by round: one on `/lim`, a route of the same table whose per-client limits (`routing.Route.Limits`, what a WsRoute's `spec.limits` sets) are on and never limit (%s handshakes a second in bursts of %s, %s open tunnels per client), so each handshake takes a token from its client's bucket and counts a tunnel, released when the tunnel ends; one on `/`, without route limits. ",
			plain, secure, c.rateConcurrency, c.rateDuration/time.Duration(c.rounds), benchdoc.Thousands(limitsRouteLimits.HandshakeRate),
			benchdoc.Thousands(float64(limitsRouteLimits.HandshakeBurst)), benchdoc.Thousands(float64(limitsRouteLimits.MaxTunnels)))
		w("For both halves the gateway has the per-client limits the wsgate binary has by default (a refusal budget of %d a minute, then a block of %s, %s clients tracked; no handshake rate and no tunnel cap for the whole gateway), so every handshake of both is checked against its client's refusal block. ",
			def.RefusalBudget, shortDuration(def.RefusalBlock), benchdoc.Thousands(float64(def.MaxClients)))
		w("The clients' %d source addresses are %d clients to the gateway. The paired ratio is route limits on ÷ off. The references `rate` and `ratetls` are the main table's rows run again in this run, on a gateway without per-client limits at all, at another time than the paired halves.\n",
			clientAddrs, clientAddrs)
	}
	if r.ranAny("edgeq99") {
		w("- **Flood row** (`edgeflood`): a gateway whose per-client limits for the whole gateway (what its `--client-*` flags set) are %s handshakes a second in bursts of %d, %d open tunnels, and a refusal budget of %d a minute, then a block of %s. Each round has a quiet phase and then a flood phase of %s each. ",
			benchFloat(fl.HandshakeRate), fl.HandshakeBurst, fl.MaxTunnels, fl.RefusalBudget, shortDuration(fl.RefusalBlock), phase)
		w("In both, %d well-behaved clients, each bound to its own source address (%s to %s), each hold a plain tunnel to a pod on `/`, send a 32-byte message on it every %s and check its echo, and every %s close it and open a new one, timing the handshake from the TCP connect to the 101; their reconnects are spread evenly over the interval. A tunnel dropped is one whose echo failed before its client closed it. ",
			c.edgeClients, goodAddr(0), goodAddr(c.edgeClients-1), c.edgeMsgEvery, c.edgeReconnect)
		w("Through the flood phase, a flooder (%s) sends handshakes for a pod that exists on %d connections at a time, each a new connection as soon as the last one's answer is read, closing each after the answer (a 101 included), and a scanner (%s) walks pod addresses that do not exist (`/10.0.0.0/`, `/10.0.0.1/`, ...), one connection at a time. ",
			edgeFlooderAddr, c.edgeFloodConn, edgeScannerAddr)
		w("The gateway applies the limits before it looks the pod address up, so the scanner's handshakes also spend its handshake rate: after its burst it walks at %s addresses a second, the others answered 429 for the rate, and its %s refusal, which blocks it, comes about (%d − %d) ÷ %s = %s s into the phase; the answers of the block are told apart from those of the rate by their text. ",
			benchFloat(fl.HandshakeRate), ordinal(fl.RefusalBudget+1), fl.RefusalBudget+1, fl.HandshakeBurst, benchFloat(fl.HandshakeRate),
			strconv.FormatFloat(float64(fl.RefusalBudget+1-fl.HandshakeBurst)/fl.HandshakeRate, 'f', 1, 64))
		w("The flooder and the scanner run in the benchmark's process, beside the well-behaved clients, on the same cores as the gateway and the pods: the CPU their own connections take falls on the well-behaved clients too, where on separate machines it would not. CPU: user + system time over each phase of the gateway's process and of the benchmark's, from `/proc/<pid>/stat`, and the whole machine's busy time from `/proc/stat`.\n")
	}
	r.edgeNoise(&b)
	w("\n")
	r.edgeProfiles(&b, plain, secure)
	w("%s", benchdoc.EdgeEnd)
	return b.String()
}

// edgeStages are the profile stages the section shows.
var edgeStages = []string{"checking the client's refusal block", "applying per-client limits", "releasing per-client tunnel counts",
	"TLS handshake with the client", "allocation", "garbage collection"}

// edgeProfiles writes where the route-limit rows' CPU goes in wsgate, one
// column per row that has a profile.
func (r *report) edgeProfiles(b *strings.Builder, keys ...string) {
	type column struct {
		key string
		p   *profileSummary
	}
	var cols []column
	for _, k := range keys {
		if p := r.profileOf(limitsRowName(k == limitsRowKey(true))); p != nil {
			cols = append(cols, column{k, p})
		}
	}
	if len(cols) == 0 {
		return
	}
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("Where the route-limit rows' CPU goes in wsgate (share of each row's CPU profile over both halves, cumulative, overlapping; per connection: the share times the row's CPU over both halves, per connection on `/lim` for the route's limits, per connection of either half for the refusal block; `go tool pprof -top` leaves out functions under 0.5%% of a profile):\n\n| Stage |")
	for _, col := range cols {
		w(" `%s` |", col.key)
	}
	w("\n| --- |%s\n", strings.Repeat(" ---: |", len(cols)))
	for _, stage := range edgeStages {
		w("| %s |", stage)
		for _, col := range cols {
			cell := "under 0.5%"
			for _, s := range col.p.stages {
				if strings.TrimSpace(s.what) != stage {
					continue
				}
				cell = fmt.Sprintf("%.1f%%", s.pct)
				per := col.key + "perlim"
				switch stage {
				case "checking the client's refusal block":
					per = col.key + "perconn"
				case "applying per-client limits", "releasing per-client tunnel counts":
				default:
					per = ""
				}
				if v, ok := r.res.get(per, "wsgate"); per != "" && ok && v.err == nil {
					cell += fmt.Sprintf(" (about %.1f µs per connection)", s.pct/100*v.v)
				}
			}
			w(" %s |", cell)
		}
		w("\n")
	}
	w("\n")
}

// edgeNoise says how much CPU other processes used while each edge row
// ran.
func (r *report) edgeNoise(b *strings.Builder) {
	names := map[string]string{}
	for _, rw := range rows(r.cfg) {
		names[rw.name] = rw.key
	}
	var parts []string
	for _, n := range r.noise {
		k := names[n.row]
		if n.peer != "wsgate" || n.other < 0 || !slices.Contains([]string{limitsRowKey(false), limitsRowKey(true), "edgeflood"}, k) {
			continue
		}
		parts = append(parts, fmt.Sprintf("`%s` %.0f%%", k, 100*n.other))
	}
	if len(parts) == 0 {
		return
	}
	fmt.Fprintf(b, "- **Other work on the machine** (CPU of processes other than the benchmark's while each row ran, in %% of one core, from `/proc/stat`): %s.\n", strings.Join(parts, ", "))
}
