package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

type fact struct{ name, value string }

// machineFacts describes the machine and the peers' versions.
func machineFacts(peers []*peer) []fact {
	facts := []fact{{"Cores (nproc)", nproc()}, {"CPU", cpuModel()}, {"Kernel", kernel()}, {"Go", goVersion()}}
	for _, p := range peers {
		switch p.name {
		case "nginx", nginxPQ, "haproxy":
			v := p.version
			if p.skip != "" {
				v = "not run: " + p.skip
			}
			facts = append(facts, fact{p.name, v})
		}
	}
	return facts
}

func nproc() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return strconv.Itoa(runtime.NumCPU())
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func goVersion() string {
	return runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// goTool returns the go command of the toolchain that built this program.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); isExecutable(p) { //nolint:staticcheck // the toolchain that built the bench, when go run ran it
		return p
	}
	return "go"
}

// profileSummary is a CPU profile of the wsgate child for one row.
type profileSummary struct {
	row      string
	duration string // "Duration: ..., Total samples = ..."
	top      []string
	shares   []share // flat time by kind of work (adds up to 100%)
	stages   []share // cumulative time under chosen functions (overlapping)
}

type share struct {
	what string
	pct  float64
}

// stages are functions whose cumulative time tells where a tunnel's
// life is spent; the first name found in the profile is used.
var stages = []struct {
	what  string
	names []string
	// sum: the stage is every name's time added (names in call trees
	// apart), not the first name found.
	sum bool
}{
	{"accepting connections", []string{"github.com/wsgate/wsgate/proxy/internal/evloop.accept4", "net.(*TCPListener).Accept"}, false},
	{"TLS handshake with the client", []string{"crypto/tls.(*Conn).serverHandshake", "crypto/tls.(*Conn).handshakeContext"}, false},
	{"parsing the client's request head", []string{"github.com/wsgate/wsgate/proxy.parseRequestHead", "net/http.(*conn).readRequest"}, false},
	{"verifying tokens", []string{"github.com/wsgate/wsgate/auth.(*Verifier).Verify"}, false},
	{"asking the forward-auth service", []string{"github.com/wsgate/wsgate/proxy.(*Server).askForwardAuth"}, false},
	{"checking the client's refusal block", []string{"github.com/wsgate/wsgate/proxy.(*Server).checkBlocked"}, false},
	{"applying per-client limits", []string{"github.com/wsgate/wsgate/proxy.(*Server).limitClient"}, false},
	{"releasing per-client tunnel counts", []string{"github.com/wsgate/wsgate/proxy.(*clientHold).release"}, false},
	{"dialling the pod", []string{"github.com/wsgate/wsgate/proxy.(*loopHandshake).connect", "net.(*Dialer).DialContext"}, false},
	{"reading the pod's 101", []string{"github.com/wsgate/wsgate/proxy.(*loopHandshake).readAnswer", "github.com/wsgate/wsgate/proxy.readPodResponse"}, false},
	{"moving the tunnel to an event loop", []string{"github.com/wsgate/wsgate/proxy.carryOnLoop"}, false},
	{"carrying tunnels (event loops)", []string{"github.com/wsgate/wsgate/proxy/internal/evloop.(*Loop).collect"}, false},
	{"  of which handshakes", []string{"github.com/wsgate/wsgate/proxy.(*Server).accepted", "github.com/wsgate/wsgate/proxy.(*loopHandshake).ready"}, true},
	{"  of which reading", []string{"github.com/wsgate/wsgate/proxy.(*loopTunnel).pump"}, false},
	{"  of which collecting events (epoll_wait)", []string{"github.com/wsgate/wsgate/proxy/internal/evloop.epollPoll", "golang.org/x/sys/unix.EpollWait"}, false},
	{"  of which registering sockets (epoll_ctl)", []string{"github.com/wsgate/wsgate/proxy/internal/evloop.epollCtl"}, false},
	{"  of which ending tunnels (close, metrics)", []string{"github.com/wsgate/wsgate/proxy.(*loopTunnel).end"}, false},
	{"carrying tunnels (goroutines)", []string{"github.com/wsgate/wsgate/proxy.(*connTunnel).pump"}, false},
	{"closing sockets", []string{"net.(*conn).Close"}, false},
	{"goroutine scheduling", []string{"runtime.schedule"}, false},
	{"allocation", []string{"runtime.mallocgc"}, false},
	{"garbage collection", []string{"runtime.gcBgMarkWorker"}, false},
}

