package tablebuild

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

const idp = "https://idp.example.com"

// signer is a test token issuer: an Ed25519 key and the set that holds it.
type signer struct {
	priv ed25519.PrivateKey
	keys []jose.JSONWebKey
}

func newSigner(t *testing.T, seed byte) *signer {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(slices.Repeat([]byte{seed}, ed25519.SeedSize))
	return &signer{priv: priv, keys: []jose.JSONWebKey{{Key: priv.Public(), KeyID: "k1", Algorithm: string(jose.EdDSA), Use: "sig"}}}
}

func (s *signer) token(t *testing.T, iss, aud, sub string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: s.priv}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: iss, Audience: jwt.Audience{aud}, Subject: sub,
		Expiry: jwt.NewNumericDate(t0.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(t0),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// staticSet is a fixed key set, as a parsed key Secret gives.
type staticSet struct{ keys []jose.JSONWebKey }

func (s staticSet) Keys(_ context.Context, kid string) ([]jose.JSONWebKey, error) {
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if kid == "" || k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out, nil
}

func (staticSet) Symmetric() bool { return false }

// fakeRemote is a fetched key set in a given state.
type fakeRemote struct {
	staticSet
	issuer string
	state  auth.KeyState
}

func (f *fakeRemote) Issuer() string       { return f.issuer }
func (f *fakeRemote) State() auth.KeyState { return f.state }
func loadedRemote(s *signer, iss string) *fakeRemote {
	return &fakeRemote{staticSet: staticSet{s.keys}, issuer: iss, state: auth.KeyState{Loaded: true, Keys: len(s.keys)}}
}

// fakeKeyring records the issuers it is asked for.
type fakeKeyring struct {
	issuers map[string]*fakeRemote
	sa      *fakeRemote
	asked   []string
}

func (k *fakeKeyring) Issuer(url string) RemoteKeys {
	k.asked = append(k.asked, url)
	if r, ok := k.issuers[url]; ok {
		return r
	}
	return &fakeRemote{}
}

func (k *fakeKeyring) ServiceAccount() (RemoteKeys, bool) {
	if k.sa == nil {
		return nil, false
	}
	return k.sa, true
}

func withAuth(a v1alpha1.RouteAuth) routeOpt {
	return func(r *v1alpha1.WsRoute) { r.Spec.Auth = &a }
}

func jwtFrom(source v1alpha1.KeySource, issuer string) *v1alpha1.JWTAuth {
	j := &v1alpha1.JWTAuth{Issuer: issuer, Audiences: []string{"games"}, Keys: v1alpha1.JWTKeys{Source: source}}
	if source == v1alpha1.KeysFromSecret || source == v1alpha1.KeysFromSharedSecret {
		j.Keys.Secret = &v1alpha1.KeySecretRef{Name: "keys"}
	}
	return j
}

func withTokenIssuers(urls ...string) grantOpt {
	return func(s *v1alpha1.WsGrantSpec) { s.TokenIssuers = append(s.TokenIssuers, urls...) }
}

func authOf(t *testing.T, res *Result, k routing.RouteKey) *routing.Auth {
	t.Helper()
	r, ok := res.Table.Route(k)
	if !ok {
		t.Fatalf("%s is not in the table (%+v)", k, res.Routes[k])
	}
	if r.Auth == nil {
		t.Fatalf("%s has no auth", k)
	}
	return r.Auth
}

func TestAccess(t *testing.T) {
	fwd := &v1alpha1.ForwardAuth{Service: "authz", Port: intstr.FromInt32(80)}
	bind := &v1alpha1.PodBinding{Label: "user"}
	tests := []struct {
		auth *v1alpha1.RouteAuth
		want string
	}{
		{nil, "Open"},
		{&v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp)}, "Token"},
		{&v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), PodBinding: bind}, "Token bound to pod"},
		{&v1alpha1.RouteAuth{ForwardAuth: fwd}, "ForwardAuth"},
		{&v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), ForwardAuth: fwd}, "Token+ForwardAuth"},
		{&v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), PodBinding: bind, ForwardAuth: fwd}, "Token bound to pod+ForwardAuth"},
	}
	for _, tc := range tests {
		r := newRoute("a", "r", 0)
		r.Spec.Auth = tc.auth
		res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{r}}, Options{})
		st := res.Routes[key("a", "r")]
		if st.Access != tc.want {
			t.Errorf("auth %+v: access %q, want %q", tc.auth, st.Access, tc.want)
		}
		if (tc.auth == nil) != (st.Auth == nil) {
			t.Errorf("auth %+v: AuthReady %+v, want it exactly when the route has auth", tc.auth, st.Auth)
		}
		rt, _ := res.Table.Route(key("a", "r"))
		if (tc.auth == nil) != (rt.Auth == nil) {
			t.Errorf("auth %+v: table auth %+v, want it exactly when the route has auth", tc.auth, rt.Auth)
		}
	}
}

