package builder

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
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
			sel:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("tier", metav1.LabelSelectorOpIn, "api", "api")}},
			wantIndex: true,
			want:      []string{"api"},
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
			res := Build(Input{
				Routes: []*v1alpha1.WsRoute{
					newRoute("a", "r", 0, selector(tc.sel), hosts("a.example.com")),
					newRoute("b", "r", 0, selector(tc.sel), hosts("b.example.com")),
				},
				Pods: pods,
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
	res := Build(Input{
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0, hosts("a.example.com"))},
		Pods: []*corev1.Pod{
			newPod("b", "p1", "10.0.1.1", lbls),
			newPod("c", "p1", "10.0.2.1", lbls),
		},
	}, Options{})
	st := res.Routes[key("a", "chat")]
	if !st.Accepted || st.Endpoints.Count != 0 || st.Endpoints.Pods != nil || st.Endpoints.Skipped != nil {
		t.Errorf("a route in a with only matching pods in b and c: status %+v, want accepted with no endpoints", st)
	}
	if got := backendPods(res.Table, key("a", "chat")); got != nil {
		t.Errorf("backends = %v, want none", got)
	}
}

func TestConflicts(t *testing.T) {
	type want struct {
		reason  string
		message string // when not "", the exact message
	}
	tests := []struct {
		name        string
		defaultHost string
		routes      []*v1alpha1.WsRoute
		want        map[routing.RouteKey]want
	}{
		{
			name: "the older route wins a shared host and prefix",
			routes: []*v1alpha1.WsRoute{
				newRoute("z", "young", 10, hosts("h1"), prefix("/p")),
				newRoute("z", "old", 5, hosts("h1"), prefix("/p")),
			},
			want: map[routing.RouteKey]want{
				key("z", "old"):   {reason: v1alpha1.ReasonAccepted},
				key("z", "young"): {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/p" are already claimed by WsRoute z/old (older)`},
			},
		},
		{
			name: "with the same creation time the namespace breaks the tie",
			routes: []*v1alpha1.WsRoute{
				newRoute("b", "a", 0, hosts("h1")),
				newRoute("a", "z", 0, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "z"): {reason: v1alpha1.ReasonAccepted},
				key("b", "a"): {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/" are already claimed by WsRoute a/z (same age, first by namespace/name)`},
			},
		},
		{
			name: "with the same creation time and namespace the name breaks the tie",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "b", 0, hosts("h1")),
				newRoute("a", "a", 0, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "a"): {reason: v1alpha1.ReasonAccepted},
				key("a", "b"): {reason: v1alpha1.ReasonConflict},
			},
		},
		{
			name: "when the winner is deleted the next oldest is accepted",
			routes: []*v1alpha1.WsRoute{
				// "first" (age 0) is gone from the cache.
				newRoute("a", "third", 2, hosts("h1")),
				newRoute("a", "second", 1, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "second"): {reason: v1alpha1.ReasonAccepted},
				key("a", "third"):  {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/" are already claimed by WsRoute a/second (older)`},
			},
		},
		{
			name: "a route that loses one claim loses all, and frees the others for younger routes",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "A", 0, hosts("h1")),
				newRoute("a", "B", 1, hosts("h1", "h2")),
				newRoute("a", "C", 2, hosts("h2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "A"): {reason: v1alpha1.ReasonAccepted},
				key("a", "B"): {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/" are already claimed by WsRoute a/A (older)`},
				key("a", "C"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "the same host with different prefixes does not conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "root", 0, hosts("h1")),
				newRoute("a", "chat", 1, hosts("h1"), prefix("/chat")),
				newRoute("b", "chat2", 2, hosts("h1"), prefix("/chat2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "root"):  {reason: v1alpha1.ReasonAccepted},
				key("a", "chat"):  {reason: v1alpha1.ReasonAccepted},
				key("b", "chat2"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a wildcard host and a name it covers do not conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "wild", 0, hosts("*.example.com")),
				newRoute("a", "exact", 1, hosts("a.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "wild"):  {reason: v1alpha1.ReasonAccepted},
				key("a", "exact"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "hostnames that differ only in case conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "lower", 0, hosts("ws.example.com")),
				newRoute("a", "upper", 1, hosts("WS.Example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "lower"): {reason: v1alpha1.ReasonAccepted},
				key("a", "upper"): {reason: v1alpha1.ReasonConflict},
			},
		},
		{
			name: "two catch-all routes on the same prefix conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "one", 0),
				newRoute("b", "two", 1),
			},
			want: map[routing.RouteKey]want{
				key("a", "one"): {reason: v1alpha1.ReasonAccepted},
				key("b", "two"): {reason: v1alpha1.ReasonConflict, message: `the catch-all host (no hostnames and no default host) and pathPrefix "/" are already claimed by WsRoute a/one (older)`},
			},
		},
		{
			name:        "a route on the default host conflicts with one that names it",
			defaultHost: "WS.example.com",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "named", 0, hosts("ws.example.com")),
				newRoute("a", "default", 1),
			},
			want: map[routing.RouteKey]want{
				key("a", "named"):   {reason: v1alpha1.ReasonAccepted},
				key("a", "default"): {reason: v1alpha1.ReasonConflict, message: `host "ws.example.com" and pathPrefix "/" are already claimed by WsRoute a/named (older)`},
			},
		},
		{
			name: "an invalid older route claims nothing",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "broken", 0, hosts("h1"), selector(metav1.LabelSelector{})),
				newRoute("a", "fine", 1, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "broken"): {reason: v1alpha1.ReasonInvalid},
				key("a", "fine"):   {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a conflicting route claims nothing either",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "A", 0, hosts("h1")),
				newRoute("a", "B", 1, hosts("h1", "h2")),
				newRoute("a", "C", 2, hosts("h2", "h3")),
				newRoute("a", "D", 3, hosts("h3")),
			},
			want: map[routing.RouteKey]want{
				key("a", "A"): {reason: v1alpha1.ReasonAccepted},
				key("a", "B"): {reason: v1alpha1.ReasonConflict},
				key("a", "C"): {reason: v1alpha1.ReasonAccepted},
				key("a", "D"): {reason: v1alpha1.ReasonConflict, message: `host "h3" and pathPrefix "/" are already claimed by WsRoute a/C (older)`},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pods := []*corev1.Pod{}
			for i, r := range tc.routes {
				pods = append(pods, newPod(r.Namespace, "pod-"+r.Name, fmt.Sprintf("10.1.0.%d", i+1), map[string]string{"app": r.Name}))
			}
			res := Build(Input{Routes: tc.routes, Pods: pods}, Options{DefaultHost: tc.defaultHost})
			if len(res.Routes) != len(tc.want) {
				t.Errorf("%d statuses, want %d", len(res.Routes), len(tc.want))
			}
			for k, w := range tc.want {
				st, ok := res.Routes[k]
				if !ok {
					t.Errorf("%s: no status", k)
					continue
				}
				if st.Reason != w.reason || st.Accepted != (w.reason == v1alpha1.ReasonAccepted) {
					t.Errorf("%s: reason %q accepted %v (%s), want %q", k, st.Reason, st.Accepted, st.Message, w.reason)
				}
				if w.message != "" && st.Message != w.message {
					t.Errorf("%s: message\n  %s\nwant\n  %s", k, st.Message, w.message)
				}
				_, inTable := res.Table.Route(k)
				if inTable != st.Accepted {
					t.Errorf("%s: in table = %v, accepted = %v", k, inTable, st.Accepted)
				}
				if st.Accepted && st.Endpoints.Count != 1 {
					t.Errorf("%s: accepted with %d endpoints, want its one pod", k, st.Endpoints.Count)
				}
				if !st.Accepted && !reflect.DeepEqual(st.Endpoints, v1alpha1.RouteEndpoints{}) {
					t.Errorf("%s: not accepted but endpoints %+v, want zero", k, st.Endpoints)
				}
			}
		})
	}
}

func TestDefaultHost(t *testing.T) {
	routes := func() []*v1alpha1.WsRoute {
		return []*v1alpha1.WsRoute{
			newRoute("a", "plain", 0),
			newRoute("a", "named", 1, hosts("other.example.com"), prefix("/named")),
		}
	}
	pods := []*corev1.Pod{
		newPod("a", "p1", "10.0.0.1", map[string]string{"app": "plain"}),
		newPod("a", "p2", "10.0.0.2", map[string]string{"app": "named"}),
	}

	t.Run("an empty hostnames list takes the default host, lower-cased", func(t *testing.T) {
		res := Build(Input{Routes: routes(), Pods: pods}, Options{DefaultHost: "WS.Example.com"})
		r, ok := res.Table.Route(key("a", "plain"))
		if !ok {
			t.Fatal("route a/plain is not in the table")
		}
		if !slices.Equal(r.Hosts, []string{"ws.example.com"}) {
			t.Errorf("hosts = %v, want [ws.example.com]", r.Hosts)
		}
		if got, _, ok := res.Table.Match("ws.example.com", "/10.0.0.1/x"); !ok || got.Key != key("a", "plain") {
			t.Errorf("the default host does not reach a/plain")
		}
		if _, _, ok := res.Table.Match("unknown.example.com", "/10.0.0.1/x"); ok {
			t.Errorf("an unknown host reaches a route although no route is the catch-all")
		}
		if got, _, ok := res.Table.Match("other.example.com", "/named/10.0.0.2"); !ok || got.Key != key("a", "named") {
			t.Errorf("a named host does not reach its route")
		}
	})

	t.Run("without a default host an empty hostnames list is the catch-all", func(t *testing.T) {
		res := Build(Input{Routes: routes(), Pods: pods}, Options{})
		r, ok := res.Table.Route(key("a", "plain"))
		if !ok {
			t.Fatal("route a/plain is not in the table")
		}
		if len(r.Hosts) != 0 {
			t.Errorf("hosts = %v, want none (catch-all)", r.Hosts)
		}
		for _, h := range []string{"ws.example.com", "anything.test"} {
			if got, _, ok := res.Table.Match(h, "/10.0.0.1/x"); !ok || got.Key != key("a", "plain") {
				t.Errorf("host %q does not reach the catch-all route", h)
			}
		}
		if st := res.Routes[key("a", "plain")]; st.Message != `the route is valid and owns pathPrefix "/" on the catch-all host` {
			t.Errorf("message = %q", st.Message)
		}
	})
}

func TestInvalidRoutes(t *testing.T) {
	expr := func(k string, op metav1.LabelSelectorOperator, vs ...string) routeOpt {
		return selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: k, Operator: op, Values: vs}}})
	}
	tests := []struct {
		name    string
		opt     routeOpt
		message string // a part of the message
	}{
		{"an empty selector is refused", selector(metav1.LabelSelector{}), "spec.selector is empty"},
		{"an empty matchLabels map is refused", selector(metav1.LabelSelector{MatchLabels: map[string]string{}}), "spec.selector is empty"},
		{"a label key with a space is refused", matchLabels("bad key", "x"), "spec.selector is invalid"},
		{"a label value that is too long is refused", matchLabels("app", strings.Repeat("x", 64)), "spec.selector is invalid"},
		{"In without values is refused", expr("app", metav1.LabelSelectorOpIn), "spec.selector is invalid"},
		{"Exists with values is refused", expr("app", metav1.LabelSelectorOpExists, "x"), "spec.selector is invalid"},
		{"an unknown operator is refused", expr("app", "Near", "x"), `"Near" is not a valid label selector operator`},
		{"port 0 is refused", port(intstr.FromInt32(0)), "spec.port 0 is not in 1-65535"},
		{"an empty port name is refused", port(intstr.FromString("")), "spec.port is an empty name"},
		{"a pathPrefix with a trailing slash is refused", prefix("/chat/"), `spec.pathPrefix "/chat/" ends with "/"`},
		{"a pathPrefix without a leading slash is refused", prefix("chat"), `does not start with "/"`},
		{"a pathPrefix with a dot-dot segment is refused", prefix("/a/../b"), `contains ".."`},
		{"a backendPath with a double slash is refused", func(r *v1alpha1.WsRoute) { r.Spec.BackendPath = "/a//b" }, `spec.backendPath "/a//b" contains "//"`},
		{"a hostname with a port is refused", hosts("ws.example.com:443"), `spec.hostnames entry "ws.example.com:443"`},
		{"a hostname with a wildcard in the middle is refused", hosts("a.*.example.com"), `spec.hostnames entry "a.*.example.com"`},
		{"an unknown revokePolicy is refused", func(r *v1alpha1.WsRoute) { r.Spec.RevokePolicy = "Linger" }, `spec.revokePolicy "Linger" is neither Close nor Drain`},
		{"a maxConnectionsPerPod of 0 is refused", func(r *v1alpha1.WsRoute) { r.Spec.MaxConnectionsPerPod = new(int32) }, "spec.maxConnectionsPerPod 0 is not positive"},
		{"a negative timeout is refused", func(r *v1alpha1.WsRoute) {
			r.Spec.Timeouts = &v1alpha1.Timeouts{Idle: &metav1.Duration{Duration: -time.Second}}
		}, "spec.timeouts.idle -1s is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := newRoute("a", "bad", 0, hosts("h1"), tc.opt, generation(7))
			good := newRoute("a", "good", 1, hosts("h1"))
			res := Build(Input{
				Routes: []*v1alpha1.WsRoute{bad, good},
				Pods: []*corev1.Pod{
					newPod("a", "p-bad", "10.0.0.1", map[string]string{"app": "bad"}),
					newPod("a", "p-good", "10.0.0.2", map[string]string{"app": "good"}),
				},
			}, Options{})
			st := res.Routes[key("a", "bad")]
			if st.Accepted || st.Reason != v1alpha1.ReasonInvalid {
				t.Errorf("accepted %v reason %q, want Invalid", st.Accepted, st.Reason)
			}
			if !strings.Contains(st.Message, tc.message) {
				t.Errorf("message %q does not contain %q", st.Message, tc.message)
			}
			if st.Generation != 7 {
				t.Errorf("generation = %d, want 7", st.Generation)
			}
			if !reflect.DeepEqual(st.Endpoints, v1alpha1.RouteEndpoints{}) {
				t.Errorf("endpoints = %+v, want zero", st.Endpoints)
			}
			if _, ok := res.Table.Route(key("a", "bad")); ok {
				t.Errorf("an invalid route is in the table")
			}
			if !res.Routes[key("a", "good")].Accepted {
				t.Errorf("the younger valid route on the same host is not accepted: %s", res.Routes[key("a", "good")].Message)
			}
		})
	}
}

func TestRouteFields(t *testing.T) {
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	maxConns := int32(25)
	full := newRoute("a", "full", 0, generation(4), func(r *v1alpha1.WsRoute) {
		r.Spec.Hostnames = []v1alpha1.Hostname{"B.example.com", "a.example.com", "b.example.com"}
		r.Spec.PathPrefix = "/chat"
		r.Spec.BackendPath = "/ws/v1"
		r.Spec.AllowedOrigins = []v1alpha1.Origin{"https://b.example.com", "https://a.example.com"}
		r.Spec.Timeouts = &v1alpha1.Timeouts{Handshake: dur(5 * time.Second), Idle: dur(time.Minute), MaxLifetime: dur(time.Hour)}
		r.Spec.MaxConnectionsPerPod = &maxConns
		r.Spec.RevokePolicy = v1alpha1.RevokeDrain
	})
	bare := newRoute("a", "bare", 1, hosts("c.example.com"), func(r *v1alpha1.WsRoute) {
		r.Spec.Timeouts = &v1alpha1.Timeouts{Idle: dur(time.Minute)}
		r.Spec.RevokePolicy = v1alpha1.RevokeClose
	})
	res := Build(Input{Routes: []*v1alpha1.WsRoute{full, bare}}, Options{})

	got, ok := res.Table.Route(key("a", "full"))
	if !ok {
		t.Fatalf("a/full is not in the table: %s", res.Routes[key("a", "full")].Message)
	}
	want := routing.Route{
		Key:                  key("a", "full"),
		Generation:           4,
		Hosts:                []string{"a.example.com", "b.example.com"},
		PathPrefix:           "/chat",
		BackendPath:          "/ws/v1",
		AllowedOrigins:       []string{"https://a.example.com", "https://b.example.com"},
		Timeouts:             routing.Timeouts{Handshake: 5 * time.Second, Idle: time.Minute, MaxLifetime: time.Hour},
		MaxConnectionsPerPod: 25,
		DrainOnRevoke:        true,
	}
	checkRoute(t, got, want)

	got, ok = res.Table.Route(key("a", "bare"))
	if !ok {
		t.Fatalf("a/bare is not in the table: %s", res.Routes[key("a", "bare")].Message)
	}
	checkRoute(t, got, routing.Route{
		Key:         key("a", "bare"),
		Generation:  1,
		Hosts:       []string{"c.example.com"},
		PathPrefix:  "/",
		BackendPath: "/",
		Timeouts:    routing.Timeouts{Idle: time.Minute},
	})
	if st := res.Routes[key("a", "full")]; st.Message != `the route is valid and owns pathPrefix "/chat" on hosts "a.example.com", "b.example.com"` {
		t.Errorf("message = %q", st.Message)
	}
}

// checkRoute compares the exported fields of a route, ignoring backends.
func checkRoute(t *testing.T, got *routing.Route, want routing.Route) {
	t.Helper()
	g := *got
	g.Backends = nil
	want.Backends = nil
	gv, wv := reflect.ValueOf(g), reflect.ValueOf(want)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: %s = %#v, want %#v", want.Key, f.Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}

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
	res := Build(Input{
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0, port(intstr.FromString("ws")))},
		Pods:   pods,
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

func TestDuplicateAddresses(t *testing.T) {
	lbls := map[string]string{"app": "chat"}
	res := Build(Input{
		Routes: []*v1alpha1.WsRoute{newRoute("a", "chat", 0)},
		Pods: []*corev1.Pod{
			// Two host-network pods on one node share the node's address.
			newPod("a", "node-b", "192.168.1.10", lbls),
			newPod("a", "node-a", "192.168.1.10", lbls),
			newPod("a", "dual", "", lbls, podIPs("192.168.1.10", "fd00::10")),
		},
	}, Options{})
	ep := res.Routes[key("a", "chat")].Endpoints
	want := []v1alpha1.EndpointPod{
		{Name: "dual", Addresses: []string{"192.168.1.10", "fd00::10"}, Port: 8080},
	}
	if ep.Count != 1 || !reflect.DeepEqual(ep.Pods, want) {
		t.Errorf("endpoints = %+v, want only the first pod by name holding the shared address", ep)
	}
	r, _ := res.Table.Route(key("a", "chat"))
	if b, ok := r.Backend(netip.MustParseAddr("192.168.1.10")); !ok || b.Pod != "dual" {
		t.Errorf("192.168.1.10 -> %+v %v, want pod dual", b, ok)
	}
}

// TestTableAllowsExactlyEligiblePods checks the table against a brute-force
// reading of the rules: every address of every pod is looked up the way the
// data plane does (Match, then Backend), and must be found exactly when the
// pod is in the route's namespace, matched by its selector and Eligible.
func TestTableAllowsExactlyEligiblePods(t *testing.T) {
	in := mixedInput()
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
		for _, p := range in.Pods {
			addrs, skip := Eligible(p, wr.Spec.Port)
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
	in := mixedInput()
	opts := Options{DefaultHost: "ws.example.com", Generation: 9, Now: t0}
	want := Build(in, opts)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		shuffled := Input{Routes: slices.Clone(in.Routes), Pods: slices.Clone(in.Pods)}
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
	in := mixedInput()
	before := Input{}
	for _, r := range in.Routes {
		before.Routes = append(before.Routes, r.DeepCopy())
	}
	for _, p := range in.Pods {
		before.Pods = append(before.Pods, p.DeepCopy())
	}
	Build(in, Options{DefaultHost: "ws.example.com"})
	if !reflect.DeepEqual(in, before) {
		t.Errorf("Build modified its input")
	}
}

func TestEmptyAndNilInput(t *testing.T) {
	res := Build(Input{Routes: []*v1alpha1.WsRoute{nil}, Pods: []*corev1.Pod{nil}}, Options{Generation: 1})
	if res.Table == nil || len(res.Table.Routes()) != 0 || len(res.Routes) != 0 {
		t.Errorf("nil entries: %d routes, %d statuses, want an empty table", len(res.Table.Routes()), len(res.Routes))
	}
	if _, _, ok := res.Table.Match("ws.example.com", "/10.0.0.1/"); ok {
		t.Errorf("an empty table matches a request")
	}
}

// mixedInput is a cluster with conflicts, several namespaces, every skip
// reason, dual-stack pods, named ports and index and scan selectors.
func mixedInput() Input {
	var in Input
	for n, ns := range []string{"alpha", "beta", "gamma"} {
		in.Routes = append(in.Routes,
			newRoute(ns, "chat", n, hosts("chat.example.com"), prefix("/"+ns), matchLabels("app", "chat")),
			newRoute(ns, "chat-dup", n+10, hosts("chat.example.com"), prefix("/"+ns), matchLabels("app", "chat")),
			newRoute(ns, "named", n, hosts("*.rooms.example.com"), prefix("/"+ns), port(intstr.FromString("ws")),
				matchLabels("app", "chat", "tier", "web")),
			newRoute(ns, "scan", n, prefix("/scan-"+ns), selector(metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}},
			})),
			newRoute(ns, "default", n+20, prefix("/d-"+ns), matchLabels("app", "other")),
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
			in.Pods = append(in.Pods, newPod(ns, fmt.Sprintf("pod-%02d", i), ip, lbls, opts...))
		}
	}
	return in
}