// summarizeProfile runs go tool pprof -top on the profile, keeps its
// first lines, sorts the flat time into kinds of work and reads the
// cumulative time of the stages.
func summarizeProfile(ctx context.Context, row string, paths []string) (profileSummary, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool(), append([]string{"tool", "pprof", "-top", "-nodecount=100000"}, paths...)...).CombinedOutput()
	if err != nil {
		return profileSummary{}, fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	ps := profileSummary{row: row}
	kinds := map[string]float64{}
	cum := map[string]float64{}
	inTable := false
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "Duration:") {
			ps.duration = strings.TrimSpace(line)
		}
		if strings.Contains(line, "flat%") && strings.Contains(line, "cum%") {
			inTable = true
			ps.top = append(ps.top, line)
			continue
		}
		if !inTable || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		if len(ps.top) <= 15 {
			ps.top = append(ps.top, line)
		}
		name := strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")
		if pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64); err == nil {
			kinds[kindOf(name)] += pct
		}
		if pct, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64); err == nil {
			cum[name] = pct
		}
	}
	if !inTable {
		return profileSummary{}, fmt.Errorf("go tool pprof printed no table: %s", out)
	}
	for _, k := range kindOrder {
		ps.shares = append(ps.shares, share{k, kinds[k]})
	}
	for _, st := range stages {
		found, total := false, 0.0
		for _, n := range st.names {
			if v, ok := cum[n]; ok {
				found, total = true, total+v
				if !st.sum {
					break
				}
			}
		}
		if found {
			ps.stages = append(ps.stages, share{st.what, total})
		}
	}
	return ps, nil
}

// heapSummary is the heap of the wsgate child with its idle tunnels open.
type heapSummary struct {
	row     string
	figures map[string]uint64 // runtime/metrics, by name
	top     []string
	// tls is the in-use heap allocated under crypto/tls (connection
	// state, keys, record buffers), in bytes.
	tls uint64
}

// summarizeHeap reads the heap profile's top entries (in-use bytes), the
// in-use bytes allocated under crypto/tls, and the memory figures written
// beside it.
func summarizeHeap(ctx context.Context, row, path string) (heapSummary, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool(), "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space", path).CombinedOutput()
	if err != nil {
		return heapSummary{}, fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	hs := heapSummary{row: row, figures: map[string]uint64{}}
	inTable := false
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "flat%") {
			inTable = true
		}
		if inTable {
			hs.top = append(hs.top, line)
		}
	}
	out, err = exec.CommandContext(ctx, goTool(), "tool", "pprof", "-top", "-nodecount=100000", "-unit=B", "-sample_index=inuse_space",
		`-focus=^crypto/tls\.`, path).CombinedOutput()
	if err != nil {
		return heapSummary{}, fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		// "Showing nodes accounting for 4721056B, 39.12% of 12068339B total"
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Showing nodes accounting for "); ok {
			v, _, _ = strings.Cut(v, ",")
			hs.tls, _ = strconv.ParseUint(strings.TrimSuffix(v, "B"), 10, 64)
		}
	}
	b, err := os.ReadFile(path + ".txt")
	if err != nil {
		return heapSummary{}, err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		name, v, _ := strings.Cut(line, " ")
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			hs.figures[name] = n
		}
	}
	return hs, nil
}

