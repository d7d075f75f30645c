package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// Timeouts of the route that the failing pods belong to.
const (
	faultHandshake = time.Second
	faultIdle      = time.Second
	// closeGrace is the proxy's bound on a closing tunnel's last frame
	// and the peers' answers (proxy/tunnel.go).
	closeGrace = time.Second
)

// backendFault is one way a pod misbehaves, and what the client must get.
type backendFault struct {
	name string
	// script runs on each connection the gateway makes to the pod; nil:
	// nothing listens at the pod's address.
	script func(p *rawPod, c net.Conn, br *bufio.Reader)
	// client runs the client side and checks what it gets.
	client func(t *testing.T, g *gateway, path string)
}

// TestFailingPodsGiveAClearAnswerAndLeakNothing points one route at pods
// that refuse, reset, never answer, answer slowly, answer garbage before
// or after a 101, close mid-frame, or vanish without a FIN. Each client
// gets a clear status or a clean end, the gateway's tunnel count returns
// to zero, and this process's goroutines and file descriptors return to
// their baseline (measured before each case, checked after it).
func TestFailingPodsGiveAClearAnswerAndLeakNothing(t *testing.T) {
	g := startGateway(t, gatewayConfig{})
	ns := env.Namespace(t)
	faults := backendFaults()
	ips := make([]string, len(faults))
	for i := range faults {
		ips[i] = fmt.Sprintf("127.0.6.%d", 10+i)
	}
	port := freePort(t, ips...)
	for i := range faults {
		createPod(t, ns, pod{name: fmt.Sprintf("faulty-%d", i), ip: ips[i], port: int32(port), labels: map[string]string{"app": "faulty"}})
	}
	prefix := "/" + ns
	createRoute(t, ns, route{name: "faulty", prefix: prefix, app: "faulty", port: intstr.FromString("ws"),
		timeouts: &wsgatev1alpha1.Timeouts{
			Handshake: &metav1.Duration{Duration: faultHandshake},
			Idle:      &metav1.Duration{Duration: faultIdle},
		}})
	waitRoute(t, ns, "faulty", readyWith(len(faults)))

	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			var pod *rawPod
			if f.script != nil {
				pod = startRawPod(t, ips[i], port, f.script)
			}
			path := harness.PodPath(prefix, ips[i], "/")
			// Warm up the client side (the HTTP transport's goroutines)
			// before the baseline.
			_ = g.status(harness.PodPath(prefix, "127.0.6.254", "/"), nil)
			base := steadyUsage(5 * time.Second)
			f.client(t, g, path)
			// The gateway ends its side of every tunnel on its own...
			tunnelsEnded := waitNoTunnels(g, 2*faultIdle+2*closeGrace+2*time.Second)
			if !tunnelsEnded {
				t.Logf("the tunnel goroutines left:\n%s", tunnelStacks())
			}
			if !tunnelsEnded {
				t.Errorf("%d tunnel(s) still open after the case", g.server.OpenTunnels())
			}
			// ...then the pod lets go of what it holds, and everything
			// returns to the baseline.
			if pod != nil {
				pod.stop()
			}
			u := checkNoLeak(t, "after "+f.name, base, 10*time.Second)
			t.Logf("goroutines and fds: baseline %s, after %s", base, u)
		})
	}
}

// waitNoTunnels waits until the gateway has no tunnel open.
func waitNoTunnels(g *gateway, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for g.server.OpenTunnels() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}

// expectStatus returns a client that expects the gateway's answer want
// within the time bound.
func expectStatus(want int, within time.Duration) func(t *testing.T, g *gateway, path string) {
	return func(t *testing.T, g *gateway, path string) {
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, status, _, err := g.handshake(ctx, path, nil)
		took := time.Since(began)
		if err == nil {
			_ = conn.CloseNow()
			t.Fatalf("the handshake opened a tunnel, want %d", want)
		}
		t.Logf("answer %d after %s", status, took.Round(time.Millisecond))
		if status != want {
			t.Errorf("answer %d (%v), want %d", status, err, want)
		}
		if took > within {
			t.Errorf("the answer took %s, want under %s", took, within)
		}
	}
}

