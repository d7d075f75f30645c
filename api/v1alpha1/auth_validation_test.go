package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// jwtIssuer is an auth fragment with issuer-fetched keys, at the
// indentation of spec's own fields.
const jwtIssuer = "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys:\n      source: Issuer\n"

func TestInvalidAuthIsRefusedByKubectlApply(t *testing.T) {
	cases := []struct {
		name, spec, field, message string
	}{
		{"auth that checks nothing", valid + "auth: {}\n",
			"spec.auth", "auth needs jwt, forwardAuth or both"},
		{"a token without audiences", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: []\n    keys:\n      source: Issuer\n",
			"spec.auth.jwt.audiences", "should have at least 1 items"},
		{"a token without keys", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n",
			"spec.auth.jwt.keys", "Required value"},
		{"an unknown key source", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys:\n      source: URL\n",
			"spec.auth.jwt.keys.source", "supported values"},
		{"keys from a Secret without naming it", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys:\n      source: Secret\n",
			"spec.auth.jwt.keys", "keys.secret is required with source Secret or SharedSecret"},
		{"a Secret named for issuer-fetched keys", valid + jwtIssuer + "      secret: {name: jwks}\n",
			"spec.auth.jwt.keys", "keys.secret is required with source Secret or SharedSecret, and only then"},
		{"issuer-fetched keys over http", valid + "auth:\n  jwt:\n    issuer: http://login.example.com\n    audiences: [rooms]\n    keys:\n      source: Issuer\n",
			"spec.auth.jwt", "the issuer must be an https:// URL"},
		{"a token without an issuer", valid + "auth:\n  jwt:\n    audiences: [rooms]\n    keys:\n      source: Secret\n      secret: {name: jwks}\n",
			"spec.auth.jwt", "issuer is required"},
		{"an issuer for the ServiceAccount issuer", valid + "auth:\n  jwt:\n    issuer: https://kubernetes.default.svc\n    audiences: [rooms]\n    keys:\n      source: ServiceAccountIssuer\n",
			"spec.auth.jwt", "leave issuer unset"},
		{"a Secret name that is not a DNS name", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys:\n      source: Secret\n      secret: {name: ../jwks}\n",
			"spec.auth.jwt.keys.secret.name", "should match"},
		{"pod binding without a token", valid + "auth:\n  forwardAuth: {service: auth, port: 80}\n  podBinding: {label: owner}\n",
			"spec.auth", "podBinding compares a token claim with the pod: it needs jwt"},
		{"pod binding on a label and the name", valid + jwtIssuer + "  podBinding: {label: owner, podName: true}\n",
			"spec.auth.podBinding", "exactly one of label, annotation or podName"},
		{"pod binding on nothing", valid + jwtIssuer + "  podBinding: {claim: sub}\n",
			"spec.auth.podBinding", "exactly one of label, annotation or podName"},
		{"pod binding on an annotation the gateway does not keep", valid + jwtIssuer + "  podBinding: {annotation: example.com/owner}\n",
			"spec.auth.podBinding.annotation", "should match"},
		{"the identity in the Authorization header", valid + jwtIssuer + "  identityHeaders: {subject: Authorization}\n",
			"spec.auth.identityHeaders.subject", "cannot hold an identity"},
		{"the identity in X-Forwarded-For", valid + jwtIssuer + "  identityHeaders:\n    claims: [{claim: email, header: X-Forwarded-For}]\n",
			"spec.auth.identityHeaders.claims[0].header", "cannot hold an identity"},
		{"the identity in a Sec-WebSocket header", valid + jwtIssuer + "  identityHeaders: {subject: sec-websocket-protocol}\n",
			"spec.auth.identityHeaders.subject", "cannot hold an identity"},
		{"a header name with an underscore", valid + jwtIssuer + "  identityHeaders: {subject: X_User}\n",
			"spec.auth.identityHeaders.subject", "should match"},
		{"an unknown expiry policy", valid + jwtIssuer + "  onExpiry: Never\n",
			"spec.auth.onExpiry", "supported values"},
		{"forward auth to a URL", valid + "auth:\n  forwardAuth: {service: \"http://169.254.169.254\", port: 80}\n",
			"spec.auth.forwardAuth.service", "should match"},
		{"forward auth without a port", valid + "auth:\n  forwardAuth: {service: auth}\n",
			"spec.auth.forwardAuth.port", "Required value"},
		{"a forward-auth timeout of a minute", valid + "auth:\n  forwardAuth: {service: auth, port: 80, timeout: 1m}\n",
			"spec.auth.forwardAuth.timeout", "between 100ms and 10s"},
		{"a cookie name with a space", valid + "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys: {source: Issuer}\n    token: {cookie: \"a b\"}\n",
			"spec.auth.jwt.token.cookie", "should match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refusedRoute(t, tc.spec, tc.field, tc.message)
		})
	}
}

