package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

// The new-connection benchmarks measure what a browser's new connection
// costs the gateway alone: the gateway runs in a process of its own (this
// test binary, started again), so that its CPU time and allocations are
// not mixed with the client's and the pod's.
//
//	go test -run '^$' -bench NewConnBrowser -benchtime 2000x ./proxy/
//
// WSGATE_NEWCONN_CPUPROFILE=<file> writes the gateway process's CPU
// profiles (of the measured connections only) to <file>.Plain and
// <file>.TLS; WSGATE_NEWCONN_MEMPROFILE=<file> its allocation profiles
// (since the process started). WSGATE_NEWCONN_WRAP runs the gateway process under a
// command, e.g. "strace -c -f -o /tmp/syscalls".

// newConnGatewayEnv, in the environment of the test binary, makes
// TestNewConnGateway serve as the benchmark's gateway: it names the echo
// pod's address.
const newConnGatewayEnv = "WSGATE_NEWCONN_POD"

// TestNewConnGateway is the gateway process of the new-connection
// benchmarks; it is skipped otherwise. It prints its plain and TLS
// addresses, then answers each line on stdin: "s" with its CPU time
// (nanoseconds), allocations and allocated bytes; "p" starts the CPU
// profile, "q" stops it.
func TestNewConnGateway(t *testing.T) {
	pod := os.Getenv(newConnGatewayEnv)
	if pod == "" {
		t.Skip("the new-connection benchmarks' gateway")
	}
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{
		testRoute("r", "/", routing.Backend{Pod: "p", Addr: netip.MustParseAddrPort(pod)}),
	}))
	srv := New(tables, Options{})
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := srv.TLSConfigWith(TLSOptions{Fallback: new(selfSigned(t, "ws.example.com"))})
	go func() { _ = srv.Serve(plain) }()
	go func() { _ = srv.ServeTLS(tl, cfg) }()
	fmt.Printf("gateway %s %s\n", plain.Addr(), tl.Addr())
	profile := os.Getenv("WSGATE_NEWCONN_CPUPROFILE")
	memProfile := os.Getenv("WSGATE_NEWCONN_MEMPROFILE")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "s":
			var ru syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			fmt.Printf("stats %d %d %d %d\n", cpu.Nanoseconds(), ms.Mallocs, ms.TotalAlloc, ru.Nvcsw)
		case "p":
			if profile != "" {
				f, err := os.Create(profile + arg)
				if err == nil {
					_ = pprof.StartCPUProfile(f)
				}
			}
			fmt.Println("ok")
		case "q":
			pprof.StopCPUProfile()
			if memProfile != "" {
				if f, err := os.Create(memProfile + arg); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(f, 0)
					_ = f.Close()
				}
			}
			fmt.Println("ok")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx, 0)
}

// newConnGateway is the gateway process, from the benchmark's side.
type newConnGateway struct {
	cmd        *exec.Cmd
	in         *os.File
	out        *bufio.Scanner
	plain, tls string
}

func startNewConnGateway(b *testing.B, pod string) *newConnGateway {
	b.Helper()
	args := []string{os.Args[0], "-test.run", "^TestNewConnGateway$"}
	if wrap := os.Getenv("WSGATE_NEWCONN_WRAP"); wrap != "" {
		args = append(strings.Fields(wrap), args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), newConnGatewayEnv+"="+pod)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	g := &newConnGateway{cmd: cmd, in: stdin.(*os.File), out: bufio.NewScanner(stdout)}
	b.Cleanup(func() {
		_ = g.in.Close()
		_ = cmd.Wait()
	})
	for g.out.Scan() {
		if f := strings.Fields(g.out.Text()); len(f) == 3 && f[0] == "gateway" {
			g.plain, g.tls = f[1], f[2]
			return g
		}
	}
	b.Fatal("the gateway process did not start")
	return nil
}