// TestTokenIssuerNeedsAGrant: a namespace may have the gateway fetch keys
// only from an issuer a WsGrant gives it, by exact URL; an attacker's
// route that names another namespace's issuer (or any other URL) is not
// accepted, and the gateway fetches nothing for it.
func TestTokenIssuerNeedsAGrant(t *testing.T) {
	s := newSigner(t, 1)
	kr := &fakeKeyring{issuers: map[string]*fakeRemote{idp: loadedRemote(s, idp)}}
	grants := []*v1alpha1.WsGrant{
		grant("*", withHosts("*"), withCatchAll),
		grant("good", withTokenIssuers(idp)),
		grant("shared", withTokenIssuers("https://other.example.com")),
	}
	issuerAuth := func(url string) routeOpt {
		return withAuth(v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromIssuer, url)})
	}
	routes := []*v1alpha1.WsRoute{
		newRoute("good", "r", 0, hosts("good.example.com"), issuerAuth(idp)),
		newRoute("evil", "steal", 1, hosts("evil.example.com"), issuerAuth(idp)),
		newRoute("evil", "metadata", 2, hosts("evil.example.com"), prefix("/m"), issuerAuth("https://169.254.169.254")),
		newRoute("good", "slash", 3, hosts("good.example.com"), prefix("/s"), issuerAuth(idp+"/")),
	}
	res := Build(Input{Grants: grants, Routes: routes}, Options{Keyring: kr})

	if st := res.Routes[key("good", "r")]; !st.Accepted || st.Auth == nil || !st.Auth.Ready {
		t.Errorf("good/r: %+v, want accepted with AuthReady", st)
	}
	for _, k := range []routing.RouteKey{key("evil", "steal"), key("evil", "metadata"), key("good", "slash")} {
		st := res.Routes[k]
		if st.Accepted || st.Reason != v1alpha1.ReasonTokenIssuerNotAllowed || !strings.Contains(st.Message, "tokenIssuers") {
			t.Errorf("%s: accepted %v reason %q (%s), want TokenIssuerNotAllowed", k, st.Accepted, st.Reason, st.Message)
		}
		if _, ok := res.Table.Route(k); ok {
			t.Errorf("%s is in the table", k)
		}
		if st.Auth != nil {
			t.Errorf("%s: AuthReady %+v on a route that is not accepted", k, st.Auth)
		}
	}
	if !slices.Equal(kr.asked, []string{idp}) || !slices.Equal(res.TokenIssuers, []string{idp}) {
		t.Errorf("keyring asked for %v, TokenIssuers %v; want only the granted %s", kr.asked, res.TokenIssuers, idp)
	}

	ra := authOf(t, res, key("good", "r"))
	if !ra.TrustedSubjects {
		t.Error("a granted issuer's subjects are not trusted across the gateway")
	}
	ctx := context.Background()
	if _, err := ra.Tokens.Verify(ctx, s.token(t, idp, "games", "alice"), t0); err != nil {
		t.Errorf("a token of the issuer is refused: %v", err)
	}
	if _, err := ra.Tokens.Verify(ctx, s.token(t, "https://evil.example.com", "games", "alice"), t0); err == nil {
		t.Error("a token of another issuer is accepted")
	}
	if _, err := ra.Tokens.Verify(ctx, s.token(t, idp, "other", "alice"), t0); err == nil {
		t.Error("a token for another audience is accepted")
	}
}

// TestKeySecretIsAlwaysTheRoutesNamespace: a route names only a Secret's
// name; a Secret of that name in another namespace is never used.
func TestKeySecretIsAlwaysTheRoutesNamespace(t *testing.T) {
	s := newSigner(t, 2)
	secrets := map[KeySecretRef]KeySecret{
		{Namespace: "a", Name: "keys", Key: v1alpha1.DefaultJWKSKey}: {Keys: staticSet{s.keys}},
	}
	secretAuth := withAuth(v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp)})
	res := Build(Input{Grants: grantAll, KeySecrets: secrets, Routes: []*v1alpha1.WsRoute{
		newRoute("a", "own", 0, hosts("a.example.com"), secretAuth),
		newRoute("b", "cross", 1, hosts("b.example.com"), secretAuth),
	}}, Options{})

	own := res.Routes[key("a", "own")]
	if own.Auth == nil || !own.Auth.Ready || own.Auth.Reason != v1alpha1.ReasonKeysLoaded {
		t.Errorf("a/own: AuthReady %+v, want True KeysLoaded", own.Auth)
	}
	tok := s.token(t, idp, "games", "alice")
	if authOf(t, res, key("a", "own")).TrustedSubjects {
		t.Error("the subjects of keys a tenant holds are trusted across the gateway: the tenant can mint them")
	}
	if _, err := authOf(t, res, key("a", "own")).Tokens.Verify(context.Background(), tok, t0); err != nil {
		t.Errorf("a/own refuses a token signed with its Secret's key: %v", err)
	}

	cross := res.Routes[key("b", "cross")]
	if !cross.Accepted || cross.Auth == nil || cross.Auth.Ready || cross.Auth.Reason != v1alpha1.ReasonKeySecretUnusable ||
		!strings.Contains(cross.Auth.Message, "Secret b/keys not found") {
		t.Errorf("b/cross: %+v, AuthReady %+v; want KeySecretUnusable naming b/keys", cross, cross.Auth)
	}
	ra := authOf(t, res, key("b", "cross"))
	if ra.Problem == "" || ra.Tokens == nil {
		t.Errorf("b/cross: Problem %q, Tokens %v; want a problem and a verifier that refuses", ra.Problem, ra.Tokens)
	}
	if _, err := ra.Tokens.Verify(context.Background(), tok, t0); err == nil {
		t.Error("b/cross accepts a token signed with namespace a's key")
	}
	if ref, ok := KeySecretRefOf(newRoute("b", "cross", 1, secretAuth)); !ok || ref.Namespace != "b" {
		t.Errorf("KeySecretRefOf = %+v, %v; want namespace b", ref, ok)
	}
}