const (
	kindSyscall = "system calls (kernel: read, write, accept, connect, epoll, futex)"
	kindCrypto  = "cryptography (TLS handshake and record encryption)"
	kindRuntime = "Go runtime (scheduler, allocation, GC, timers, poller)"
	kindHTTP    = "HTTP and handshake code (net/http, bufio, textproto, proxy)"
	kindOther   = "other"
)

var kindOrder = []string{kindSyscall, kindCrypto, kindRuntime, kindHTTP, kindOther}

// kindOf sorts a function by the kind of work its flat time is.
func kindOf(fn string) string {
	switch {
	case strings.HasPrefix(fn, "syscall.") || strings.HasPrefix(fn, "internal/runtime/syscall") ||
		strings.Contains(fn, "Syscall"):
		return kindSyscall
	case isOneOf(fn, "runtime.futex", "runtime.epollwait", "runtime.usleep", "runtime.write1", "runtime.read",
		"runtime.madvise", "runtime.mmap", "runtime.osyield", "runtime.nanotime1", "runtime.sigprocmask", "runtime.rt_sigaction",
		"runtime.tgkill", "runtime.clone"):
		return kindSyscall
	case strings.HasPrefix(fn, "crypto/") || strings.Contains(fn, "golang.org/x/crypto"):
		return kindCrypto
	case strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/runtime") || strings.HasPrefix(fn, "internal/poll.") || strings.HasPrefix(fn, "sync.") ||
		strings.HasPrefix(fn, "sync/atomic.") || strings.HasPrefix(fn, "internal/sync.") || strings.HasPrefix(fn, "gcWriteBarrier") ||
		strings.HasPrefix(fn, "aeshash") || strings.HasPrefix(fn, "indexbytebody") || strings.HasPrefix(fn, "memeqbody"):
		return kindRuntime
	case strings.HasPrefix(fn, "net/http") || strings.HasPrefix(fn, "bufio.") || strings.HasPrefix(fn, "net/textproto") ||
		strings.HasPrefix(fn, "github.com/wsgate/wsgate/") || strings.HasPrefix(fn, "net/url") ||
		strings.HasPrefix(fn, "strings.") || strings.HasPrefix(fn, "bytes.") || strings.HasPrefix(fn, "strconv.") ||
		strings.HasPrefix(fn, "net/netip") || strings.HasPrefix(fn, "unicode") || strings.HasPrefix(fn, "fmt.") ||
		strings.HasPrefix(fn, "encoding/base64") || strings.HasPrefix(fn, "sort.") || strings.HasPrefix(fn, "context.") ||
		strings.HasPrefix(fn, "net."):
		return kindHTTP
	}
	return kindOther
}

// isOneOf reports whether s is one of names.
func isOneOf(s string, names ...string) bool {
	for _, n := range names {
		if s == n {
			return true
		}
	}
	return false
}

// The table ------------------------------------------------------------

type metricDef struct {
	key, label, unit string
	higherBetter     bool
	prec             int
	// noDirect: the direct column has no value (nothing in between).
	noDirect bool
}

