package tablebuild

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
)

func TestSelection(t *testing.T) {
	pods := []*corev1.Pod{
		newPod("a", "web-1", "10.0.0.1", map[string]string{"app": "chat", "tier": "web"}),
		newPod("a", "web-2", "10.0.0.2", map[string]string{"app": "chat", "tier": "web", "canary": "true"}),
		newPod("a", "api", "10.0.0.3", map[string]string{"app": "chat", "tier": "api"}),
		newPod("a", "other", "10.0.0.4", map[string]string{"app": "other", "tier": "web"}),
		newPod("a", "bare", "10.0.0.5", nil),
		// Namespace b holds pods with the very same labels; a route in a
		// must never see them.
		newPod("b", "web-1", "10.0.1.1", map[string]string{"app": "chat", "tier": "web"}),
		newPod("b", "web-2", "10.0.1.2", map[string]string{"app": "chat", "tier": "web", "canary": "true"}),
		newPod("b", "api", "10.0.1.3", map[string]string{"app": "chat", "tier": "api"}),
		newPod("b", "bare", "10.0.1.5", nil),
	}
	expr := func(k string, op metav1.LabelSelectorOperator, vs ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: op, Values: vs}
	}
	tests := []struct {
		name      string
		sel       metav1.LabelSelector
		wantIndex bool // the selector has an Equals or In requirement the index answers
		want      []string
	}{
		{
			name:      "matchLabels selects the pods that carry every label",
			sel:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "chat", "tier": "web"}},
			wantIndex: true,
			want:      []string{"web-1", "web-2"},
		},
		{
			name:      "matchLabels on a value no pod has selects nothing",
			sel:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "chat", "tier": "db"}},
			wantIndex: true,
		},
		{
			name:      "In with one value goes through the index",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpIn, "web")}},
			wantIndex: true,
			want:      []string{"other", "web-1", "web-2"},
		},
		{
			name:      "In with two values selects the union",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpIn, "web", "api")}},
			wantIndex: true,
			want:      []string{"api", "other", "web-1", "web-2"},
		},
		{
			name:      "In with a repeated value selects each pod once",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpIn, "api", "web", "api")}},
			wantIndex: true,
			want:      []string{"api", "other", "web-1", "web-2"},
		},
		{
			name: "NotIn next to an equality is checked on the index candidates",
			sel: metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "chat"},
				MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpNotIn, "api")},
			},
			wantIndex: true,
			want:      []string{"web-1", "web-2"},
		},
		{
			name:      "NotIn alone scans the namespace and keeps pods without the key",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpNotIn, "web")}},
			wantIndex: false,
			want:      []string{"api", "bare"},
		},
		{
			name: "Exists next to an equality is checked on the index candidates",
			sel: metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "chat"},
				MatchExpressions: []metav1.LabelSelectorRequirement{expr("canary", metav1.LabelSelectorOpExists)},
			},
			wantIndex: true,
			want:      []string{"web-2"},
		},
		{
			name:      "Exists alone scans the namespace",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpExists)}},
			wantIndex: false,
			want:      []string{"api", "other", "web-1", "web-2"},
		},
		{
			name: "DoesNotExist next to an equality is checked on the index candidates",
			sel: metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "chat"},
				MatchExpressions: []metav1.LabelSelectorRequirement{expr("canary", metav1.LabelSelectorOpDoesNotExist)},
			},
			wantIndex: true,
			want:      []string{"api", "web-1"},
		},
		{
			name:      "DoesNotExist alone scans the namespace",
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("app", metav1.LabelSelectorOpDoesNotExist)}},
			wantIndex: false,
			want:      []string{"bare"},
		},
		{
			name: "Exists and NotIn together scan the namespace",
			sel: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				expr("app", metav1.LabelSelectorOpExists),
				expr("app", metav1.LabelSelectorOpNotIn, "other"),
			}},
			wantIndex: false,
			want:      []string{"api", "web-1", "web-2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := metav1.LabelSelectorAsSelector(&tc.sel)
			if err != nil {
				t.Fatalf("test selector does not convert: %v", err)
			}
			if got := len(lookups(sel)) > 0; got != tc.wantIndex {
				t.Errorf("index path = %v, want %v", got, tc.wantIndex)
			}
			// The route in namespace a and its twin in namespace b select the
			// same names, each from its own namespace only.
			res := Build(Input{Grants: grantAll,
				Routes: []*v1alpha1.WsRoute{
					newRoute("a", "r", 0, selector(tc.sel), hosts("a.example.com")),
					newRoute("b", "r", 0, selector(tc.sel), hosts("b.example.com")),
				},
				Pods: compact(pods...),
			}, Options{})
			for _, ns := range []string{"a", "b"} {
				want := tc.want
				if ns == "b" {
					want = slices.DeleteFunc(slices.Clone(want), func(n string) bool { return n == "other" })
				}
				k := key(ns, "r")
				st := res.Routes[k]
				if got := podNames(st.Endpoints); !slices.Equal(got, want) {
					t.Errorf("%s: status pods = %v, want %v", k, got, want)
				}
				r, ok := res.Table.Route(k)
				if !ok {
					t.Fatalf("%s is not in the table", k)
				}
				for _, b := range r.Backends {
					if !slices.Contains(want, b.Pod) {
						t.Errorf("%s: backend %v is not a wanted pod", k, b)
					}
					if b.Addr.Addr().As4()[2] != map[string]byte{"a": 0, "b": 1}[ns] {
						t.Errorf("%s: backend %v belongs to another namespace", k, b)
					}
				}
				if len(r.Backends) != len(want) {
					t.Errorf("%s: %d backends, want %d", k, len(r.Backends), len(want))
				}
			}
		})
	}
}