func TestKeySecretStates(t *testing.T) {
	s := newSigner(t, 3)
	good := staticSet{s.keys}
	ref := func(name string, shared bool) KeySecretRef {
		return KeySecretRef{Namespace: "a", Name: name, Key: v1alpha1.DefaultJWKSKey, Shared: shared}
	}
	secrets := map[KeySecretRef]KeySecret{
		ref("fine", false):       {Keys: good},
		ref("renewing", false):   {Keys: good, Problem: "its data is not a JSON Web Key Set"},
		ref("broken", false):     {Problem: "it is 70000 bytes, more than the 65536 that wsgate reads"},
		ref("shared-only", true): {Keys: good},
	}
	route := func(name, secret string, src v1alpha1.KeySource) *v1alpha1.WsRoute {
		j := jwtFrom(src, idp)
		j.Keys.Secret.Name = secret
		return newRoute("a", name, 0, prefix("/"+name), withAuth(v1alpha1.RouteAuth{JWT: j}))
	}
	res := Build(Input{Grants: grantAll, KeySecrets: secrets, Routes: []*v1alpha1.WsRoute{
		route("fine", "fine", v1alpha1.KeysFromSecret),
		route("renewing", "renewing", v1alpha1.KeysFromSecret),
		route("broken", "broken", v1alpha1.KeysFromSecret),
		route("missing", "nope", v1alpha1.KeysFromSecret),
		// The same Secret read as a JWKS and as a shared key are two
		// different things.
		route("as-jwks", "shared-only", v1alpha1.KeysFromSecret),
		route("as-shared", "shared-only", v1alpha1.KeysFromSharedSecret),
	}}, Options{})
	tests := []struct {
		name      string
		ready     bool
		reason    string
		message   string
		problem   bool
		verifiesS bool
	}{
		{"fine", true, v1alpha1.ReasonKeysLoaded, "Secret a/fine", false, true},
		{"renewing", false, v1alpha1.ReasonKeySecretUnusable, "last good keys stay in use", false, true},
		{"broken", false, v1alpha1.ReasonKeySecretUnusable, "more than the 65536", true, false},
		{"missing", false, v1alpha1.ReasonKeySecretUnusable, "labelled wsgate.io/jwks=true", true, false},
		{"as-jwks", false, v1alpha1.ReasonKeySecretUnusable, "not found", true, false},
		{"as-shared", true, v1alpha1.ReasonKeysLoaded, "shared key", false, true},
	}
	tok := s.token(t, idp, "games", "alice")
	for _, tc := range tests {
		st := res.Routes[key("a", tc.name)]
		if st.Auth == nil || st.Auth.Ready != tc.ready || st.Auth.Reason != tc.reason || !strings.Contains(st.Auth.Message, tc.message) {
			t.Errorf("%s: AuthReady %+v, want %v %s %q", tc.name, st.Auth, tc.ready, tc.reason, tc.message)
			continue
		}
		ra := authOf(t, res, key("a", tc.name))
		if (ra.Problem != "") != tc.problem {
			t.Errorf("%s: Problem %q, want one: %v", tc.name, ra.Problem, tc.problem)
		}
		_, err := ra.Tokens.Verify(context.Background(), tok, t0)
		if (err == nil) != tc.verifiesS {
			t.Errorf("%s: Verify: %v, want success %v", tc.name, err, tc.verifiesS)
		}
	}
}

