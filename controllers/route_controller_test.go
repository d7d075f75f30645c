package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/routing"
)

func TestTableHoldsExactlyTheEligiblePods(t *testing.T) {
	g := startGateway(t, "")
	ns := env.Namespace(t)
	ctx := context.Background()
	echo := map[string]string{"app": "echo"}

	ready := env.CreatePod(t, ns, testenv.Pod{Name: "ready", Labels: echo, IPs: []string{"127.0.0.2"}, Ready: true})
	notReady := env.CreatePod(t, ns, testenv.Pod{Name: "not-ready", Labels: echo, IPs: []string{"127.0.0.3"}, Ready: false})
	env.CreatePod(t, ns, testenv.Pod{Name: "no-ip", Labels: echo, Ready: true})
	env.CreatePod(t, ns, testenv.Pod{Name: "other-app", Labels: map[string]string{"app": "other"}, IPs: []string{"127.0.0.5"}, Ready: true})
	dual := env.CreatePod(t, ns, testenv.Pod{Name: "dual-stack", Labels: echo, IPs: []string{"127.0.0.6", "::1"}, Ready: true})
	create(t, route(ns, "echo", "echo"))

	g.waitAllowlist(t, ns, "echo", "127.0.0.2:8080", "127.0.0.6:8080", "[::1]:8080")
	if !g.lookup(ns+".example.com", "/echo/127.0.0.2/x", "127.0.0.2") {
		t.Error("Match+Backend does not find the ready pod through host and prefix")
	}
	for _, ip := range []string{"127.0.0.3", "127.0.0.5"} {
		if g.lookup(ns+".example.com", "/echo/"+ip, ip) {
			t.Errorf("%s is allowlisted but its pod is not eligible", ip)
		}
	}

	t.Run("a pod that becomes Ready joins", func(t *testing.T) {
		env.SetPodStatus(t, notReady, []string{"127.0.0.3"}, true)
		g.waitAllowlist(t, ns, "echo", "127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.6:8080", "[::1]:8080")
	})
	t.Run("a pod that is no longer Ready leaves", func(t *testing.T) {
		env.SetPodStatus(t, notReady, []string{"127.0.0.3"}, false)
		g.waitAllowlist(t, ns, "echo", "127.0.0.2:8080", "127.0.0.6:8080", "[::1]:8080")
	})
	t.Run("a relabelled pod leaves", func(t *testing.T) {
		patch := client.MergeFrom(ready.DeepCopy())
		ready.Labels = map[string]string{"app": "moved"}
		if err := env.Client.Patch(ctx, ready, patch); err != nil {
			t.Fatal(err)
		}
		g.waitAllowlist(t, ns, "echo", "127.0.0.6:8080", "[::1]:8080")
		waitEvent(t, ns, "echo", corev1.EventTypeNormal, controllers.EventPodsRevoked)
	})
	t.Run("a terminating pod leaves", func(t *testing.T) {
		// A finalizer keeps the deleted pod around with a deletionTimestamp,
		// as a kubelet does during the grace period.
		patch := client.MergeFrom(dual.DeepCopy())
		dual.Finalizers = []string{"wsgate.io/test-hold"}
		if err := env.Client.Patch(ctx, dual, patch); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Delete(ctx, dual); err != nil {
			t.Fatal(err)
		}
		g.waitAllowlist(t, ns, "echo")
		var p corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dual), &p); err != nil || p.DeletionTimestamp == nil {
			t.Fatalf("pod should still exist with a deletionTimestamp: %v", err)
		}
		patch = client.MergeFrom(p.DeepCopy())
		p.Finalizers = nil
		if err := env.Client.Patch(ctx, &p, patch); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a deleted pod leaves", func(t *testing.T) {
		back := env.CreatePod(t, ns, testenv.Pod{Name: "back", Labels: echo, IPs: []string{"127.0.0.7"}, Ready: true})
		g.waitAllowlist(t, ns, "echo", "127.0.0.7:8080")
		if err := env.Client.Delete(ctx, back); err != nil {
			t.Fatal(err)
		}
		g.waitAllowlist(t, ns, "echo")
	})
	t.Run("a deleted route leaves the table", func(t *testing.T) {
		env.CreatePod(t, ns, testenv.Pod{Name: "last", Labels: echo, IPs: []string{"127.0.0.8"}, Ready: true})
		g.waitAllowlist(t, ns, "echo", "127.0.0.8:8080")
		if err := env.Client.Delete(ctx, &wsgatev1alpha1.WsRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}}); err != nil {
			t.Fatal(err)
		}
		g.waitRouteGone(t, ns, "echo")
		if _, _, ok := g.tables.Load().Match("ws.example.com", "/echo/127.0.0.8"); ok {
			t.Error("the deleted route still matches requests")
		}
	})
}

