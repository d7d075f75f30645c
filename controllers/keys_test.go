package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/tablebuild"
)

func sharedKeySecret(rv string, key []byte) corev1.Secret {
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "keys", ResourceVersion: rv},
		Data:       map[string][]byte{wsgatev1alpha1.DefaultJWKSKey: key},
	}
}

func TestKeySecretParserKeepsTheLastGoodKeysUntilDeleted(t *testing.T) {
	ref := tablebuild.KeySecretRef{Namespace: "ns", Name: "keys", Key: wsgatev1alpha1.DefaultJWKSKey, Shared: true}
	wanted := map[tablebuild.KeySecretRef]bool{ref: true}
	var p keySecretParser

	good := p.update([]corev1.Secret{sharedKeySecret("1", []byte(strings.Repeat("k", 32)))}, wanted)[ref]
	if good.Keys == nil || good.Problem != "" {
		t.Fatalf("a good shared key: %+v", good)
	}
	broken := p.update([]corev1.Secret{sharedKeySecret("2", []byte("short"))}, wanted)[ref]
	if broken.Keys != good.Keys || !strings.Contains(broken.Problem, "not a usable shared key") {
		t.Errorf("a broken Secret: %+v, want the last good keys and a problem", broken)
	}
	// The same resourceVersion is not parsed again.
	again := p.update([]corev1.Secret{sharedKeySecret("2", []byte(strings.Repeat("k", 32)))}, wanted)[ref]
	if again.Problem == "" {
		t.Error("a Secret was parsed again at the same resourceVersion")
	}
	if got, ok := p.update(nil, wanted)[ref]; ok {
		t.Errorf("a deleted Secret: %+v, want no entry (its keys go with it)", got)
	}
	// As a JSON Web Key Set, the same data is no key set.
	jwks := ref
	jwks.Shared = false
	out := p.update([]corev1.Secret{sharedKeySecret("3", []byte(strings.Repeat("k", 32)))}, map[tablebuild.KeySecretRef]bool{jwks: true})
	if e := out[jwks]; e.Keys != nil || !strings.Contains(e.Problem, "JSON Web Key Set") {
		t.Errorf("shared key read as a JWKS: %+v", e)
	}
	if _, ok := out[ref]; ok {
		t.Error("a ref no route names is still returned")
	}
	missingKey := tablebuild.KeySecretRef{Namespace: "ns", Name: "keys", Key: "other.json"}
	if e := p.update([]corev1.Secret{sharedKeySecret("3", nil)}, map[tablebuild.KeySecretRef]bool{missingKey: true})[missingKey]; !strings.Contains(e.Problem, "no other.json") {
		t.Errorf("a missing data key: %+v", e)
	}
}

func TestTrimKeySecret(t *testing.T) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "keys", ResourceVersion: "1",
			Annotations: map[string]string{"big": "annotation"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Data: map[string][]byte{"jwks.json": []byte("{}"), "other": []byte("x")},
	}
	out, _ := TrimKeySecret(s)
	got := out.(*corev1.Secret)
	if len(got.Data) != 2 || got.Annotations != nil || got.ManagedFields != nil {
		t.Errorf("trimmed %+v", got)
	}
	s.Data["big"] = make([]byte, MaxKeySecretBytes)
	out, _ = TrimKeySecret(s)
	got = out.(*corev1.Secret)
	if got.Data != nil || got.Annotations[oversizeAnnotation] == "" {
		t.Errorf("an oversize Secret keeps %d data keys, annotations %v", len(got.Data), got.Annotations)
	}
	ref := tablebuild.KeySecretRef{Namespace: "ns", Name: "keys", Key: "jwks.json"}
	var p keySecretParser
	if e := p.update([]corev1.Secret{*got}, map[tablebuild.KeySecretRef]bool{ref: true})[ref]; !strings.Contains(e.Problem, "more than the 65536") {
		t.Errorf("an oversize Secret: %+v", e)
	}
}

func TestTrimServiceKeepsSelectorAndPortsOnly(t *testing.T) {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "authz", ResourceVersion: "1", Annotations: map[string]string{"a": "b"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "authz"}, ClusterIP: "10.96.0.10", ExternalIPs: []string{"1.2.3.4"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), NodePort: 30000, Protocol: corev1.ProtocolTCP}},
		},
	}
	out, _ := TrimService(s)
	got := out.(*corev1.Service)
	want := corev1.ServiceSpec{
		Selector: map[string]string{"app": "authz"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
	}
	if got.Annotations != nil || got.Spec.ClusterIP != "" || got.Spec.ExternalIPs != nil || got.Spec.Ports[0].NodePort != 0 ||
		got.Spec.Selector["app"] != want.Selector["app"] || got.Spec.Ports[0] != want.Ports[0] {
		t.Errorf("trimmed %+v", got)
	}
}