func (r *report) metricDefs() []metricDef {
	c := r.cfg
	rate := float64(time.Second/c.latencyInterval) * float64(c.latencyConns)
	return []metricDef{
		{key: "lat50", label: fmt.Sprintf("Round trip p50, 32 B messages, %s msg/s over %s connections", benchdoc.Thousands(rate), benchdoc.Thousands(float64(c.latencyConns))), unit: "µs"},
		{key: "lat99", label: "Round trip p99 (same)", unit: "µs"},
		{key: "add50", label: "Added round trip p50 (minus direct)", unit: "µs", noDirect: true},
		{key: "add99", label: "Added round trip p99 (minus direct)", unit: "µs", noDirect: true},
		{key: "latcpu", label: "CPU during the round trips (direct: the pods)", unit: "% of a core", prec: 1},
		{key: "bulk", label: fmt.Sprintf("Bulk throughput, %d KiB messages, %d connections x %d in flight", c.bulkSize>>10, c.bulkConns, c.bulkWindow), unit: "MB/s", higherBetter: true},
		{key: "bulkcpu", label: "CPU per GB moved (direct: the pods)", unit: "CPU s/GB", prec: 2},
		{key: "rate", label: fmt.Sprintf("New connections, plain, %d at a time", c.rateConcurrency), unit: "conn/s", higherBetter: true},
		{key: "ratecpu", label: "CPU per new connection, plain (direct: the pods)", unit: "µs"},
		{key: "ratetls", label: fmt.Sprintf("New connections, TLS, %d at a time", c.rateConcurrency), unit: "conn/s", higherBetter: true},
		{key: "ratetlscpu", label: "CPU per new connection, TLS (direct: the pods)", unit: "µs"},
		{key: "idle", label: fmt.Sprintf("Memory per idle tunnel (RSS growth, %s tunnels)", benchdoc.Thousands(float64(c.idleTunnels))), unit: "KiB", noDirect: true, prec: 1},
		{key: "idlerss", label: fmt.Sprintf("RSS with %s idle tunnels", benchdoc.Thousands(float64(c.idleTunnels))), unit: "MiB", noDirect: true},
		{key: "idletls", label: fmt.Sprintf("Memory per idle tunnel, TLS (RSS growth, %s tunnels)", benchdoc.Thousands(float64(c.idleTunnels))), unit: "KiB", noDirect: true, prec: 1},
		{key: "idletlsrss", label: fmt.Sprintf("RSS with %s idle TLS tunnels", benchdoc.Thousands(float64(c.idleTunnels))), unit: "MiB", noDirect: true},
	}
}

// derive computes the added round trips.
func (r *report) derive() {
	for _, pair := range [][2]string{{"add50", "lat50"}, {"add99", "lat99"}} {
		d, ok := r.res.get(pair[1], "direct")
		for _, p := range r.peers {
			if p.name == "direct" {
				continue
			}
			v, vok := r.res.get(pair[1], p.name)
			switch {
			case !vok:
			case v.err != nil:
				r.res.fail([]string{pair[0]}, p.name, v.err)
			case !ok || d.err != nil:
				r.res.fail([]string{pair[0]}, p.name, fmt.Errorf("no direct baseline"))
			default:
				r.res.set(pair[0], p.name, v.v-d.v)
			}
		}
	}
}

