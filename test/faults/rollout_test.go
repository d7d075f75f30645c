package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// Shutdown flags of the replicas in the rollout test.
const (
	rolloutDrain = 2 * time.Second
	rolloutGrace = 6 * time.Second
)

// TestRollingRestartLosesNoClient runs two gateway replicas as real
// processes (--leader-elect) with clients spread over both, and sends
// SIGTERM to the leader: it turns not ready at once, lets its tunnels run
// for the drain window, closes them with 1001 and exits 0 within the
// grace period. Its clients reconnect through the other replica and go
// on exchanging messages; the other replica's clients see nothing; the
// survivor takes the Lease over and writes route status from then on.
func TestRollingRestartLosesNoClient(t *testing.T) {
	ns := env.Namespace(t)
	ips := []string{"127.0.6.40", "127.0.6.41", "127.0.6.42", "127.0.6.43"}
	port, _ := harness.EchoPods(t, ips...)
	var paths []string
	for i, ip := range ips {
		createPod(t, ns, pod{name: fmt.Sprintf("echo-%d", i), ip: ip, port: port, labels: map[string]string{"app": "echo"}})
		paths = append(paths, harness.PodPath("/"+ns, ip, "/rolling"))
	}
	createRoute(t, ns, route{name: "rolling", prefix: "/" + ns, app: "echo", port: intstr.FromString("ws")})

	flags := []string{"--leader-elect", "--leader-election-namespace", ns,
		"--drain-timeout", rolloutDrain.String(), "--shutdown-grace-period", rolloutGrace.String()}
	replicas := []*wsgateProcess{startWsgate(t, "replica-a", flags...), startWsgate(t, "replica-b", flags...)}
	for _, r := range replicas {
		for _, p := range paths {
			r.waitServes(t, p)
		}
	}
	waitRoute(t, ns, "rolling", readyWith(len(ips)))
	var leader, survivor *wsgateProcess
	harness.Eventually(t, 30*time.Second, "one replica holds the Lease", func() error {
		var holders []*wsgateProcess
		for _, r := range replicas {
			if acquiredLease(r) {
				holders = append(holders, r)
			}
		}
		if len(holders) != 1 {
			return fmt.Errorf("%d replicas say they acquired the Lease", len(holders))
		}
		leader = holders[0]
		return nil
	})
	survivor = replicas[0]
	if survivor == leader {
		survivor = replicas[1]
	}
	t.Logf("%s leads; SIGTERM goes to it", leader.Name)

	// Clients: half start on the leader, half on the other replica.
	addrs := []string{leader.addr, survivor.addr}
	var clients []*rollingClient
	for i := range 40 {
		clients = append(clients, startRollingClient(i, addrs, i%2, paths[i%len(paths)], 100*time.Millisecond))
	}
	defer func() {
		for _, c := range clients {
			c.stop()
		}
	}()
	survivorProbe := startProber(survivor.wsClient, survivor.ProbeAddr, paths, 100*time.Millisecond)
	defer survivorProbe.stop()
	time.Sleep(time.Second)
	ackedBefore := make([]int64, len(clients))
	for i, c := range clients {
		ackedBefore[i] = c.ackedCount()
	}

	sent := leader.SIGTERM(t)
	harness.Eventually(t, 500*time.Millisecond, "the terminated replica's /readyz stops answering 200", func() error {
		if leader.Readyz() == http.StatusOK {
			return fmt.Errorf("still 200")
		}
		return nil
	})
	notReady := time.Since(sent)
	code, exitedAt, ok := leader.WaitExit(rolloutGrace + 5*time.Second)
	if !ok {
		t.Fatalf("%s still runs %s after SIGTERM", leader.Name, time.Since(sent).Round(time.Millisecond))
	}
	t.Logf("%s: not ready %s after SIGTERM, exited with status %d %s after it", leader.Name,
		notReady.Round(time.Millisecond), code, exitedAt.Sub(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("%s exited with status %d, want 0", leader.Name, code)
	}
	if took := exitedAt.Sub(sent); took > rolloutGrace {
		t.Errorf("%s exited %s after SIGTERM, beyond its %s grace period", leader.Name, took, rolloutGrace)
	}

	// Status writes go on from the survivor: it takes the Lease over, and
	// a pod added now is counted in the route's status.
	harness.Eventually(t, 30*time.Second, "the survivor acquires the Lease", func() error {
		if !acquiredLease(survivor) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	t.Logf("%s acquired the Lease %s after the SIGTERM", survivor.Name, time.Since(sent).Round(time.Millisecond))
	late := "127.0.6.44"
	srv, err := echopod.Start(net.JoinHostPort(late, strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	createPod(t, ns, pod{name: "late", ip: late, port: port, labels: map[string]string{"app": "echo"}})
	waitRoute(t, ns, "rolling", readyWith(len(ips)+1))
	survivor.waitServes(t, harness.PodPath("/"+ns, late, "/rolling"))
	t.Logf("after %s exited, the survivor wrote the route's status with the new pod", leader.Name)

	// Every client carries on; those of the terminated replica moved once.
	time.Sleep(time.Second)
	var moved, stayed, problems int
	var closeAfter durations
	for i, c := range clients {
		c.stop()
		r := c.result()
		if r.acked <= ackedBefore[i] {
			t.Errorf("client %d exchanged no message after the SIGTERM (%d before)", c.id, ackedBefore[i])
		}
		if len(r.problems) > 0 {
			problems++
			t.Errorf("client %d: %v", c.id, r.problems)
		}
		switch c.start {
		case 0:
			moved++
			if r.closes[int(websocket.StatusGoingAway)] != 1 || r.reconnects != 1 {
				t.Errorf("client %d of the terminated replica: closes %v, %d reconnections; want one 1001 and one reconnection", c.id, r.closes, r.reconnects)
			}
			for _, at := range r.closedAt {
				closeAfter = append(closeAfter, at.Sub(sent))
			}
		default:
			stayed++
			if r.reconnects != 0 || len(r.closes) != 0 {
				t.Errorf("client %d of the surviving replica: closes %v, %d reconnections; want none", c.id, r.closes, r.reconnects)
			}
		}
	}
	t.Logf("%d clients moved from %s to %s after a Close 1001 (closed %s after SIGTERM), %d stayed untouched; %d with problems",
		moved, leader.Name, survivor.Name, closeAfter, stayed, problems)
	if lo := closeAfter.pct(0); lo < rolloutDrain-100*time.Millisecond {
		t.Errorf("a tunnel was closed %s after SIGTERM, before the %s drain window ended", lo, rolloutDrain)
	}
	c := survivorProbe.stop()
	t.Logf("new handshakes to the survivor during the rollout: %s", c)
	if c.failed > 0 || c.notReady > 0 {
		t.Errorf("the survivor during the rollout: %s", c)
	}
}

// acquiredLease reports whether a wsgate process logged that it became
// the leader.
func acquiredLease(p *wsgateProcess) bool {
	return strings.Contains(strings.ToLower(p.Output()), "successfully acquired lease")
}

// rollingClient exchanges numbered messages, one at a time, through one
// of two gateways; when its tunnel ends it reconnects through the other
// and resends the message that was not answered.
type rollingClient struct {
	id, start int
	stopc     chan struct{}
	done      chan struct{}

	mu sync.Mutex
	r  rollingResult
}

// rollingResult is what a rolling client saw.
type rollingResult struct {
	acked      int64
	closes     map[int]int // close codes of tunnels that ended (-1: none)
	closedAt   []time.Time
	reconnects int
	// failed handshakes (a gateway going away refuses them).
	refused  int
	problems []string
}

func startRollingClient(id int, addrs []string, start int, path string, every time.Duration) *rollingClient {
	c := &rollingClient{id: id, start: start, stopc: make(chan struct{}), done: make(chan struct{}), r: rollingResult{closes: map[int]int{}}}
	go c.run(addrs, path, every)
	return c
}

func (c *rollingClient) run(addrs []string, path string, every time.Duration) {
	defer close(c.done)
	bound := time.After(3 * time.Minute)
	gw := c.start
	seq := int64(0)
	for attempt := 0; attempt < 200; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, _, _, err := wsClient{addr: addrs[gw]}.handshake(ctx, path, nil)
		cancel()
		if err != nil {
			c.mu.Lock()
			c.r.refused++
			c.mu.Unlock()
			gw = 1 - gw
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for {
			select {
			case <-c.stopc:
				_ = conn.Close(websocket.StatusNormalClosure, "")
				return
			case <-bound:
				_ = conn.CloseNow()
				return
			case <-time.After(every):
			}
			msg := message(c.id, seq)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := echo(ctx, conn, msg)
			cancel()
			if err != nil {
				cl := harness.ClosedBy(err)
				c.mu.Lock()
				if strings.HasPrefix(err.Error(), "echo ") {
					// A wrong answer, not an ended tunnel.
					c.r.problems = append(c.r.problems, err.Error())
				}
				c.r.closes[int(cl.Code)]++
				c.r.closedAt = append(c.r.closedAt, cl.At)
				c.r.reconnects++
				c.mu.Unlock()
				_ = conn.CloseNow()
				gw = 1 - gw
				break
			}
			seq++
			c.mu.Lock()
			c.r.acked = seq
			c.mu.Unlock()
		}
	}
}

func (c *rollingClient) ackedCount() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.acked
}

func (c *rollingClient) stop() {
	select {
	case <-c.stopc:
	default:
		close(c.stopc)
	}
	<-c.done
}

func (c *rollingClient) result() rollingResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r
}
