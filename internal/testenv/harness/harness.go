// Package harness holds what the end-to-end suite (test/e2e) and the fault
// suite (test/faults) share besides the control plane: a log buffer that
// a failing test prints, Eventually, loopback ports, the wsgate binary
// run as a child process (Binary, StartWsgate), pieces of the in-process
// gateways (echo pods, the loopback-only dialer, route conditions), of
// their websocket clients (Dial, PodPath, AwaitClose and how a tunnel
// Closed) and of the objects the tests create (TLSSecret,
// DeleteIgnoringNotFound). It starts no control plane; see the parent
// package testenv for that.
package harness

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// LogBuffer collects log lines (of the controllers and the proxy of an
// in-process gateway); a test that fails prints the lines written while it
// ran (PrintOnFailure). The zero value keeps every line.
type LogBuffer struct {
	// Limit, when positive, bounds the buffer: once it holds more than
	// Limit bytes it is emptied before the next line.
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// printTail is how much of its log a failing test prints: the last 32 KiB.
const printTail = 32 << 10

// Logger returns a logger that writes into b the messages up to
// verbosity v, each line stamped with the time.
func (b *LogBuffer) Logger(v int) logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.Limit > 0 && b.buf.Len() > b.Limit {
			b.buf.Reset()
		}
		fmt.Fprintf(&b.buf, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: v})
}

// PrintOnFailure prints, when t fails, the log lines written from now on
// (the last 32 KiB of them), as "gateway log".
func (b *LogBuffer) PrintOnFailure(t testing.TB) {
	b.mu.Lock()
	start := b.buf.Len()
	b.mu.Unlock()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b.mu.Lock()
		out := b.buf.String()
		b.mu.Unlock()
		// A buffer emptied by Limit since then is printed whole.
		if start <= len(out) {
			out = out[start:]
		}
		t.Logf("gateway log:\n%s", tail(out, printTail))
	})
}

// Contains reports whether a line in the buffer contains all of parts
// (with a Limit, recent lines only).
func (b *LogBuffer) Contains(parts ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
lines:
	for _, line := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

// tail returns the last n bytes of s, marked "...\n" when cut.
func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// PollEvery is how often Eventually tries again.
const PollEvery = 10 * time.Millisecond

// Eventually calls f every PollEvery until it returns nil, and fails the
// test with f's last error once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(PollEvery)
	}
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Readyz returns the status of GET /readyz on probeAddr, or 0 when the
// probe port does not answer within a second.
func Readyz(probeAddr string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + probeAddr + "/readyz")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
