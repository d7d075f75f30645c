package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testenv"
)

// Binary is cmd/wsgate built once, on first use, into a temporary folder
// that Remove deletes. A suite keeps one in a package variable and calls
// Remove from TestMain after the tests.
type Binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path builds the binary (the first time) and returns its path; it fails
// the test if the build fails.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "wsgate-test-bin-")
		if b.err != nil {
			return
		}
		bin := filepath.Join(b.dir, "wsgate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/wsgate")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/wsgate: %w\n%s", err, out)
			return
		}
		b.path = bin
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Remove deletes the built binary, if any.
func (b *Binary) Remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// WsgateOptions says how StartWsgate runs the binary.
type WsgateOptions struct {
	// Name names the process in the test's messages and its log file
	// (default "wsgate").
	Name string
	// Kubeconfig is --kubeconfig.
	Kubeconfig string
	// Metrics serves the metrics over plain HTTP on a loopback port of
	// the process's own (MetricsAddr); otherwise --metrics-bind-address
	// is 0 (off).
	Metrics bool
	// Args are more flags; they come last, and later flags win.
	Args []string
	// ReadyTimeout bounds the wait for /readyz to answer 200 (default 60s).
	ReadyTimeout time.Duration
}

// Process is the wsgate binary running as a child of the test, listening
// for websockets on Addr (plain HTTP; the TLS listener and the admin
// endpoints are off) with its probes on ProbeAddr.
type Process struct {
	Name string
	// Addr is --listen-address.
	Addr string
	// ProbeAddr is --health-probe-bind-address.
	ProbeAddr string
	// MetricsAddr is --metrics-bind-address with WsgateOptions.Metrics,
	// "" otherwise.
	MetricsAddr string

	cmd     *exec.Cmd
	logPath string

	exited   chan struct{}
	exitedAt time.Time // set before exited is closed
	exitErr  error     // set before exited is closed
}

// outputTail is how much of a process's output a failing test prints:
// the last 24 KiB.
const outputTail = 24 << 10

// StartWsgate runs bin on loopback ports of its own and waits until its
// /readyz answers 200; it fails the test if the process exits before.
// The output goes to a file that is printed (its last 24 KiB) if the test
// fails. The process is killed when the test ends, if it still runs.
func StartWsgate(t testing.TB, bin string, o WsgateOptions) *Process {
	t.Helper()
	if o.Name == "" {
		o.Name = "wsgate"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	p := &Process{Name: o.Name, Addr: FreeAddr(t), ProbeAddr: FreeAddr(t), exited: make(chan struct{})}
	args := []string{
		"--kubeconfig", o.Kubeconfig,
		"--listen-address", p.Addr,
		"--tls-listen-address", "",
		"--admin-bind-address", "",
		"--health-probe-bind-address", p.ProbeAddr,
	}
	if o.Metrics {
		p.MetricsAddr = FreeAddr(t)
		args = append(args, "--metrics-bind-address", p.MetricsAddr, "--metrics-secure=false")
	} else {
		args = append(args, "--metrics-bind-address", "0")
	}
	p.logPath = filepath.Join(t.TempDir(), o.Name+".log")
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, append(args, o.Args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.exitedAt, p.exitErr = time.Now(), err
		_ = logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", p.Name, tail(p.Output(), outputTail))
		}
	})
	Eventually(t, o.ReadyTimeout, p.Name+"'s /readyz answers 200", func() error {
		if p.Exited() {
			t.Fatalf("%s exited during start-up: %v\n%s", p.Name, p.exitErr, p.Output())
		}
		if got := p.Readyz(); got != http.StatusOK {
			return fmt.Errorf("/readyz: %d", got)
		}
		return nil
	})
	return p
}

// PID is the process's id.
func (p *Process) PID() int {
	return p.cmd.Process.Pid
}

// Readyz returns the status of GET /readyz, or 0 when the probe port does
// not answer.
func (p *Process) Readyz() int {
	return Readyz(p.ProbeAddr)
}

// Kill kills the process if it still runs, and waits for it to exit.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// ExitErr is what waiting for the process returned (nil for status 0);
// call it once Exited.
func (p *Process) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.exitErr
}

// SIGTERM sends SIGTERM and returns when it was sent; it fails the test if
// the signal cannot be sent.
func (p *Process) SIGTERM(t testing.TB) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.Name, err)
	}
	return at
}

// WaitExit waits up to timeout for the process to exit and returns its
// exit status (-1 when it did not exit by itself, e.g. killed by a
// signal) and when it exited; ok is false if it still runs.
func (p *Process) WaitExit(timeout time.Duration) (code int, at time.Time, ok bool) {
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

// Output returns the process's output so far.
func (p *Process) Output() string {
	out, _ := os.ReadFile(p.logPath)
	return string(out)
}

// LogPath is the file the process's output goes to.
func (p *Process) LogPath() string {
	return p.logPath
}

// LastLines returns the last n lines of the process's output.
func (p *Process) LastLines(n int) string {
	lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Metrics returns the process's /metrics page (WsgateOptions.Metrics).
func (p *Process) Metrics() (string, error) {
	if p.MetricsAddr == "" {
		return "", fmt.Errorf("%s serves no metrics", p.Name)
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.MetricsAddr + "/metrics")
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
