package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// cell is one measured value, or why there is none.
type cell struct {
	v   float64
	err error
}

// results holds metric -> peer -> cell.
type results map[string]map[string]cell

func (r results) set(metric, peer string, v float64) {
	if r[metric] == nil {
		r[metric] = map[string]cell{}
	}
	r[metric][peer] = cell{v: v}
}

func (r results) fail(metrics []string, peer string, err error) {
	for _, m := range metrics {
		if r[m] == nil {
			r[m] = map[string]cell{}
		}
		r[m][peer] = cell{err: err}
	}
}

func (r results) get(metric, peer string) (cell, bool) {
	c, ok := r[metric][peer]
	return c, ok
}

// row is one workload, run against each peer in turn, each time on a
// fresh instance, in rounds: the peers go in one order, then in the
// reverse order (A B C D, D C B A), so that a load that comes and goes on
// the machine falls on every peer alike.
type row struct {
	name string
	// key names the row in -rows.
	key     string
	metrics []string
	// rounds splits the row's duration; 1 for the memory rows.
	rounds int
	// profile: wsgate writes a CPU profile during this row.
	profile bool
	// heap: wsgate writes a heap profile while its tunnels are open.
	heap bool
	// proxiesOnly: the row means nothing without a proxy (memory rows).
	proxiesOnly bool
	// wsgateOnly: the row measures what only wsgate does (identity at
	// the handshake).
	wsgateOnly bool
	// selfContained: the row starts what it measures itself; it gets an
	// instance with nothing in it.
	selfContained bool
	// tickets: the peers' TLS listeners issue session tickets (see
	// startOpts).
	tickets bool
	// limits are wsgate's per-client limits in the row (see startOpts).
	limits string
	// http2: wsgate takes websockets over HTTP/2 in the row (see
	// startOpts).
	http2 bool
	// run measures one round.
	run func(ctx context.Context, e *env, inst *instance, round int) (any, error)
	// values are one round's metrics; a peer's figure is the median of
	// its rounds, which one disturbed round cannot move far.
	values func(part any) map[string]float64
	// line describes a peer's figures for the progress output.
	line func(vals map[string]float64, parts []any) string
	// over, if set, gives figures over all of a peer's rounds that a
	// median would hide (sums, maxima), set beside the medians, and
	// notes for the report (report.rowNotes).
	over func(parts []any) (map[string]float64, []string)
}

// report is everything the markdown is made of.
type report struct {
	cfg      *config
	started  time.Time
	elapsed  time.Duration
	machine  []fact
	notes    []string
	peers    []*peer
	res      results
	profiles []profileSummary
	configs  map[string]string // peer -> generated configuration
	noise    []noiseRecord
	heaps    []heapSummary
	// freshTokens, freshSent, freshReused: the new-token row's distinct
	// tokens, how many it sent, and how many of those a second time.
	freshTokens, freshSent, freshReused int64
	// handshakes: row key -> peer -> the TLS connections of the
	// new-connection rows over every round.
	handshakes map[string]map[string]*handshakeTally
	// rowNotes: row key -> peer -> what the row's over said.
	rowNotes map[string]map[string][]string
}

// noiseRecord is the CPU that other processes used during one row.
type noiseRecord struct {
	row, peer    string
	other, steal float64 // share of one core
}