// ask sends a command and returns the fields of the answer.
func (g *newConnGateway) ask(b *testing.B, cmd string) []string {
	b.Helper()
	if _, err := fmt.Fprintln(g.in, cmd); err != nil {
		b.Fatal(err)
	}
	for g.out.Scan() {
		if f := strings.Fields(g.out.Text()); len(f) > 0 && (f[0] == "stats" || f[0] == "ok") {
			return f[1:]
		}
	}
	b.Fatal("the gateway process ended")
	return nil
}

// newConnStats are the gateway process's counters.
type newConnStats struct{ cpu, mallocs, bytes, switches int64 }

func (g *newConnGateway) stats(b *testing.B) newConnStats {
	f := g.ask(b, "s")
	var v [4]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i], 10, 64)
	}
	return newConnStats{v[0], v[1], v[2], v[3]}
}

// BenchmarkNewConnBrowser opens connections as a browser does, one at a
// time (a new TCP connection, TLS with Go's default key-exchange
// preferences, the handshake with a browser's headers, one echo and a
// close handshake), and reports what each cost the gateway process:
// gw-ns/conn of CPU, gw-allocs/conn, gw-B/conn and gw-sleeps/conn (its
// threads' voluntary context switches: each is a sleep and a wake-up).
func BenchmarkNewConnBrowser(b *testing.B) {
	pod, err := echopod.Start("127.0.0.2:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pod.Close()
	g := startNewConnGateway(b, pod.Addr)
	for _, mode := range []struct {
		name string
		tls  bool
	}{{"Plain", false}, {"TLS", true}} {
		b.Run(mode.name, func(b *testing.B) {
			addr, scheme, origin := g.plain, "ws", "http://ws.example.com"
			tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
			if mode.tls {
				addr, scheme, origin = g.tls, "wss", "https://ws.example.com"
				tr.TLSClientConfig = &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
			}
			client := &http.Client{Transport: tr}
			header := http.Header{
				"Origin":          {origin},
				"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36"},
				"Cache-Control":   {"no-cache"},
				"Pragma":          {"no-cache"},
				"Accept-Encoding": {"gzip, deflate, br, zstd"},
				"Accept-Language": {"en-US,en;q=0.9"},
			}
			payload := bytes.Repeat([]byte("x"), 32)
			connect := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, resp, err := websocket.Dial(ctx, scheme+"://"+addr+"/127.0.0.2/x", &websocket.DialOptions{
					HTTPClient: client, Host: "ws.example.com", HTTPHeader: header,
					CompressionMode: websocket.CompressionContextTakeover,
				})
				if resp != nil && resp.Body != nil {
					_ = resp.Body.Close()
				}
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = c.CloseNow() }()
				if err := c.Write(ctx, websocket.MessageBinary, payload); err != nil {
					b.Fatal(err)
				}
				if _, got, err := c.Read(ctx); err != nil || !bytes.Equal(got, payload) {
					b.Fatalf("echo: %q, %v", got, err)
				}
				if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
					b.Fatal(err)
				}
			}
			// Warm up: the gateway's pools, loops and the pod.
			for range 50 {
				connect()
			}
			// The gateway's loops finish a tunnel after the client's close
			// handshake returns: let them before and after measuring.
			settle := func() { time.Sleep(20 * time.Millisecond) }
			settle()
			g.ask(b, "p ."+mode.name)
			before := g.stats(b)
			b.ResetTimer()
			n := 0
			for b.Loop() {
				connect()
				n++
			}
			b.StopTimer()
			settle()
			after := g.stats(b)
			g.ask(b, "q ."+mode.name)
			b.ReportMetric(float64(after.cpu-before.cpu)/float64(n), "gw-ns/conn")
			b.ReportMetric(float64(after.mallocs-before.mallocs)/float64(n), "gw-allocs/conn")
			b.ReportMetric(float64(after.bytes-before.bytes)/float64(n), "gw-B/conn")
			b.ReportMetric(float64(after.switches-before.switches)/float64(n), "gw-sleeps/conn")
		})
	}
}