func TestValidAuthIsAcceptedWithDefaults(t *testing.T) {
	ns := env.Namespace(t)
	apply(t, ns, route("private", valid, jwtIssuer,
		"  podBinding: {label: example.com/owner}\n",
		"  identityHeaders:\n    subject: X-User\n    claims: [{claim: email, header: X-User-Email}]\n",
		"  forwardAuth: {service: auth, port: http}\n"))
	a := get(t, ns, "private").Spec.Auth
	if a == nil || a.JWT == nil || a.PodBinding == nil || a.ForwardAuth == nil {
		t.Fatalf("auth = %+v", a)
	}
	if a.OnExpiry != wsgatev1alpha1.ExpiryClose {
		t.Errorf("onExpiry defaults to %q, want Close", a.OnExpiry)
	}
	if a.PodBinding.Claim != "sub" {
		t.Errorf("podBinding.claim defaults to %q, want sub", a.PodBinding.Claim)
	}
	if a.ForwardAuth.Path != "/" {
		t.Errorf("forwardAuth.path defaults to %q, want /", a.ForwardAuth.Path)
	}
	apply(t, ns, route("from-secret", valid, "auth:\n  jwt:\n    issuer: https://login.example.com\n    audiences: [rooms]\n    keys:\n      source: Secret\n      secret: {name: jwks}\n"))
	if k := get(t, ns, "from-secret").Spec.Auth.JWT.Keys.Secret.Key; k != wsgatev1alpha1.DefaultJWKSKey {
		t.Errorf("keys.secret.key defaults to %q, want %s", k, wsgatev1alpha1.DefaultJWKSKey)
	}
	apply(t, ns, route("in-cluster", valid, "auth:\n  jwt:\n    audiences: [rooms]\n    keys: {source: ServiceAccountIssuer}\n  podBinding: {annotation: bind.wsgate.io/owner}\n"))

	out, err := kubectl(t, "", "explain", "wsroute.spec.auth.jwt")
	if err != nil || !strings.Contains(out, "base64url.bearer.authorization.k8s.io") || !strings.Contains(out, "never fetched") {
		t.Errorf("kubectl explain wsroute.spec.auth.jwt does not document the token's places and key headers: %v\n%s", err, out)
	}
}

func TestGrantsOfTokenIssuers(t *testing.T) {
	doc := grantDoc("issuers", "namespaces: [games]\ntokenIssuers: [\"https://login.example.com\", \"https://127.0.0.1:8443/realms/x\"]\n")
	if out, err := kubectl(t, doc, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply refused a grant of token issuers only: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = kubectl(t, "", "delete", "wsgrant", "issuers") })
	out, err := kubectl(t, "", "get", "wsg", "issuers", "-o", "wide")
	if err != nil || !strings.Contains(out, "TOKENISSUERS") || !strings.Contains(out, "https://login.example.com") {
		t.Errorf("kubectl get wsg -o wide does not show the token issuers: %v\n%s", err, out)
	}
	for name, spec := range map[string]string{
		"bad-http-issuer":     "namespaces: [games]\ntokenIssuers: [\"http://login.example.com\"]\n",
		"bad-issuer-userinfo": "namespaces: [games]\ntokenIssuers: [\"https://u:p@login.example.com\"]\n",
		"bad-issuer-query":    "namespaces: [games]\ntokenIssuers: [\"https://login.example.com/?x=1\"]\n",
	} {
		out, err := kubectl(t, grantDoc(name, spec), "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "spec.tokenIssuers[0]") {
			t.Errorf("%s: kubectl apply did not refuse it naming spec.tokenIssuers[0]: %v\n%s", name, err, out)
		}
		var g wsgatev1alpha1.WsGrant
		if err := env.Client.Get(context.Background(), types.NamespacedName{Name: name}, &g); err == nil {
			t.Errorf("the invalid grant %s exists", name)
		}
	}
}
