package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// gatewayArgs are the gateway role's flags.
type gatewayArgs struct {
	backends, certFile, keyFile string
	// jwks is the file of the key set that verifies the tokens on /auth.
	jwks string
	// fwdAuth is the address of the forward-auth service of /fwd.
	fwdAuth                string
	cpuprofile, memprofile string
	// tickets: the TLS listener issues session tickets (resumption on).
	tickets bool
	// limits are the gateway's per-client limits (formatLimits; "":
	// none).
	limits string
	// http2: the TLS listener offers h2, for websockets over HTTP/2.
	http2 bool
}

// runGateway is the measured wsgate child (-role=gateway): it serves a
// static table allowlisting backends on every host under "/" (open),
// "/auth" (an ES256 token whose sub binds it to the pods, verified with
// the key set in the jwks file), "/fwd" (asking the forward-auth
// service at fwdAuth) and "/lim" (open, with per-client limits that
// never limit: limitsRoute), with the gateway's per-client limits in
// limits (none when empty), on a plain and a TLS listener (offering h2
// for websockets over HTTP/2 with http2)
// (proxy.Server.ServeTLS with the run's certificate), prints "listening
// <plain> <tls>" once ready, and serves until SIGTERM. The open route
// admits the browser-like clients' Origin (benchOrigins); the TLS
// listener resumes sessions only with tickets. With cpuprofile,
// it profiles its whole life and writes the profile on SIGTERM; with
// memprofile, it writes a heap profile there on SIGUSR1, and its memory
// figures beside it (memprofile + ".txt").
func runGateway(a gatewayArgs) error {
	var bs []routing.Backend
	for i, s := range strings.Split(a.backends, ",") {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("-backends: %w", err)
		}
		bs = append(bs, routing.Backend{Pod: "pod-" + strconv.Itoa(i), Addr: ap})
	}
	cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
	if err != nil {
		return err
	}
	if a.http2 && !proxy.ExtendedConnect() {
		return errors.New("-http2: websockets over HTTP/2 need the gateway's own HTTP/2, on Linux")
	}
	limits, err := parseLimits(a.limits)
	if err != nil {
		return fmt.Errorf("-client-limits: %w", err)
	}
	routes := []*routing.Route{{
		Key: routing.RouteKey{Namespace: "bench", Name: "echo"}, PathPrefix: "/", BackendPath: "/", Backends: bs,
		AllowedOrigins: benchOrigins,
	}, limitsRoute(bs)}
	if a.jwks != "" {
		doc, err := os.ReadFile(a.jwks)
		if err != nil {
			return err
		}
		keys, err := auth.StaticKeys(doc)
		if err != nil {
			return fmt.Errorf("-jwks: %w", err)
		}
		routes = append(routes, tokenRoute(bs, auth.NewVerifier(auth.Config{Issuer: benchIssuer, Audiences: []string{benchAudience}, Keys: keys})))
	}
	if a.fwdAuth != "" {
		ap, err := netip.ParseAddrPort(a.fwdAuth)
		if err != nil {
			return fmt.Errorf("-fwdauth: %w", err)
		}
		routes = append(routes, &routing.Route{
			Key: routing.RouteKey{Namespace: "bench", Name: "echo-fwd"}, PathPrefix: "/fwd", BackendPath: "/",
			Backends: slices.Clone(bs),
			Auth: &routing.Auth{Forward: &routing.ForwardAuth{
				Service: "bench/auth", Addrs: []netip.AddrPort{ap}, Path: "/check", Timeout: 5 * time.Second,
			}},
		})
	}
	if a.cpuprofile != "" {
		f, err := os.Create(a.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), routes))
	// Prometheus metrics on, as cmd/wsgate runs; no access log, as nginx
	// and haproxy run here.
	srv := proxy.New(tables, proxy.Options{
		MaxTunnels: 10000, IdleTimeout: -1, Log: logr.Discard(),
		Metrics:      proxy.NewMetrics(prometheus.NewRegistry()),
		ClientLimits: limits,
		HTTP2:        a.http2,
	})
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	secure, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(plain) }()
	go func() {
		errs <- srv.ServeTLS(secure, &tls.Config{
			Certificates:           []tls.Certificate{cert},
			MinVersion:             tls.VersionTLS12,
			SessionTicketsDisabled: !a.tickets,
		})
	}()
	fmt.Printf("listening %s %s\n", plain.Addr(), secure.Addr())

	if a.memprofile != "" {
		usr := make(chan os.Signal, 1)
		signal.Notify(usr, syscall.SIGUSR1)
		go func() {
			for range usr {
				if err := writeHeap(a.memprofile); err != nil {
					fmt.Fprintf(os.Stderr, "gateway: heap profile: %v\n", err)
				}
			}
		}()
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	var serveErr error
	select {
	case <-sig:
	case serveErr = <-errs:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(serveErr, srv.Shutdown(ctx, 0))
}

// tokenRoute is the route under "/auth": bs, each bound to the value
// "bench", behind tokens that verifier accepts and whose sub claim
// includes it.
func tokenRoute(bs []routing.Backend, verifier *auth.Verifier) *routing.Route {
	bound := slices.Clone(bs)
	for i := range bound {
		bound[i].Bound = benchSubject
	}
	return &routing.Route{
		Key: routing.RouteKey{Namespace: "bench", Name: "echo-auth"}, PathPrefix: "/auth", BackendPath: "/",
		Backends: bound,
		Auth:     &routing.Auth{Tokens: verifier, BindingClaim: "sub"},
	}
}

// memFigures are the runtime/metrics that the heap snapshot records.
var memFigures = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/gc/stack/starting-size:bytes",
	"/memory/classes/total:bytes",
}

