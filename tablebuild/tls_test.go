package tablebuild

import (
	"crypto/tls"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

func withTLS(secret string) routeOpt {
	return func(r *v1alpha1.WsRoute) { r.Spec.TLS = &v1alpha1.RouteTLS{SecretName: secret} }
}

func TestCertificatesFollowRoutesAndSecrets(t *testing.T) {
	certA, certB, certDef := &tls.Certificate{}, &tls.Certificate{}, &tls.Certificate{}
	secrets := map[types.NamespacedName]TLSSecret{
		{Namespace: "a", Name: "a-tls"}:     {Certificate: certA},
		{Namespace: "b", Name: "b-tls"}:     {Certificate: certB, Problem: "its certificate or key is invalid"},
		{Namespace: "b", Name: "broken"}:    {Problem: "it has no tls.crt and tls.key"},
		{Namespace: "gw", Name: "default"}:  {Certificate: certDef},
		{Namespace: "c", Name: "c-unused"}:  {Certificate: &tls.Certificate{}},
		{Namespace: "a", Name: "other-tls"}: {Certificate: &tls.Certificate{}},
	}
	in := Input{
		Grants: grantAll,
		Routes: []*v1alpha1.WsRoute{
			newRoute("a", "old", 1, hosts("ws.example.com", "*.rooms.example.com"), prefix("/a"), withTLS("a-tls")),
			// Same host, other prefix, younger: the older route's
			// certificate serves the host.
			newRoute("a", "young", 2, hosts("ws.example.com"), prefix("/young"), withTLS("other-tls")),
			newRoute("b", "renewing", 3, hosts("b.example.com"), prefix("/b"), withTLS("b-tls")),
			newRoute("b", "broken", 4, hosts("broken.example.com"), prefix("/b"), withTLS("broken")),
			newRoute("b", "missing", 5, hosts("missing.example.com"), prefix("/b"), withTLS("nope")),
			// A route in namespace c cannot use a Secret of namespace a.
			newRoute("c", "cross", 6, hosts("c.example.com"), prefix("/c"), withTLS("a-tls")),
		},
		Secrets: secrets,
	}
	res := Build(in, Options{DefaultCertificate: types.NamespacedName{Namespace: "gw", Name: "default"}})

	for name, want := range map[string]*tls.Certificate{
		"ws.example.com":        certA,
		"x.rooms.example.com":   certA,
		"b.example.com":         certB,
		"broken.example.com":    certDef,
		"missing.example.com":   certDef,
		"c.example.com":         certDef,
		"unknown.example.org":   certDef,
		"a.x.rooms.example.com": certDef,
	} {
		if got := res.Table.Certificate(name); got != want {
			t.Errorf("Certificate(%q) is not the expected one", name)
		}
	}
	problems := map[string]string{
		"old":      "",
		"young":    "",
		"renewing": "serving its last good certificate",
		"broken":   "it has no tls.crt and tls.key",
		"missing":  "Secret b/nope not found; wsgate reads only Secrets of type kubernetes.io/tls labelled wsgate.io/certificate=true",
		"cross":    "Secret c/a-tls not found",
	}
	for _, st := range []struct{ ns, name string }{{"a", "old"}, {"a", "young"}, {"b", "renewing"}, {"b", "broken"}, {"b", "missing"}, {"c", "cross"}} {
		got := res.Routes[key(st.ns, st.name)].CertificateProblem
		want := problems[st.name]
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s/%s: CertificateProblem %q, want %q", st.ns, st.name, got, want)
		}
	}
}

// TestCertificatesFollowOwnership replays the certificate takeover: the
// victim owns victim.example.com without a certificate of its own (the
// default serves it), and the attacker, in another namespace, names the
// victim's host and a wildcard over it with a Secret of its own.
func TestCertificatesFollowOwnership(t *testing.T) {
	certDef, certVictim, certAttacker := &tls.Certificate{}, &tls.Certificate{}, &tls.Certificate{}
	secrets := map[types.NamespacedName]TLSSecret{
		{Namespace: "gw", Name: "default"}:    {Certificate: certDef},
		{Namespace: "victim", Name: "own"}:    {Certificate: certVictim},
		{Namespace: "attacker", Name: "grab"}: {Certificate: certAttacker},
	}
	routes := []*v1alpha1.WsRoute{
		newRoute("victim", "rooms", 0, hosts("victim.example.com"), prefix("/rooms")),
		newRoute("victim", "tls", 1, hosts("secure.example.com"), withTLS("own")),
		newRoute("attacker", "shadow", 2, hosts("victim.example.com"), prefix("/rooms/127.0.9.50"), withTLS("grab")),
		newRoute("attacker", "secure", 3, hosts("secure.example.com"), prefix("/x"), withTLS("grab")),
		newRoute("attacker", "wild", 4, hosts("*.example.com"), withTLS("grab")),
	}
	res := Build(Input{Grants: grantAll, Routes: routes, Secrets: secrets},
		Options{DefaultCertificate: types.NamespacedName{Namespace: "gw", Name: "default"}})
	for _, k := range []routing.RouteKey{key("attacker", "shadow"), key("attacker", "secure")} {
		if st := res.Routes[k]; st.Reason != v1alpha1.ReasonHostnameConflict {
			t.Errorf("%s: reason %q (%s), want HostnameConflict", k, st.Reason, st.Message)
		}
	}
	if st := res.Routes[key("attacker", "wild")]; !st.Accepted {
		t.Fatalf("attacker/wild is not accepted (%s): the test needs the wildcard in the table", st.Message)
	}
	for name, want := range map[string]struct {
		cert *tls.Certificate
		who  string
	}{
		"victim.example.com": {certDef, "the default (the victim's host has no certificate of its own)"},
		"VICTIM.example.com": {certDef, "the default"},
		"secure.example.com": {certVictim, "the victim's"},
		"other.example.com":  {certAttacker, "the wildcard owner's (nobody else names it)"},
	} {
		if got := res.Table.Certificate(name); got != want.cert {
			t.Errorf("Certificate(%q) is not %s", name, want.who)
		}
	}
}
