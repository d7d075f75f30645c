// Command bench measures wsgate's data plane on loopback side by side with
// the nginx recipe it replaces, HAProxy, and a direct connection to the
// pods, and writes the results to docs/benchmarks.md.
//
//	make bench          # about 7 minutes; installs nginx and haproxy from Debian if missing (root)
//	make bench-smoke    # seconds; no install, peers not installed are skipped, prints to stdout
//
// Every process runs on this machine and every address is on loopback:
// the echo pods (internal/echopod) in a child process on 127.0.0.11 and
// up, all on one port; wsgate in a fresh child process (this program,
// -role=gateway, serving a static table) for each row; nginx and haproxy
// from generated configurations in a temp folder, in the foreground, on
// 127.0.0.1; the clients in this process, on 127.0.0.100 and up.
//
// Rows: round trip of 32-byte messages at a fixed rate over many
// connections; bulk throughput of 64 KiB messages and the proxy's CPU per
// GB; new connections per second, plain and TLS (ECDSA P-256, no
// resumption); RSS per idle tunnel, plain and TLS; and, on request
// (-rows), new connections as browsers make them (a websocket library
// over net/http, Go's default TLS groups with the post-quantum hybrid
// first, a close handshake; full and resumed TLS handshakes), and the
// cost of identity at the handshake: new TLS connections
// with an ES256 token (the same one on each, or a new one on each), the
// latency forward auth adds, and the key fetches that tokens of unknown
// key IDs cause; and the public edge: new connections on a route with
// per-client limits beside one without, and well-behaved clients'
// handshakes while one client floods handshakes and one walks pod
// addresses, through a gateway with per-client limits; and websockets
// over HTTP/2 (RFC 8441), beside HTTP/1.1 TLS tunnels on the same
// gateway: memory per idle websocket beyond the first of a connection,
// round trips, and websockets opened on open connections. Timings on a small
// shared machine are noisy: the results are ratios against the baselines
// of the same run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// config is the bench role's parameters.
type config struct {
	smoke   bool
	out     string
	install bool
	timeout time.Duration
	keep    bool
	peers   string
	// nginxOpenSSL is the folder of the OpenSSL libraries of nginx-pq.
	nginxOpenSSL string
	rows         string
	pods         int
	rounds       int

	latencyConns    int
	latencyInterval time.Duration
	latencyDuration time.Duration

	bulkConns    int
	bulkWindow   int
	bulkSize     int
	bulkDuration time.Duration

	rateConcurrency int
	rateDuration    time.Duration

	idleTunnels int
	idleWarmup  int
	settle      time.Duration

	freshTokens int

	fwdConns    int
	fwdInterval time.Duration

	kidTokens   int
	kidDuration time.Duration

	edgeClients   int
	edgeMsgEvery  time.Duration
	edgeReconnect time.Duration
	edgeDuration  time.Duration
	edgeFloodConn int
}