func TestRemoteKeyStates(t *testing.T) {
	s := newSigner(t, 4)
	const sa = "https://kubernetes.default.svc.cluster.local"
	kr := &fakeKeyring{issuers: map[string]*fakeRemote{
		"https://loaded.example.com": loadedRemote(s, "https://loaded.example.com"),
		"https://stale.example.com": {staticSet: staticSet{s.keys}, issuer: "https://stale.example.com",
			state: auth.KeyState{Loaded: true, Keys: 1, LastError: "connection refused"}},
		"https://down.example.com":    {state: auth.KeyState{LastError: "connection refused"}},
		"https://pending.example.com": {},
	}, sa: loadedRemote(s, sa)}
	issuers := []string{"https://loaded.example.com", "https://stale.example.com", "https://down.example.com", "https://pending.example.com"}
	grants := append([]*v1alpha1.WsGrant{grant("a", withTokenIssuers(issuers...))}, grantAll...)
	var routes []*v1alpha1.WsRoute
	for i, iss := range issuers {
		name := strings.TrimSuffix(strings.TrimPrefix(iss, "https://"), ".example.com")
		routes = append(routes, newRoute("a", name, i, prefix("/"+name), withAuth(v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromIssuer, iss)})))
	}
	routes = append(routes, newRoute("a", "sa", 9, prefix("/sa"), withAuth(v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromServiceAccountIssuer, "")})))

	tests := []struct {
		name, reason, message string
		ready, problem        bool
	}{
		{"loaded", v1alpha1.ReasonKeysLoaded, "1 key(s) of issuer", true, false},
		{"stale", v1alpha1.ReasonKeysLoaded, "last refresh failed (connection refused)", true, false},
		{"down", v1alpha1.ReasonIssuerUnreachable, "could not be fetched: connection refused", false, true},
		{"pending", v1alpha1.ReasonIssuerUnreachable, "being fetched", false, true},
		{"sa", v1alpha1.ReasonKeysLoaded, "ServiceAccount issuer", true, false},
	}
	res := Build(Input{Grants: grants, Routes: routes}, Options{Keyring: kr})
	for _, tc := range tests {
		st := res.Routes[key("a", tc.name)]
		if st.Auth == nil || st.Auth.Ready != tc.ready || st.Auth.Reason != tc.reason || !strings.Contains(st.Auth.Message, tc.message) {
			t.Errorf("%s: AuthReady %+v, want %v %s %q", tc.name, st.Auth, tc.ready, tc.reason, tc.message)
			continue
		}
		if ra := authOf(t, res, key("a", tc.name)); (ra.Problem != "") != tc.problem {
			t.Errorf("%s: Problem %q, want one: %v", tc.name, ra.Problem, tc.problem)
		}
	}
	if !slices.Equal(res.TokenIssuers, []string{"https://down.example.com", "https://loaded.example.com", "https://pending.example.com", "https://stale.example.com"}) {
		t.Errorf("TokenIssuers %v", res.TokenIssuers)
	}
	// The ServiceAccount issuer's name comes from its set.
	ra := authOf(t, res, key("a", "sa"))
	if _, err := ra.Tokens.Verify(context.Background(), s.token(t, sa, "games", "system:serviceaccount:a:b"), t0); err != nil {
		t.Errorf("a ServiceAccount token is refused: %v", err)
	}
	if _, err := ra.Tokens.Verify(context.Background(), s.token(t, idp, "games", "x"), t0); err == nil {
		t.Error("the ServiceAccount route accepts a token of another issuer")
	}

	// Without a keyring, or a keyring without the ServiceAccount issuer,
	// such routes have no keys.
	for _, k := range []Keyring{nil, &fakeKeyring{}} {
		res := Build(Input{Grants: grants, Routes: routes}, Options{Keyring: k})
		for _, name := range []string{"loaded", "sa"} {
			st := res.Routes[key("a", name)]
			if st.Auth == nil || st.Auth.Ready || st.Auth.Reason != v1alpha1.ReasonIssuerUnreachable || authOf(t, res, key("a", name)).Problem == "" {
				t.Errorf("keyring %v: %s: AuthReady %+v, want IssuerUnreachable with a problem", k, name, st.Auth)
			}
		}
	}
}