func TestNamespaceIsolation(t *testing.T) {
	lbls := map[string]string{"app": "chat"}
	res := Build(Input{Grants: grantAll,
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0, hosts("a.example.com"))},
		Pods: compact(
			newPod("b", "p1", "10.0.1.1", lbls),
			newPod("c", "p1", "10.0.2.1", lbls),
		),
	}, Options{})
	st := res.Routes[key("a", "chat")]
	if !st.Accepted || st.Endpoints.Count != 0 || st.Endpoints.Pods != nil || st.Endpoints.Skipped != nil {
		t.Errorf("a route in a with only matching pods in b and c: status %+v, want accepted with no endpoints", st)
	}
	if got := backendPods(res.Table, key("a", "chat")); got != nil {
		t.Errorf("backends = %v, want none", got)
	}
}

func TestIndexPicksTheSmallestCandidateList(t *testing.T) {
	var pods []*corev1.Pod
	for i := range 100 {
		lbls := map[string]string{"app": "chat", "shard": fmt.Sprintf("s%d", i%10)}
		if i < 3 {
			lbls["canary"] = "yes"
		}
		pods = append(pods, newPod("a", fmt.Sprintf("p%03d", i), fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), lbls))
	}
	tests := []struct {
		name           string
		sel            metav1.LabelSelector
		wantKey        string
		wantCandidates int
		wantMatches    int
	}{
		{
			name:           "the rarer of two matchLabels is used",
			sel:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "chat", "shard": "s4"}},
			wantKey:        "shard",
			wantCandidates: 10,
			wantMatches:    10,
		},
		{
			name: "a one-value In is as good as an equality",
			sel: metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "chat"},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "canary", Operator: metav1.LabelSelectorOpIn, Values: []string{"yes"}}},
			},
			wantKey:        "canary",
			wantCandidates: 3,
			wantMatches:    3,
		},
		{
			name: "a many-value In counts all its values",
			sel: metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "chat"},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "shard", Operator: metav1.LabelSelectorOpIn, Values: []string{"s1", "s2", "s3"}}},
			},
			wantKey:        "shard",
			wantCandidates: 30,
			wantMatches:    30,
		},
		{
			name:           "a value no pod has short-cuts to no candidates",
			sel:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "chat", "shard": "s99"}},
			wantKey:        "shard",
			wantCandidates: 0,
			wantMatches:    0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := compile(newRoute("a", "r", 0, selector(tc.sel)), "")
			if len(c.problems) > 0 {
				t.Fatalf("route is invalid: %v", c.problems)
			}
			idx := newPodIndex(compact(pods...), []*candidate{c})
			ns := idx.namespaces["a"]
			best, n := idx.bestLookup(ns, &c.podSelector)
			if best < 0 || c.lookups[best].key != tc.wantKey || n != tc.wantCandidates {
				t.Errorf("best lookup %d (%+v) with %d candidates, want key %q with %d", best, c.lookups, n, tc.wantKey, tc.wantCandidates)
			}
			if got := idx.match(ns, &c.podSelector, nil); len(got) != tc.wantMatches {
				t.Errorf("%d matches, want %d", len(got), tc.wantMatches)
			}
		})
	}
}

func TestPodsSharedByRoutes(t *testing.T) {
	lbls := map[string]string{"app": "chat"}
	res := Build(Input{Grants: grantAll,
		Routes: []*v1alpha1.WsRoute{
			newRoute("a", "by-name", 0, hosts("h1"), matchLabels("app", "chat"), port(intstr.FromString("ws"))),
			newRoute("a", "by-number", 1, hosts("h2"), matchLabels("app", "chat"), port(intstr.FromInt32(9000))),
		},
		Pods: compact(
			newPod("a", "with-ws", "10.0.0.1", lbls),
			newPod("a", "without-ws", "10.0.0.2", lbls, containerPorts(tcpPort("http", 80))),
			newPod("a", "not-ready", "10.0.0.3", lbls, notReady),
		),
	}, Options{})
	tests := []struct {
		route       string
		wantPods    []v1alpha1.EndpointPod
		wantSkipped []v1alpha1.SkippedPods
	}{
		{
			route:    "by-name",
			wantPods: []v1alpha1.EndpointPod{{Name: "with-ws", Addresses: []string{"10.0.0.1"}, Port: 8080}},
			wantSkipped: []v1alpha1.SkippedPods{
				{Reason: v1alpha1.SkippedNotReady, Count: 1},
				{Reason: v1alpha1.SkippedPortNotFound, Count: 1},
			},
		},
		{
			route: "by-number",
			wantPods: []v1alpha1.EndpointPod{
				{Name: "with-ws", Addresses: []string{"10.0.0.1"}, Port: 9000},
				{Name: "without-ws", Addresses: []string{"10.0.0.2"}, Port: 9000},
			},
			wantSkipped: []v1alpha1.SkippedPods{{Reason: v1alpha1.SkippedNotReady, Count: 1}},
		},
	}
	for _, tc := range tests {
		ep := res.Routes[key("a", tc.route)].Endpoints
		if !reflect.DeepEqual(ep.Pods, tc.wantPods) || !reflect.DeepEqual(ep.Skipped, tc.wantSkipped) {
			t.Errorf("%s: endpoints %+v, want pods %+v skipped %+v", tc.route, ep, tc.wantPods, tc.wantSkipped)
		}
	}
}
