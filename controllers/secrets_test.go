package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wsgate/wsgate/internal/testcerts"
)

func tlsSecret(rv string, leaf testcerts.Leaf) corev1.Secret {
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tls", ResourceVersion: rv},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}
}

func TestSecretParserKeepsTheLastGoodCertificate(t *testing.T) {
	ca := testcerts.NewCA(t, "test CA")
	good := ca.Issue(t, time.Hour, "ws.example.com")
	other := ca.Issue(t, time.Hour, "ws.example.com")
	key := types.NamespacedName{Namespace: "ns", Name: "tls"}
	wanted := func(types.NamespacedName) bool { return true }
	p := &secretParser{now: time.Now}

	got := p.update([]corev1.Secret{tlsSecret("1", good)}, wanted)
	first := got[key].Certificate
	if first == nil || got[key].Problem != "" {
		t.Fatalf("a good Secret: %+v", got[key])
	}
	if again := p.update([]corev1.Secret{tlsSecret("1", good)}, wanted); again[key].Certificate != first {
		t.Error("an unchanged resourceVersion was parsed again")
	}

	steps := []struct {
		name        string
		secret      corev1.Secret
		wantProblem string
	}{
		{"bad PEM", tlsSecret("2", testcerts.Leaf{CertPEM: []byte("not pem"), KeyPEM: good.KeyPEM}), "invalid"},
		{"key of another certificate", tlsSecret("3", testcerts.Leaf{CertPEM: good.CertPEM, KeyPEM: other.KeyPEM}), "invalid"},
		{"missing key", corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tls", ResourceVersion: "4"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: good.CertPEM}}, "no tls.crt and tls.key"},
		{"an Opaque Secret with a good key pair", func() corev1.Secret {
			s := tlsSecret("41", good)
			s.Type = corev1.SecretTypeOpaque
			return s
		}(), `of type "Opaque", not kubernetes.io/tls`},
		{"data dropped for its size", func() corev1.Secret {
			s := tlsSecret("42", good)
			s.Data[corev1.TLSCertKey] = append(append([]byte{}, good.CertPEM...), make([]byte, MaxCertificateSecretBytes)...)
			out, _ := TrimSecret(&s)
			return *out.(*corev1.Secret)
		}(), "more than the 65536 that wsgate reads"},
		{"expired certificate", tlsSecret("5", ca.Issue(t, -time.Minute, "ws.example.com")), "expired"},
	}
	for _, s := range steps {
		got := p.update([]corev1.Secret{s.secret}, wanted)[key]
		if got.Certificate != first || !strings.Contains(got.Problem, s.wantProblem) {
			t.Errorf("%s: certificate kept=%v problem %q, want the last good one and %q", s.name, got.Certificate == first, got.Problem, s.wantProblem)
		}
	}

	renewed := p.update([]corev1.Secret{tlsSecret("6", other)}, wanted)[key]
	if renewed.Certificate == first || renewed.Certificate == nil || renewed.Problem != "" {
		t.Errorf("a renewed Secret must replace the certificate: %+v", renewed)
	}

	gone := p.update(nil, wanted)[key]
	if gone.Certificate != renewed.Certificate || !strings.Contains(gone.Problem, "deleted") {
		t.Errorf("a deleted Secret still referenced keeps its certificate: %+v", gone)
	}
	if _, ok := p.update(nil, func(types.NamespacedName) bool { return false })[key]; ok {
		t.Error("a deleted Secret nobody references is forgotten")
	}
}

func TestTrimSecretKeepsOnlyTheKeyPair(t *testing.T) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"x": "y"}, ManagedFields: []metav1.ManagedFieldsEntry{{}}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k"), "ca.crt": []byte("ca"), "other": []byte("o")},
	}
	out, _ := TrimSecret(s)
	got := out.(*corev1.Secret)
	if len(got.Data) != 2 || string(got.Data["tls.crt"]) != "c" || string(got.Data["tls.key"]) != "k" ||
		got.Annotations != nil || got.ManagedFields != nil || got.Labels["a"] != "b" || got.Type != corev1.SecretTypeTLS {
		t.Errorf("TrimSecret = %+v", got)
	}
}

func TestSecretParserReadsOnlyReferencedSecrets(t *testing.T) {
	ca := testcerts.NewCA(t, "test CA")
	good := ca.Issue(t, time.Hour, "ws.example.com")
	used, unused := tlsSecret("1", good), tlsSecret("1", good)
	unused.Name = "unused"
	unused.Data[corev1.TLSCertKey] = []byte("not PEM: parsing it would record a problem")
	parses := 0 // each parse reads the clock once
	p := &secretParser{now: func() time.Time { parses++; return time.Now() }}
	refs := map[types.NamespacedName]bool{{Namespace: "ns", Name: "tls"}: true}
	wanted := func(k types.NamespacedName) bool { return refs[k] }

	got := p.update([]corev1.Secret{used, unused}, wanted)
	if len(got) != 1 || got[types.NamespacedName{Namespace: "ns", Name: "tls"}].Certificate == nil {
		t.Fatalf("update = %+v, want only the referenced Secret, parsed", got)
	}
	if parses != 1 {
		t.Errorf("%d Secrets parsed, want 1: an unreferenced Secret is not parsed", parses)
	}
	if len(p.entries) != 1 {
		t.Errorf("the parser keeps %d entries, want 1: an unreferenced Secret is not held", len(p.entries))
	}
	// Once nobody references it, the parsed certificate is dropped too.
	refs = nil
	if got := p.update([]corev1.Secret{used, unused}, wanted); len(got) != 0 || len(p.entries) != 0 {
		t.Errorf("with no references: update = %+v, %d entries; want none", got, len(p.entries))
	}
}

func TestTrimSecretDropsOversizeData(t *testing.T) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "ns"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": make([]byte, MaxCertificateSecretBytes), "tls.key": []byte("k")},
	}
	out, _ := TrimSecret(s)
	got := out.(*corev1.Secret)
	if len(got.Data) != 0 || got.Annotations[oversizeAnnotation] != "65537" {
		t.Errorf("TrimSecret of %d bytes kept %d data entries and annotations %v; want none and the size", MaxCertificateSecretBytes+1, len(got.Data), got.Annotations)
	}
}