func TestPodBinding(t *testing.T) {
	lbls := func(kv ...string) map[string]string {
		m := map[string]string{"app": "term"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	annotate := func(kv ...string) podOpt {
		return func(p *corev1.Pod) {
			p.Annotations = map[string]string{}
			for i := 0; i+1 < len(kv); i += 2 {
				p.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	pods := compact(
		newPod("a", "alice-term", "10.0.0.1", lbls("user", "alice"), annotate("bind.wsgate.io/email", "alice@example.com")),
		newPod("a", "bob-term", "10.0.0.2", lbls("user", "bob"), annotate("other.io/email", "bob@example.com")),
		newPod("a", "nobody", "10.0.0.3", lbls("user", "")),
		newPod("a", "not-ready", "10.0.0.4", lbls(), notReady),
	)
	j := jwtFrom(v1alpha1.KeysFromSecret, idp)
	route := func(name string, b v1alpha1.PodBinding) *v1alpha1.WsRoute {
		return newRoute("a", name, 0, prefix("/"+name), matchLabels("app", "term"), withAuth(v1alpha1.RouteAuth{JWT: j, PodBinding: &b}))
	}
	res := Build(Input{Grants: grantAll, Pods: pods, Routes: []*v1alpha1.WsRoute{
		route("label", v1alpha1.PodBinding{Label: "user"}),
		route("annotation", v1alpha1.PodBinding{Annotation: "bind.wsgate.io/email", Claim: "email"}),
		route("name", v1alpha1.PodBinding{PodName: true}),
		newRoute("a", "open", 0, prefix("/open"), matchLabels("app", "term")),
	}}, Options{})

	tests := []struct {
		route   string
		claim   string
		bound   map[string]string // pod -> bound value
		unbound int32
	}{
		{"label", "sub", map[string]string{"alice-term": "alice", "bob-term": "bob"}, 1},
		// bob's annotation is outside bind.wsgate.io/: the gateway never
		// keeps it.
		{"annotation", "email", map[string]string{"alice-term": "alice@example.com"}, 2},
		{"name", "sub", map[string]string{"alice-term": "alice-term", "bob-term": "bob-term", "nobody": "nobody"}, 0},
		{"open", "", map[string]string{"alice-term": "", "bob-term": "", "nobody": ""}, 0},
	}
	for _, tc := range tests {
		k := key("a", tc.route)
		r, ok := res.Table.Route(k)
		if !ok {
			t.Fatalf("%s not in the table: %+v", k, res.Routes[k])
		}
		got := map[string]string{}
		for _, b := range r.Backends {
			got[b.Pod] = b.Bound
		}
		if !reflect.DeepEqual(got, tc.bound) {
			t.Errorf("%s: bound values %v, want %v", tc.route, got, tc.bound)
		}
		if tc.claim != "" && r.Auth.BindingClaim != tc.claim {
			t.Errorf("%s: BindingClaim %q, want %q", tc.route, r.Auth.BindingClaim, tc.claim)
		}
		ep := res.Routes[k].Endpoints
		var unbound, notReady int32
		for _, s := range ep.Skipped {
			switch s.Reason {
			case v1alpha1.SkippedUnbound:
				unbound = s.Count
			case v1alpha1.SkippedNotReady:
				notReady = s.Count
			}
		}
		if unbound != tc.unbound || notReady != 1 || int(ep.Count) != len(tc.bound) {
			t.Errorf("%s: endpoints %+v, want %d pods, %d Unbound and 1 NotReady skipped", tc.route, ep, len(tc.bound), tc.unbound)
		}
	}
	// A new table that changes a pod's bound value revokes its tunnels.
	alice := routing.Backend{Pod: "alice-term", Addr: netip.MustParseAddrPort("10.0.0.1:8080"), Bound: "alice"}
	if !res.Table.Allows(key("a", "label"), alice) {
		t.Error("the table does not allow alice's backend")
	}
	alice.Bound = "mallory"
	if res.Table.Allows(key("a", "label"), alice) {
		t.Error("the table allows alice's address bound to another value")
	}
}

func TestCompactPodKeepsOnlyBindingAnnotations(t *testing.T) {
	p := newPod("a", "p", "10.0.0.1", map[string]string{"bind.wsgate.io/x": "label"}, func(p *corev1.Pod) {
		p.Annotations = map[string]string{
			"bind.wsgate.io/x": "annotation",
			"bind.wsgate.io/y": "y",
			"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 1000),
			"bind.wsgate.io": "no slash",
			"other.io/bind":  "z",
		}
	})
	c := CompactPod(p)
	if want := map[string]string{"bind.wsgate.io/x": "annotation", "bind.wsgate.io/y": "y"}; !reflect.DeepEqual(c.BindingAnnotations(), want) {
		t.Errorf("binding annotations %v, want %v", c.BindingAnnotations(), want)
	}
	if want := map[string]string{"bind.wsgate.io/x": "label"}; !reflect.DeepEqual(c.Labels(), want) {
		t.Errorf("labels %v, want %v (annotations are not labels)", c.Labels(), want)
	}
	q := newPod("a", "p", "10.0.0.1", map[string]string{"bind.wsgate.io/x": "label"}, func(p *corev1.Pod) {
		p.Annotations = map[string]string{"bind.wsgate.io/x": "changed", "bind.wsgate.io/y": "y"}
	})
	if d := CompactPod(q); c.Equal(&d) {
		t.Error("pods whose binding annotation differs are equal")
	}
	r := newPod("a", "p", "10.0.0.1", map[string]string{"bind.wsgate.io/x": "label"}, func(p *corev1.Pod) {
		p.Annotations = map[string]string{"bind.wsgate.io/x": "annotation", "bind.wsgate.io/y": "y", "other": "changed"}
	})
	if d := CompactPod(r); !c.Equal(&d) {
		t.Error("pods that differ only in other annotations are not equal")
	}
}

func TestIdentityHeadersAndTokenSources(t *testing.T) {
	j := jwtFrom(v1alpha1.KeysFromSecret, idp)
	j.Token = &v1alpha1.TokenSources{Cookie: "session", QueryParameter: "access_token"}
	full := v1alpha1.RouteAuth{JWT: j, IdentityHeaders: &v1alpha1.IdentityHeaders{
		Subject: "x-user",
		Claims:  []v1alpha1.ClaimHeader{{Claim: "email", Header: "X-USER-EMAIL"}, {Claim: "groups", Header: "x-groups"}},
	}}
	keep := v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), OnExpiry: v1alpha1.ExpiryKeep}
	dup := v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), IdentityHeaders: &v1alpha1.IdentityHeaders{
		Subject: "x-user", Claims: []v1alpha1.ClaimHeader{{Claim: "email", Header: "X-User"}},
	}}
	bad := v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromSecret, idp), IdentityHeaders: &v1alpha1.IdentityHeaders{Subject: "Authorization"}}
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{
		newRoute("a", "full", 0, prefix("/full"), withAuth(full)),
		newRoute("a", "keep", 0, prefix("/keep"), withAuth(keep)),
		newRoute("a", "dup", 0, prefix("/dup"), withAuth(dup)),
		newRoute("a", "bad", 0, prefix("/bad"), withAuth(bad)),
	}}, Options{})
	ra := authOf(t, res, key("a", "full"))
	want := routing.Auth{Cookie: "session", Query: "access_token", SubjectHeader: "X-User", CloseOnExpiry: true,
		ClaimHeaders: []routing.ClaimHeader{{Claim: "email", Header: "X-User-Email"}, {Claim: "groups", Header: "X-Groups"}}}
	got := *ra
	got.Tokens, got.Problem = nil, ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("auth %+v, want %+v", got, want)
	}
	if authOf(t, res, key("a", "keep")).CloseOnExpiry {
		t.Error("onExpiry Keep closes tunnels on expiry")
	}
	for _, name := range []string{"dup", "bad"} {
		if st := res.Routes[key("a", name)]; st.Reason != v1alpha1.ReasonInvalid {
			t.Errorf("%s: reason %q (%s), want Invalid", name, st.Reason, st.Message)
		}
	}
}

