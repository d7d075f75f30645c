package tablebuild

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

func TestStatusEndpoints(t *testing.T) {
	lbls := map[string]string{"app": "chat"}
	var pods []*corev1.Pod
	for i := range 40 {
		// Names sort differently from creation order: pod-00 ... pod-39.
		pods = append(pods, newPod("a", fmt.Sprintf("pod-%02d", 39-i), fmt.Sprintf("10.0.0.%d", 39-i+1), lbls))
	}
	pods = append(pods,
		newPod("a", "skip-notready-1", "10.0.1.1", lbls, notReady),
		newPod("a", "skip-notready-2", "10.0.1.2", lbls, notReady),
		newPod("a", "skip-noport", "10.0.1.3", lbls, containerPorts()),
		newPod("a", "skip-term-1", "10.0.1.4", lbls, terminating),
		newPod("a", "skip-term-2", "10.0.1.5", lbls, terminating),
		newPod("a", "skip-term-3", "10.0.1.6", lbls, terminating),
		newPod("a", "unselected", "10.0.1.7", map[string]string{"app": "other"}, notReady),
	)
	res := Build(Input{Grants: grantAll,
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0, port(intstr.FromString("ws")))},
		Pods:   compact(pods...),
	}, Options{})
	ep := res.Routes[key("a", "chat")].Endpoints
	if ep.Count != 40 {
		t.Errorf("count = %d, want 40", ep.Count)
	}
	if len(ep.Pods) != v1alpha1.MaxStatusPods {
		t.Fatalf("%d pods listed, want %d", len(ep.Pods), v1alpha1.MaxStatusPods)
	}
	for i, p := range ep.Pods {
		wantName := fmt.Sprintf("pod-%02d", i)
		wantAddr := fmt.Sprintf("10.0.0.%d", i+1)
		if p.Name != wantName || !slices.Equal(p.Addresses, []string{wantAddr}) || p.Port != 8080 {
			t.Errorf("pods[%d] = %+v, want %s [%s] 8080", i, p, wantName, wantAddr)
		}
	}
	wantSkipped := []v1alpha1.SkippedPods{
		{Reason: v1alpha1.SkippedNotReady, Count: 2},
		{Reason: v1alpha1.SkippedPortNotFound, Count: 1},
		{Reason: v1alpha1.SkippedTerminating, Count: 3},
	}
	if !reflect.DeepEqual(ep.Skipped, wantSkipped) {
		t.Errorf("skipped = %+v, want %+v", ep.Skipped, wantSkipped)
	}
	if n := res.Table.Backends(); n != 40 {
		t.Errorf("table holds %d backends, want 40", n)
	}
}

func TestSkipReasonsAreSorted(t *testing.T) {
	if !slices.IsSorted(skipReasons[:]) {
		t.Errorf("skipReasons %v are not sorted", skipReasons)
	}
}

func TestRouteWhosePodsAreAllSkippedListsNone(t *testing.T) {
	lbls := map[string]string{"app": "chat"}
	res := Build(Input{Grants: grantAll,
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0)},
		Pods: compact(
			newPod("a", "p1", "", lbls),
			newPod("a", "p2", "10.0.0.2", lbls, terminating),
		),
	}, Options{})
	want := v1alpha1.RouteEndpoints{Skipped: []v1alpha1.SkippedPods{
		{Reason: v1alpha1.SkippedNoIP, Count: 1},
		{Reason: v1alpha1.SkippedTerminating, Count: 1},
	}}
	if got := res.Routes[key("a", "chat")].Endpoints; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints = %#v, want %#v", got, want)
	}
}

func TestDuplicateAddresses(t *testing.T) {
	// Small and large routes detect duplicates differently; check both.
	for _, extra := range []int{0, 30} {
		t.Run(fmt.Sprintf("with %d other pods", extra), func(t *testing.T) {
			lbls := map[string]string{"app": "chat"}
			pods := []*corev1.Pod{
				// Two host-network pods on one node share the node's address.
				newPod("a", "node-b", "192.168.1.10", lbls),
				newPod("a", "node-a", "192.168.1.10", lbls),
				newPod("a", "dual", "", lbls, podIPs("192.168.1.10", "fd00::10")),
			}
			for i := range extra {
				pods = append(pods, newPod("a", fmt.Sprintf("other-%02d", i), fmt.Sprintf("10.0.0.%d", i+1), lbls))
			}
			res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0)}, Pods: compact(pods...)}, Options{})
			ep := res.Routes[key("a", "chat")].Endpoints
			want := v1alpha1.EndpointPod{Name: "dual", Addresses: []string{"192.168.1.10", "fd00::10"}, Port: 8080}
			if int(ep.Count) != 1+extra || len(ep.Pods) == 0 || !reflect.DeepEqual(ep.Pods[0], want) || slices.Contains(podNames(ep), "node-a") || slices.Contains(podNames(ep), "node-b") {
				t.Errorf("endpoints = %+v, want only the first pod by name holding the shared address", ep)
			}
			r, _ := res.Table.Route(key("a", "chat"))
			if b, ok := r.Backend(netip.MustParseAddr("192.168.1.10")); !ok || b.Pod != "dual" {
				t.Errorf("192.168.1.10 -> %+v %v, want pod dual", b, ok)
			}
			if len(r.Backends) != 2+extra {
				t.Errorf("%d backends, want %d", len(r.Backends), 2+extra)
			}
		})
	}
}

