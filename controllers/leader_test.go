package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv"
)

// TestEveryReplicaServesAndStatusMovesToTheNewLeader runs two replicas
// with leader election: both build the table, one writes status, and when
// it stops the other takes over the writes.
func TestEveryReplicaServesAndStatusMovesToTheNewLeader(t *testing.T) {
	leaseNS := env.Namespace(t)
	opts := replicaOptions{leader: &controllers.LeaderElectionOptions{Name: "wsgate.wsgate.io", Namespace: leaseNS, Log: logr.Discard()}}
	first := startReplica(t, "", opts)
	waitElected(t, first)
	second := startReplica(t, "", opts)

	ns := env.Namespace(t)
	labels := map[string]string{"app": "ha"}
	create(t, route(ns, "ha", "ha"))
	env.CreatePod(t, ns, testenv.Pod{Name: "one", Labels: labels, IPs: []string{"127.0.0.60"}, Ready: true})
	for _, g := range []*gateway{first, second} {
		g.waitAllowlist(t, ns, "ha", "127.0.0.60:8080")
	}
	select {
	case <-second.elected:
		t.Fatal("both replicas are leaders")
	default:
	}
	waitStatus(t, ns, "ha", endpointCount(1))
	holder := leaseHolder(t, leaseNS)

	first.stop()
	waitElected(t, second)
	if now := leaseHolder(t, leaseNS); now == holder || now == "" {
		t.Errorf("lease holder %q after the leader stopped, was %q", now, holder)
	}
	env.CreatePod(t, ns, testenv.Pod{Name: "two", Labels: labels, IPs: []string{"127.0.0.61"}, Ready: true})
	second.waitAllowlist(t, ns, "ha", "127.0.0.60:8080", "127.0.0.61:8080")
	waitStatus(t, ns, "ha", endpointCount(2))
}

// Leader-election timing of TestLeaderCutOffKeepsServingAndHandsOver:
// client-go's defaults divided by five.
var fastElection = controllers.LeaderElectionOptions{
	LeaseDuration: 3 * time.Second,
	RenewDeadline: 2 * time.Second,
	RetryPeriod:   400 * time.Millisecond,
}