func forwardService(selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
}

func TestForwardAuth(t *testing.T) {
	authLbls := map[string]string{"app": "authz"}
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	pods := compact(
		newPod("a", "app", "10.0.0.1", map[string]string{"app": "r"}),
		newPod("a", "authz-2", "10.0.1.2", authLbls, containerPorts(tcpPort("authport", 9000))),
		newPod("a", "authz-1", "", authLbls, containerPorts(tcpPort("authport", 9001)), podIPs("10.0.1.1", "fd00::1")),
		// The node's address: never a forward-auth target.
		newPod("a", "authz-node", "192.168.0.10", authLbls, hostNet, containerPorts(tcpPort("authport", 9000))),
		newPod("a", "authz-down", "10.0.1.4", authLbls, notReady, containerPorts(tcpPort("authport", 9000))),
		newPod("a", "authz-bye", "10.0.1.5", authLbls, terminating, containerPorts(tcpPort("authport", 9000))),
		newPod("a", "authz-noport", "10.0.1.6", authLbls),
		// Another namespace's pods with the same labels serve nothing here.
		newPod("b", "authz", "10.0.2.1", authLbls, containerPorts(tcpPort("authport", 9000))),
		newPod("b", "app", "10.0.2.2", map[string]string{"app": "r"}),
	)
	named := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("authport"), Protocol: corev1.ProtocolTCP}
	services := map[types.NamespacedName]Service{
		{Namespace: "a", Name: "authz"}:        CompactService(forwardService(authLbls, named)),
		{Namespace: "a", Name: "numbered"}:     CompactService(forwardService(authLbls, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(7000)})),
		{Namespace: "a", Name: "selectorless"}: CompactService(forwardService(nil, named)),
		{Namespace: "a", Name: "external"}: CompactService(&corev1.Service{Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "metadata.google.internal", Selector: authLbls, Ports: []corev1.ServicePort{named}}}),
		{Namespace: "a", Name: "nobody"}: CompactService(forwardService(map[string]string{"app": "none"}, named)),
	}
	fwd := func(svc string, port intstr.IntOrString, opts ...func(*v1alpha1.ForwardAuth)) routeOpt {
		f := &v1alpha1.ForwardAuth{Service: svc, Port: port}
		for _, o := range opts {
			o(f)
		}
		return withAuth(v1alpha1.RouteAuth{ForwardAuth: f})
	}
	routes := []*v1alpha1.WsRoute{
		newRoute("a", "r", 0, matchLabels("app", "r"), fwd("authz", intstr.FromString("http"), func(f *v1alpha1.ForwardAuth) {
			f.PassHeaders = []v1alpha1.HeaderName{"x-user", "X-Tenant"}
		})),
		newRoute("a", "numbered", 0, prefix("/n"), matchLabels("app", "r"), fwd("numbered", intstr.FromInt32(80), func(f *v1alpha1.ForwardAuth) {
			f.Path, f.Timeout = "/check", &metav1.Duration{Duration: 500 * time.Millisecond}
		})),
		newRoute("a", "selectorless", 0, prefix("/s"), matchLabels("app", "r"), fwd("selectorless", intstr.FromString("http"))),
		newRoute("a", "external", 0, prefix("/e"), matchLabels("app", "r"), fwd("external", intstr.FromString("http"))),
		newRoute("a", "missing", 0, prefix("/m"), matchLabels("app", "r"), fwd("nope", intstr.FromString("http"))),
		newRoute("a", "noport", 0, prefix("/p"), matchLabels("app", "r"), fwd("authz", intstr.FromInt32(81))),
		newRoute("a", "nobody", 0, prefix("/x"), matchLabels("app", "r"), fwd("nobody", intstr.FromString("http"))),
		// Namespace b has no Service authz: a's is never used.
		newRoute("b", "r", 0, hosts("b.example.com"), matchLabels("app", "r"), fwd("authz", intstr.FromString("http"))),
	}
	res := Build(Input{Grants: grantAll, Pods: pods, Services: services, Routes: routes}, Options{})

	ra := authOf(t, res, key("a", "r"))
	wantFwd := &routing.ForwardAuth{
		Service: "a/authz",
		Addrs: []netip.AddrPort{
			netip.MustParseAddrPort("10.0.1.1:9001"), netip.MustParseAddrPort("10.0.1.2:9000"), netip.MustParseAddrPort("[fd00::1]:9001"),
		},
		Path: "/", Timeout: 2 * time.Second, PassHeaders: []string{"X-Tenant", "X-User"},
	}
	if !reflect.DeepEqual(ra.Forward, wantFwd) || ra.Problem != "" || ra.Tokens != nil {
		t.Errorf("a/r: forward %+v problem %q tokens %v, want %+v", ra.Forward, ra.Problem, ra.Tokens, wantFwd)
	}
	if st := res.Routes[key("a", "r")]; st.Auth == nil || !st.Auth.Ready || st.Auth.Reason != v1alpha1.ReasonKeysLoaded {
		t.Errorf("a/r: AuthReady %+v, want True", st.Auth)
	}
	// A number target port is used as is, on every eligible pod.
	if n := authOf(t, res, key("a", "numbered")).Forward; n.Path != "/check" || n.Timeout != 500*time.Millisecond || len(n.Addrs) != 4 || n.Addrs[2] != netip.MustParseAddrPort("10.0.1.6:7000") {
		t.Errorf("a/numbered: %+v", n)
	}
	for _, tc := range []struct{ ns, name, message string }{
		{"a", "selectorless", "has no selector"},
		{"a", "external", "has no selector"},
		{"a", "missing", "Service a/nope not found"},
		{"a", "noport", "has no TCP port 81"},
		{"a", "nobody", "no Ready pod"},
		{"b", "r", "Service b/authz not found"},
	} {
		k := key(tc.ns, tc.name)
		st := res.Routes[k]
		if st.Auth == nil || st.Auth.Ready || st.Auth.Reason != v1alpha1.ReasonForwardAuthUnusable || !strings.Contains(st.Auth.Message, tc.message) {
			t.Errorf("%s: AuthReady %+v, want ForwardAuthUnusable %q", k, st.Auth, tc.message)
			continue
		}
		ra := authOf(t, res, k)
		// No address: the data plane answers 503. Problem is the tokens'
		// alone (this route has none).
		if ra.Problem != "" || len(ra.Forward.Addrs) != 0 {
			t.Errorf("%s: Problem %q, addrs %v; want no token problem and no address", k, ra.Problem, ra.Forward.Addrs)
		}
	}
	// The forward-auth pods are not the route's backends.
	if got := backendPods(res.Table, key("a", "r")); !slices.Equal(got, []string{"app"}) {
		t.Errorf("a/r backends %v, want [app]", got)
	}
}