func TestManyDualStackPods(t *testing.T) {
	// More addresses than pods: Build's address storage must grow
	// without mixing up the pods' addresses.
	lbls := map[string]string{"app": "chat"}
	var pods []*corev1.Pod
	for i := range 50 {
		pods = append(pods, newPod("a", fmt.Sprintf("p%02d", i), "", lbls,
			podIPs(fmt.Sprintf("10.0.0.%d", i+1), fmt.Sprintf("fd00::%x", i+1))))
	}
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0)}, Pods: compact(pods...)}, Options{})
	ep := res.Routes[key("a", "chat")].Endpoints
	if ep.Count != 50 {
		t.Fatalf("count = %d, want 50", ep.Count)
	}
	for i, p := range ep.Pods {
		want := []string{fmt.Sprintf("10.0.0.%d", i+1), fmt.Sprintf("fd00::%x", i+1)}
		if !slices.Equal(p.Addresses, want) {
			t.Errorf("%s: addresses %v, want %v", p.Name, p.Addresses, want)
		}
	}
	r, _ := res.Table.Route(key("a", "chat"))
	for i := range 50 {
		for _, s := range []string{fmt.Sprintf("10.0.0.%d", i+1), fmt.Sprintf("fd00::%x", i+1)} {
			if b, ok := r.Backend(netip.MustParseAddr(s)); !ok || b.Pod != fmt.Sprintf("p%02d", i) {
				t.Errorf("%s -> %+v %v, want pod p%02d", s, b, ok, i)
			}
		}
	}
}

// TestTableAllowsExactlyEligiblePods checks the table against a brute-force
// reading of the rules: every address of every pod is looked up the way the
// data plane does (Match, then Backend), and must be found exactly when the
// pod is in the route's namespace, matched by its selector and Eligible.
func TestTableAllowsExactlyEligiblePods(t *testing.T) {
	in, pods := mixedInput()
	res := Build(in, Options{Generation: 3, Now: t0})
	if res.Table.Generation() != 3 || !res.Table.BuiltAt().Equal(t0) {
		t.Errorf("table generation %d built at %v, want 3 at %v", res.Table.Generation(), res.Table.BuiltAt(), t0)
	}
	outsiders := []string{"169.254.169.254", "127.0.0.1", "10.96.0.1", "fd00::ffff"}
	total := 0
	for _, wr := range in.Routes {
		k := key(wr.Namespace, wr.Name)
		route, ok := res.Table.Route(k)
		if !ok {
			continue
		}
		host := "catch-all.test"
		if len(route.Hosts) > 0 {
			host = strings.Replace(route.Hosts[0], "*", "x", 1)
		}
		sel, _ := metav1.LabelSelectorAsSelector(&wr.Spec.Selector)
		lookup := func(addr netip.Addr) (routing.Backend, bool) {
			path := strings.TrimSuffix(route.PathPrefix, "/") + "/" + addr.String() + "/socket"
			r, _, ok := res.Table.Match(host, path)
			if !ok || r.Key != k {
				t.Fatalf("%s: Match(%q, %q) did not find the route", k, host, path)
			}
			return r.Backend(addr)
		}
		want := 0
		for i, p := range pods {
			addrs, skip := Eligible(in.Pods[i], wr.Spec.Port)
			allowed := p.Namespace == wr.Namespace && sel.Matches(labels.Set(p.Labels)) && skip == ""
			if allowed {
				want++
			}
			for _, ip := range p.Status.PodIPs {
				a, err := netip.ParseAddr(ip.IP)
				if err != nil {
					continue
				}
				a = a.Unmap()
				b, found := lookup(a)
				if found != allowed {
					t.Errorf("%s: pod %s/%s address %s found = %v, want %v", k, p.Namespace, p.Name, a, found, allowed)
					continue
				}
				if found && (b.Pod != p.Name || !slices.Contains(addrs, b.Addr)) {
					t.Errorf("%s: address %s -> %+v, want pod %s on one of %v", k, a, b, p.Name, addrs)
				}
			}
		}
		for _, s := range outsiders {
			if b, found := lookup(netip.MustParseAddr(s)); found {
				t.Errorf("%s: outsider address %s is allowlisted as %+v", k, s, b)
			}
		}
		if got := res.Routes[k].Endpoints.Count; int(got) != want {
			t.Errorf("%s: count = %d, want %d", k, got, want)
		}
		total += want
	}
	if total == 0 {
		t.Fatal("the input allowlists no pod; the test checks nothing")
	}
}

