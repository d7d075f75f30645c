package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testenv"
)

// The wsgate binary, built once for the package.
var wsgateBin struct {
	sync.Once
	path string
	err  error
}

// buildWsgate builds cmd/wsgate (once) into a temporary folder that
// TestMain removes.
func buildWsgate(t *testing.T) string {
	t.Helper()
	wsgateBin.Do(func() {
		dir, err := os.MkdirTemp("", "wsgate-faults-bin-")
		if err != nil {
			wsgateBin.err = err
			return
		}
		cp.dirs = append(cp.dirs, dir)
		bin := filepath.Join(dir, "wsgate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/wsgate")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			wsgateBin.err = fmt.Errorf("go build ./cmd/wsgate: %w\n%s", err, out)
			return
		}
		wsgateBin.path = bin
	})
	if wsgateBin.err != nil {
		t.Fatal(wsgateBin.err)
	}
	return wsgateBin.path
}

// wsgateProcess is the wsgate binary running against the test API server
// on loopback ports.
type wsgateProcess struct {
	wsClient
	name        string
	probeAddr   string
	metricsAddr string
	cmd         *exec.Cmd
	logPath     string

	exited   chan struct{}
	exitedAt time.Time
	exitErr  error
}

// startWsgate runs the binary with the listener, probe and metrics
// addresses of its own (plain HTTP, TLS and admin endpoints off) and
// extra flags, and waits until /readyz answers 200. Its output goes to a
// file that is printed if the test fails; the process is killed when the
// test ends, if still running.
func startWsgate(t *testing.T, name string, extra ...string) *wsgateProcess {
	t.Helper()
	bin := buildWsgate(t)
	p := &wsgateProcess{name: name, wsClient: wsClient{addr: freeAddr(t)}, probeAddr: freeAddr(t), metricsAddr: freeAddr(t), exited: make(chan struct{})}
	p.logPath = filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"--kubeconfig", env.Kubeconfig,
		"--listen-address", p.addr,
		"--tls-listen-address", "",
		"--admin-bind-address", "",
		"--health-probe-bind-address", p.probeAddr,
		"--metrics-bind-address", p.metricsAddr,
		"--metrics-secure=false",
	}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start wsgate: %v", err)
	}
	go func() {
		err := p.cmd.Wait()
		p.exitedAt, p.exitErr = time.Now(), err
		_ = logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			out, _ := os.ReadFile(p.logPath)
			const keep = 24 << 10
			if len(out) > keep {
				out = append([]byte("...\n"), out[len(out)-keep:]...)
			}
			t.Logf("%s output:\n%s", p.name, out)
		}
	})
	eventually(t, 60*time.Second, p.name+"'s /readyz answers 200", func() error {
		if p.hasExited() {
			out, _ := os.ReadFile(p.logPath)
			t.Fatalf("%s exited during start-up: %v\n%s", p.name, p.exitErr, out)
		}
		if got := readyz(p.probeAddr); got != http.StatusOK {
			return fmt.Errorf("/readyz: %d", got)
		}
		return nil
	})
	return p
}

// kill kills the process if it still runs, and waits for it.
func (p *wsgateProcess) kill() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *wsgateProcess) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// sigterm sends SIGTERM and returns when it was sent.
func (p *wsgateProcess) sigterm(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	return at
}

// waitExit waits up to timeout for the process to exit and returns its
// exit status and when it exited.
func (p *wsgateProcess) waitExit(timeout time.Duration) (code int, at time.Time, ok bool) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
		return 0, time.Time{}, false
	}
	var ee *exec.ExitError
	switch {
	case p.exitErr == nil:
		return 0, p.exitedAt, true
	case errors.As(p.exitErr, &ee):
		return ee.ExitCode(), p.exitedAt, true
	default:
		return -1, p.exitedAt, true
	}
}

// output returns the process's output so far.
func (p *wsgateProcess) output() string {
	out, _ := os.ReadFile(p.logPath)
	return string(out)
}

// lastLines returns the last n lines of the process's output.
func (p *wsgateProcess) lastLines(n int) string {
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processStats are what the soak samples of a process.
type processStats struct {
	rssBytes   int64
	fds        int
	goroutines int
}

// stats reads the process's RSS and fds from /proc and its goroutines
// from its metrics endpoint (go_goroutines).
func (p *wsgateProcess) stats() (processStats, error) {
	pid := p.cmd.Process.Pid
	var s processStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			s.rssBytes = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	body, err := p.metrics()
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return s, err
			}
			s.goroutines = int(f)
		}
	}
	if s.goroutines == 0 {
		return s, errors.New("no go_goroutines in /metrics")
	}
	return s, nil
}

// metrics returns the process's /metrics page.
func (p *wsgateProcess) metrics() (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	return body.String(), nil
}

// leads reports whether the process says it holds the leader Lease
// (leader_election_master_status, the metric the chart's dashboard and
// alert read).
func (p *wsgateProcess) leads() (bool, error) {
	body, err := p.metrics()
	if err != nil {
		return false, fmt.Errorf("%s: %w", p.name, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") {
			f := strings.Fields(line)
			return f[len(f)-1] == "1", nil
		}
	}
	return false, nil
}
