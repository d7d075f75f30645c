package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// TestEndToEnd drives one gateway through the API server: two selected echo
// pods are reachable with every kind of websocket traffic, and a pod the
// route does not select is not.
func TestEndToEnd(t *testing.T) {
	g := startGateway(t)
	ns := env.Namespace(t)
	port, servers := harness.EchoPods(t, "127.0.3.1", "127.0.3.2", "127.0.3.3")
	pods := []struct {
		name, ip string
		srv      *echopod.Server
	}{{"echo-a", "127.0.3.1", servers[0]}, {"echo-b", "127.0.3.2", servers[1]}}
	stranger := servers[2]

	createPod(t, ns, podSpec{name: "echo-a", ip: "127.0.3.1", labels: map[string]string{"app": "echo"}})
	createPod(t, ns, podSpec{name: "echo-b", ip: "127.0.3.2", labels: map[string]string{"app": "echo"}})
	createPod(t, ns, podSpec{name: "stranger", ip: "127.0.3.3", labels: map[string]string{"app": "other"}})
	createRoute(t, ns, routeSpec{name: "rooms", prefix: "/rooms", app: "echo", port: intstr.FromInt32(port), backendPath: "/api/ws"})

	route := waitRouteServes(t, ns, "rooms", "echo-a", "echo-b")
	if got := harness.Condition(route, wsgatev1alpha1.ConditionAccepted); got != "True/"+wsgatev1alpha1.ReasonAccepted {
		t.Errorf("Accepted condition %q, want True/Accepted", got)
	}
	for i, ep := range route.Status.Endpoints.Pods {
		if ep.Port != port || strings.Join(ep.Addresses, ",") != pods[i].ip {
			t.Errorf("status lists pod %s at %v port %d, want %s port %d", ep.Name, ep.Addresses, ep.Port, pods[i].ip, port)
		}
	}
	// Status is written after the table is published, but make sure.
	for _, p := range pods {
		g.waitStatus(t, harness.PodPath("/rooms", p.ip, "/"), http.StatusSwitchingProtocols)
	}

	big := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	const line = "all work and no play makes a websocket dull. "
	bigText := []byte(strings.Repeat(line, (1<<20)/len(line)+1)[:1<<20])
	messages := []struct {
		what string
		typ  websocket.MessageType
		msg  []byte
	}{
		{"a text message", websocket.MessageText, []byte("hello, pod")},
		{"a binary message", websocket.MessageBinary, []byte{0, 1, 2, 0xfe, 0xff}},
		{"an empty message", websocket.MessageText, []byte{}},
		{"a 1 MiB binary message", websocket.MessageBinary, big},
		{"a 1 MiB text message", websocket.MessageText, bigText},
	}
	clients := []struct {
		name        string
		opts        *websocket.DialOptions
		subprotocol string
		deflate     bool
	}{
		{"a plain client", nil, "", false},
		{"a client asking for subprotocol chat", &websocket.DialOptions{Subprotocols: []string{"chat"}}, "chat", false},
		{"a client asking for subprotocol echo.v2", &websocket.DialOptions{Subprotocols: []string{"echo.v2"}}, "echo.v2", false},
		// The pod chooses (echopod prefers chat), and the gateway relays
		// its choice rather than the client's first offer.
		{"a client offering echo.v2 then chat", &websocket.DialOptions{Subprotocols: []string{"echo.v2", "chat"}}, "chat", false},
		{"a client asking for an unknown subprotocol", &websocket.DialOptions{Subprotocols: []string{"mqtt"}}, "", false},
		{"a client with permessage-deflate", &websocket.DialOptions{CompressionMode: websocket.CompressionContextTakeover}, "", true},
	}

	for _, p := range pods {
		for _, cl := range clients {
			t.Run(cl.name+" talks to "+p.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				before := acceptedBy(servers)
				c, answer := g.open(t, harness.PodPath("/rooms", p.ip, "/lobby"), cl.opts)
				if got := c.Subprotocol(); got != cl.subprotocol {
					t.Errorf("negotiated subprotocol %q, want %q", got, cl.subprotocol)
				}
				ext := answer.Get("Sec-WebSocket-Extensions")
				if got := strings.Contains(ext, "permessage-deflate"); got != cl.deflate {
					t.Errorf("Sec-WebSocket-Extensions %q: permessage-deflate negotiated %v, want %v", ext, got, cl.deflate)
				}
				for _, m := range messages {
					if err := echo(ctx, c, m.typ, m.msg); err != nil {
						t.Fatalf("%s: %v", m.what, err)
					}
				}
				seen := podSees(t, c)
				if seen.Subprotocol != cl.subprotocol {
					t.Errorf("the pod negotiated subprotocol %q, want %q", seen.Subprotocol, cl.subprotocol)
				}
				if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
					t.Errorf("clean close through the gateway: %v", err)
				}
				// The handshake reached this pod and no other.
				after := acceptedBy(servers)
				for i, s := range servers {
					want := before[i]
					if s == p.srv {
						want++
					}
					if after[i] != want {
						t.Errorf("echo server %s accepted %d handshakes, want %d", s.Addr, after[i]-before[i], want-before[i])
					}
				}
			})
		}
	}

	t.Run("the pod sees the backend path, the rest of the path and the query", func(t *testing.T) {
		for _, p := range pods {
			c, _ := g.open(t, harness.PodPath("/rooms", p.ip, "/game/7?token=a%20b&x=1"), nil)
			seen := podSees(t, c)
			checks := []struct{ what, got, want string }{
				{"path", seen.Path, "/api/ws/game/7"},
				{"query", seen.RawQuery, "token=a%20b&x=1"},
				{"host", seen.Host, host},
				{"X-Forwarded-Host", seen.Header.Get("X-Forwarded-Host"), host},
				{"X-Forwarded-Proto", seen.Header.Get("X-Forwarded-Proto"), "http"},
			}
			for _, ch := range checks {
				if ch.got != ch.want {
					t.Errorf("%s: %s %q, want %q", p.name, ch.what, ch.got, ch.want)
				}
			}
		}
	})

	t.Run("a pod the route does not select stays unreachable", func(t *testing.T) {
		dials := g.dials.Load()
		for _, path := range []string{
			harness.PodPath("/rooms", "127.0.3.3", "/"),
			harness.PodPath("/rooms", "127.0.3.3", "/api/ws"),
		} {
			if got := g.status(t, path); got != http.StatusNotFound {
				t.Errorf("handshake for %s: %d, want 404", path, got)
			}
		}
		if n := stranger.Accepted(); n != 0 {
			t.Errorf("the unselected pod accepted %d handshakes, want 0", n)
		}
		if n := g.dials.Load() - dials; n != 0 {
			t.Errorf("the gateway dialled %d times for an unselected pod", n)
		}
	})

	t.Run("a cross-site Origin is refused with 403 without a dial, the same origin passes", func(t *testing.T) {
		path := harness.PodPath("/rooms", "127.0.3.1", "/")
		dials := g.dials.Load()
		if got := g.statusWith(t, path, http.Header{"Origin": {"https://evil.example.org"}}); got != http.StatusForbidden {
			t.Errorf("handshake from a cross-site Origin: %d, want 403", got)
		}
		if n := g.dials.Load() - dials; n != 0 {
			t.Errorf("the gateway dialled %d times for a refused Origin", n)
		}
		if got := g.statusWith(t, path, http.Header{"Origin": {"http://" + host}}); got != http.StatusSwitchingProtocols {
			t.Errorf("handshake from the same origin: %d, want 101", got)
		}
	})

	t.Run("addresses outside the allowlist are 404 without a dial", func(t *testing.T) {
		dials := g.dials.Load()
		for _, path := range []string{
			harness.PodPath("/rooms", "127.0.3.99", "/"),      // no pod there
			harness.PodPath("/rooms", "169.254.169.254", "/"), // cloud metadata
			harness.PodPath("/rooms", "127.0.3.01", "/"),      // not canonical
			harness.PodPath("/rooms", "127.3.1", "/"),         // not canonical
			harness.PodPath("/rooms", "::ffff:127.0.3.1", "/"),
			harness.PodPath("/elsewhere", "127.0.3.1", "/"), // no route with that prefix
			"/127.0.3.1/", // nor without one
		} {
			if got := g.status(t, path); got != http.StatusNotFound {
				t.Errorf("handshake for %s: %d, want 404", path, got)
			}
		}
		if n := g.dials.Load() - dials; n != 0 {
			t.Errorf("the gateway dialled %d times for addresses it does not serve", n)
		}
	})
}

