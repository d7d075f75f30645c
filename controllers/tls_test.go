package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv"
)

func secretOf(ns, name string, leaf testcerts.Leaf, labelled bool) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}
	if labelled {
		s.Labels = map[string]string{wsgatev1alpha1.CertificateLabel: "true"}
	}
	return s
}

// servedLeaf returns the DNS names of the certificate the table serves for
// a server name, or "" when none.
func (g *gateway) servedLeaf(serverName string) string {
	c := g.tables.Load().Certificate(serverName)
	if c == nil || c.Leaf == nil {
		return ""
	}
	return c.Leaf.SerialNumber.String()
}

func TestRouteSecretServesItsHostsAndBrokenSecretsAreReported(t *testing.T) {
	g := startGateway(t, "")
	ns := env.Namespace(t)
	ctx := context.Background()
	ca := testcerts.NewCA(t, "test CA")
	first := ca.Issue(t, time.Hour, "tls.example.com")

	env.CreatePod(t, ns, testenv.Pod{Name: "p", Labels: map[string]string{"app": "tls"}, IPs: []string{"127.0.0.70"}, Ready: true})
	create(t, route(ns, "tls", "tls", func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.Hostnames = []wsgatev1alpha1.Hostname{"tls.example.com"}
		r.Spec.TLS = &wsgatev1alpha1.RouteTLS{SecretName: "tls-cert"}
	}))

	t.Run("an unlabelled Secret is not read, and the route says why", func(t *testing.T) {
		create(t, secretOf(ns, "tls-cert", first, false))
		r := waitStatus(t, ns, "tls", conditionIs(wsgatev1alpha1.ConditionCertificateReady, "False/SecretUnusable"))
		if c := findCondition(r, wsgatev1alpha1.ConditionCertificateReady); !strings.Contains(c.Message, wsgatev1alpha1.CertificateLabel) {
			t.Errorf("message %q does not tell to label the Secret", c.Message)
		}
		if got := condition(r, wsgatev1alpha1.ConditionReady); got != "False/CertificateNotReady" {
			t.Errorf("Ready = %q, want False/CertificateNotReady", got)
		}
		waitEvent(t, ns, "tls", corev1.EventTypeWarning, wsgatev1alpha1.ReasonSecretUnusable)
	})

	var firstSerial string
	t.Run("a labelled Secret serves the route's host", func(t *testing.T) {
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tls-cert"}, &s); err != nil {
			t.Fatal(err)
		}
		s.Labels = map[string]string{wsgatev1alpha1.CertificateLabel: "true"}
		if err := env.Client.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ns, "tls", conditionIs(wsgatev1alpha1.ConditionCertificateReady, "True/Issued"))
		waitStatus(t, ns, "tls", conditionIs(wsgatev1alpha1.ConditionReady, "True/Ready"))
		eventually(t, 5*time.Second, func() error {
			if firstSerial = g.servedLeaf("tls.example.com"); firstSerial == "" {
				return fmt.Errorf("no certificate for tls.example.com")
			}
			return nil
		})
		if g.servedLeaf("other.example.com") != "" {
			t.Error("a certificate is served for a host no route names (and no default is set)")
		}
	})

	t.Run("a broken Secret keeps the last good certificate and is reported", func(t *testing.T) {
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tls-cert"}, &s); err != nil {
			t.Fatal(err)
		}
		s.Data[corev1.TLSPrivateKeyKey] = ca.Issue(t, time.Hour, "tls.example.com").KeyPEM // a key of another certificate
		if err := env.Client.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		r := waitStatus(t, ns, "tls", conditionIs(wsgatev1alpha1.ConditionCertificateReady, "False/SecretUnusable"))
		if c := findCondition(r, wsgatev1alpha1.ConditionCertificateReady); !strings.Contains(c.Message, "last good certificate") {
			t.Errorf("message %q does not say the last good certificate serves", c.Message)
		}
		if got := g.servedLeaf("tls.example.com"); got != firstSerial {
			t.Errorf("serving certificate %s, want the last good %s", got, firstSerial)
		}
	})

	t.Run("a renewed Secret serves the new certificate", func(t *testing.T) {
		renewed := ca.Issue(t, 2*time.Hour, "tls.example.com")
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tls-cert"}, &s); err != nil {
			t.Fatal(err)
		}
		s.Data = map[string][]byte{corev1.TLSCertKey: renewed.CertPEM, corev1.TLSPrivateKeyKey: renewed.KeyPEM}
		if err := env.Client.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() error {
			if got := g.servedLeaf("tls.example.com"); got == firstSerial || got == "" {
				return fmt.Errorf("still serving %s", got)
			}
			return nil
		})
		waitStatus(t, ns, "tls", conditionIs(wsgatev1alpha1.ConditionCertificateReady, "True/Issued"))
	})
}

func TestIssuerRefWithoutCertManagerIsReported(t *testing.T) {
	startGateway(t, "")
	ns := env.Namespace(t)
	env.CreatePod(t, ns, testenv.Pod{Name: "p", Labels: map[string]string{"app": "acme"}, IPs: []string{"127.0.0.71"}, Ready: true})
	create(t, route(ns, "acme", "acme", func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.TLS = &wsgatev1alpha1.RouteTLS{SecretName: "acme-tls", IssuerRef: &wsgatev1alpha1.IssuerReference{Name: "letsencrypt", Kind: "ClusterIssuer"}}
	}))
	r := waitStatus(t, ns, "acme", conditionIs(wsgatev1alpha1.ConditionCertificateReady, "False/CertManagerMissing"))
	if got := condition(r, wsgatev1alpha1.ConditionReady); got != "False/CertificateNotReady" {
		t.Errorf("Ready = %q, want False/CertificateNotReady", got)
	}
	if got := condition(r, wsgatev1alpha1.ConditionAccepted); got != "True/Accepted" {
		t.Errorf("Accepted = %q: a missing cert-manager does not make the route invalid", got)
	}
}

func conditionIs(typ, want string) func(*wsgatev1alpha1.WsRoute) error {
	return func(r *wsgatev1alpha1.WsRoute) error {
		if got := condition(r, typ); got != want {
			c := findCondition(r, typ)
			msg := ""
			if c != nil {
				msg = c.Message
			}
			return fmt.Errorf("%s = %q (%s), want %q", typ, got, msg, want)
		}
		return nil
	}
}
