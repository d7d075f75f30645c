package controllers_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/routing"
)

// tableAuth returns the route's auth in the current table, or nil.
func (g *gateway) tableAuth(ns, name string) (*routing.Route, *routing.Auth) {
	r, ok := g.tables.Load().Route(routing.RouteKey{Namespace: ns, Name: name})
	if !ok {
		return nil, nil
	}
	return r, r.Auth
}

func keySecret(ns, name string, data []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{wsgatev1alpha1.JWKSLabel: "true"}},
		Data:       map[string][]byte{wsgatev1alpha1.DefaultJWKSKey: data},
	}
}

// TestRouteAuthFollowsKeySecretsServicesAndIssuers runs a route with
// shared-key tokens bound to a pod label and forward auth through the
// control plane: its status (access, AuthReady, Ready, Events) and its
// table entry follow the key Secret and the forward-auth Service's pods.
func TestRouteAuthFollowsKeySecretsServicesAndIssuers(t *testing.T) {
	g := startGateway(t, "")
	ns := env.Namespace(t)
	ctx := context.Background()

	env.CreatePod(t, ns, testenv.Pod{Name: "alice", Labels: map[string]string{"app": "term", "user": "alice"}, IPs: []string{"127.0.0.40"}, Ready: true})
	env.CreatePod(t, ns, testenv.Pod{Name: "unbound", Labels: map[string]string{"app": "term"}, IPs: []string{"127.0.0.41"}, Ready: true})
	env.CreatePod(t, ns, testenv.Pod{Name: "authz", Labels: map[string]string{"app": "authz"}, IPs: []string{"127.0.0.42"}, Ready: true, Ports: map[string]int32{"http": 9000}})
	create(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "authz"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "authz"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	})
	secret := keySecret(ns, "keys", []byte(strings.Repeat("k", 32)))
	create(t, secret)
	create(t, route(ns, "term", "term", func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.Auth = &wsgatev1alpha1.RouteAuth{
			JWT: &wsgatev1alpha1.JWTAuth{
				Issuer: "https://login.example.com", Audiences: []string{"term"},
				Keys: wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromSharedSecret, Secret: &wsgatev1alpha1.KeySecretRef{Name: "keys"}},
			},
			PodBinding:  &wsgatev1alpha1.PodBinding{Label: "user"},
			ForwardAuth: &wsgatev1alpha1.ForwardAuth{Service: "authz", Port: intstr.FromString("http")},
		}
	}))

	waitStatus(t, ns, "term", func(r *wsgatev1alpha1.WsRoute) error {
		if r.Status.Access != "Token bound to pod+ForwardAuth" {
			return fmt.Errorf("access %q", r.Status.Access)
		}
		if got := condition(r, wsgatev1alpha1.ConditionAuthReady); got != "True/KeysLoaded" {
			return fmt.Errorf("AuthReady %s", got)
		}
		if got := condition(r, wsgatev1alpha1.ConditionReady); got != "True/Ready" {
			return fmt.Errorf("Ready %s", got)
		}
		if !slices.Equal(r.Status.Endpoints.Skipped, []wsgatev1alpha1.SkippedPods{{Reason: wsgatev1alpha1.SkippedUnbound, Count: 1}}) {
			return fmt.Errorf("skipped %+v, want one Unbound", r.Status.Endpoints.Skipped)
		}
		return nil
	})
	r, a := g.tableAuth(ns, "term")
	if a == nil || a.Problem != "" || a.Tokens == nil || a.Forward == nil ||
		!slices.Equal(a.Forward.Addrs, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.42:9000")}) {
		t.Fatalf("table auth %+v", a)
	}
	if len(r.Backends) != 1 || r.Backends[0].Bound != "alice" {
		t.Errorf("backends %+v, want alice's pod bound to alice", r.Backends)
	}

	t.Run("a broken key Secret keeps its last good keys and is reported", func(t *testing.T) {
		patch := client.MergeFrom(secret.DeepCopy())
		secret.Data[wsgatev1alpha1.DefaultJWKSKey] = []byte("short")
		if err := env.Client.Patch(ctx, secret, patch); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ns, "term", func(r *wsgatev1alpha1.WsRoute) error {
			if got := condition(r, wsgatev1alpha1.ConditionAuthReady); got != "False/KeySecretUnusable" {
				return fmt.Errorf("AuthReady %s", got)
			}
			if got := condition(r, wsgatev1alpha1.ConditionReady); got != "False/AuthNotReady" {
				return fmt.Errorf("Ready %s", got)
			}
			return nil
		})
		waitEvent(t, ns, "term", corev1.EventTypeWarning, wsgatev1alpha1.ReasonKeySecretUnusable)
		if _, a := g.tableAuth(ns, "term"); a == nil || a.Problem != "" {
			t.Errorf("table auth %+v, want the last good keys in use", a)
		}
	})
	t.Run("a deleted key Secret takes its keys with it", func(t *testing.T) {
		if err := env.Client.Delete(ctx, secret); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			if _, a := g.tableAuth(ns, "term"); a == nil || !strings.Contains(a.Problem, "not found") {
				return fmt.Errorf("table auth %+v, want a problem", a)
			}
			return nil
		})
	})
	t.Run("forward auth follows the Service's pods", func(t *testing.T) {
		var authz corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "authz"}, &authz); err != nil {
			t.Fatal(err)
		}
		env.SetPodStatus(t, &authz, []string{"127.0.0.42"}, false)
		waitStatus(t, ns, "term", func(r *wsgatev1alpha1.WsRoute) error {
			c := condition(r, wsgatev1alpha1.ConditionAuthReady)
			if !strings.HasPrefix(c, "False/") {
				return fmt.Errorf("AuthReady %s", c)
			}
			for _, cond := range r.Status.Conditions {
				if cond.Type == wsgatev1alpha1.ConditionAuthReady && !strings.Contains(cond.Message, "no Ready pod") {
					return fmt.Errorf("AuthReady message %q", cond.Message)
				}
			}
			return nil
		})
		// No address: the data plane answers 503 (Problem is the tokens').
		if _, a := g.tableAuth(ns, "term"); a == nil || a.Forward == nil || len(a.Forward.Addrs) != 0 || strings.Contains(a.Problem, "no Ready pod") {
			t.Errorf("table auth %+v, want no forward-auth address, and no token problem for it", a)
		}
	})

	t.Run("an issuer no grant gives the namespace is refused", func(t *testing.T) {
		create(t, route(ns, "steal", "term", func(r *wsgatev1alpha1.WsRoute) {
			r.Spec.Auth = &wsgatev1alpha1.RouteAuth{JWT: &wsgatev1alpha1.JWTAuth{
				Issuer: "https://idp.example.com", Audiences: []string{"x"},
				Keys: wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromIssuer},
			}}
		}))
		waitStatus(t, ns, "steal", func(r *wsgatev1alpha1.WsRoute) error {
			if got := condition(r, wsgatev1alpha1.ConditionAccepted); got != "False/TokenIssuerNotAllowed" {
				return fmt.Errorf("Accepted %s", got)
			}
			if got := condition(r, wsgatev1alpha1.ConditionAuthReady); got != "" {
				return fmt.Errorf("AuthReady %s on a route that is not accepted", got)
			}
			return nil
		})
		waitEvent(t, ns, "steal", corev1.EventTypeWarning, wsgatev1alpha1.ReasonTokenIssuerNotAllowed)
		if _, a := g.tableAuth(ns, "steal"); a != nil {
			t.Error("the refused route is in the table")
		}
	})

	t.Run("the cluster's ServiceAccount issuer is read through the API server", func(t *testing.T) {
		create(t, route(ns, "in-cluster", "term", func(r *wsgatev1alpha1.WsRoute) {
			r.Spec.Auth = &wsgatev1alpha1.RouteAuth{JWT: &wsgatev1alpha1.JWTAuth{
				Audiences: []string{"wsgate"},
				Keys:      wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromServiceAccountIssuer},
			}}
		}))
		waitStatus(t, ns, "in-cluster", func(r *wsgatev1alpha1.WsRoute) error {
			if got := condition(r, wsgatev1alpha1.ConditionAuthReady); got != "True/KeysLoaded" {
				for _, c := range r.Status.Conditions {
					if c.Type == wsgatev1alpha1.ConditionAuthReady {
						return fmt.Errorf("AuthReady %s: %s", got, c.Message)
					}
				}
				return fmt.Errorf("AuthReady %s", got)
			}
			return nil
		})
	})
}