// TestRevocationThroughTheAPI changes the cluster through the API server and
// checks what open tunnels see: revoked ones get a Close 1008 within a
// second, the others carry on, and a Drain route lets them run.
func TestRevocationThroughTheAPI(t *testing.T) {
	g := startGateway(t)

	// Each case revokes pod A of a route over pods A and B.
	revocations := []struct {
		name   string
		revoke func(t *testing.T, a *corev1.Pod)
	}{
		{"deleting the pod", func(t *testing.T, a *corev1.Pod) { deletePod(t, a) }},
		{"relabelling the pod", func(t *testing.T, a *corev1.Pod) { relabelPod(t, a, map[string]string{"app": "retired"}) }},
		{"the pod becoming unready", func(t *testing.T, a *corev1.Pod) { makeUnready(t, a) }},
	}
	for i, rc := range revocations {
		t.Run(rc.name+" closes its tunnels with 1008 and spares the others", func(t *testing.T) {
			s := newScenario(t, g, i, wsgatev1alpha1.RevokeClose)
			toA := []*websocket.Conn{s.openA(t), s.openA(t)}
			toB := s.openB(t)
			busyB := startChatter(toB)
			waitClosed := watchClose(toA...)

			written := time.Now()
			rc.revoke(t, s.podA)
			for j, cl := range waitClosed(t) {
				latency := cl.At.Sub(written)
				t.Logf("tunnel %d to pod A: close %d %q, %s after the API write", j+1, cl.Code, cl.Reason, latency.Round(time.Millisecond))
				if cl.Code != websocket.StatusPolicyViolation {
					t.Errorf("tunnel %d to pod A ended with close %d %q, want 1008", j+1, cl.Code, cl.Reason)
				}
				if latency > revokeWithin {
					t.Errorf("tunnel %d to pod A closed %s after the API write, want under %s", j+1, latency, revokeWithin)
				}
			}
			sent := busyB.exchanged.Load()
			time.Sleep(200 * time.Millisecond)
			if err := busyB.finish(); err != nil {
				t.Fatalf("the tunnel to pod B failed while pod A was revoked: %v", err)
			}
			if n := busyB.exchanged.Load(); n == sent {
				t.Errorf("the tunnel to pod B exchanged no message after pod A was revoked (%d before)", n)
			} else {
				t.Logf("the tunnel to pod B exchanged %d messages, %d of them after pod A was revoked", n, n-sent)
			}
			mustEcho(t, toB, "pod B is still here")

			acceptedA := s.echoA.Accepted()
			if got := g.status(t, s.pathA); got != http.StatusNotFound {
				t.Errorf("new handshake to the revoked pod A: %d, want 404", got)
			}
			if s.echoA.Accepted() != acceptedA {
				t.Error("a handshake to the revoked pod A reached it")
			}
			if got := g.status(t, s.pathB); got != http.StatusSwitchingProtocols {
				t.Errorf("new handshake to pod B: %d, want 101", got)
			}
		})
	}

	t.Run("deleting the route closes its tunnels with 1008", func(t *testing.T) {
		s := newScenario(t, g, len(revocations), wsgatev1alpha1.RevokeClose)
		waitClosed := watchClose(s.openA(t), s.openA(t), s.openB(t))

		written := time.Now()
		deleteRoute(t, s.route)
		for j, cl := range waitClosed(t) {
			latency := cl.At.Sub(written)
			t.Logf("tunnel %d: close %d %q, %s after the API write", j+1, cl.Code, cl.Reason, latency.Round(time.Millisecond))
			if cl.Code != websocket.StatusPolicyViolation {
				t.Errorf("tunnel %d ended with close %d %q, want 1008", j+1, cl.Code, cl.Reason)
			}
			if latency > revokeWithin {
				t.Errorf("tunnel %d closed %s after the API write, want under %s", j+1, latency, revokeWithin)
			}
		}
		for _, path := range []string{s.pathA, s.pathB} {
			if got := g.status(t, path); got != http.StatusNotFound {
				t.Errorf("new handshake for %s after the route was deleted: %d, want 404", path, got)
			}
		}
	})

	t.Run("a Drain route keeps the tunnels of a pod that became unready", func(t *testing.T) {
		s := newScenario(t, g, len(revocations)+1, wsgatev1alpha1.RevokeDrain)
		toA := s.openA(t)
		toB := s.openB(t)
		busyA := startChatter(toA)

		makeUnready(t, s.podA)
		// The table drops pod A: new handshakes are refused...
		g.waitStatus(t, s.pathA, http.StatusNotFound)
		waitRouteServes(t, s.ns, s.route.Name, "pod-b")
		// ...while its open tunnel keeps going.
		time.Sleep(300 * time.Millisecond)
		if err := busyA.finish(); err != nil {
			t.Fatalf("the draining tunnel to pod A failed: %v", err)
		}
		mustEcho(t, toA, "pod A drains")
		mustEcho(t, toB, "pod B is untouched")
		if n := busyA.exchanged.Load(); n == 0 {
			t.Error("no message went through the draining tunnel")
		}
	})
}

