// Command demo runs wsgate on a laptop with nothing but Go: a local
// control plane (kube-apiserver and etcd built from source), cert-manager's
// controllers in-process, two echo pods and one pod that must stay
// unreachable, a WsRoute with a certificate from a demo CA, and the real
// gateway binary serving wss:// on loopback.
//
//	make demo        # or: go run ./hack/demo
//
// It prints one line that scripts can read,
//
//	wsgate demo ready gateway=<https-url> host=<hostname> prefix=<prefix> pods=<ip,ip> blocked=<ip> ca=<pem-path> kubeconfig=<path>
//
// then commands to try, and runs until interrupted (Ctrl-C or SIGTERM),
// when it stops every process it started, removes its files and exits 0.
// It stops the same way when the process that started it (make, go run)
// dies.
//
// make demo compiles the demo while it builds the control plane
// (hack/demo.sh); go run compiles the demo first, then the demo runs
// hack/envtest.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/internal/echopod"
)

func main() {
	role := flag.String("role", "demo", "demo, or echo (internal: one echo pod process)")
	listen := flag.String("listen", "", "echo role: address to listen on")
	host := flag.String("host", "ws.demo.test", "host name of the demo route and its certificate")
	gateway := flag.String("gateway", "", "a built wsgate binary to run (default: build ./cmd/wsgate into the demo's folder)")
	flag.Parse()

	var err error
	switch *role {
	case "echo":
		err = runEcho(*listen)
	case "demo":
		parent := os.Getppid()
		// The demo stops like on SIGTERM when its parent dies: go run does
		// not pass SIGTERM on, and would leave it running otherwise.
		_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		if errno == 0 && os.Getppid() != parent {
			stop()
			return // the parent died before the demo started
		}
		err = runDemo(ctx, *host, *gateway)
		stop()
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsgate demo: %v\n", err)
		os.Exit(1)
	}
}

// runEcho is one echo pod: it serves until its parent goes away.
func runEcho(addr string) error {
	s, err := echopod.Start(addr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return s.Close()
}

// processes are the children the demo started, stopped on exit.
type processes []*exec.Cmd

func (ps *processes) start(name string, logDir string, args ...string) error {
	cmd := exec.Command(name, args...)
	log, err := os.Create(filepath.Join(logDir, filepath.Base(name)+"-"+fmt.Sprint(len(*ps))+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	// Children die with the demo even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	*ps = append(*ps, cmd)
	return nil
}

func (ps processes) stop() {
	for _, p := range ps {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range ps {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
}

// freePort returns a TCP port free on every address in ips.
func freePort(ips ...string) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		free := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				free = false
				break
			}
			_ = l.Close()
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("no port free on every address")
}

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url) //nolint:noctx // bounded by the loop
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func readyLine(gateway, host, prefix string, pods []string, blocked, ca, kubeconfig string) string {
	return fmt.Sprintf("wsgate demo ready gateway=%s host=%s prefix=%s pods=%s blocked=%s ca=%s kubeconfig=%s",
		gateway, host, prefix, strings.Join(pods, ","), blocked, ca, kubeconfig)
}