// writeHeap writes a heap profile (after a GC) to path and the memory
// figures to path + ".txt"; path appears last, complete.
func writeHeap(path string) error {
	runtime.GC()
	samples := make([]metrics.Sample, len(memFigures))
	for i, name := range memFigures {
		samples[i].Name = name
	}
	metrics.Read(samples)
	var b strings.Builder
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			fmt.Fprintf(&b, "%s %d\n", s.Name, s.Value.Uint64())
		}
	}
	if err := os.WriteFile(path+".txt", []byte(b.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// startWsgate starts a fresh gateway child for one row, with the profiles,
// the session resumption and the per-client limits prof asks for.
func startWsgate(ctx context.Context, e *env, prof startOpts) (*instance, error) {
	var backends []string
	for i := range e.pods {
		backends = append(backends, podIP(i)+":"+strconv.Itoa(e.echo.port))
	}
	args := []string{"-role=gateway", "-backends=" + strings.Join(backends, ","),
		"-tls-cert=" + e.tls.cert, "-tls-key=" + e.tls.key,
		"-jwks=" + e.ident.jwksFile, "-fwdauth=" + e.ident.fwdAddr}
	if prof.cpu != "" {
		args = append(args, "-cpuprofile="+prof.cpu)
	}
	if prof.heap != "" {
		args = append(args, "-memprofile="+prof.heap)
	}
	if prof.tickets {
		args = append(args, "-tls-tickets")
	}
	if prof.limits != "" {
		args = append(args, "-client-limits="+prof.limits)
	}
	if prof.http2 {
		args = append(args, "-http2")
	}
	ch, line, err := startChildEnv(ctx, "gateway", nil, args...)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "listening" {
		ch.stop()
		return nil, fmt.Errorf("gateway said %q", line)
	}
	plain, secure := f[1], f[2]
	var snapshot func() error
	if prof.heap != "" {
		snapshot = func() error {
			_ = os.Remove(prof.heap)
			if err := ch.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				return err
			}
			for range 300 {
				if _, err := os.Stat(prof.heap); err == nil {
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fmt.Errorf("no heap profile after 15s")
		}
	}
	return &instance{
		dial: func(pod int, useTLS bool) (string, string) {
			if useTLS {
				return secure, "/" + podIP(pod) + "/"
			}
			return plain, "/" + podIP(pod) + "/"
		},
		pids:     func() []int { return []int{ch.pid()} },
		stop:     ch.stop,
		snapshot: snapshot,
	}, nil
}
