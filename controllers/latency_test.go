package controllers_test

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wsgate/wsgate/internal/testenv"
)

// TestPodReadyToPublishedLatency measures how long a pod takes from its
// Ready status write to being allowlisted in the published table, one pod
// at a time, and reports p50/p99. It asserts only that every pod arrives.
func TestPodReadyToPublishedLatency(t *testing.T) {
	const pods = 200
	g := startGateway(t, "")
	ns := env.Namespace(t)
	labels := map[string]string{"app": "latency"}
	create(t, route(ns, "latency", "latency"))

	created := make([]*corev1.Pod, pods)
	for i := range created {
		created[i] = env.CreatePod(t, ns, testenv.Pod{Name: fmt.Sprintf("p-%03d", i), Labels: labels, IPs: []string{ip(i)}, Ready: false})
	}
	g.waitAllowlist(t, ns, "latency")

	updates, cancel := g.tables.Subscribe()
	defer cancel()
	lat := make([]time.Duration, 0, pods)
	for i, p := range created {
		addr := netip.MustParseAddr(ip(i))
		start := time.Now()
		env.SetPodStatus(t, p, []string{ip(i)}, true)
		timeout := time.After(10 * time.Second)
		for !g.allows(ns, "latency", addr) {
			select {
			case <-updates:
			case <-timeout:
				t.Fatalf("pod %s (%s) not allowlisted 10s after becoming Ready", p.Name, addr)
			}
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("pod Ready -> published table, %d pods: p50=%s p99=%s max=%s (status write, watch, holdoff, build, publish)",
		pods, lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

func ip(i int) string { return fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250) }

func (g *gateway) allows(ns, name string, addr netip.Addr) bool {
	r, ok := g.tables.Load().Route(keyOf(ns, name))
	if !ok {
		return false
	}
	_, ok = r.Backend(addr)
	return ok
}