func TestRouteNeverSelectsPodsOfAnotherNamespace(t *testing.T) {
	g := startGateway(t, "")
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	echo := map[string]string{"app": "echo"}
	env.CreatePod(t, nsB, testenv.Pod{Name: "b-pod", Labels: echo, IPs: []string{"127.0.0.20"}, Ready: true})
	env.CreatePod(t, nsA, testenv.Pod{Name: "a-pod", Labels: echo, IPs: []string{"127.0.0.21"}, Ready: true})
	create(t, route(nsA, "echo", "echo"))

	g.waitAllowlist(t, nsA, "echo", "127.0.0.21:8080")
	r := waitStatus(t, nsA, "echo", func(r *wsgatev1alpha1.WsRoute) error {
		if r.Status.Endpoints.Count != 1 {
			return fmt.Errorf("endpoints.count = %d, want 1", r.Status.Endpoints.Count)
		}
		return nil
	})
	if got := r.Status.Endpoints.Pods; len(got) != 1 || got[0].Name != "a-pod" {
		t.Errorf("status lists %+v, want only a-pod", got)
	}
	// A second table build (triggered by a pod in B) changes nothing.
	env.CreatePod(t, nsB, testenv.Pod{Name: "b-pod-2", Labels: echo, IPs: []string{"127.0.0.22"}, Ready: true})
	time.Sleep(300 * time.Millisecond)
	g.waitAllowlist(t, nsA, "echo", "127.0.0.21:8080")
}

