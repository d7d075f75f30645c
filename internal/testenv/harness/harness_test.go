package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeWsgateEnv makes this test binary act as a stand-in for wsgate (see
// fakeWsgate); its value is the status to exit with on SIGTERM, or
// "exit" to exit with 1 at once.
const fakeWsgateEnv = "HARNESS_FAKE_WSGATE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeWsgateEnv); mode != "" {
		fakeWsgate(mode, os.Args[1:])
		return
	}
	os.Exit(m.Run())
}

// fakeWsgate answers /readyz with 200 on --health-probe-bind-address,
// prints its arguments, and exits with the status mode names on SIGTERM.
func fakeWsgate(mode string, args []string) {
	fmt.Println("args:", strings.Join(args, " "))
	if mode == "exit" {
		fmt.Println("giving up")
		os.Exit(1)
	}
	code, err := strconv.Atoi(mode)
	if err != nil {
		os.Exit(2)
	}
	var probe string
	for i, a := range args {
		if a == "--health-probe-bind-address" && i+1 < len(args) {
			probe = args[i+1]
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(http.ResponseWriter, *http.Request) {})
	go func() { _ = http.ListenAndServe(probe, mux) }() //nolint:gosec // a test stand-in on loopback
	<-sig
	fmt.Println("got SIGTERM")
	os.Exit(code)
}

// fakeTB is a testing.TB whose failures are recorded instead of reported:
// Fatalf ends the calling goroutine, as testing's does.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	fatal    string
	logs     []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed, f.fatal = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// run calls fn in a goroutine of its own (Fatalf ends it), then the
// cleanups, last registered first.
func (f *fakeTB) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestLogBufferKeepsVerbosityAndLimit(t *testing.T) {
	var b LogBuffer
	log := b.Logger(0)
	log.Info("kept", "k", 1)
	log.V(1).Info("dropped")
	if !b.Contains("kept", `"k"=1`) || b.Contains("dropped") || b.Contains("kept", "dropped") {
		t.Fatalf("buffer holds:\n%s", b.buf.String())
	}

	small := LogBuffer{Limit: 100}
	for i := range 10 {
		small.Logger(0).Info(fmt.Sprintf("line %d", i))
	}
	if small.buf.Len() > 200 || !small.Contains("line 9") || small.Contains("line 0") {
		t.Fatalf("a buffer limited to 100 bytes holds %d:\n%s", small.buf.Len(), small.buf.String())
	}
}

func TestPrintOnFailurePrintsTheLinesOfTheTest(t *testing.T) {
	for _, failed := range []bool{false, true} {
		var b LogBuffer
		b.Logger(0).Info("before the test")
		f := &fakeTB{TB: t}
		f.run(func() {
			b.PrintOnFailure(f)
			b.Logger(0).Info("during the test")
			if failed {
				f.Fatalf("fail")
			}
		})
		got := strings.Join(f.logs, "\n")
		switch {
		case !failed && got != "":
			t.Errorf("a passing test printed %q", got)
		case failed && (!strings.HasPrefix(got, "gateway log:\n") || !strings.Contains(got, "during the test") || strings.Contains(got, "before the test")):
			t.Errorf("a failing test printed %q", got)
		}
	}

	// A buffer emptied by its Limit during the test is printed whole.
	b := LogBuffer{Limit: 10}
	b.Logger(0).Info("before the test, long enough to pass the limit")
	f := &fakeTB{TB: t}
	f.run(func() {
		b.PrintOnFailure(f)
		b.Logger(0).Info("after the reset")
		f.Fatalf("fail")
	})
	if got := strings.Join(f.logs, "\n"); !strings.Contains(got, "after the reset") {
		t.Errorf("printed %q", got)
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, time.Second, "third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("f called %d times, want 3", calls)
	}

	f := &fakeTB{TB: t}
	start := time.Now()
	f.run(func() {
		Eventually(f, 50*time.Millisecond, "never", func() error { return errors.New("nope") })
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > time.Second {
		t.Errorf("Eventually gave up after %s, want 50ms", took)
	}
	if want := "never: still failing after 50ms: nope"; f.fatal != want {
		t.Errorf("Eventually failed with %q, want %q", f.fatal, want)
	}
}

func TestStartWsgateRunsAndStopsTheBinary(t *testing.T) {
	t.Setenv(fakeWsgateEnv, "3")
	p := StartWsgate(t, os.Args[0], WsgateOptions{Name: "fake", Kubeconfig: "/kc", Metrics: true, Args: []string{"--extra", "x"}, ReadyTimeout: 10 * time.Second})
	if got := p.Readyz(); got != http.StatusOK {
		t.Fatalf("/readyz: %d", got)
	}
	want := "args: --kubeconfig /kc --listen-address " + p.Addr + " --tls-listen-address  --admin-bind-address  --health-probe-bind-address " + p.ProbeAddr +
		" --metrics-bind-address " + p.MetricsAddr + " --metrics-secure=false --extra x"
	if got := p.LastLines(1); got != want {
		t.Errorf("the process got\n%s\nwant\n%s", got, want)
	}
	if p.Exited() {
		t.Fatal("the process exited")
	}
	sent := p.SIGTERM(t)
	code, at, ok := p.WaitExit(10 * time.Second)
	if !ok || code != 3 || at.Before(sent) {
		t.Fatalf("WaitExit: status %d at %s (SIGTERM at %s), exited %v; want status 3", code, at, sent, ok)
	}
	if !p.Exited() || p.ExitErr() == nil || p.LastLines(1) != "got SIGTERM" {
		t.Errorf("after exit: Exited %v, ExitErr %v, last line %q", p.Exited(), p.ExitErr(), p.LastLines(1))
	}
}

func TestStartWsgateFailsWhenTheBinaryExits(t *testing.T) {
	t.Setenv(fakeWsgateEnv, "exit")
	f := &fakeTB{TB: t}
	f.run(func() {
		StartWsgate(f, os.Args[0], WsgateOptions{Kubeconfig: "/kc", ReadyTimeout: 10 * time.Second})
		t.Error("StartWsgate returned")
	})
	if !strings.HasPrefix(f.fatal, "wsgate exited during start-up: exit status 1\n") || !strings.Contains(f.fatal, "giving up") {
		t.Errorf("StartWsgate failed with %q", f.fatal)
	}
	if got := strings.Join(f.logs, "\n"); !strings.HasPrefix(got, "wsgate output:\n") || !strings.Contains(got, "--metrics-bind-address 0") {
		t.Errorf("the failing test printed %q", got)
	}
}

func TestLoopbackDialRefusesOtherAddressesAndCounts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var dials atomic.Int64
	dial := LoopbackDial(&dials)
	ctx := context.Background()
	c, err := dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial loopback: %v", err)
	}
	_ = c.Close()
	for _, addr := range []string{"10.0.0.1:80", "example.com:80", "not an address"} {
		if c, err := dial(ctx, "tcp", addr); err == nil {
			_ = c.Close()
			t.Errorf("dial %s succeeded", addr)
		}
	}
	if n := dials.Load(); n != 4 {
		t.Errorf("%d dials counted, want 4", n)
	}
}