func TestAuthProblemsCombine(t *testing.T) {
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{
		newRoute("a", "r", 0, withAuth(v1alpha1.RouteAuth{
			JWT:         jwtFrom(v1alpha1.KeysFromSecret, idp),
			ForwardAuth: &v1alpha1.ForwardAuth{Service: "authz", Port: intstr.FromInt32(80)},
		})),
	}}, Options{})
	st := res.Routes[key("a", "r")]
	if st.Auth == nil || st.Auth.Ready || st.Auth.Reason != v1alpha1.ReasonKeySecretUnusable ||
		!strings.Contains(st.Auth.Message, "Secret a/keys not found") || !strings.Contains(st.Auth.Message, "Service a/authz not found") {
		t.Errorf("AuthReady %+v, want KeySecretUnusable naming both problems", st.Auth)
	}
	// Problem is the tokens' (every token refused); the forward-auth
	// Service's shows as no address (503).
	ra := authOf(t, res, key("a", "r"))
	if p := ra.Problem; !strings.Contains(p, "a/keys") || strings.Contains(p, "a/authz") {
		t.Errorf("Problem %q, want the key Secret's only", p)
	}
	if len(ra.Forward.Addrs) != 0 {
		t.Errorf("forward-auth addresses %v, want none", ra.Forward.Addrs)
	}
}

func TestAuthValidation(t *testing.T) {
	j := jwtFrom(v1alpha1.KeysFromSecret, idp)
	tests := []struct {
		name string
		auth v1alpha1.RouteAuth
		want string
	}{
		{"empty auth", v1alpha1.RouteAuth{}, "needs jwt, forwardAuth or both"},
		{"binding without jwt", v1alpha1.RouteAuth{ForwardAuth: &v1alpha1.ForwardAuth{Service: "s", Port: intstr.FromInt32(80)}, PodBinding: &v1alpha1.PodBinding{PodName: true}}, "need spec.auth.jwt"},
		{"two bindings", v1alpha1.RouteAuth{JWT: j, PodBinding: &v1alpha1.PodBinding{PodName: true, Label: "user"}}, "exactly one"},
		{"annotation outside the prefix", v1alpha1.RouteAuth{JWT: j, PodBinding: &v1alpha1.PodBinding{Annotation: "example.com/user"}}, "bind.wsgate.io/"},
		{"issuer over http", v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromIssuer, "http://idp.example.com")}, "https://"},
		{"service account with an issuer", v1alpha1.RouteAuth{JWT: jwtFrom(v1alpha1.KeysFromServiceAccountIssuer, idp)}, "must be unset"},
		{"no audience", v1alpha1.RouteAuth{JWT: &v1alpha1.JWTAuth{Issuer: idp, Keys: j.Keys}}, "audiences is empty"},
		{"unknown expiry", v1alpha1.RouteAuth{JWT: j, OnExpiry: "Later"}, "onExpiry"},
		{"long timeout", v1alpha1.RouteAuth{ForwardAuth: &v1alpha1.ForwardAuth{Service: "s", Port: intstr.FromInt32(80), Timeout: &metav1.Duration{Duration: time.Minute}}}, "timeout"},
		{"path with a space", v1alpha1.RouteAuth{ForwardAuth: &v1alpha1.ForwardAuth{Service: "s", Port: intstr.FromInt32(80), Path: "/a b"}}, "path"},
	}
	for _, tc := range tests {
		res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "r", 0, withAuth(tc.auth))}}, Options{})
		st := res.Routes[key("a", "r")]
		if st.Reason != v1alpha1.ReasonInvalid || !strings.Contains(st.Message, tc.want) {
			t.Errorf("%s: reason %q (%s), want Invalid with %q", tc.name, st.Reason, st.Message, tc.want)
		}
	}
}