func TestStatusReportsEndpointsConditionsAndGeneration(t *testing.T) {
	g := startGateway(t, "")
	ns := env.Namespace(t)
	ctx := context.Background()
	labels := map[string]string{"app": "named"}
	create(t, route(ns, "named", "named", func(r *wsgatev1alpha1.WsRoute) { r.Spec.Port = intstr.FromString("ws") }))

	r := waitStatus(t, ns, "named", func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, wsgatev1alpha1.ConditionReady); got != "False/NoEndpoints" {
			return fmt.Errorf("Ready = %q, want False/NoEndpoints", got)
		}
		return nil
	})
	if got := condition(r, wsgatev1alpha1.ConditionAccepted); got != "True/Accepted" {
		t.Errorf("Accepted = %q, want True/Accepted", got)
	}
	if r.Status.ObservedGeneration != r.Generation {
		t.Errorf("observedGeneration = %d, want %d", r.Status.ObservedGeneration, r.Generation)
	}

	env.CreatePod(t, ns, testenv.Pod{Name: "with-port", Labels: labels, IPs: []string{"127.0.0.30"}, Ready: true, Ports: map[string]int32{"ws": 9001}})
	env.CreatePod(t, ns, testenv.Pod{Name: "without-port", Labels: labels, IPs: []string{"127.0.0.31"}, Ready: true, Ports: map[string]int32{"http": 80}})
	env.CreatePod(t, ns, testenv.Pod{Name: "starting", Labels: labels, IPs: []string{"127.0.0.32"}, Ready: false, Ports: map[string]int32{"ws": 9001}})
	g.waitAllowlist(t, ns, "named", "127.0.0.30:9001")
	// The three pods reach the table in one build or in several: wait for
	// the status of the build that holds them all.
	r = waitStatus(t, ns, "named", func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, wsgatev1alpha1.ConditionReady); got != "True/Ready" {
			return fmt.Errorf("Ready = %q, want True/Ready", got)
		}
		var skipped int32
		for _, s := range r.Status.Endpoints.Skipped {
			skipped += s.Count
		}
		if skipped != 2 {
			return fmt.Errorf("skipped = %+v, want two pods", r.Status.Endpoints.Skipped)
		}
		return nil
	})
	ep := r.Status.Endpoints
	if ep.Count != 1 || len(ep.Pods) != 1 || ep.Pods[0].Name != "with-port" || ep.Pods[0].Port != 9001 ||
		len(ep.Pods[0].Addresses) != 1 || ep.Pods[0].Addresses[0] != "127.0.0.30" {
		t.Errorf("endpoints = %+v, want with-port at 127.0.0.30:9001", ep)
	}
	skipped := map[wsgatev1alpha1.SkippedReason]int32{}
	for _, s := range ep.Skipped {
		skipped[s.Reason] = s.Count
	}
	if skipped[wsgatev1alpha1.SkippedPortNotFound] != 1 || skipped[wsgatev1alpha1.SkippedNotReady] != 1 || len(skipped) != 2 {
		t.Errorf("skipped = %+v, want PortNotFound=1 NotReady=1", ep.Skipped)
	}
	for _, want := range []string{"PortNotFound=1", "NotReady=1"} {
		if c := findCondition(r, wsgatev1alpha1.ConditionReady); c == nil || !strings.Contains(c.Message, want) {
			t.Errorf("Ready message %q does not mention %s", c.Message, want)
		}
	}
	waitEvent(t, ns, "named", corev1.EventTypeNormal, wsgatev1alpha1.ReasonReady)
	waitEvent(t, ns, "named", corev1.EventTypeWarning, wsgatev1alpha1.ReasonNoEndpoints)

	t.Run("status is not written when nothing it shows changed", func(t *testing.T) {
		before := r.ResourceVersion
		// An unrelated pod change triggers a build that changes nothing.
		env.CreatePod(t, ns, testenv.Pod{Name: "unrelated", Labels: map[string]string{"app": "else"}, IPs: []string{"127.0.0.33"}, Ready: true})
		time.Sleep(500 * time.Millisecond)
		var now wsgatev1alpha1.WsRoute
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(r), &now); err != nil {
			t.Fatal(err)
		}
		if now.ResourceVersion != before {
			t.Errorf("resourceVersion moved from %s to %s: status %+v", before, now.ResourceVersion, now.Status)
		}
	})

	t.Run("a spec change is observed with the new generation", func(t *testing.T) {
		patch := client.MergeFrom(r.DeepCopy())
		r.Spec.BackendPath = "/v2"
		if err := env.Client.Patch(ctx, r, patch); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ns, "named", func(cur *wsgatev1alpha1.WsRoute) error {
			if cur.Generation < 2 || cur.Status.ObservedGeneration != cur.Generation {
				return fmt.Errorf("generation %d, observedGeneration %d", cur.Generation, cur.Status.ObservedGeneration)
			}
			for _, c := range cur.Status.Conditions {
				if c.ObservedGeneration != cur.Generation {
					return fmt.Errorf("condition %s observedGeneration %d, want %d", c.Type, c.ObservedGeneration, cur.Generation)
				}
			}
			return nil
		})
		eventually(t, 5*time.Second, func() error {
			rt, ok := g.tables.Load().Route(keyOf(ns, "named"))
			if !ok || rt.BackendPath != "/v2" {
				return fmt.Errorf("table route %+v does not carry backendPath /v2", rt)
			}
			return nil
		})
	})
}

