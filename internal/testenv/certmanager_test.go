package testenv_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.MainWith(m, &env, testenv.Options{CertManager: true})
}

func TestCertManagerCRDs(t *testing.T) {
	dir, err := testenv.CertManagerCRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"cert-manager.io_certificates.yaml",
		"cert-manager.io_certificaterequests.yaml",
		"cert-manager.io_issuers.yaml",
		"cert-manager.io_clusterissuers.yaml",
		"acme.cert-manager.io_orders.yaml",
		"acme.cert-manager.io_challenges.yaml",
	} {
		if _, err := os.Stat(dir + "/" + f); err != nil {
			t.Error(err)
		}
	}
}

func TestCertManagerIssuesFromACAIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	start := time.Now()
	if err := testenv.StartCertManager(ctx, env.Config); err != nil {
		t.Fatal(err)
	}
	t.Logf("cert-manager controllers synced in %v", time.Since(start).Round(time.Millisecond))

	c := env.Client
	ns := env.Namespace(t)
	selfSigned := &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "selfsigned-"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}
	mustCreate(t, c, selfSigned)
	t.Cleanup(func() { _ = c.Delete(context.Background(), selfSigned) })

	caCert := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: ns},
		Spec: cmapi.CertificateSpec{
			IsCA:       true,
			CommonName: "wsgate test CA",
			SecretName: "ca",
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Kind: cmapi.ClusterIssuerKind, Group: "cert-manager.io", Name: selfSigned.Name},
		},
	}
	caIssuer := &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: ns},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "ca"}}},
	}
	leaf := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "ws", Namespace: ns},
		Spec: cmapi.CertificateSpec{
			DNSNames:   []string{"ws.example.com"},
			SecretName: "ws-tls",
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			Usages:     []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
			IssuerRef:  cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Group: "cert-manager.io", Name: caIssuer.Name},
		},
	}
	// All at once: the leaf waits for the CA Issuer, which waits for the
	// CA's secret.
	issueStart := time.Now()
	mustCreate(t, c, caCert)
	mustCreate(t, c, caIssuer)
	mustCreate(t, c, leaf)

	waitReady(t, c, caCert, 30*time.Second)
	t.Logf("CA Certificate Ready after %v", time.Since(issueStart).Round(time.Millisecond))
	waitReady(t, c, leaf, 30*time.Second)
	latency := time.Since(issueStart)
	t.Logf("leaf Certificate Ready after %v (self-signed CA -> CA Issuer -> leaf)", latency.Round(time.Millisecond))

	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: leaf.Spec.SecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, "ca.crt"} {
		if len(secret.Data[k]) == 0 {
			t.Fatalf("secret %s has no %s (keys: %v)", secret.Name, k, keys(secret.Data))
		}
	}
	chain := testcerts.ParseCertificates(t, secret.Data[corev1.TLSCertKey])
	roots := x509.NewCertPool()
	for _, ca := range testcerts.ParseCertificates(t, secret.Data["ca.crt"]) {
		roots.AddCert(ca)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		DNSName:       "ws.example.com",
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("verify leaf against ca.crt: %v", err)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: roots, Intermediates: inter}); err == nil {
		t.Fatal("leaf verifies for other.example.com")
	}
	if chain[0].IsCA {
		t.Fatal("leaf is a CA")
	}
}

func TestGarbageCollectorDeletesDependents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.GarbageCollectorOutput())
		}
	})
	start := time.Now()
	if err := env.StartGarbageCollector(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("garbage collector working after %v", time.Since(start).Round(time.Millisecond))

	c := env.Client
	ns := env.Namespace(t)
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns}}
	mustCreate(t, c, owner)
	dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name:      "dependent",
		Namespace: ns,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		}},
	}}
	mustCreate(t, c, dependent)
	bystander := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bystander", Namespace: ns}}
	mustCreate(t, c, bystander)

	if err := c.Delete(ctx, owner); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dependent still there 30s after its owner was deleted (get: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("dependent deleted %v after its owner", time.Since(deleted).Round(time.Millisecond))
	if err := c.Get(ctx, client.ObjectKeyFromObject(bystander), &corev1.ConfigMap{}); err != nil {
		t.Fatalf("ConfigMap without owner: %v", err)
	}
}

func mustCreate(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func waitReady(t *testing.T, c client.Client, crt *cmapi.Certificate, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got cmapi.Certificate
	for {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(crt), &got); err != nil {
			t.Fatal(err)
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == cmapi.CertificateConditionReady && cond.Status == cmmeta.ConditionTrue {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Certificate %s/%s not Ready after %v; status: %s", crt.Namespace, crt.Name, timeout, conditions(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func conditions(crt cmapi.Certificate) string {
	s := ""
	for _, c := range crt.Status.Conditions {
		s += fmt.Sprintf("[%s=%s %s: %s] ", c.Type, c.Status, c.Reason, c.Message)
	}
	return s
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
