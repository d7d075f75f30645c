//go:build linux

package proxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/routing"
)

// fullListener listens on ip with an accept queue of one connection and
// fills it, so that the kernel drops the next connect's SYN and the
// connect completes only on the SYN's retransmission, about a second
// later, once the queue has room.
func fullListener(t *testing.T, ip string) net.Listener {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := &unix.SockaddrInet4{Addr: netip.MustParseAddr(ip).As4()}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	// Backlog 0: Linux queues one connection, and drops SYNs while it
	// waits there.
	if err := unix.Listen(fd, 0); err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "backlog")
	l, err := net.FileListener(f)
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	// The queued connection, and a second one, which may get in when the
	// kernel counts the queue differently; the rest of its time is spent
	// retransmitting.
	for range 2 {
		c, err := net.DialTimeout("tcp", l.Addr().String(), 100*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
	}
	return l
}

// TestPodConnectCompletingLaterCarriesTheHandshake: when the connect to a
// pod has not completed by the time connect returns, the request waits
// for it and goes then (the loops send it at once otherwise, and watch the
// socket's output only when it could not take it).
func TestPodConnectCompletingLaterCarriesTheHandshake(t *testing.T) {
	l := fullListener(t, "127.0.0.61")
	backend := routing.Backend{Pod: "late", Addr: netip.MustParseAddrPort(l.Addr().String())}
	g := startGateway(t, Options{DialTimeout: 5 * time.Second}, testRoute("r", "/", backend))

	// The pod starts serving (and accepts the queued connections) after
	// the gateway's first SYN was dropped.
	podUp := time.AfterFunc(300*time.Millisecond, func() {
		pod := echopod.Serve(l)
		t.Cleanup(func() { _ = pod.Close() })
	})
	t.Cleanup(func() { podUp.Stop() })

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	c, resp, err := g.dialWS(ctx, "/127.0.0.61/x", nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("handshake through a connect that completed late: %v", err)
	}
	took := time.Since(start)
	defer func() { _ = c.CloseNow() }()
	if err := echo(ctx, c, websocket.MessageText, []byte("late")); err != nil {
		t.Fatal(err)
	}
	// The first SYN went unanswered: the connect took a retransmission.
	if took < 700*time.Millisecond {
		t.Fatalf("the handshake took %v: the connect did not wait for a retransmitted SYN, so the test did not test it", took)
	}
	t.Logf("handshake through a late connect: %v", took)
}
