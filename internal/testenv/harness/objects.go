package harness

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
)

// DeleteIgnoringNotFound deletes obj, waiting up to timeout, and ignores
// every error: it is for cleanups, when the object may be gone already
// and the control plane may be down (or gone with the test binary).
func DeleteIgnoringNotFound(c client.Client, timeout time.Duration, obj client.Object) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = client.IgnoreNotFound(c.Delete(ctx, obj))
}

// TLSSecret is a kubernetes.io/tls Secret holding leaf, labelled for
// wsgate.
func TLSSecret(ns, name string, leaf testcerts.Leaf) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{wsgatev1alpha1.CertificateLabel: "true"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}
}