func TestDeterminism(t *testing.T) {
	in, _ := mixedInput()
	opts := Options{DefaultHost: "ws.example.com", Generation: 9, Now: t0}
	want := Build(in, opts)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		shuffled := Input{Grants: in.Grants, Routes: slices.Clone(in.Routes), Pods: slices.Clone(in.Pods)}
		rng.Shuffle(len(shuffled.Routes), func(i, j int) { shuffled.Routes[i], shuffled.Routes[j] = shuffled.Routes[j], shuffled.Routes[i] })
		rng.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
		got := Build(shuffled, opts)
		if !reflect.DeepEqual(got.Routes, want.Routes) {
			t.Fatalf("shuffle %d: statuses differ", i)
		}
		if !reflect.DeepEqual(got.Table, want.Table) {
			t.Fatalf("shuffle %d: tables differ", i)
		}
	}
}

func TestBuildDoesNotModifyItsInput(t *testing.T) {
	in, pods := mixedInput()
	before := Input{Grants: in.Grants, Pods: compact(pods...)}
	for _, r := range in.Routes {
		before.Routes = append(before.Routes, r.DeepCopy())
	}
	Build(in, Options{DefaultHost: "ws.example.com"})
	if !reflect.DeepEqual(in, before) {
		t.Errorf("Build modified its input")
	}
}

func TestEmptyAndNilInput(t *testing.T) {
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{nil}, Pods: []*Pod{nil}}, Options{Generation: 1})
	if res.Table == nil || len(res.Table.Routes()) != 0 || len(res.Routes) != 0 {
		t.Errorf("nil entries: %d routes, %d statuses, want an empty table", len(res.Table.Routes()), len(res.Routes))
	}
	if _, _, ok := res.Table.Match("ws.example.com", "/10.0.0.1/"); ok {
		t.Errorf("an empty table matches a request")
	}
}

// mixedInput is a cluster with conflicts, several namespaces, every skip
// reason, dual-stack pods, named ports and index and scan selectors.
// in.Pods are the compacted pods.
func mixedInput() (in Input, pods []*corev1.Pod) {
	in.Grants = grantAll
	for n, ns := range []string{"alpha", "beta", "gamma"} {
		// A name belongs to one namespace: alpha's routes take the
		// default host (or the catch-all), the others name a host of
		// their own.
		var own []routeOpt
		if ns != "alpha" {
			own = []routeOpt{hosts(ns + ".example.com")}
		}
		in.Routes = append(in.Routes,
			newRoute(ns, "chat", n, hosts(ns+".chat.example.com"), prefix("/"+ns), matchLabels("app", "chat")),
			newRoute(ns, "chat-dup", n+10, hosts(ns+".chat.example.com"), prefix("/"+ns), matchLabels("app", "chat")),
			newRoute(ns, "named", n, hosts("*."+ns+".rooms.example.com"), prefix("/"+ns), port(intstr.FromString("ws")),
				matchLabels("app", "chat", "tier", "web")),
			newRoute(ns, "scan", n, append([]routeOpt{prefix("/scan-" + ns), selector(metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}},
			})}, own...)...),
			newRoute(ns, "default", n+20, append([]routeOpt{prefix("/d-" + ns), matchLabels("app", "other")}, own...)...),
			newRoute(ns, "invalid", n, hosts("bad.example.com"), selector(metav1.LabelSelector{})),
		)
		for i := range 30 {
			lbls := map[string]string{"app": "chat"}
			if i%2 == 0 {
				lbls["tier"] = "web"
			}
			if i%7 == 0 {
				lbls["app"] = "other"
			}
			ip := fmt.Sprintf("10.%d.0.%d", n, i+1)
			var opts []podOpt
			switch i % 10 {
			case 1:
				opts = append(opts, notReady)
			case 3:
				opts = append(opts, podIPs(ip, fmt.Sprintf("fd00:%d::%x", n, i+1)))
			case 4:
				opts = append(opts, containerPorts(), initContainer(true, tcpPort("ws", 9000)))
			case 5:
				opts = append(opts, terminating)
			case 6:
				opts = append(opts, containerPorts(tcpPort("http", 80)))
			case 8:
				ip = ""
			case 9:
				opts = append(opts, podIPs("::ffff:"+ip))
			}
			pods = append(pods, newPod(ns, fmt.Sprintf("pod-%02d", i), ip, lbls, opts...))
		}
	}
	in.Pods = compact(pods...)
	return in, pods
}