// expectEnd returns a client that opens a tunnel (optionally sending a
// message first) and expects it to end on its own within the bound: with
// Close code want, or (want -1) without a Close frame.
func expectEnd(send bool, want websocket.StatusCode, within time.Duration) func(t *testing.T, g *gateway, path string) {
	return func(t *testing.T, g *gateway, path string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, status, _, err := g.handshake(ctx, path, nil)
		if err != nil {
			t.Fatalf("handshake: %v (status %d), want 101", err, status)
		}
		defer func() { _ = conn.CloseNow() }()
		opened := time.Now()
		if send {
			if err := conn.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		cl := harness.AwaitClose(ctx, conn)
		took := cl.At.Sub(opened)
		t.Logf("the tunnel ended %s after it opened: close %d %q", took.Round(time.Millisecond), cl.Code, shorten(cl.Reason))
		if cl.Code != want {
			t.Errorf("the tunnel ended with close %d %q, want %d", cl.Code, cl.Reason, want)
		}
		if took > within {
			t.Errorf("the tunnel ended %s after it opened, want under %s", took, within)
		}
	}
}

// expectSlowAnswer504 is expectStatus(504) for a pod that starts its
// answer but does not finish it in time.
//
// A pod cut off mid-answer by the handshake deadline must give 504, not
// the 502 of a malformed answer: the partial line bufio returns hides
// the timeout, so the gateway decides by the deadline.
func expectSlowAnswer504(within time.Duration) func(t *testing.T, g *gateway, path string) {
	return func(t *testing.T, g *gateway, path string) {
		began := time.Now()
		got := g.status(path, nil)
		took := time.Since(began)
		t.Logf("answer %d after %s", got, took.Round(time.Millisecond))
		if got != http.StatusGatewayTimeout {
			t.Errorf("answer %d, want 504", got)
		}
		if took > within {
			t.Errorf("the answer took %s, want under %s", took, within)
		}
	}
}

func backendFaults() []backendFault {
	const quick = 500 * time.Millisecond
	timeout := faultHandshake + 500*time.Millisecond
	idleClose := faultIdle + closeGrace + time.Second
	return []backendFault{
		{name: "refuses connections", client: expectStatus(http.StatusBadGateway, quick)},
		{name: "resets at accept", script: func(_ *rawPod, c net.Conn, _ *bufio.Reader) { resetConn(c) },
			client: expectStatus(http.StatusBadGateway, quick)},
		{name: "resets after reading the handshake", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			_, _ = readHead(br)
			resetConn(c)
		}, client: expectStatus(http.StatusBadGateway, quick)},
		{name: "closes after reading the handshake", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			_, _ = readHead(br)
		}, client: expectStatus(http.StatusBadGateway, quick)},
		{name: "never answers", script: func(p *rawPod, _ net.Conn, br *bufio.Reader) {
			_, _ = readHead(br)
			p.hold()
		}, client: expectStatus(http.StatusGatewayTimeout, timeout)},
		{name: "answers slowly within the handshake timeout", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			time.Sleep(faultHandshake / 2)
			if _, err := c.Write([]byte(accept101(key))); err != nil {
				return
			}
			echoFrames(c, br)
		}, client: func(t *testing.T, g *gateway, path string) {
			began := time.Now()
			c := g.open(t, path, nil)
			t.Logf("101 after %s", time.Since(began).Round(time.Millisecond))
			mustEcho(t, c, "slow but fine")
			if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Errorf("clean close: %v", err)
			}
		}},
		{name: "trickles its answer past the handshake timeout", script: func(p *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			for _, b := range []byte(accept101(key)) {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-p.release:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}, client: expectSlowAnswer504(timeout)},
		{name: "answers 101 with a wrong accept key", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err == nil {
				_, _ = c.Write([]byte(accept101("not the client's key")))
			}
		}, client: expectStatus(http.StatusBadGateway, quick)},
		{name: "answers garbage instead of HTTP", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err == nil {
				_, _ = c.Write([]byte("\x00\xffSSH-2.0-garbage\r\n\x16\x03\x01 not http at all\r\n\r\n"))
			}
		}, client: expectStatus(http.StatusBadGateway, quick)},
		{name: "sends garbage after a valid 101", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(accept101(key)))
			// Reserved bits and opcodes, a control frame with a long
			// payload: no client can read this.
			_, _ = c.Write([]byte("\x7f\xfe\x00\x10garbage garbage garbage"))
			// Then behave: read until the gateway ends the stream.
			_, _ = io.Copy(io.Discard, br)
		}, client: func(t *testing.T, g *gateway, path string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := g.open(t, path, nil)
			began := time.Now()
			_, _, err := c.Read(ctx)
			t.Logf("the client's read failed after %s: %v", time.Since(began).Round(time.Millisecond), err)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the client read %v, want a protocol error", err)
			}
			_ = c.CloseNow()
		}},
		{name: "closes mid-frame", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(accept101(key)))
			// Half of a 100-byte binary frame, then FIN.
			_, _ = c.Write(append(frameHeader(0x2, 100), make([]byte, 50)...))
		}, client: expectEnd(false, -1, quick)},
		{name: "resets mid-tunnel", script: func(_ *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(accept101(key)))
			_, _, _ = readFrame(br)
			resetConn(c)
		}, client: expectEnd(true, -1, quick)},
		{name: "vanishes without FIN while the client is idle", script: func(p *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(accept101(key)))
			p.hold() // no read, no write, no close
		}, client: expectEnd(false, websocket.StatusGoingAway, idleClose)},
		{name: "vanishes without FIN while the client keeps sending", script: func(p *rawPod, c net.Conn, br *bufio.Reader) {
			key, err := readHead(br)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(accept101(key)))
			p.hold()
		}, client: clientKeepsSending},
	}
}