func TestConflictingRoutesOlderWinsUntilDeleted(t *testing.T) {
	g := startGateway(t, "ws.example.com")
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	ctx := context.Background()
	env.CreatePod(t, nsA, testenv.Pod{Name: "a", Labels: map[string]string{"app": "a"}, IPs: []string{"127.0.0.40"}, Ready: true})
	env.CreatePod(t, nsB, testenv.Pod{Name: "b", Labels: map[string]string{"app": "b"}, IPs: []string{"127.0.0.41"}, Ready: true})

	// The first route names the default host implicitly, the second
	// explicitly, from another namespace: the host belongs to the first.
	first := route(nsA, "first", "a", func(r *wsgatev1alpha1.WsRoute) { r.Spec.Hostnames = nil; r.Spec.PathPrefix = "/rooms" })
	create(t, first)
	g.waitAllowlist(t, nsA, "first", "127.0.0.40:8080")
	// The status records the name the route serves: the default host.
	waitStatus(t, nsA, "first", func(r *wsgatev1alpha1.WsRoute) error {
		if !slices.Equal(r.Status.Hostnames, []string{"ws.example.com"}) {
			return fmt.Errorf("status.hostnames = %q, want [ws.example.com]", r.Status.Hostnames)
		}
		return nil
	})
	// creationTimestamp has one-second resolution: make sure the second
	// route is strictly younger.
	time.Sleep(1100 * time.Millisecond)
	create(t, route(nsB, "second", "b", func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.Hostnames = []wsgatev1alpha1.Hostname{"ws.example.com"}
		r.Spec.PathPrefix = "/rooms"
	}))

	r := waitStatus(t, nsB, "second", func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, wsgatev1alpha1.ConditionAccepted); got != "False/HostnameConflict" {
			return fmt.Errorf("Accepted = %q, want False/HostnameConflict", got)
		}
		if len(r.Status.Hostnames) != 0 {
			return fmt.Errorf("status.hostnames = %q of a route that serves nothing", r.Status.Hostnames)
		}
		return nil
	})
	c := findCondition(r, wsgatev1alpha1.ConditionAccepted)
	if winner := nsA + "/first"; !strings.Contains(c.Message, winner) || !strings.Contains(c.Message, fmt.Sprintf("namespace %q", nsA)) {
		t.Errorf("conflict message %q does not name the owner namespace %s and its route %s", c.Message, nsA, winner)
	}
	if got := condition(r, wsgatev1alpha1.ConditionReady); got != "False/NotAccepted" {
		t.Errorf("Ready = %q, want False/NotAccepted", got)
	}
	waitEvent(t, nsB, "second", corev1.EventTypeWarning, wsgatev1alpha1.ReasonHostnameConflict)
	g.waitRouteGone(t, nsB, "second")
	if !g.lookup("ws.example.com", "/rooms/127.0.0.40", "127.0.0.40") || g.lookup("ws.example.com", "/rooms/127.0.0.41", "127.0.0.41") {
		t.Error("ws.example.com/rooms must reach the older route's pods only")
	}

	if err := env.Client.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	g.waitAllowlist(t, nsB, "second", "127.0.0.41:8080")
	waitStatus(t, nsB, "second", func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, wsgatev1alpha1.ConditionAccepted); got != "True/Accepted" {
			return fmt.Errorf("Accepted = %q, want True/Accepted once the winner is gone", got)
		}
		return nil
	})
	waitEvent(t, nsB, "second", corev1.EventTypeNormal, wsgatev1alpha1.ReasonAccepted)
}

func keyOf(ns, name string) routing.RouteKey { return routing.RouteKey{Namespace: ns, Name: name} }

func findCondition(r *wsgatev1alpha1.WsRoute, typ string) *metav1.Condition {
	for i := range r.Status.Conditions {
		if r.Status.Conditions[i].Type == typ {
			return &r.Status.Conditions[i]
		}
	}
	return nil
}

// waitEvent waits for an events.k8s.io Event about the route.
func waitEvent(t testing.TB, ns, name, typ, reason string) {
	t.Helper()
	harness.WaitEvent(t, env.Client, 10*time.Second, ns, name, typ, reason)
}
