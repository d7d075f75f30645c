package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
)

// TestEveryReplicaServesAndStatusMovesToTheNewLeader runs two replicas
// with leader election: both build the table, one writes status, and when
// it stops the other takes over the writes.
func TestEveryReplicaServesAndStatusMovesToTheNewLeader(t *testing.T) {
	leaseNS := env.Namespace(t)
	opts := ctrl.Options{
		LeaderElection:                true,
		LeaderElectionID:              "wsgate.wsgate.io",
		LeaderElectionNamespace:       leaseNS,
		LeaderElectionReleaseOnCancel: true,
	}
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
