package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// TestServiceAccountTokensOfOtherNamespacesAreRefused: an audience is no
// secret (every tenant may ask the TokenRequest API for a token of its
// own ServiceAccount with any audience), so a route whose keys are the
// cluster's ServiceAccount issuer accepts only the tokens of its own
// namespace's ServiceAccounts, with or without podBinding.
func TestServiceAccountTokensOfOtherNamespacesAreRefused(t *testing.T) {
	g := startGateway(t, "")
	victim, evil := env.Namespace(t), env.Namespace(t)
	ctx := context.Background()
	const audience = "victim-desks"
	create(t, route(victim, "desks", "desk", func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.Auth = &wsgatev1alpha1.RouteAuth{JWT: &wsgatev1alpha1.JWTAuth{
			Audiences: []string{audience},
			Keys:      wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromServiceAccountIssuer},
		}}
	}))
	waitStatus(t, victim, "desks", func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, wsgatev1alpha1.ConditionAuthReady); got != "True/KeysLoaded" {
			return fmt.Errorf("AuthReady %s", got)
		}
		return nil
	})

	// The hostile tenant, in its own namespace, with its own rights only.
	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: evil, Name: "mallory"}})
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(evil).CreateToken(ctx, "mallory", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var verr error
	eventually(t, 10*time.Second, func() error {
		_, a := g.tableAuth(victim, "desks")
		if a == nil || a.Tokens == nil || a.Problem != "" {
			return fmt.Errorf("table auth %+v", a)
		}
		c, err := a.Tokens.Verify(ctx, tr.Status.Token, time.Now())
		if err == nil {
			verr = fmt.Errorf("accepted, subject %q", c.Subject)
			return nil
		}
		if err.Error() == "invalid_token: issuer not known yet" {
			return err
		}
		verr = nil
		return nil
	})
	if verr != nil {
		t.Errorf("namespace %s's route took a token of ServiceAccount %s/mallory: %v", victim, evil, verr)
	}

	// The route's own namespace's ServiceAccounts are accepted.
	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: victim, Name: "desk-user"}})
	own, err := cs.CoreV1().ServiceAccounts(victim).CreateToken(ctx, "desk-user", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, a := g.tableAuth(victim, "desks")
	c, err := a.Tokens.Verify(ctx, own.Status.Token, time.Now())
	if err != nil {
		t.Fatalf("the token of %s/desk-user was refused: %v", victim, err)
	}
	if want := "system:serviceaccount:" + victim + ":desk-user"; c.Subject != want {
		t.Errorf("subject %q, want %q", c.Subject, want)
	}
}
