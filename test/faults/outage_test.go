package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// outageEnv overrides how long the API server stays down (a Go duration).
const outageEnv = "WSGATE_FAULTS_OUTAGE"

// apiOutage is how long the API server stays down: longer than the
// leader-election renew deadline (10s), so that a leader notices.
func apiOutage(t *testing.T) time.Duration {
	if v := os.Getenv(outageEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", outageEnv, v, err)
		}
		return d
	}
	return 20 * time.Second
}

// TestAPIServerOutageLeavesTheDataPlaneServing kills kube-apiserver for
// 20s (WSGATE_FAULTS_OUTAGE), then etcd alone for a quarter of that,
// while tunnels exchange messages and clients keep connecting to
// allowlisted pods. The in-process gateway keeps serving
// the last table: no tunnel drops, every new handshake succeeds, and
// /readyz stays 200 (cmd/wsgate's check: a table was built and the
// gateway is not draining). After each restart the controllers resync: a
// pod added then is served within resyncWithin, and deleting it revokes
// its tunnel.
//
// Two more replicas, the real binary with --leader-elect as the chart runs
// it, write the routes' status (the in-process gateway writes none). The
// outage outlasts the renew deadline (10s), so the leader loses the
// Lease: both keep running and serving as the in-process gateway does,
// and after the restart exactly one of them leads and writes status
// again.
func TestAPIServerOutageLeavesTheDataPlaneServing(t *testing.T) {
	outage := apiOutage(t)
	// Registered first, so it runs last: whatever happens, the next tests
	// get a control plane.
	t.Cleanup(func() {
		if err := env.Restore(); err != nil {
			t.Errorf("the control plane did not come back: %v", err)
		}
	})
	g := startGateway(t, gatewayConfig{noStatus: true})
	leaseNS := env.Namespace(t)
	flags := []string{"--leader-elect", "--leader-election-namespace", leaseNS, "--drain-timeout", "1s", "--shutdown-grace-period", "5s"}
	replicas := []*wsgateProcess{startWsgate(t, "replica-a", flags...), startWsgate(t, "replica-b", flags...)}
	leader := waitOneLeader(t, replicas, 30*time.Second)
	t.Logf("%s leads", leader.Name)
	s := newStableRoute(t, g, "127.0.5.51", "127.0.5.52", "127.0.5.53", "127.0.5.54")
	for _, r := range replicas {
		for _, p := range s.paths {
			r.waitServes(t, p)
		}
	}

	tunnels := openPaced(t, g.wsClient, 0, s.paths, 100, nil, 200*time.Millisecond, 5*time.Minute)
	clients := startProber(g.wsClient, g.probeAddr, s.paths, 50*time.Millisecond)
	defer clients.stop()
	replicaTunnels := make([][]*pacedTunnel, len(replicas))
	replicaClients := make([]*prober, len(replicas))
	for i, r := range replicas {
		replicaTunnels[i] = openPaced(t, r.wsClient, 1000*(i+1), s.paths, 20, nil, 200*time.Millisecond, 5*time.Minute)
		replicaClients[i] = startProber(r.wsClient, r.ProbeAddr, s.paths, 100*time.Millisecond)
		defer replicaClients[i].stop()
	}
	time.Sleep(time.Second)
	t.Logf("before the outage, through the in-process gateway: %s", clients.snapshot())
	for i, r := range replicas {
		t.Logf("before the outage, through %s: %s", r.Name, replicaClients[i].snapshot())
	}

	// The API server goes away, etcd stays.
	down := time.Now()
	if err := env.KillAPIServer(); err != nil {
		t.Fatalf("kill kube-apiserver: %v", err)
	}
	stopped := time.Now()
	time.Sleep(outage)
	if err := env.StartAPIServer(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	if err := env.WaitAPI(time.Minute); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	during := clients.snapshot()
	t.Logf("kube-apiserver down for %s (killing it took %s, restarting it %s)", up.Sub(down).Round(time.Millisecond),
		stopped.Sub(down).Round(time.Millisecond), up.Sub(stopped.Add(outage)).Round(time.Millisecond))
	t.Logf("during the API server outage, through the in-process gateway: %s", during)
	checkServedThrough(t, "the API server outage", during)
	checkTunnelsAlive(t, "after the API server outage", tunnels)
	for i, r := range replicas {
		c := replicaClients[i].snapshot()
		t.Logf("during the API server outage, through %s: %s", r.Name, c)
		checkReplicaSurvived(t, r, replicaTunnels[i], c, down)
	}
	if strings.Contains(leader.Output(), "lost the leadership") {
		t.Logf("%s lost the Lease during the outage and kept running", leader.Name)
	} else {
		t.Errorf("%s did not report losing the Lease in a %s outage, beyond the 10s renew deadline", leader.Name, outage)
	}
	leader = waitOneLeader(t, replicas, time.Minute)
	t.Logf("%s leads %s after the API server answered again", leader.Name, time.Since(up).Round(time.Millisecond))

	t.Run("after the API server restarts a new pod is served and its removal revokes its tunnel", func(t *testing.T) {
		checkResync(t, g, s, "127.0.5.55", "late-pod")
	})

	// etcd alone goes away; the API server stays.
	down = time.Now()
	if err := env.KillEtcd(); err != nil {
		t.Fatalf("kill etcd: %v", err)
	}
	time.Sleep(outage / 4)
	if err := env.StartEtcd(); err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
	if err := env.WaitAPI(time.Minute); err != nil {
		t.Fatal(err)
	}
	during = clients.snapshot()
	t.Logf("etcd down (the API server up but unable to serve) for %s", time.Since(down).Round(time.Millisecond))
	t.Logf("during the etcd outage, through the in-process gateway: %s", during)
	checkServedThrough(t, "the etcd outage", during)
	checkTunnelsAlive(t, "after the etcd outage", tunnels)

	t.Run("after etcd restarts a new pod is served and its removal revokes its tunnel", func(t *testing.T) {
		checkResync(t, g, s, "127.0.5.56", "later-pod")
	})

	after := clients.stop()
	t.Logf("after the outages, through the in-process gateway: %s", after)
	checkServedThrough(t, "after the outages", after)
	res := finishAll(tunnels, 10*time.Second)
	t.Logf("tunnels through the in-process gateway across both outages: %s", res)
	res.check(t, "tunnels through the in-process gateway")
	for i, r := range replicas {
		res := finishAll(replicaTunnels[i], 10*time.Second)
		t.Logf("tunnels through %s across both outages: %s", r.Name, res)
		res.check(t, "tunnels through "+r.Name)
	}
}

// checkServedThrough fails unless every handshake of the period worked and
// /readyz stayed 200.
func checkServedThrough(t *testing.T, what string, c proberCounts) {
	t.Helper()
	if c.failed > 0 {
		t.Errorf("during %s: %d of %d handshakes failed; first: %s", what, c.failed, c.ok+c.failed, c.firstErr)
	}
	if c.ok == 0 {
		t.Errorf("during %s: no handshake was tried", what)
	}
	if c.notReady > 0 {
		t.Errorf("during %s: /readyz was not 200 %d of %d times", what, c.notReady, c.probes)
	}
}

// checkTunnelsAlive fails if a paced tunnel ended or lost a message.
func checkTunnelsAlive(t *testing.T, what string, ps []*pacedTunnel) {
	t.Helper()
	for _, p := range ps {
		if end := p.ended(); end != nil {
			t.Errorf("%s: tunnel %d ended with close %d %q", what, p.id, end.Code, end.Reason)
			return
		}
		if r := p.result(); r.lost+r.reordered+r.corrupt > 0 {
			t.Errorf("%s: %s", what, r.firstProblem)
			return
		}
	}
}

// checkReplicaSurvived fails if a --leader-elect replica exited during
// the outage, or failed a handshake, turned not ready or dropped a tunnel.
func checkReplicaSurvived(t *testing.T, r *wsgateProcess, tunnels []*pacedTunnel, c proberCounts, down time.Time) {
	t.Helper()
	if r.Exited() {
		code, at, _ := r.WaitExit(time.Second)
		codes := map[string]int{}
		for _, p := range tunnels {
			if end := p.ended(); end != nil {
				codes[strconv.Itoa(int(end.Code))+" "+shorten(end.Reason)]++
			} else {
				codes["still open"]++
			}
		}
		t.Errorf("%s exited with status %d %s into the API server outage; its %d tunnels ended with %v (-1: no Close frame); last lines:\n%s",
			r.Name, code, at.Sub(down).Round(time.Millisecond), len(tunnels), codes, r.LastLines(10))
		return
	}
	checkServedThrough(t, "the API server outage, through "+r.Name, c)
	checkTunnelsAlive(t, r.Name+"'s tunnels after the API server outage", tunnels)
}

// waitOneLeader waits until exactly one replica reports holding the Lease
// (leader_election_master_status 1) and none other does for a second
// after, and returns it.
func waitOneLeader(t *testing.T, replicas []*wsgateProcess, timeout time.Duration) *wsgateProcess {
	t.Helper()
	var leader *wsgateProcess
	var since time.Time
	harness.Eventually(t, timeout, "exactly one replica leads for a second", func() error {
		var leaders []string
		var one *wsgateProcess
		for _, r := range replicas {
			ok, err := r.leads()
			if err != nil {
				since = time.Time{}
				return err
			}
			if ok {
				leaders = append(leaders, r.Name)
				one = r
			}
		}
		if len(leaders) != 1 {
			since = time.Time{}
			return fmt.Errorf("leaders: %v", leaders)
		}
		if one != leader || since.IsZero() {
			leader, since = one, time.Now()
		}
		if time.Since(since) < time.Second {
			return fmt.Errorf("%s leads since %s", leader.Name, time.Since(since))
		}
		return nil
	})
	return leader
}

func shorten(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// checkResync adds a pod to the stable route (an echo server at ip on the
// route's port), waits until the gateway serves it and the route's status
// counts it, opens a tunnel to it, deletes the pod and checks the tunnel
// gets Close 1008 within revokeWithin.
func checkResync(t *testing.T, g *gateway, s *stableRoute, ip, name string) {
	srv, err := echopod.Start(net.JoinHostPort(ip, strconv.Itoa(int(s.port))))
	if err != nil {
		t.Fatalf("echo server on %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	written := time.Now()
	p := createPod(t, s.ns, pod{name: name, ip: ip, port: s.port, labels: map[string]string{"app": "echo"}})
	path := harness.PodPath("/"+s.ns, ip, "/stable")
	harness.Eventually(t, resyncWithin, "the new pod is served", func() error {
		if got := g.status(path, nil); got != http.StatusSwitchingProtocols {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
	served := time.Since(written)
	if _, err := pollRoute(s.ns, "stable", resyncWithin, readyWith(len(s.pods)+1)); err != nil {
		t.Fatalf("the route's status after %s: %v", resyncWithin, err)
	}
	t.Logf("the new pod was served %s after it was created, and counted in the route's status %s after", served.Round(time.Millisecond), time.Since(written).Round(time.Millisecond))

	conn := g.open(t, path, nil)
	mustEcho(t, conn, "hello new pod")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ended := make(chan harness.Closed, 1)
	go func() { ended <- harness.AwaitClose(ctx, conn) }()
	written = time.Now()
	mustDelete(t, p)
	cl := <-ended
	t.Logf("deleting the pod closed its tunnel with %d %q %s after the API write", cl.Code, cl.Reason, cl.At.Sub(written).Round(time.Millisecond))
	if cl.Code != websocket.StatusPolicyViolation || cl.At.Sub(written) > revokeWithin {
		t.Errorf("the new pod's tunnel ended with %d %q %s after its deletion, want 1008 within %s", cl.Code, cl.Reason, cl.At.Sub(written), revokeWithin)
	}
	if got := g.status(path, nil); got != http.StatusNotFound {
		t.Errorf("a handshake to the deleted pod: %d, want 404", got)
	}
}

// resyncWithin bounds how long after a restart a change takes to reach
// the gateway. The informers retry an unreachable API server every second
// (controllers.NewInformer) instead of with the reflector's backoff,
// which after a 20s outage took from seconds to over a minute.
const resyncWithin = 10 * time.Second