func TestAuthDeterminism(t *testing.T) {
	s := newSigner(t, 5)
	kr := &fakeKeyring{issuers: map[string]*fakeRemote{idp: loadedRemote(s, idp)}}
	authLbls := map[string]string{"app": "authz"}
	var pods []*corev1.Pod
	for i := range 20 {
		pods = append(pods,
			newPod("a", fmt.Sprintf("term-%02d", i), fmt.Sprintf("10.0.0.%d", i+1), map[string]string{"app": "term", "user": fmt.Sprintf("u%d", i%5)}),
			newPod("a", fmt.Sprintf("authz-%02d", i), fmt.Sprintf("10.0.1.%d", i+1), authLbls, containerPorts(tcpPort("http", 8000))))
	}
	in := Input{
		Grants: append([]*v1alpha1.WsGrant{grant("a", withTokenIssuers(idp))}, grantAll...),
		Pods:   compact(pods...),
		Services: map[types.NamespacedName]Service{
			{Namespace: "a", Name: "authz"}: CompactService(forwardService(authLbls, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})),
		},
		Routes: []*v1alpha1.WsRoute{
			newRoute("a", "bound", 0, matchLabels("app", "term"), withAuth(v1alpha1.RouteAuth{
				JWT: jwtFrom(v1alpha1.KeysFromIssuer, idp), PodBinding: &v1alpha1.PodBinding{Label: "user"},
				ForwardAuth: &v1alpha1.ForwardAuth{Service: "authz", Port: intstr.FromString("http")},
			})),
			newRoute("a", "open", 1, prefix("/open"), matchLabels("app", "term")),
		},
	}
	want := Build(in, Options{Keyring: kr, Now: t0})
	if st := want.Routes[key("a", "bound")]; st.Auth == nil || !st.Auth.Ready || st.Endpoints.Count != 20 {
		t.Fatalf("bound: %+v, AuthReady %+v", st, st.Auth)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 10 {
		shuffled := in
		shuffled.Routes, shuffled.Pods = slices.Clone(in.Routes), slices.Clone(in.Pods)
		rng.Shuffle(len(shuffled.Routes), func(i, j int) { shuffled.Routes[i], shuffled.Routes[j] = shuffled.Routes[j], shuffled.Routes[i] })
		rng.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
		got := Build(shuffled, Options{Keyring: kr, Now: t0})
		if !reflect.DeepEqual(got.Routes, want.Routes) || !reflect.DeepEqual(got.Table, want.Table) {
			t.Fatalf("shuffle %d: the result differs", i)
		}
	}
}

// TestAuthSample builds the sample route with auth and the sample grant:
// accepted with the grant's token issuer, refused without it.
func TestAuthSample(t *testing.T) {
	var r v1alpha1.WsRoute
	var g v1alpha1.WsGrant
	for file, obj := range map[string]any{"wsgate_v1alpha1_wsroute_auth.yaml": &r, "wsgate_v1alpha1_wsgrant.yaml": &g} {
		b, err := os.ReadFile(filepath.Join("..", "config", "samples", file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	r.Namespace, r.CreationTimestamp = "games", metav1.NewTime(t0)
	s := newSigner(t, 6)
	iss := r.Spec.Auth.JWT.Issuer
	kr := &fakeKeyring{issuers: map[string]*fakeRemote{iss: loadedRemote(s, iss)}}
	pods := compact(
		newPod("games", "alice", "10.0.0.1", map[string]string{"app": "terminal", "wsgate.io/user": "alice"}),
		newPod("games", "spare", "10.0.0.2", map[string]string{"app": "terminal"}),
	)
	res := Build(Input{Routes: []*v1alpha1.WsRoute{&r}, Grants: []*v1alpha1.WsGrant{&g}, Pods: pods}, Options{Keyring: kr})
	st := res.Routes[key("games", r.Name)]
	if !st.Accepted || st.Access != "Token bound to pod" || st.Auth == nil || !st.Auth.Ready || st.Endpoints.Count != 1 {
		t.Fatalf("sample route: %+v, AuthReady %+v", st, st.Auth)
	}
	ra := authOf(t, res, key("games", r.Name))
	if ra.BindingClaim != "sub" || ra.SubjectHeader != "X-Remote-User" || ra.Cookie != "term_session" || !ra.CloseOnExpiry {
		t.Errorf("sample auth %+v", ra)
	}
	g.Spec.TokenIssuers = nil
	res = Build(Input{Routes: []*v1alpha1.WsRoute{&r}, Grants: []*v1alpha1.WsGrant{&g}, Pods: pods}, Options{Keyring: kr})
	if st := res.Routes[key("games", r.Name)]; st.Reason != v1alpha1.ReasonTokenIssuerNotAllowed {
		t.Errorf("without the grant's token issuer: %s (%s)", st.Reason, st.Message)
	}
}