func formatValue(v float64, prec int) string {
	if prec == 0 {
		return benchdoc.Thousands(v)
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// ratioText is "×a.bc name", or "" when the reference is missing.
func ratioText(v float64, ref cell, ok bool, name string) string {
	// A ratio of a negative or zero reference (an added latency within
	// the noise) means nothing.
	if !ok || ref.err != nil || ref.v <= 0 || v < 0 {
		return ""
	}
	return fmt.Sprintf("×%.2f %s", v/ref.v, name)
}

func (r *report) cellText(m metricDef, peer string) string {
	c, ok := r.res.get(m.key, peer)
	switch {
	case peer == "direct" && m.noDirect:
		return "—"
	case !ok:
		return "not run"
	case c.err != nil:
		return "failed¹"
	}
	s := formatValue(c.v, m.prec)
	var ratios []string
	if peer != "nginx" {
		n, nok := r.res.get(m.key, "nginx")
		if t := ratioText(c.v, n, nok, "nginx"); t != "" {
			ratios = append(ratios, t)
		}
	}
	if peer != "direct" && !m.noDirect {
		d, dok := r.res.get(m.key, "direct")
		if t := ratioText(c.v, d, dok, "direct"); t != "" {
			ratios = append(ratios, t)
		}
	}
	if len(ratios) > 0 {
		s += "<br>" + strings.Join(ratios, " · ")
	}
	return s
}

func (r *report) markdown() string {
	r.derive()
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.cfg

	w("# Benchmarks: wsgate beside the nginx recipe it replaces\n\n")
	if c.smoke {
		w("> **Smoke run** (`make bench-smoke`): tiny parameters that only check the harness works; its figures mean nothing.\n\n")
	}
	by := "Written by `make bench` (`go run ./test/bench`, [test/bench](../test/bench))"
	if c.smoke {
		by = "Printed by `make bench-smoke` (`go run ./test/bench -smoke`)"
	}
	w("%s on %s, in %s; every run overwrites it.\n", by, r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	w("The same workloads go to the echo pods directly (the baseline), through wsgate, through nginx with the README's regex recipe, and through HAProxy.\n\n")
	w("**Read the ratios, not the absolute figures.** The machine is small and shared: the clients, the echo pods and the proxy under test run on the same %s cores, and other work on the host can slow any row. Each ratio compares figures of this one run; a figure from another run or machine is not comparable.\n\n", nproc())

	w("## Machine\n\n| | |\n| --- | --- |\n")
	for _, f := range r.machine {
		w("| %s | %s |\n", f.name, mdEscape(f.value))
	}
	w("\n")
	for _, n := range r.notes {
		w("- %s\n", mdEscape(n))
	}
	if len(r.notes) > 0 {
		w("\n")
	}

	w("## Results\n\n")
	w("Each cell: the value, then its ratio to nginx and to direct in the same run (value ÷ reference). ")
	w("Lower is better except for throughput and connections per second. Every row starts each proxy afresh.\n\n")
	w("| Workload | Unit | Better |")
	for _, p := range r.peers {
		w(" %s |", p.name)
	}
	w("\n| --- | --- | --- |")
	for range r.peers {
		w(" ---: |")
	}
	w("\n")
	for _, m := range r.metricDefs() {
		better := "lower"
		if m.higherBetter {
			better = "higher"
		}
		w("| %s | %s | %s |", m.label, m.unit, better)
		for _, p := range r.peers {
			w(" %s |", r.cellText(m, p.name))
		}
		w("\n")
	}
	w("\n")
	var failures []string
	for _, m := range r.metricDefs() {
		for _, p := range r.peers {
			if cl, ok := r.res.get(m.key, p.name); ok && cl.err != nil {
				failures = append(failures, fmt.Sprintf("%s, %s: %v", p.name, m.label, cl.err))
			}
		}
	}
	if len(failures) > 0 {
		w("¹ Failures:\n\n")
		for _, f := range failures {
			w("- %s\n", mdEscape(f))
		}
		w("\n")
	}
	r.noiseTable(&b)
	r.reading(&b)

	w("## How each row is measured\n\n")
	w("- **Rounds**: each row but the memory ones runs in %d rounds of equal length, the peers in one order and then in the reverse order (A B C D, D C B A, ...), each round on a freshly started proxy, so that a load that comes and goes on the machine falls on every peer alike. A peer's figure is the median of its rounds (of an even count, the mean of the middle two), which one disturbed round cannot move far. Durations below are the totals over the rounds.\n", c.rounds)
	w("- **Round trips**: %d connections (raw websocket clients spread over %d pods), each sends a 32-byte binary message every %s at its own phase, waits for the echo and records the time from write to echo, for %s. Added round trip: the peer's percentile minus direct's.\n",
		c.latencyConns, c.pods, c.latencyInterval, c.latencyDuration)
	w("- **Bulk throughput**: %d connections each keep %d messages of %d KiB in flight for %s; each echo counts 2 × %d KiB moved (there and back). CPU: user + system time of the proxy's processes from `/proc/<pid>/stat` (nginx: master and workers) over the row; for direct, the echo pods' process.\n",
		c.bulkConns, c.bulkWindow, c.bulkSize>>10, c.bulkDuration, c.bulkSize>>10)
	w("- **New connections**: %d loops for %s each: TCP connect (and a full TLS handshake: ECDSA P-256 certificate made for the run, X25519, no session cache or tickets on either side), websocket handshake through the proxy to a pod, one 32-byte echo, close. Direct TLS is a Go websocket echo server terminating TLS itself.\n",
		c.rateConcurrency, c.rateDuration)
	w("- **Idle tunnels**: %d tunnels, then the proxy's RSS; %d more, then the RSS again (after %s each time): the growth divided by %d. The clients hold raw connections only; a sample of the tunnels then echoes, to show they were open. RSS is the sum over the proxy's processes. The TLS row is the same over the TLS listeners, each tunnel opened with a full handshake (the certificate and settings of the new-connection row: ECDSA P-256, X25519, no resumption); the clients then hold their TLS connections, which read nothing while idle.\n",
		c.idleWarmup, c.idleTunnels-c.idleWarmup, c.settle, c.idleTunnels-c.idleWarmup)
	w("- **Same CPU budget**: every proxy may use every core: wsgate's GOMAXPROCS is %d, nginx runs `worker_processes %d`, HAProxy `nbthread %d`. The clients and the pods use the same cores.\n", runtime.GOMAXPROCS(0), workerCount(), workerCount())
	w("- **Clients** write frames with a zero masking key (valid; nothing to unmask on the client, and no proxy unmasks), bind to 127.0.0.100–%d, and speak to proxies on 127.0.0.1; the pods listen on 127.0.0.11–%d, one port for all (the nginx recipe's `$1:PORT`).\n",
		99+clientAddrs, 10+c.pods)
	w("- **wsgate** is this repository's `proxy.Server` in a child process, serving a static routing table (one route, every pod allowlisted, idle timeout off) with `Serve` and `ServeTLS`, its Prometheus metrics on (as `cmd/wsgate` runs) and no access log (nginx and HAProxy log nothing here either). It writes a CPU profile during the round-trip, bulk and new-connection rows (the profiler's cost, about 1%%, is in those figures).\n\n")

	r.limits(&b)

	w("## wsgate profiles\n\n")
	w("`go tool pprof -top` of the wsgate child over each row (flat time: the function itself). Kinds of work sum the flat time of every function by package.\n\n")
	for _, p := range r.profiles {
		w("### %s\n\n%s\n\n", p.row, p.duration)
		w("Flat time by kind of work:\n\n")
		for _, s := range p.shares {
			w("- %s: %.0f%%\n", s.what, s.pct)
		}
		w("\nCumulative time under (overlapping):\n\n")
		for _, s := range p.stages {
			indent := ""
			what := s.what
			if t, ok := strings.CutPrefix(what, "  "); ok {
				indent, what = "  ", t
			}
			w("%s- %s: %.0f%%\n", indent, what, s.pct)
		}
		w("\n```text\n%s\n```\n\n", strings.Join(p.top, "\n"))
	}

	for _, h := range r.heaps {
		n := float64(c.idleTunnels)
		w("### %s: what the memory is\n\n", strings.ToUpper(h.row[:1])+h.row[1:])
		w("Taken in the wsgate child (after a GC) with its %s idle tunnels open: %d goroutines (%.1f per tunnel); goroutine stacks %.1f MiB (%.1f KiB per tunnel; new goroutines start with %.0f KiB); heap objects %.1f MiB (%.1f KiB per tunnel); all the Go runtime's memory %.1f MiB. ",
			benchdoc.Thousands(n), h.figures["/sched/goroutines:goroutines"], float64(h.figures["/sched/goroutines:goroutines"])/n,
			mib(h.figures["/memory/classes/heap/stacks:bytes"]), kib(h.figures["/memory/classes/heap/stacks:bytes"])/n,
			kib(h.figures["/gc/stack/starting-size:bytes"]),
			mib(h.figures["/memory/classes/heap/objects:bytes"]), kib(h.figures["/memory/classes/heap/objects:bytes"])/n,
			mib(h.figures["/memory/classes/total:bytes"]))
		w("The heap profile's top entries (in-use bytes, by the function that allocated them):\n\n```text\n%s\n```\n\n", strings.Join(h.top, "\n"))
	}

	w("## Configurations\n\n")
	w("Generated for each round into a temp folder (`$DIR`), run in the foreground, listening on 127.0.0.1 only; `PODPORT` is the pods' one port.\n\n")
	for _, name := range []string{"nginx", "haproxy"} {
		if cfgText, ok := r.configs[name]; ok {
			w("### %s\n\n```\n%s```\n\n", name, cfgText)
		}
	}
	w("HAProxy has no regex capture to dial: it routes by the first path segment through a map (`pods.map`: `<pod address> <backend>`), one backend per pod. That is an allowlist, like wsgate's table, and unlike nginx's recipe, which proxies to any address in the path.\n")
	return b.String()
}

// noiseTable shows the CPU that other processes on the machine used
// while each row ran.
func (r *report) noiseTable(b *strings.Builder) {
	if len(r.noise) == 0 {
		return
	}
	fmt.Fprintf(b, "### Other work on the machine during each row\n\n")
	fmt.Fprintf(b, "CPU used by processes other than the benchmark's (clients, pods, proxy) while the row ran, in %% of one core (of %s), from `/proc/stat`; stolen time (the hypervisor) when there was any. A row where these differ much between peers compares unequal conditions.\n\n", nproc())
	var rowNames []string
	cells := map[string]map[string]string{}
	for _, n := range r.noise {
		if cells[n.row] == nil {
			cells[n.row] = map[string]string{}
			rowNames = append(rowNames, n.row)
		}
		t := "?"
		if n.other >= 0 {
			t = fmt.Sprintf("%.0f%%", 100*n.other)
			if n.steal >= 0.01 {
				t += fmt.Sprintf(" (stolen %.0f%%)", 100*n.steal)
			}
		}
		cells[n.row][n.peer] = t
	}
	fmt.Fprintf(b, "| Row |")
	for _, p := range r.peers {
		fmt.Fprintf(b, " %s |", p.name)
	}
	fmt.Fprintf(b, "\n| --- |")
	for range r.peers {
		fmt.Fprintf(b, " ---: |")
	}
	fmt.Fprintf(b, "\n")
	for _, row := range rowNames {
		fmt.Fprintf(b, "| %s |", row)
		for _, p := range r.peers {
			t, ok := cells[row][p.name]
			if !ok {
				t = "—"
			}
			fmt.Fprintf(b, " %s |", t)
		}
		fmt.Fprintf(b, "\n")
	}
	fmt.Fprintf(b, "\n")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
func kib(b uint64) float64 { return float64(b) / (1 << 10) }

func mdEscape(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

// addConfigs keeps the generated configurations, with symbolic paths.
func (r *report) addConfigs(pods int) {
	for _, p := range r.peers {
		if p.skip != "" {
			continue
		}
		switch p.name {
		case "nginx":
			r.configs["nginx"] = expand(nginxConf, map[string]string{
				"workers": strconv.Itoa(workerCount()), "dir": "$DIR", "port": "PORT", "tlsport": "TLSPORT",
				"cert": "$DIR/cert.pem", "key": "$DIR/key.pem", "podport": "PODPORT",
				"resumption": nginxResumption(false),
			})
		case "haproxy":
			var backends strings.Builder
			for i := range min(pods, 2) {
				fmt.Fprintf(&backends, "\nbackend pod%d\n    server pod%d %s:PODPORT\n", i, i, podIP(i))
			}
			backends.WriteString("\n# ... one backend per pod\n")
			r.configs["haproxy"] = expand(haproxyConf, map[string]string{
				"workers": strconv.Itoa(workerCount()), "port": "PORT", "tlsport": "TLSPORT",
				"certkey": "$DIR/cert+key.pem", "map": "$DIR/pods.map", "backends": backends.String(),
				"resumption": haproxyResumption(false),
			})
		}
	}
}
