// Command bench measures wsgate's data plane on loopback: memory per idle
// tunnel and message round-trip time, against a direct connection in the
// same run. The gateway runs in a child process (this binary, re-executed
// with -role=gateway) with a routing table given on its command line, so
// its memory is measured alone and no API server is needed.
//
//	go run ./test/bench -tunnels 5000 -messages 2000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

func main() {
	var (
		role     = flag.String("role", "bench", "bench (default) or gateway (internal: the measured child process)")
		backends = flag.String("backends", "", "gateway role: comma-separated ip:port list to allowlist")
		listen   = flag.String("listen", "127.0.0.1:0", "gateway role: listen address")
		tunnels  = flag.Int("tunnels", 5000, "idle tunnels to open for the memory row (at most ~9000: two descriptors per tunnel)")
		messages = flag.Int("messages", 2000, "messages per connection for the round-trip row")
		conns    = flag.Int("conns", 20, "connections for the round-trip row")
		pods     = flag.Int("pods", 8, "echo backends, on 127.0.0.11 and up")
		timeout  = flag.Duration("timeout", 5*time.Minute, "bound on the whole run")
	)
	flag.Parse()
	var err error
	switch *role {
	case "gateway":
		err = runGateway(*listen, *backends)
	case "bench":
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err = runBench(ctx, *pods, *tunnels, *conns, *messages)
		cancel()
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// runGateway serves a static table allowlisting backends on every host
// under "/", and prints "listening <addr>" once ready.
func runGateway(listen, backends string) error {
	var bs []routing.Backend
	for i, s := range strings.Split(backends, ",") {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("-backends: %w", err)
		}
		bs = append(bs, routing.Backend{Pod: "pod-" + strconv.Itoa(i), Addr: ap})
	}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{{
		Key: routing.RouteKey{Namespace: "bench", Name: "echo"}, PathPrefix: "/", BackendPath: "/", Backends: bs,
	}}))
	srv := proxy.New(tables, proxy.Options{MaxTunnels: 10000, IdleTimeout: -1, Log: logr.Discard()})
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", l.Addr())
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		_ = l.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// gatewayProcess is the measured child.
type gatewayProcess struct {
	cmd  *exec.Cmd
	addr string
}

func startGateway(ctx context.Context, backends []string) (*gatewayProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-role=gateway", "-backends="+strings.Join(backends, ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("gateway did not start: %w", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("gateway said %q", line)
	}
	return &gatewayProcess{cmd: cmd, addr: addr}, nil
}

func (g *gatewayProcess) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
	}
}

// rss returns a process's resident set size in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func runBench(ctx context.Context, pods, tunnels, conns, messages int) error {
	var backends []string
	for i := range pods {
		s, err := echopod.Start(fmt.Sprintf("127.0.0.%d:0", 11+i))
		if err != nil {
			return err
		}
		defer s.Close()
		backends = append(backends, s.Addr)
	}
	gw, err := startGateway(ctx, backends)
	if err != nil {
		return err
	}
	defer gw.stop()
	fmt.Printf("wsgate data plane on loopback, %d echo pods; %s\n\n", pods, machine())

	direct, viaGW, err := roundTrips(ctx, backends, gw.addr, conns, messages)
	if err != nil {
		return fmt.Errorf("round trips: %w", err)
	}
	fmt.Printf("round trip of a 32-byte message, %d connections x %d messages:\n", conns, messages)
	fmt.Printf("  direct   p50 %8s  p99 %8s\n", direct.p(50), direct.p(99))
	fmt.Printf("  wsgate   p50 %8s  p99 %8s   (%.2fx / %.2fx direct)\n\n", viaGW.p(50), viaGW.p(99),
		ratio(viaGW.p(50), direct.p(50)), ratio(viaGW.p(99), direct.p(99)))

	perTunnel, err := idleMemory(ctx, gw, backends, tunnels)
	if err != nil {
		return fmt.Errorf("idle memory: %w", err)
	}
	fmt.Printf("memory per idle tunnel (gateway RSS growth / tunnels, %d tunnels): %.1f KB\n", tunnels, perTunnel/1000)
	return nil
}

func machine() string {
	out, _ := exec.Command("nproc").Output()
	return fmt.Sprintf("%s cores", strings.TrimSpace(string(out)))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
