package tablebuild

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	benchNamespaces   = 10
	benchRoutes       = 1000
	benchPodsPerRoute = 10
)

// benchInput is a cluster of 10,000 pods and 1,000 routes in 10 namespaces.
// Route N selects its 10 pods by app=route-N (or, with scan, by a selector
// the index cannot answer). Every 20th pod is not ready, and odd routes
// address their pods by the port name "ws", declared on a sidecar for
// every third pod.
func benchInput(scan bool) (in Input, wantBackends int) {
	in.Grants = grantAll
	for r := range benchRoutes {
		ns := fmt.Sprintf("team-%d", r%benchNamespaces)
		app := fmt.Sprintf("route-%d", r)
		opts := []routeOpt{hosts(ns + ".example.com"), prefix("/" + app), matchLabels("app", app)}
		if scan {
			opts[2] = selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: app, Operator: metav1.LabelSelectorOpExists},
			}})
		}
		if r%2 == 1 {
			opts = append(opts, port(intstr.FromString("ws")))
		}
		in.Routes = append(in.Routes, newRoute(ns, app, r, opts...))
		for p := range benchPodsPerRoute {
			i := r*benchPodsPerRoute + p
			lbls := map[string]string{
				"app":               app,
				"pod-template-hash": fmt.Sprintf("%x", r*7919),
				"tier":              "web",
				app:                 "",
			}
			var popts []podOpt
			if i%20 == 0 {
				popts = append(popts, notReady)
			} else {
				wantBackends++
			}
			if i%3 == 0 {
				popts = append(popts, containerPorts(tcpPort("metrics", 9090)), initContainer(true, tcpPort("ws", 8081)))
			}
			ip := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff)
			in.Pods = append(in.Pods, compact(newPod(ns, fmt.Sprintf("%s-%d", app, p), ip, lbls, popts...))...)
		}
	}
	return in, wantBackends
}

// BenchmarkBuild measures a full build at 10,000 pods and 1,000 routes
// whose selectors the label index answers.
func BenchmarkBuild(b *testing.B) {
	benchmarkBuild(b, false)
}

// BenchmarkBuildScan is BenchmarkBuild with selectors the index cannot
// answer (Exists only), so every route scans its namespace's 1,000 pods:
// the worst case, for comparison.
func BenchmarkBuildScan(b *testing.B) {
	benchmarkBuild(b, true)
}

func benchmarkBuild(b *testing.B, scan bool) {
	in, want := benchInput(scan)
	res := Build(in, Options{})
	if got := res.Table.Backends(); got != want {
		b.Fatalf("the table holds %d backends, want %d", got, want)
	}
	for k, st := range res.Routes {
		if !st.Accepted {
			b.Fatalf("%s is not accepted: %s", k, st.Message)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Build(in, Options{Generation: uint64(i)})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(in.Pods)), "ns/pod")
	b.ReportMetric(float64(want), "backends/op")
}