func rows(cfg *config) []row {
	part := func(d time.Duration) time.Duration { return d / time.Duration(cfg.rounds) }
	return []row{
		{
			name:    "round trips",
			key:     "latency",
			metrics: []string{"lat50", "lat99", "latcpu"},
			rounds:  cfg.rounds,
			profile: true,
			run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
				return latencyRow(ctx, inst, cfg.pods, cfg.latencyConns, cfg.latencyInterval, part(cfg.latencyDuration))
			},
			values: func(part any) map[string]float64 {
				r := part.(latencyResult)
				slices.Sort(r.all)
				return map[string]float64{"lat50": us(r.all.p(50)), "lat99": us(r.all.p(99)), "latcpu": 100 * r.cpu / r.dur.Seconds()}
			},
			line: func(v map[string]float64, parts []any) string {
				n := 0
				for _, p := range parts {
					n += len(p.(latencyResult).all)
				}
				return fmt.Sprintf("p50 %.0f µs, p99 %.0f µs, CPU %.0f%% of a core (%d round trips)", v["lat50"], v["lat99"], v["latcpu"], n)
			},
		},
		{
			name:    "bulk throughput",
			key:     "bulk",
			metrics: []string{"bulk", "bulkcpu"},
			rounds:  cfg.rounds,
			profile: true,
			run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
				return throughputRow(ctx, inst, cfg.pods, cfg.bulkConns, cfg.bulkWindow, cfg.bulkSize, part(cfg.bulkDuration))
			},
			values: func(part any) map[string]float64 {
				r := part.(throughputResult)
				return map[string]float64{"bulk": r.mbps(), "bulkcpu": r.cpuPerGB()}
			},
			line: func(v map[string]float64, parts []any) string {
				var b int64
				for _, p := range parts {
					b += p.(throughputResult).bytes
				}
				return fmt.Sprintf("%.0f MB/s, %.2f CPU s/GB (%.1f GB in all)", v["bulk"], v["bulkcpu"], float64(b)/1e9)
			},
		},
		rateRow(cfg, "new connections, plain", "rate", false),
		rateRow(cfg, "new connections, TLS", "ratetls", true),
		browserRowDef(cfg, "new connections, plain, browser-like", browserRowKey(browserMode{}), browserMode{}),
		browserRowDef(cfg, "new connections, TLS, browser-like", browserRowKey(browserMode{tls: true}), browserMode{tls: true}),
		browserRowDef(cfg, "new connections, TLS, browser-like, X25519 only", browserRowKey(browserMode{tls: true, x25519: true}), browserMode{tls: true, x25519: true}),
		browserRowDef(cfg, "new connections, TLS, browser-like, resumed", browserRowKey(browserMode{tls: true, resume: true}), browserMode{tls: true, resume: true}),
		idleRowDef(cfg, "idle tunnels", "idle", false),
		idleRowDef(cfg, "idle tunnels, TLS", "idletls", true),
		tokenRateRowDef(cfg, false),
		tokenRateRowDef(cfg, true),
		fwdAuthRowDef(cfg),
		kidFloodRowDef(cfg),
		limitsRateRowDef(cfg, false),
		limitsRateRowDef(cfg, true),
		edgeFloodRowDef(cfg),
		idleH2RowDef(cfg),
		rtH2RowDef(cfg),
		rateH2RowDef(cfg),
	}
}

// idleRowDef is a memory row: idle tunnels, plain or TLS, in one round.
func idleRowDef(cfg *config, name, key string, useTLS bool) row {
	return row{
		name:        name,
		key:         key,
		metrics:     []string{key, key + "rss"},
		rounds:      1,
		proxiesOnly: true,
		heap:        true,
		run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
			return idleRow(ctx, inst, cfg.pods, cfg.idleWarmup, cfg.idleTunnels-cfg.idleWarmup, cfg.settle, useTLS)
		},
		values: func(part any) map[string]float64 {
			r := part.(idleResult)
			return map[string]float64{key: r.perTunnel / 1024, key + "rss": float64(r.rss) / (1 << 20)}
		},
		line: func(v map[string]float64, _ []any) string {
			return fmt.Sprintf("%.1f KiB per tunnel, RSS %.0f MiB at %d tunnels", v[key], v[key+"rss"], cfg.idleTunnels)
		},
	}
}

func rateRow(cfg *config, name, key string, useTLS bool) row {
	return rateRowOf(name, key, cfg.rounds, func(ctx context.Context, inst *instance) (rateResult, error) {
		return connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, cfg.rateDuration/time.Duration(cfg.rounds), useTLS, "", nil)
	})
}

// browserRowKey names the browser-like rows in -rows.
func browserRowKey(m browserMode) string {
	switch {
	case !m.tls:
		return "ratebrowser"
	case m.resume:
		return "ratetlsresume"
	case m.x25519:
		return "ratetlsbrowserx25519"
	}
	return "ratetlsbrowser"
}

// browserRowKeys are the browser-like rows, in the report's order.
var browserRowKeys = []string{"ratebrowser", "ratetlsbrowser", "ratetlsbrowserx25519", "ratetlsresume"}

// browserRowDef is a new-connection row with the browser-like client in
// mode m. Its TLS listeners issue session tickets, as each peer does by
// default (the raw rows turn them off): the full handshakes then cost
// what a browser's first connection costs, and the resumed row has
// tickets to resume with.
func browserRowDef(cfg *config, name, key string, m browserMode) row {
	rw := rateRowOf(name, key, cfg.rounds, func(ctx context.Context, inst *instance) (rateResult, error) {
		return browserRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, cfg.rateDuration/time.Duration(cfg.rounds), m)
	})
	rw.tickets = m.tls
	return rw
}

