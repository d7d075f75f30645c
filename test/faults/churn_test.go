package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// Load of the churn and revocation tests.
const (
	churnTunnels = 500
	churnChanges = 1000
	// churnPace is the interval between two messages of one tunnel:
	// 2,000 messages a second over the 500 tunnels (1,000 with the race
	// detector, which makes this process several times slower).
	churnPace = 250 * time.Millisecond * (1 + raceFactor)
)

// stableRoute is a route over echo pods on the given addresses, in a
// namespace of its own, served by g.
type stableRoute struct {
	ns      string
	port    int32
	paths   []string
	servers []*echopod.Server
	pods    []*corev1.Pod
}

// newStableRoute creates a route "stable" on prefix /<ns> over one echo
// pod per address, and waits until g serves every pod.
func newStableRoute(t *testing.T, g *gateway, ips ...string) *stableRoute {
	t.Helper()
	s := &stableRoute{ns: env.Namespace(t)}
	port, servers := harness.EchoPods(t, ips...)
	s.servers, s.port = servers, port
	for i, ip := range ips {
		s.pods = append(s.pods, createPod(t, s.ns, pod{name: fmt.Sprintf("echo-%d", i), ip: ip, port: port, labels: map[string]string{"app": "echo"}}))
		s.paths = append(s.paths, harness.PodPath("/"+s.ns, ip, "/stable"))
	}
	createRoute(t, s.ns, route{name: "stable", prefix: "/" + s.ns, app: "echo", port: intstr.FromString("ws")})
	waitRoute(t, s.ns, "stable", readyWith(len(ips)))
	for _, p := range s.paths {
		g.waitServes(t, p)
	}
	return s
}

// accepted is the number of handshakes the route's pods accepted.
func (s *stableRoute) accepted() int64 {
	var n int64
	for _, srv := range s.servers {
		n += srv.Accepted()
	}
	return n
}

// TestUnrelatedChangesDropNoTunnelAndLoseNoMessage keeps 500 tunnels over
// four echo pods of one route exchanging numbered messages while 1,000
// unrelated changes go through the API server (other routes created,
// edited and deleted; their pods added, relabelled, made unready and
// removed; TLS Secrets created and renewed). No tunnel may drop and no
// message may be lost or reordered.
func TestUnrelatedChangesDropNoTunnelAndLoseNoMessage(t *testing.T) {
	g := startGateway(t, gatewayConfig{})
	s := newStableRoute(t, g, "127.0.5.1", "127.0.5.2", "127.0.5.3", "127.0.5.4")
	others := []string{env.Namespace(t), env.Namespace(t), env.Namespace(t), env.Namespace(t)}

	opened := s.accepted()
	tunnels := openPaced(t, g.wsClient, 0, s.paths, churnTunnels, nil, churnPace, 5*time.Minute)
	// A pod counts a handshake after writing its 101, which the client
	// may read first: wait for the pods to count every tunnel.
	harness.Eventually(t, 5*time.Second, "the pods count every tunnel's handshake", func() error {
		if n := s.accepted() - opened; n < churnTunnels {
			return fmt.Errorf("%d of %d counted", n, churnTunnels)
		}
		return nil
	})
	acceptedBefore, dialsBefore := s.accepted(), g.dials.Load()
	gens := watchGenerations(g.tables)
	defer gens.stop()
	// Some traffic before the churn starts.
	time.Sleep(time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	report, done := churn(ctx, churnConfig{namespaces: others, changes: churnChanges, pause: 20 * time.Millisecond, ipBase: 100, certs: churnCerts(t, others)})
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("the churn did not finish: %s", report)
	}
	// The last changes reach the table, and traffic goes on a little.
	time.Sleep(time.Second)
	res := finishAll(tunnels, 10*time.Second)
	gens.stop()

	t.Logf("churn: %s", report)
	t.Logf("traffic: %s", res)
	t.Logf("table generations seen: %s", gens)
	report.check(t)
	if n := report.total(); n != churnChanges {
		t.Errorf("%d changes made, want %d", n, churnChanges)
	}
	res.check(t, "tunnels of the unchanged route")
	if res.tunnels != churnTunnels {
		t.Errorf("%d tunnels ran, want %d", res.tunnels, churnTunnels)
	}
	if perTunnel := res.received / int64(res.tunnels); perTunnel < 10 {
		t.Errorf("only %d messages per tunnel: the churn was too short to tell", perTunnel)
	}
	if gens.last-gens.first < 10 {
		t.Errorf("only %d tables were built during the churn", gens.last-gens.first)
	}
	// Nothing reconnected behind the clients' backs.
	if n := s.accepted() - acceptedBefore; n != 0 {
		t.Errorf("the echo pods accepted %d handshakes during the churn, want 0", n)
	}
	if n := g.dials.Load() - dialsBefore; n != 0 {
		t.Errorf("the gateway dialled %d times during the churn, want 0", n)
	}
	if got := g.server.OpenTunnels(); got != 0 {
		harness.Eventually(t, 5*time.Second, "the gateway's tunnels end", func() error {
			if n := g.server.OpenTunnels(); n != 0 {
				return fmt.Errorf("%d open", n)
			}
			return nil
		})
	}
}