// clientKeepsSending writes 64 KiB frames into a tunnel whose pod reads
// nothing, until the writes stall, and expects the gateway's Close 1001
// (idle timeout) within the idle timeout and the close grace of the
// stall. It is a raw client: a websocket library would hold its reply to
// the Close frame behind the stalled write, and time that instead.
func clientKeepsSending(t *testing.T, g *gateway, path string) {
	c, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte(handshakeHead(path))); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	type frame struct {
		op      byte
		payload []byte
		at      time.Time
	}
	frames := make(chan frame, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			op, payload, err := readFrame(br)
			if err != nil || op == 0x8 {
				frames <- frame{op, payload, time.Now()}
				return
			}
		}
	}()
	msg := maskedFrame(0x2, make([]byte, 64<<10))
	written, lastWrite := 0, time.Now()
	for range 4096 { // at most 256 MiB
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Write(msg)
		written += n
		if err != nil {
			break
		}
		lastWrite = time.Now()
	}
	f := <-frames
	stalled := f.at.Sub(lastWrite)
	code := -1
	if f.op == 0x8 && len(f.payload) >= 2 {
		code = int(f.payload[0])<<8 | int(f.payload[1])
	}
	t.Logf("the client wrote %d KiB before its writes stalled; the gateway's frame (opcode %d, code %d) came %s after the last write went through",
		written>>10, f.op, code, stalled.Round(time.Millisecond))
	if code != int(websocket.StatusGoingAway) {
		t.Errorf("close code %d, want 1001", code)
	}
	if within := faultIdle + closeGrace + time.Second; stalled > within {
		t.Errorf("the Close came %s after the writes stalled, want under %s", stalled, within)
	}
}

// maskedFrame is a final client frame, masked with a fixed key.
func maskedFrame(op byte, payload []byte) []byte {
	h := frameHeader(op, len(payload))
	h[1] |= 0x80
	key := [4]byte{1, 2, 3, 4}
	out := make([]byte, 0, len(h)+4+len(payload))
	out = append(out, h...)
	out = append(out, key[:]...)
	for i, b := range payload {
		out = append(out, b^key[i%4])
	}
	return out
}
