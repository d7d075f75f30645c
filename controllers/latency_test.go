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

// BenchmarkPodReadyToPublished measures how long a pod takes from its
// Ready status write to being allowlisted in the published table (status
// write, watch, holdoff, build, publish), one pod at a time, with the
// manager and table builder that cmd/wsgate runs, on the local API server.
// One iteration is one pod; besides ns/op it reports the p50, p99 and
// max latency. It fails if a pod is not allowlisted within 10 s.
//
//	WSGATE_ENVTEST_ASSETS="$(hack/envtest.sh)" go test -run '^$' -bench BenchmarkPodReadyToPublished -benchtime 200x ./controllers/
//
// make bench-pod-ready runs that. The control-plane benchmark (make
// bench-controlplane) measures the whole path to the first accepted
// upgrade, while other pods churn.
func BenchmarkPodReadyToPublished(b *testing.B) {
	g := startGateway(b, "")
	ns := env.Namespace(b)
	labels := map[string]string{"app": "latency"}
	create(b, route(ns, "latency", "latency"))

	created := make([]*corev1.Pod, b.N)
	for i := range created {
		created[i] = env.CreatePod(b, ns, testenv.Pod{Name: fmt.Sprintf("p-%05d", i), Labels: labels, IPs: []string{ip(i)}, Ready: false})
	}
	g.waitAllowlist(b, ns, "latency")

	updates, cancel := g.tables.Subscribe()
	defer cancel()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i, p := range created {
		addr := netip.MustParseAddr(ip(i))
		start := time.Now()
		env.SetPodStatus(b, p, []string{ip(i)}, true)
		timeout := time.After(10 * time.Second)
		for !g.allows(ns, "latency", addr) {
			select {
			case <-updates:
			case <-timeout:
				b.Fatalf("pod %s (%s) not allowlisted 10s after becoming Ready", p.Name, addr)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

// ip is the address of the i-th pod (i < 63,750).
func ip(i int) string { return fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250) }

func (g *gateway) allows(ns, name string, addr netip.Addr) bool {
	r, ok := g.tables.Load().Route(keyOf(ns, name))
	if !ok {
		return false
	}
	_, ok = r.Backend(addr)
	return ok
}