// TestLeaderCutOffKeepsServingAndHandsOver runs two replicas, each
// reaching the API server through a connection the test can cut. The
// leader is cut off past its renew deadline: it stops leading but keeps
// running and serving its last table, and the other replica takes the
// Lease over and writes status. Then both are cut off (the API server
// "down" for them) while a pod is added: neither leads, neither stops.
// When both are reconnected, exactly one leads, both tables catch up and
// the change made meanwhile reaches the route's status.
func TestLeaderCutOffKeepsServingAndHandsOver(t *testing.T) {
	leaseNS := env.Namespace(t)
	election := fastElection
	election.Name, election.Namespace, election.Log = "wsgate.wsgate.io", leaseNS, logr.Discard()
	links := []*apiLink{newAPILink(t), newAPILink(t)}
	first := startReplica(t, "", replicaOptions{leader: &election, config: links[0].config()})
	waitElected(t, first)
	second := startReplica(t, "", replicaOptions{leader: &election, config: links[1].config()})
	replicas := []*gateway{first, second}

	ns := env.Namespace(t)
	labels := map[string]string{"app": "cut"}
	create(t, route(ns, "cut", "cut"))
	env.CreatePod(t, ns, testenv.Pod{Name: "one", Labels: labels, IPs: []string{"127.0.0.70"}, Ready: true})
	for _, g := range replicas {
		g.waitAllowlist(t, ns, "cut", "127.0.0.70:8080")
	}
	waitStatus(t, ns, "cut", endpointCount(1))
	if !first.leader.IsLeader() || second.leader.IsLeader() {
		t.Fatalf("leaders: first %v, second %v; want the first only", first.leader.IsLeader(), second.leader.IsLeader())
	}

	// The leader loses the API server.
	cut := time.Now()
	links[0].cut()
	eventually(t, election.RenewDeadline+time.Second, func() error {
		if first.leader.IsLeader() {
			return errors.New("the cut-off replica still leads")
		}
		return nil
	})
	t.Logf("the cut-off leader stopped leading %s after the cut", time.Since(cut).Round(10*time.Millisecond))
	eventually(t, election.LeaseDuration+5*time.Second, func() error {
		if !second.leader.IsLeader() {
			return errors.New("the other replica does not lead")
		}
		return nil
	})
	t.Logf("the other replica leads %s after the cut", time.Since(cut).Round(10*time.Millisecond))
	env.CreatePod(t, ns, testenv.Pod{Name: "two", Labels: labels, IPs: []string{"127.0.0.71"}, Ready: true})
	second.waitAllowlist(t, ns, "cut", "127.0.0.70:8080", "127.0.0.71:8080")
	waitStatus(t, ns, "cut", endpointCount(2))
	if got := first.allowlisted(ns, "cut"); len(got) != 1 {
		t.Errorf("the cut-off replica allowlists %v, want its last table's one pod", got)
	}

	// Both lose the API server; a pod is added meanwhile.
	links[1].cut()
	down := time.Now()
	env.CreatePod(t, ns, testenv.Pod{Name: "three", Labels: labels, IPs: []string{"127.0.0.72"}, Ready: true})
	time.Sleep(election.LeaseDuration + election.RenewDeadline)
	for i, g := range replicas {
		if g.leader.IsLeader() {
			t.Errorf("replica %d leads %s after it lost the API server", i, time.Since(down).Round(10*time.Millisecond))
		}
		if !g.lookup(ns+".example.com", "/cut", "127.0.0.70") {
			t.Errorf("replica %d stopped serving its last table", i)
		}
	}
	if got := waitStatusE(ns, "cut", endpointCount(2)); got != nil {
		t.Errorf("status written while no replica reaches the API server: %v", got)
	}

	// The API server comes back.
	for _, l := range links {
		l.restore()
	}
	back := time.Now()
	for _, g := range replicas {
		g.waitAllowlist(t, ns, "cut", "127.0.0.70:8080", "127.0.0.71:8080", "127.0.0.72:8080")
	}
	tables := time.Since(back)
	waitStatus(t, ns, "cut", endpointCount(3))
	t.Logf("after the API server came back: both tables had the pod added meanwhile %s later, the route's status %s later",
		tables.Round(10*time.Millisecond), time.Since(back).Round(10*time.Millisecond))
	var leaders []int
	deadline := time.Now().Add(election.LeaseDuration + time.Second)
	for time.Now().Before(deadline) {
		leaders = leaders[:0]
		for i, g := range replicas {
			if g.leader.IsLeader() {
				leaders = append(leaders, i)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("replicas %v lead at once", leaders)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(leaders) != 1 {
		t.Fatalf("%d replicas lead after the API server came back, want 1", len(leaders))
	}
	if holder := leaseHolder(t, leaseNS); holder != replicas[leaders[0]].leader.Identity() {
		t.Errorf("the Lease names %q, the leading replica is %q", holder, replicas[leaders[0]].leader.Identity())
	}
	for i, g := range replicas {
		select {
		case <-g.exited:
			t.Errorf("replica %d's manager stopped", i)
		default:
		}
	}
}

func waitElected(t *testing.T, g *gateway) {
	t.Helper()
	select {
	case <-g.elected:
	case <-time.After(30 * time.Second):
		t.Fatal("replica not elected within 30s")
	}
}

func leaseHolder(t *testing.T, ns string) string {
	t.Helper()
	var lease coordinationv1.Lease
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "wsgate.wsgate.io"}, &lease); err != nil {
		t.Fatalf("leader election lease: %v", err)
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func endpointCount(n int32) func(*wsgatev1alpha1.WsRoute) error {
	return func(r *wsgatev1alpha1.WsRoute) error {
		if r.Status.Endpoints.Count != n {
			return fmt.Errorf("status.endpoints.count = %d, want %d", r.Status.Endpoints.Count, n)
		}
		return nil
	}
}

// waitStatusE returns an error unless the route's status passes check.
func waitStatusE(ns, name string, check func(*wsgatev1alpha1.WsRoute) error) error {
	var r wsgatev1alpha1.WsRoute
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
		return err
	}
	return check(&r)
}

// apiLink is a TCP relay between a replica and the API server that the
// test can cut (every connection reset, new ones refused) and restore.
type apiLink struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func newAPILink(t *testing.T) *apiLink {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &apiLink{l: l, target: u.Host, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = l.Close()
		a.cut()
	})
	go a.serve()
	return a
}

// config is env.Config through the link. The API server's certificate
// names 127.0.0.1, so TLS verification holds.
func (a *apiLink) config() *rest.Config {
	c := rest.CopyConfig(env.Config)
	c.Host = "https://" + a.l.Addr().String()
	return c
}

func (a *apiLink) serve() {
	for {
		c, err := a.l.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		if a.down {
			a.mu.Unlock()
			_ = c.Close()
			continue
		}
		a.conns[c] = true
		a.mu.Unlock()
		go a.relay(c)
	}
}

func (a *apiLink) relay(c net.Conn) {
	s, err := net.Dial("tcp", a.target)
	if err != nil {
		_ = c.Close()
		return
	}
	a.mu.Lock()
	if a.down {
		a.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
		return
	}
	a.conns[s] = true
	a.mu.Unlock()
	go func() {
		_, _ = io.Copy(s, c)
		_ = s.Close()
	}()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// cut closes every relayed connection and refuses new ones.
func (a *apiLink) cut() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = true
	for c := range a.conns {
		_ = c.Close()
	}
	clear(a.conns)
}

func (a *apiLink) restore() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = false
}