// scenario is a route over two echo pods, A and B, in a namespace of its
// own, on a prefix of its own.
type scenario struct {
	ns, prefix   string
	route        *wsgatev1alpha1.WsRoute
	podA, podB   *corev1.Pod
	echoA, echoB *echopod.Server
	pathA, pathB string
	gw           *gateway
}

// newScenario sets up scenario number n (each gets its own addresses)
// with the given revoke policy, and waits until the gateway serves it.
func newScenario(t *testing.T, g *gateway, n int, policy wsgatev1alpha1.RevokePolicy) *scenario {
	t.Helper()
	ipA, ipB := ipOf(10+2*n), ipOf(11+2*n)
	port, servers := harness.EchoPods(t, ipA, ipB)
	s := &scenario{ns: env.Namespace(t), echoA: servers[0], echoB: servers[1], gw: g}
	s.prefix = "/" + s.ns
	s.pathA, s.pathB = harness.PodPath(s.prefix, ipA, "/"), harness.PodPath(s.prefix, ipB, "/")
	// The route names the port; the pods declare it.
	s.podA = createPod(t, s.ns, podSpec{name: "pod-a", ip: ipA, port: port, labels: map[string]string{"app": "echo"}})
	s.podB = createPod(t, s.ns, podSpec{name: "pod-b", ip: ipB, port: port, labels: map[string]string{"app": "echo"}})
	s.route = createRoute(t, s.ns, routeSpec{name: "echo", prefix: s.prefix, app: "echo", port: intstr.FromString("ws"), revoke: policy})
	waitRouteServes(t, s.ns, "echo", "pod-a", "pod-b")
	g.waitStatus(t, s.pathA, http.StatusSwitchingProtocols)
	g.waitStatus(t, s.pathB, http.StatusSwitchingProtocols)
	return s
}