// revocationCase is a route with a victim pod A and a bystander pod B
// (except where the whole route goes), in the test's namespace.
type revocationCase struct {
	name         string
	route        *wsgatev1alpha1.WsRoute
	podA, podB   *corev1.Pod
	pathA, pathB string
	echoA        *echopod.Server
	toA, toB     []*pacedTunnel
}

// TestRevocationsCloseOnlyTheRevokedTunnelsWithinASecond runs the churn
// setup (witness tunnels exchanging messages on a stable route, unrelated
// changes in the background) and revokes, one after the other: a pod
// deleted, relabelled, made unready, a route deleted, a selector edited.
// Every tunnel to a revoked pod gets Close 1008 within a second of the
// API write (p50 and p99 over all of them are reported); the witnesses
// and the tunnels to the revoked pods' neighbours are untouched. Removing
// an origin from allowedOrigins refuses new handshakes with it (403); and
// a route with revokePolicy Drain keeps its tunnels up to maxLifetime.
func TestRevocationsCloseOnlyTheRevokedTunnelsWithinASecond(t *testing.T) {
	g := startGateway(t, gatewayConfig{})
	witness := newStableRoute(t, g, "127.0.5.11", "127.0.5.12", "127.0.5.13", "127.0.5.14")
	witnesses := openPaced(t, g.wsClient, 0, witness.paths, 200, nil, churnPace, 5*time.Minute)

	ns := env.Namespace(t)
	const perVictim, perBystander = 40, 10
	names := []string{"pod-deleted", "pod-relabelled", "pod-unready", "route-deleted", "selector-edited"}
	cases := make([]*revocationCase, len(names))
	var ips []string
	for i := range names {
		ips = append(ips, fmt.Sprintf("127.0.5.%d", 20+2*i), fmt.Sprintf("127.0.5.%d", 21+2*i))
	}
	port, servers := harness.EchoPods(t, ips...)
	for i, name := range names {
		c := &revocationCase{name: name, echoA: servers[2*i]}
		prefix := "/" + ns + "/" + name
		app := "app-" + name
		c.podA = createPod(t, ns, pod{name: name + "-a", ip: ips[2*i], port: port, labels: map[string]string{"app": app}})
		c.podB = createPod(t, ns, pod{name: name + "-b", ip: ips[2*i+1], port: port, labels: map[string]string{"app": app, "keep": "yes"}})
		c.route = createRoute(t, ns, route{name: name, prefix: prefix, app: app, port: intstr.FromString("ws")})
		c.pathA, c.pathB = harness.PodPath(prefix, ips[2*i], "/"), harness.PodPath(prefix, ips[2*i+1], "/")
		cases[i] = c
	}
	for i, c := range cases {
		waitRoute(t, ns, c.name, readyWith(2))
		g.waitServes(t, c.pathA)
		g.waitServes(t, c.pathB)
		c.toA = openPaced(t, g.wsClient, 1000+100*i, []string{c.pathA}, perVictim, nil, 100*time.Millisecond, 5*time.Minute)
		c.toB = openPaced(t, g.wsClient, 1050+100*i, []string{c.pathB}, perBystander, nil, 100*time.Millisecond, 5*time.Minute)
	}

	// Unrelated changes go on in the background all along.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	churnNS := []string{env.Namespace(t), env.Namespace(t)}
	report, churnDone := churn(ctx, churnConfig{
		namespaces: churnNS, changes: 400, pause: 40 * time.Millisecond, ipBase: 100, certs: churnCerts(t, churnNS),
	})
	time.Sleep(500 * time.Millisecond)

	revoke := map[string]func(c *revocationCase){
		"pod-deleted":    func(c *revocationCase) { mustDelete(t, c.podA) },
		"pod-relabelled": func(c *revocationCase) { mustRelabel(t, c.podA, map[string]string{"app": "retired"}) },
		"pod-unready": func(c *revocationCase) {
			if err := setPodStatusE(context.Background(), c.podA, c.podA.Status.PodIP, false); err != nil {
				t.Fatal(err)
			}
		},
		"route-deleted": func(c *revocationCase) { mustDelete(t, c.route) },
		"selector-edited": func(c *revocationCase) {
			patchRoute(t, c.route, func(r *wsgatev1alpha1.WsRoute) {
				r.Spec.Selector = metav1.LabelSelector{MatchLabels: map[string]string{"keep": "yes"}}
			})
		},
	}
	var all durations
	for _, c := range cases {
		revoked := c.toA
		if c.name == "route-deleted" {
			revoked = append(append([]*pacedTunnel{}, c.toA...), c.toB...)
		}
		written := time.Now()
		revoke[c.name](c)
		var lat durations
		codes := map[websocket.StatusCode]int{}
		for _, p := range revoked {
			end := p.waitEnded(revokeWithin + 2*time.Second)
			if end == nil {
				codes[0]++
				continue
			}
			codes[end.Code]++
			lat = append(lat, end.At.Sub(written))
			if p.received.Load() == 0 {
				t.Errorf("%s: tunnel %d exchanged no message", c.name, p.id)
			}
			if r := p.result(); r.lost+r.reordered+r.corrupt > 0 {
				t.Errorf("%s: revoked tunnel %d lost or reordered messages before its close: %s", c.name, p.id, r.firstProblem)
			}
		}
		all = append(all, lat...)
		t.Logf("%s: %d tunnels revoked, close codes %v, latency from the API write %s", c.name, len(revoked), codes, lat)
		if codes[websocket.StatusPolicyViolation] != len(revoked) {
			t.Errorf("%s: close codes %v, want 1008 for all %d revoked tunnels", c.name, codes, len(revoked))
		}
		if p99 := lat.pct(100); p99 > revokeWithin {
			t.Errorf("%s: slowest revocation took %s, want under %s", c.name, p99, revokeWithin)
		}
		// New handshakes to the revoked pod are 404 and reach nothing.
		accepted := c.echoA.Accepted()
		if got := g.status(c.pathA, nil); got != http.StatusNotFound {
			t.Errorf("%s: new handshake to the revoked pod: %d, want 404", c.name, got)
		}
		if c.echoA.Accepted() != accepted {
			t.Errorf("%s: a handshake reached the revoked pod", c.name)
		}
	}
	t.Logf("revocation latency over all %d revoked tunnels: %s", len(all), all)

	t.Run("removing an origin refuses new handshakes with it with 403", func(t *testing.T) {
		testOriginRemoval(t, g, ns)
	})
	t.Run("a Drain route keeps its tunnels up to maxLifetime", func(t *testing.T) {
		testDrainUntilLifetime(t, g, ns)
	})

	select {
	case <-churnDone:
	case <-ctx.Done():
		t.Fatalf("the churn did not finish: %s", report)
	}
	report.check(t)
	t.Logf("background churn: %s", report)

	// Everything not revoked carried on without a hitch.
	untouched := append([]*pacedTunnel{}, witnesses...)
	for _, c := range cases {
		if c.name != "route-deleted" {
			untouched = append(untouched, c.toB...)
		}
	}
	res := finishAll(untouched, 10*time.Second)
	t.Logf("untouched tunnels (witnesses and the revoked pods' neighbours): %s", res)
	res.check(t, "untouched tunnels")
}