// rateRowOf is a new-connection row whose rounds measure does.
func rateRowOf(name, key string, rounds int, measure func(ctx context.Context, inst *instance) (rateResult, error)) row {
	return row{
		name:    name,
		key:     key,
		metrics: []string{key, key + "cpu"},
		rounds:  rounds,
		profile: true,
		run: func(ctx context.Context, _ *env, inst *instance, _ int) (any, error) {
			return measure(ctx, inst)
		},
		values: func(part any) map[string]float64 {
			r := part.(rateResult)
			return map[string]float64{key: r.perSecond(), key + "cpu": 1e6 * r.cpuPerConn()}
		},
		line: func(v map[string]float64, parts []any) string {
			var count, failed int64
			var firstErr error
			var hs handshakeTally
			for _, p := range parts {
				q := p.(rateResult)
				count += q.count
				failed += q.failed
				hs.add(q.hs)
				if firstErr == nil {
					firstErr = q.firstErr
				}
			}
			s := fmt.Sprintf("%.0f/s, %.0f µs CPU each (%d connections in all", v[key], v[key+"cpu"], count)
			if hs.conns > 0 {
				s += fmt.Sprintf("; TLS group %s; resumed %.1f%%", hs.groupsText(), hs.resumedShare())
			}
			s += ")"
			if failed > 0 {
				s += fmt.Sprintf(", %d failed (first: %v)", failed, firstErr)
			}
			return s
		},
	}
}