// openA and openB open a tunnel to pod A or B and check that it echoes.
func (s *scenario) openA(t *testing.T) *websocket.Conn { return s.openTo(t, s.pathA) }
func (s *scenario) openB(t *testing.T) *websocket.Conn { return s.openTo(t, s.pathB) }

func (s *scenario) openTo(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	c, _ := s.gw.open(t, path, nil)
	mustEcho(t, c, "hello "+path)
	return c
}

// ipOf returns the n-th address of this package's loopback range.
func ipOf(n int) string {
	return "127.0.3." + strconv.Itoa(n)
}

// acceptedBy returns the handshakes each echo server accepted so far.
func acceptedBy(servers []*echopod.Server) []int64 {
	out := make([]int64, len(servers))
	for i, s := range servers {
		out[i] = s.Accepted()
	}
	return out
}

// podSees asks the echo pod at the end of c what handshake it received.
func podSees(t *testing.T, c *websocket.Conn) echopod.Seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(echopod.InfoRequest)); err != nil {
		t.Fatalf("ask the pod: %v", err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read the pod's answer: %v", err)
	}
	var seen echopod.Seen
	if err := json.Unmarshal(msg, &seen); err != nil || bytes.Equal(msg, []byte(echopod.InfoRequest)) {
		t.Fatalf("the pod's answer %q is not a handshake report: %v", truncate(msg), err)
	}
	return seen
}