func mustRelabel(t *testing.T, p *corev1.Pod, labels map[string]string) {
	t.Helper()
	if err := relabelE(context.Background(), p, labels); err != nil {
		t.Fatal(err)
	}
}

// testOriginRemoval removes one of two allowed origins of a route with
// open tunnels from both.
//
// Current behaviour, and a finding: the gateway checks Origin only at
// the handshake, and registry.revoked (proxy/registry.go) revokes only on
// backend changes, so tunnels opened with a removed origin stay open
// until they end. The test checks that new handshakes with the removed
// origin get 403 (the other origin passes), and reports whether open
// tunnels were closed.
func testOriginRemoval(t *testing.T, g *gateway, ns string) {
	port, _ := harness.EchoPods(t, "127.0.5.40")
	createPod(t, ns, pod{name: "origins-a", ip: "127.0.5.40", port: port, labels: map[string]string{"app": "origins"}})
	const kept, removed = "https://kept.example.com", "https://removed.example.com"
	r := createRoute(t, ns, route{name: "origins", prefix: "/" + ns + "/origins", app: "origins", port: intstr.FromString("ws"),
		origins: []wsgatev1alpha1.Origin{kept, removed}})
	path := harness.PodPath("/"+ns+"/origins", "127.0.5.40", "/")
	waitRoute(t, ns, "origins", readyWith(1))
	g.waitServes(t, path)
	withRemoved := openPaced(t, g.wsClient, 3000, []string{path}, 20, http.Header{"Origin": {removed}}, 100*time.Millisecond, 5*time.Minute)
	withKept := openPaced(t, g.wsClient, 3100, []string{path}, 20, http.Header{"Origin": {kept}}, 100*time.Millisecond, 5*time.Minute)
	time.Sleep(300 * time.Millisecond)

	patchRoute(t, r, func(r *wsgatev1alpha1.WsRoute) { r.Spec.AllowedOrigins = []wsgatev1alpha1.Origin{kept} })
	harness.Eventually(t, waitTimeout, "a handshake with the removed origin gets 403", func() error {
		if got := g.status(path, http.Header{"Origin": {removed}}); got != http.StatusForbidden {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
	if got := g.status(path, http.Header{"Origin": {kept}}); got != http.StatusSwitchingProtocols {
		t.Errorf("a handshake with the kept origin: %d, want 101", got)
	}
	// Give a revocation, if any, the time it gets elsewhere.
	time.Sleep(revokeWithin)
	closedN, codes := 0, map[websocket.StatusCode]int{}
	var stillOpen []*pacedTunnel
	for _, p := range withRemoved {
		if end := p.ended(); end != nil {
			closedN++
			codes[end.Code]++
		} else {
			stillOpen = append(stillOpen, p)
		}
	}
	t.Logf("tunnels opened with the removed origin: %d of %d closed (codes %v) %s after new handshakes got 403",
		closedN, len(withRemoved), codes, revokeWithin)
	if closedN != len(withRemoved) || codes[websocket.StatusPolicyViolation] != closedN {
		t.Errorf("tunnels opened with the removed origin: %d of %d closed within %s, codes %v; want all, with 1008", closedN, len(withRemoved), revokeWithin, codes)
	}
	res := finishAll(withKept, 10*time.Second)
	res.check(t, "tunnels opened with the kept origin")
	if len(stillOpen) > 0 {
		finishAll(stillOpen, 10*time.Second)
	}
}

// testDrainUntilLifetime makes the pod of a Drain route with a 4s
// maxLifetime unready while tunnels to it exchange messages: new
// handshakes get 404 at once, the open tunnels carry on, and close with
// 1001 when their lifetime ends.
func testDrainUntilLifetime(t *testing.T, g *gateway, ns string) {
	const lifetime = 4 * time.Second
	port, _ := harness.EchoPods(t, "127.0.5.41")
	p := createPod(t, ns, pod{name: "drain-a", ip: "127.0.5.41", port: port, labels: map[string]string{"app": "drain"}})
	createRoute(t, ns, route{name: "drain", prefix: "/" + ns + "/drain", app: "drain", port: intstr.FromString("ws"),
		revoke: wsgatev1alpha1.RevokeDrain, timeouts: &wsgatev1alpha1.Timeouts{MaxLifetime: &metav1.Duration{Duration: lifetime}}})
	path := harness.PodPath("/"+ns+"/drain", "127.0.5.41", "/")
	waitRoute(t, ns, "drain", readyWith(1))
	g.waitServes(t, path)
	opened := time.Now()
	tunnels := openPaced(t, g.wsClient, 4000, []string{path}, 20, nil, 100*time.Millisecond, 5*time.Minute)
	time.Sleep(300 * time.Millisecond)

	if err := setPodStatusE(context.Background(), p, "127.0.5.41", false); err != nil {
		t.Fatal(err)
	}
	g.waitStatus(t, path, http.StatusNotFound)
	revokedAt := time.Now()
	atRevoke := make([]int64, len(tunnels))
	for i, tn := range tunnels {
		atRevoke[i] = tn.received.Load()
	}
	codes := map[websocket.StatusCode]int{}
	var lived durations
	for i, tn := range tunnels {
		end := tn.waitEnded(lifetime + 3*time.Second)
		if end == nil {
			codes[0]++
			continue
		}
		codes[end.Code]++
		lived = append(lived, end.At.Sub(opened))
		if tn.received.Load() <= atRevoke[i] {
			t.Errorf("tunnel %d exchanged no message after its pod was revoked", tn.id)
		}
		if r := tn.result(); r.lost+r.reordered+r.corrupt > 0 {
			t.Errorf("draining tunnel %d: %s", tn.id, r.firstProblem)
		}
	}
	t.Logf("Drain route: pod revoked %s after the tunnels opened; they closed with codes %v after %s (maxLifetime %s)",
		revokedAt.Sub(opened).Round(time.Millisecond), codes, lived, lifetime)
	if codes[websocket.StatusGoingAway] != len(tunnels) {
		t.Errorf("close codes %v, want 1001 (maximum lifetime) for all %d", codes, len(tunnels))
	}
	if lo := lived.pct(0); lo < lifetime-200*time.Millisecond {
		t.Errorf("a draining tunnel closed %s after it opened, before its %s lifetime", lo, lifetime)
	}
	if hi := lived.pct(100); hi > lifetime+2*time.Second {
		t.Errorf("a draining tunnel closed %s after it opened, long after its %s lifetime", hi, lifetime)
	}
}