func main() {
	var (
		role       = flag.String("role", "bench", "bench (default); gateway or echo: internal, the child processes")
		backends   = flag.String("backends", "", "gateway role: comma-separated ip:port list to allowlist")
		certFile   = flag.String("tls-cert", "", "gateway and echo roles: certificate PEM file")
		keyFile    = flag.String("tls-key", "", "gateway and echo roles: key PEM file")
		cpuprofile = flag.String("cpuprofile", "", "gateway role: write a CPU profile of the whole run here")
		memprofile = flag.String("memprofile", "", "gateway role: write a heap profile here on SIGUSR1")
		jwks       = flag.String("jwks", "", "gateway role: JSON Web Key Set file of the tokens on /auth (none: no /auth route)")
		fwdAuth    = flag.String("fwdauth", "", "gateway role: ip:port of the forward-auth service of /fwd (none: no /fwd route)")
		tickets    = flag.Bool("tls-tickets", false, "gateway role: issue TLS session tickets (resumption on)")
		http2      = flag.Bool("http2", false, "gateway role: the TLS listener offers h2, for websockets over HTTP/2 (the gateway's own HTTP/2, on its event loops)")
		limits     = flag.String("client-limits", "", "gateway role: the gateway's per-client limits, comma-separated name=value: rate and burst (handshakes), tunnels, refusals (a minute) and block, clients (tracked) (none: no limits)")
		cfg        config
	)
	flag.BoolVar(&cfg.smoke, "smoke", false, "a seconds-long run with tiny parameters: no install, prints the report to stdout unless -out is given")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks.md", "where the report goes (overwritten); - for stdout")
	flag.BoolVar(&cfg.install, "install", true, "install nginx and haproxy from Debian when missing (apt-get, as root)")
	flag.DurationVar(&cfg.timeout, "timeout", 9*time.Minute, "bound on the whole run")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temp folder (configurations, logs, profiles) and print its path")
	flag.StringVar(&cfg.peers, "peers", "direct,wsgate,nginx,haproxy", "the peers to measure (direct and wsgate always run); nginx-pq (not by default) is Debian's nginx run on the OpenSSL libraries in -nginx-openssl")
	flag.StringVar(&cfg.nginxOpenSSL, "nginx-openssl", "", "a folder holding OpenSSL 3.5 or later's libssl.so.3 and libcrypto.so.3 (hack/openssl.sh builds them), on which the peer nginx-pq runs Debian's nginx: its default groups put the post-quantum hybrid X25519MLKEM768 first, as Go's do")
	flag.StringVar(&cfg.rows, "rows", "latency,bulk,rate,ratetls,idle,idletls", "the rows to run: latency (round trips), bulk (throughput), rate and ratetls (new connections, plain and TLS), idle and idletls (memory of idle tunnels, plain and TLS); the others read \"not run\". New connections as browsers make them, not run by default (their section is kept in the file otherwise): ratebrowser and ratetlsbrowser (a websocket library over net/http, Go's default TLS groups, a close handshake at the end), ratetlsbrowserx25519 (the same offering X25519 only), ratetlsresume (the same resuming TLS sessions). Identity at the handshake, wsgate only, not run by default: ratetlsauth (new connections, TLS, the same ES256 token on each: reconnects), ratetlsauthnew (the same with a token not sent before on each: first connections), fwdauth (handshake latency with forward auth), kidflood (tokens of unknown key IDs against a fetched key set). The public edge, wsgate only, not run by default: ratelimits and ratetlslimits (new connections, plain and TLS, on a route with per-client limits that never limit, paired with the open route on the same gateway), edgeflood (well-behaved clients' handshakes, quiet and while one client floods handshakes and one walks pod addresses, through a gateway with per-client limits). Websockets over HTTP/2 (RFC 8441), wsgate only, not run by default: idleh2 (memory per idle websocket beyond the first of an HTTP/2 connection, 250 streams a connection), rth2 (round trips over HTTP/2 streams paired with HTTP/1.1 TLS tunnels on the same gateway), rateh2 (websockets opened and closed on already-open HTTP/2 connections, paired with new HTTP/1.1 TLS connections on the same gateway)")
	flag.IntVar(&cfg.pods, "pods", 16, "echo pods, on 127.0.0.11 and up (the echo role: how many to start)")
	flag.IntVar(&cfg.rounds, "rounds", 4, "split each row (but the memory ones) into rounds, the peers in one order then in reverse; a figure is the median of its rounds")
	flag.IntVar(&cfg.latencyConns, "latency-conns", 1000, "round-trip row: connections")
	flag.DurationVar(&cfg.latencyInterval, "latency-interval", 100*time.Millisecond, "round-trip row: each connection sends one message per interval")
	flag.DurationVar(&cfg.latencyDuration, "latency-duration", 20*time.Second, "round-trip row: duration")
	flag.IntVar(&cfg.bulkConns, "bulk-conns", 4, "throughput row: connections")
	flag.IntVar(&cfg.bulkWindow, "bulk-window", 4, "throughput row: messages in flight per connection")
	flag.IntVar(&cfg.bulkSize, "bulk-size", 64<<10, "throughput row: message size in bytes")
	flag.DurationVar(&cfg.bulkDuration, "bulk-duration", 10*time.Second, "throughput row: duration")
	flag.IntVar(&cfg.rateConcurrency, "rate-concurrency", 50, "new-connection rows: connections opened at a time")
	flag.DurationVar(&cfg.rateDuration, "rate-duration", 10*time.Second, "new-connection rows: duration of each")
	flag.IntVar(&cfg.idleTunnels, "idle-tunnels", 8000, "memory rows: idle tunnels held open at the end (at most 8000: two descriptors each)")
	flag.IntVar(&cfg.idleWarmup, "idle-warmup", 200, "memory rows: tunnels opened before the first RSS reading (part of -idle-tunnels)")
	flag.DurationVar(&cfg.settle, "settle", 2*time.Second, "memory rows: wait before each RSS reading")
	flag.IntVar(&cfg.freshTokens, "fresh-tokens", 100000, "new-token row: distinct tokens signed before the rows, each sent once while they last (more than the row's connections: a token sent twice would be verified once)")
	flag.IntVar(&cfg.fwdConns, "fwd-conns", 8, "forward-auth row: handshake loops")
	flag.DurationVar(&cfg.fwdInterval, "fwd-interval", 10*time.Millisecond, "forward-auth row: each loop starts a handshake every interval (duration: -rate-duration)")
	flag.IntVar(&cfg.kidTokens, "kidflood-tokens", 2000, "key-ID flood row: tokens of unknown key IDs sent")
	flag.DurationVar(&cfg.kidDuration, "kidflood-duration", 10*time.Second, "key-ID flood row: spread over this duration")
	flag.IntVar(&cfg.edgeClients, "edgeflood-clients", 200, "edge flood row: well-behaved clients, each on its own source address (127.0.20.1 and up, 200 an address block)")
	flag.DurationVar(&cfg.edgeMsgEvery, "edgeflood-message-interval", 200*time.Millisecond, "edge flood row: each well-behaved client sends a message on its tunnel every interval")
	flag.DurationVar(&cfg.edgeReconnect, "edgeflood-reconnect", time.Second, "edge flood row: each well-behaved client closes its tunnel and opens a new one every interval")
	flag.DurationVar(&cfg.edgeDuration, "edgeflood-duration", 64*time.Second, "edge flood row: the rounds' quiet and flood phases share it equally (4 rounds: 8s each)")
	flag.IntVar(&cfg.edgeFloodConn, "edgeflood-conns", 4, "edge flood row: the flooder's connections at a time")
	flag.Parse()

	var err error
	switch *role {
	case "gateway":
		err = runGateway(gatewayArgs{backends: *backends, certFile: *certFile, keyFile: *keyFile,
			jwks: *jwks, fwdAuth: *fwdAuth, cpuprofile: *cpuprofile, memprofile: *memprofile, tickets: *tickets, limits: *limits, http2: *http2})
	case "echo":
		err = runEcho(cfg.pods, *certFile, *keyFile)
	case "bench":
		if cfg.smoke {
			smokeDefaults(&cfg)
		}
		if err = cfg.check(); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
			err = runBench(ctx, &cfg)
			cancel()
		}
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// smokeDefaults shrinks every parameter not given on the command line.
func smokeDefaults(cfg *config) {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	small := map[string]func(){
		"out":                func() { cfg.out = "-" },
		"install":            func() { cfg.install = false },
		"timeout":            func() { cfg.timeout = 50 * time.Second },
		"pods":               func() { cfg.pods = 4 },
		"rounds":             func() { cfg.rounds = 2 },
		"latency-conns":      func() { cfg.latencyConns = 20 },
		"latency-duration":   func() { cfg.latencyDuration = time.Second },
		"bulk-conns":         func() { cfg.bulkConns = 2 },
		"bulk-duration":      func() { cfg.bulkDuration = 500 * time.Millisecond },
		"rate-concurrency":   func() { cfg.rateConcurrency = 5 },
		"rate-duration":      func() { cfg.rateDuration = 500 * time.Millisecond },
		"idle-tunnels":       func() { cfg.idleTunnels = 100 },
		"idle-warmup":        func() { cfg.idleWarmup = 20 },
		"settle":             func() { cfg.settle = 200 * time.Millisecond },
		"fresh-tokens":       func() { cfg.freshTokens = 2000 },
		"fwd-conns":          func() { cfg.fwdConns = 2 },
		"kidflood-tokens":    func() { cfg.kidTokens = 50 },
		"kidflood-duration":  func() { cfg.kidDuration = 500 * time.Millisecond },
		"edgeflood-clients":  func() { cfg.edgeClients = 20 },
		"edgeflood-duration": func() { cfg.edgeDuration = 4 * time.Second },
	}
	for name, apply := range small {
		if !set[name] {
			apply()
		}
	}
}

func (c *config) check() error {
	for _, name := range strings.Split(c.rows, ",") {
		if !slices.ContainsFunc(rows(c), func(r row) bool { return r.key == name }) {
			return fmt.Errorf("-rows: unknown row %q", name)
		}
	}
	switch {
	case c.rounds < 1 || c.rounds > 10:
		return fmt.Errorf("-rounds %d: 1 to 10", c.rounds)
	case c.pods < 1 || c.pods > 80:
		return fmt.Errorf("-pods %d: 1 to 80 (127.0.0.11 to 127.0.0.90)", c.pods)
	case c.idleTunnels > 8000:
		return fmt.Errorf("-idle-tunnels %d: at most 8000 (a proxy holds two descriptors per tunnel, 20000 at most)", c.idleTunnels)
	case c.idleWarmup < 1 || c.idleWarmup >= c.idleTunnels:
		return fmt.Errorf("-idle-warmup %d: at least 1 and under -idle-tunnels", c.idleWarmup)
	case c.latencyConns < 1 || c.latencyConns > 5000:
		return fmt.Errorf("-latency-conns %d: 1 to 5000", c.latencyConns)
	case c.bulkConns < 1 || c.bulkWindow < 1 || c.bulkSize < 1 || c.bulkSize > 16<<20:
		return fmt.Errorf("-bulk-conns, -bulk-window at least 1, -bulk-size 1 to 16 MiB")
	case c.rateConcurrency < 1 || c.rateConcurrency > 500:
		return fmt.Errorf("-rate-concurrency %d: 1 to 500", c.rateConcurrency)
	case c.latencyInterval <= 0 || c.latencyDuration <= 0 || c.bulkDuration <= 0 || c.rateDuration <= 0:
		return fmt.Errorf("durations must be positive")
	case c.fwdConns < 1 || c.fwdConns > 500 || c.fwdInterval <= 0:
		return fmt.Errorf("-fwd-conns %d: 1 to 500, -fwd-interval positive", c.fwdConns)
	case c.freshTokens < 1 || c.freshTokens > 1000000:
		return fmt.Errorf("-fresh-tokens %d: 1 to 1000000", c.freshTokens)
	case c.kidTokens < 1 || c.kidDuration <= 0:
		return fmt.Errorf("-kidflood-tokens at least 1, -kidflood-duration positive")
	case c.edgeClients < 1 || c.edgeClients > maxEdgeClients:
		return fmt.Errorf("-edgeflood-clients %d: 1 to %d (127.0.20.1 to %s)", c.edgeClients, maxEdgeClients, goodAddr(maxEdgeClients-1))
	case c.edgeFloodConn < 1 || c.edgeFloodConn > 64:
		return fmt.Errorf("-edgeflood-conns %d: 1 to 64", c.edgeFloodConn)
	case c.edgeMsgEvery <= 0 || c.edgeReconnect <= 0 || c.edgeDuration <= 0:
		return fmt.Errorf("-edgeflood-message-interval, -edgeflood-reconnect and -edgeflood-duration must be positive")
	case c.timeout <= 0 || c.timeout > 30*time.Minute:
		return fmt.Errorf("-timeout %s: up to 30m", c.timeout)
	}
	return nil
}