// median of vs (the mean of the middle two for an even count).
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func runBench(ctx context.Context, cfg *config) error {
	rep := &report{cfg: cfg, started: time.Now(), res: results{}, configs: map[string]string{}}
	load0 := loadAvg()
	if cfg.install {
		if note := installPeers(ctx); note != "" {
			rep.notes = append(rep.notes, "Install: "+note)
			fmt.Println("install:", note)
		}
	}
	dir, err := os.MkdirTemp("", "wsgate-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Println("temp folder (kept):", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// nginx workers run as an unprivileged user and use folders in here.
	_ = os.Chmod(dir, 0o755)
	tlsf, err := makeCert(dir)
	if err != nil {
		return err
	}
	echo, err := startEcho(ctx, cfg.pods, tlsf)
	if err != nil {
		return err
	}
	defer echo.stop()
	ident, err := newIdentityEnv(dir)
	if err != nil {
		return err
	}
	defer ident.stop()
	if slices.Contains(strings.Split(cfg.rows, ","), tokenRowKey(true)) {
		t0 := time.Now()
		if err := ident.signFresh(cfg.freshTokens); err != nil {
			return err
		}
		fmt.Printf("signed %d distinct tokens for %s in %s\n", cfg.freshTokens, tokenRowKey(true), time.Since(t0).Round(time.Millisecond))
	}
	e := &env{dir: dir, pods: cfg.pods, echo: echo, tls: tlsf, ident: ident}

	all := []*peer{directPeer(), wsgatePeer(), nginxPeer(findBinary("nginx"), ""), nginxPQPeer(cfg.nginxOpenSSL), haproxyPeer(findBinary("haproxy"))}
	wanted := strings.Split(cfg.peers, ",")
	for _, p := range all {
		if p.name != "direct" && p.name != "wsgate" && !slices.Contains(wanted, p.name) {
			continue
		}
		if p.skip != "" {
			rep.notes = append(rep.notes, fmt.Sprintf("%s skipped: %s.", p.name, p.skip))
			fmt.Printf("%s skipped: %s\n", p.name, p.skip)
		}
		rep.peers = append(rep.peers, p)
	}
	rep.machine = machineFacts(rep.peers)
	fmt.Printf("wsgate bench: %d pods on loopback; load average %s\n", cfg.pods, load0)

	for _, rw := range rows(cfg) {
		if !slices.Contains(strings.Split(cfg.rows, ","), rw.key) {
			continue
		}
		if err := rep.runRow(ctx, e, rw); err != nil {
			return err
		}
	}
	rep.elapsed = time.Since(rep.started)
	rep.freshTokens, rep.freshSent, rep.freshReused = int64(len(ident.fresh)), ident.freshNext.Load(), ident.freshReused.Load()
	rep.machine = append(rep.machine, fact{"Load average (1, 5, 15 min)", "at start " + load0 + "; at end " + loadAvg()})
	if len(rep.noise) > 0 {
		var sum, top float64
		for _, n := range rep.noise {
			sum += max(n.other, 0)
			top = max(top, n.other)
		}
		rep.machine = append(rep.machine, fact{"Other work during the rows",
			fmt.Sprintf("other processes used %.0f%% of a core on average (up to %.0f%% in a row): see the table under the results", 100*sum/float64(len(rep.noise)), 100*top)})
	}
	rep.addConfigs(cfg.pods)

	md := rep.markdown()
	idPart := rep.identityPart()
	brPart := rep.browserPart()
	edPart := rep.edgePart()
	h2Part := rep.http2Part()
	if cfg.out == "-" {
		fmt.Print("\n" + md)
		for _, part := range []string{idPart, brPart, edPart, h2Part} {
			if part != "" {
				fmt.Print("\n" + part + "\n")
			}
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			return err
		}
		// The control plane's part, written by its own benchmark, stays.
		// So do the identity, browser-like, edge and HTTP/2 parts when
		// their rows did not run; they come last.
		if old, err := os.ReadFile(cfg.out); err == nil {
			if part := benchdoc.ControlPlane(string(old)); part != "" {
				md = benchdoc.WithControlPlane(md, part)
			}
			if idPart == "" {
				idPart = benchdoc.Part(string(old), benchdoc.IdentityBegin, benchdoc.IdentityEnd)
			}
			if brPart == "" {
				brPart = benchdoc.Part(string(old), benchdoc.BrowserBegin, benchdoc.BrowserEnd)
			}
			if edPart == "" {
				edPart = benchdoc.Part(string(old), benchdoc.EdgeBegin, benchdoc.EdgeEnd)
			}
			if h2Part == "" {
				h2Part = benchdoc.Part(string(old), benchdoc.HTTP2Begin, benchdoc.HTTP2End)
			}
		}
		if idPart != "" {
			md = benchdoc.WithPart(md, benchdoc.IdentityBegin, benchdoc.IdentityEnd, idPart)
		}
		if brPart != "" {
			md = benchdoc.WithPart(md, benchdoc.BrowserBegin, benchdoc.BrowserEnd, brPart)
		}
		if edPart != "" {
			md = benchdoc.WithPart(md, benchdoc.EdgeBegin, benchdoc.EdgeEnd, edPart)
		}
		if h2Part != "" {
			md = benchdoc.WithPart(md, benchdoc.HTTP2Begin, benchdoc.HTTP2End, h2Part)
		}
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (%s)\n", cfg.out, rep.elapsed.Round(time.Second))
	}
	// The harness's own peers must work; nginx and haproxy failures are
	// reported in the table.
	var errs []error
	for m, byPeer := range rep.res {
		for _, name := range []string{"direct", "wsgate"} {
			if c, ok := byPeer[name]; ok && c.err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", name, m, c.err))
			}
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("run cut short: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// runRow runs one row against every peer, in rounds.
func (rep *report) runRow(ctx context.Context, e *env, rw row) error {
	parts := map[string][]any{}
	failed := map[string]bool{}
	var profiles, heaps []string
	noise := map[string]*noiseRecord{}
	for round := range rw.rounds {
		order := slices.Clone(rep.peers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			if p.skip != "" || (rw.proxiesOnly && p.name == "direct") || (rw.wsgateOnly && p.name != "wsgate") || failed[p.name] {
				continue
			}
			if ctx.Err() != nil {
				err := fmt.Errorf("not run: the -timeout of the whole run (%s) is over", rep.cfg.timeout)
				rep.res.fail(rw.metrics, p.name, err)
				failed[p.name] = true
				fmt.Printf("%-24s %-8s %v\n", rw.name, p.name, err)
				continue
			}
			prof := startOpts{tickets: rw.tickets, limits: rw.limits, http2: rw.http2}
			if p.name == "wsgate" && !rw.selfContained {
				base := filepath.Join(e.dir, fmt.Sprintf("%s-%d", strings.NewReplacer(" ", "-", ",", "").Replace(rw.name), round))
				if rw.profile {
					prof.cpu = base + ".cpu.pprof"
				}
				if rw.heap {
					prof.heap = base + ".heap.pprof"
				}
			}
			start := p.start
			if rw.selfContained {
				start = func(context.Context, *env, startOpts) (*instance, error) {
					return &instance{pids: func() []int { return nil }, stop: func() {}}, nil
				}
			}
			inst, err := start(ctx, e, prof)
			if err != nil {
				rep.res.fail(rw.metrics, p.name, fmt.Errorf("start: %w", err))
				failed[p.name] = true
				fmt.Printf("%-24s %-8s start failed: %v\n", rw.name, p.name, err)
				continue
			}
			ours := []int{os.Getpid()}
			for _, pid := range append([]int{e.echo.pid()}, inst.pids()...) {
				if !slices.Contains(ours, pid) {
					ours = append(ours, pid)
				}
			}
			meter := startNoise(ours)
			part, err := rw.run(ctx, e, inst, round)
			other, steal := meter.stop()
			inst.stop()
			if n := noise[p.name]; n == nil {
				noise[p.name] = &noiseRecord{row: rw.name, peer: p.name, other: other, steal: steal}
			} else if n.other >= 0 && other >= 0 {
				// Rounds are of equal length: the mean share.
				n.other = (n.other*float64(round) + other) / float64(round+1)
				n.steal = (n.steal*float64(round) + steal) / float64(round+1)
			}
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("cut short: the -timeout of the whole run (%s) is over: %w", rep.cfg.timeout, err)
				}
				rep.res.fail(rw.metrics, p.name, err)
				failed[p.name] = true
				fmt.Printf("%-24s %-8s failed: %v\n", rw.name, p.name, err)
				continue
			}
			if prof.cpu != "" {
				profiles = append(profiles, prof.cpu)
			}
			if prof.heap != "" {
				heaps = append(heaps, prof.heap)
			}
			parts[p.name] = append(parts[p.name], part)
			// Let the sockets this round closed go before the next.
			sleep(ctx, min(time.Second, rep.cfg.settle))
		}
	}
	for _, p := range rep.peers {
		if n := noise[p.name]; n != nil {
			rep.noise = append(rep.noise, *n)
		}
		if failed[p.name] || len(parts[p.name]) == 0 {
			continue
		}
		byMetric := map[string][]float64{}
		for _, part := range parts[p.name] {
			for k, v := range rw.values(part) {
				byMetric[k] = append(byMetric[k], v)
			}
		}
		for _, part := range parts[p.name] {
			if r, ok := part.(rateResult); ok && r.hs.conns > 0 {
				rep.tally(rw.key, p.name).add(r.hs)
			}
		}
		vals := map[string]float64{}
		for k, vs := range byMetric {
			vals[k] = median(vs)
			rep.res.set(k, p.name, vals[k])
		}
		if rw.over != nil {
			all, notes := rw.over(parts[p.name])
			for k, v := range all {
				vals[k] = v
				rep.res.set(k, p.name, v)
			}
			rep.notesOf(rw.key)[p.name] = notes
		}
		summary := rw.line(vals, parts[p.name])
		if n := noise[p.name]; n != nil && n.other > 0.1 {
			summary += fmt.Sprintf(" [other processes: %.0f%% of a core]", 100*n.other)
		}
		fmt.Printf("%-24s %-8s %s\n", rw.name, p.name, summary)
	}
	if len(profiles) > 0 && !failed["wsgate"] {
		// Not bound by ctx: a run that is cut short still reports.
		ps, err := summarizeProfile(context.Background(), rw.name, profiles)
		if err != nil {
			return fmt.Errorf("profile of %s: %w", rw.name, err)
		}
		rep.profiles = append(rep.profiles, ps)
	}
	if len(heaps) > 0 && !failed["wsgate"] {
		hs, err := summarizeHeap(context.Background(), rw.name, heaps[0])
		if err != nil {
			return fmt.Errorf("heap profile of %s: %w", rw.name, err)
		}
		rep.heaps = append(rep.heaps, hs)
	}
	return nil
}

// tally is the handshake tally of row key and peer.
func (rep *report) tally(key, peer string) *handshakeTally {
	if rep.handshakes == nil {
		rep.handshakes = map[string]map[string]*handshakeTally{}
	}
	if rep.handshakes[key] == nil {
		rep.handshakes[key] = map[string]*handshakeTally{}
	}
	t := rep.handshakes[key][peer]
	if t == nil {
		t = &handshakeTally{}
		rep.handshakes[key][peer] = t
	}
	return t
}

// notesOf is the notes of row key, by peer.
func (rep *report) notesOf(key string) map[string][]string {
	if rep.rowNotes == nil {
		rep.rowNotes = map[string]map[string][]string{}
	}
	if rep.rowNotes[key] == nil {
		rep.rowNotes[key] = map[string][]string{}
	}
	return rep.rowNotes[key]
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// runPaired runs the two halves of a paired round on one instance, in
// reverse order on odd rounds (so that neither half always runs first,
// on a warmer or colder process), with pause between them.
func runPaired(ctx context.Context, round int, pause time.Duration, halves []func() error) error {
	if round%2 == 1 {
		halves = slices.Clone(halves)
		slices.Reverse(halves)
	}
	for i, half := range halves {
		if i > 0 {
			sleep(ctx, pause)
		}
		if err := half(); err != nil {
			return err
		}
	}
	return nil
}
