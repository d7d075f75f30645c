package tablebuild

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

// ServiceAccountSubjectPrefix starts the sub of every ServiceAccount
// token of namespace ns, the only ones a route of ns with keys.source
// ServiceAccountIssuer accepts.
func ServiceAccountSubjectPrefix(ns string) string { return "system:serviceaccount:" + ns + ":" }

// Access values of status.access.
const (
	AccessOpen        = "Open"
	accessToken       = "Token"
	accessBoundToken  = "Token bound to pod"
	accessForwardAuth = "ForwardAuth"
)

// Forward-auth defaults and bounds (spec.auth.forwardAuth).
const (
	DefaultForwardAuthTimeout = 2 * time.Second
	minForwardAuthTimeout     = 100 * time.Millisecond
	maxForwardAuthTimeout     = 10 * time.Second
)

// KeySecretRef names the data that one route reads its token keys from:
// always a Secret of the route's own namespace (spec.auth.jwt.keys.secret
// names only the Secret), the key of its data, and how it is read.
type KeySecretRef struct {
	Namespace, Name string
	// Key is the key of the Secret's data (v1alpha1.DefaultJWKSKey when
	// the route does not name one).
	Key string
	// Shared: the data is a shared HMAC key (keys.source SharedSecret);
	// otherwise a JSON Web Key Set (keys.source Secret).
	Shared bool
}

func (r KeySecretRef) String() string { return r.Namespace + "/" + r.Name }

// KeySecretRefOf returns the key Secret data a route reads, and false when
// the route's keys do not come from a Secret.
func KeySecretRefOf(wr *v1alpha1.WsRoute) (KeySecretRef, bool) {
	a := wr.Spec.Auth
	if a == nil || a.JWT == nil || a.JWT.Keys.Secret == nil {
		return KeySecretRef{}, false
	}
	src := a.JWT.Keys.Source
	if src != v1alpha1.KeysFromSecret && src != v1alpha1.KeysFromSharedSecret {
		return KeySecretRef{}, false
	}
	return KeySecretRef{
		Namespace: wr.Namespace,
		Name:      a.JWT.Keys.Secret.Name,
		Key:       cmp.Or(a.JWT.Keys.Secret.Key, v1alpha1.DefaultJWKSKey),
		Shared:    src == v1alpha1.KeysFromSharedSecret,
	}, true
}

// KeySecret is what the caller knows of one key Secret's data.
type KeySecret struct {
	// Keys are the last good keys the data held; nil if it never held
	// usable ones. They stay in use while the Secret is broken.
	Keys auth.KeySet
	// Problem says why the Secret as it is now cannot be used (too large,
	// no such key, no usable key); "" when it is fine.
	Problem string
}

// RemoteKeys is a key set the gateway fetches and refreshes in the
// background (auth.RemoteKeys).
type RemoteKeys interface {
	auth.IssuerKeySet
	// State says whether keys are loaded and how the last fetch went.
	State() auth.KeyState
}

// Keyring gives the fetched key sets (auth.Keyring; see AuthKeyring).
type Keyring interface {
	// Issuer returns the key set of a token issuer, which the keyring
	// starts fetching when it is new.
	Issuer(url string) RemoteKeys
	// ServiceAccount returns the key set of the cluster's ServiceAccount
	// issuer, and false when the gateway does not read it.
	ServiceAccount() (RemoteKeys, bool)
}

// AuthKeyring adapts an auth.Keyring to Keyring; nil gives nil.
func AuthKeyring(k *auth.Keyring) Keyring {
	if k == nil {
		return nil
	}
	return authKeyring{k}
}

type authKeyring struct{ k *auth.Keyring }

func (a authKeyring) Issuer(url string) RemoteKeys { return a.k.Issuer(url) }

func (a authKeyring) ServiceAccount() (RemoteKeys, bool) {
	rk, ok := a.k.ServiceAccount()
	if !ok || rk == nil {
		return nil, false
	}
	return rk, true
}

// AuthStatus is a route's AuthReady condition as one build sees it.
type AuthStatus struct {
	// Ready is true when the route's keys and forward-auth Service are
	// usable as they are now.
	Ready bool
	// Reason is v1alpha1.ReasonKeysLoaded when Ready, else
	// ReasonKeySecretUnusable, ReasonIssuerUnreachable or
	// ReasonForwardAuthUnusable (the first problem found).
	Reason string
	// Message is a human sentence, naming every problem.
	Message string
}

// bindingKind says which value of a pod a token's claim must match.
type bindingKind uint8

const (
	bindNone bindingKind = iota
	bindLabel
	bindAnnotation
	bindPodName
)

// compiledAuth is spec.auth checked and compiled; the parts that depend
// on the cluster (keys, the forward-auth pods) are resolved later.
type compiledAuth struct {
	access string
	// source is "" when the route has no jwt.
	source    v1alpha1.KeySource
	issuer    string
	audiences []string
	secret    KeySecretRef

	binding    bindingKind
	bindingKey string

	forward *forwardSpec
	// route is the routing.Auth without Tokens, Forward.Addrs and Problem.
	route routing.Auth
}

// forwardSpec is spec.auth.forwardAuth checked.
type forwardSpec struct {
	service string
	port    intstr.IntOrString
}

// accessOf is status.access for a spec.auth.
func accessOf(a *v1alpha1.RouteAuth) string {
	if a == nil {
		return AccessOpen
	}
	var parts []string
	switch {
	case a.JWT != nil && a.PodBinding != nil:
		parts = append(parts, accessBoundToken)
	case a.JWT != nil:
		parts = append(parts, accessToken)
	}
	if a.ForwardAuth != nil {
		parts = append(parts, accessForwardAuth)
	}
	if len(parts) == 0 {
		return AccessOpen
	}
	return strings.Join(parts, "+")
}

// compileAuth checks spec.auth, repeating the parts of the CRD validation
// the data plane relies on, and compiles it; nil for an open route.
func compileAuth(wr *v1alpha1.WsRoute, problem func(string, ...any)) *compiledAuth {
	a := wr.Spec.Auth
	if a == nil {
		return nil
	}
	out := &compiledAuth{access: accessOf(a)}
	if a.JWT == nil && a.ForwardAuth == nil {
		problem("spec.auth needs jwt, forwardAuth or both")
	}
	if a.JWT == nil && (a.PodBinding != nil || a.IdentityHeaders != nil) {
		problem("spec.auth.podBinding and identityHeaders need spec.auth.jwt")
	}

	switch a.OnExpiry {
	case "", v1alpha1.ExpiryClose:
		out.route.CloseOnExpiry = true
	case v1alpha1.ExpiryKeep:
	default:
		problem("spec.auth.onExpiry %q is neither %s nor %s", a.OnExpiry, v1alpha1.ExpiryClose, v1alpha1.ExpiryKeep)
	}

	if j := a.JWT; j != nil {
		compileJWT(wr.Namespace, j, out, problem)
	}
	if b := a.PodBinding; b != nil {
		compileBinding(b, out, problem)
	}
	if h := a.IdentityHeaders; h != nil {
		compileIdentityHeaders(h, out, problem)
	}
	if f := a.ForwardAuth; f != nil {
		compileForwardAuth(f, out, problem)
	}
	return out
}

func compileJWT(ns string, j *v1alpha1.JWTAuth, out *compiledAuth, problem func(string, ...any)) {
	out.source = j.Keys.Source
	out.issuer = j.Issuer
	switch j.Keys.Source {
	case v1alpha1.KeysFromSecret, v1alpha1.KeysFromSharedSecret:
		if j.Keys.Secret == nil || j.Keys.Secret.Name == "" {
			problem("spec.auth.jwt.keys.secret is required with keys.source %s", j.Keys.Source)
		} else {
			out.secret = KeySecretRef{
				Namespace: ns, // never another namespace's Secret
				Name:      j.Keys.Secret.Name,
				Key:       cmp.Or(j.Keys.Secret.Key, v1alpha1.DefaultJWKSKey),
				Shared:    j.Keys.Source == v1alpha1.KeysFromSharedSecret,
			}
		}
		if j.Issuer == "" {
			problem("spec.auth.jwt.issuer is required with keys.source %s", j.Keys.Source)
		}
	case v1alpha1.KeysFromIssuer:
		if !strings.HasPrefix(j.Issuer, "https://") || len(j.Issuer) == len("https://") {
			problem("spec.auth.jwt.issuer %q is not an https:// URL, as keys.source Issuer requires", j.Issuer)
		}
	case v1alpha1.KeysFromServiceAccountIssuer:
		if j.Issuer != "" {
			problem("spec.auth.jwt.issuer must be unset with keys.source ServiceAccountIssuer (the cluster's own issuer is used)")
		}
	default:
		problem("spec.auth.jwt.keys.source %q is not Secret, SharedSecret, Issuer or ServiceAccountIssuer", j.Keys.Source)
	}
	for _, aud := range j.Audiences {
		if aud == "" {
			problem("spec.auth.jwt.audiences holds an empty audience")
			continue
		}
		out.audiences = append(out.audiences, aud)
	}
	slices.Sort(out.audiences)
	out.audiences = slices.Compact(out.audiences)
	if len(out.audiences) == 0 {
		problem("spec.auth.jwt.audiences is empty")
	}
	if t := j.Token; t != nil {
		if t.Cookie != "" && !validToken(t.Cookie) {
			problem("spec.auth.jwt.token.cookie %q is not a cookie name", t.Cookie)
		}
		if t.QueryParameter != "" && !allBytes(t.QueryParameter, "._~-") {
			problem("spec.auth.jwt.token.queryParameter %q is not a plain parameter name", t.QueryParameter)
		}
		out.route.Cookie, out.route.Query = t.Cookie, t.QueryParameter
	}
}

func compileBinding(b *v1alpha1.PodBinding, out *compiledAuth, problem func(string, ...any)) {
	n := 0
	if b.Label != "" {
		n++
		out.binding, out.bindingKey = bindLabel, b.Label
	}
	if b.Annotation != "" {
		n++
		out.binding, out.bindingKey = bindAnnotation, b.Annotation
		if !strings.HasPrefix(b.Annotation, v1alpha1.BindingAnnotationPrefix) || len(b.Annotation) == len(v1alpha1.BindingAnnotationPrefix) {
			problem("spec.auth.podBinding.annotation %q does not start with %s (wsgate keeps no other annotations of pods)",
				b.Annotation, v1alpha1.BindingAnnotationPrefix)
		}
	}
	if b.PodName {
		n++
		out.binding, out.bindingKey = bindPodName, ""
	}
	if n != 1 {
		problem("spec.auth.podBinding needs exactly one of label, annotation or podName: true")
	}
	out.route.BindingClaim = cmp.Or(string(b.Claim), "sub")
}

func compileIdentityHeaders(h *v1alpha1.IdentityHeaders, out *compiledAuth, problem func(string, ...any)) {
	seen := make(map[string]bool, len(h.Claims)+1)
	use := func(field string, name v1alpha1.HeaderName) string {
		if msg := checkHeaderName(string(name)); msg != "" {
			problem("spec.auth.identityHeaders.%s %q %s", field, name, msg)
			return ""
		}
		canon := http.CanonicalHeaderKey(string(name))
		if seen[canon] {
			problem("spec.auth.identityHeaders names header %q twice", canon)
		}
		seen[canon] = true
		return canon
	}
	if h.Subject != "" {
		out.route.SubjectHeader = use("subject", h.Subject)
	}
	for _, c := range h.Claims {
		header := use("claims[].header", c.Header)
		if c.Claim == "" {
			problem("spec.auth.identityHeaders.claims holds an empty claim name")
		}
		out.route.ClaimHeaders = append(out.route.ClaimHeaders, routing.ClaimHeader{Claim: string(c.Claim), Header: header})
	}
}

func compileForwardAuth(f *v1alpha1.ForwardAuth, out *compiledAuth, problem func(string, ...any)) {
	if f.Service == "" {
		problem("spec.auth.forwardAuth.service is empty")
	}
	checkPort("spec.auth.forwardAuth.port", f.Port, problem)
	path := cmp.Or(f.Path, "/")
	if !strings.HasPrefix(path, "/") || !allBytes(path, "._~!$&'()*+,;=:@/-") {
		problem("spec.auth.forwardAuth.path %q is not an absolute path of plain characters", path)
	}
	timeout := DefaultForwardAuthTimeout
	if f.Timeout != nil {
		timeout = f.Timeout.Duration
		if timeout < minForwardAuthTimeout || timeout > maxForwardAuthTimeout {
			problem("spec.auth.forwardAuth.timeout %s is not between %s and %s", timeout, minForwardAuthTimeout, maxForwardAuthTimeout)
		}
	}
	var pass []string
	for _, h := range f.PassHeaders {
		if msg := checkHeaderName(string(h)); msg != "" {
			problem("spec.auth.forwardAuth.passHeaders entry %q %s", h, msg)
			continue
		}
		pass = append(pass, http.CanonicalHeaderKey(string(h)))
	}
	slices.Sort(pass)
	out.forward = &forwardSpec{service: f.Service, port: f.Port}
	out.route.Forward = &routing.ForwardAuth{Path: path, Timeout: timeout, PassHeaders: slices.Compact(pass)}
}

// forbiddenHeaders carry the handshake or the client's credentials; the
// CRD refuses them as identity headers (v1alpha1.HeaderName).
var forbiddenHeaders = []string{
	"host", "connection", "upgrade", "keep-alive", "te", "trailer", "transfer-encoding",
	"proxy-connection", "proxy-authorization", "proxy-authenticate", "authorization", "cookie",
	"content-length", "origin", "forwarded", "x-real-ip",
}

// checkHeaderName returns what is wrong with a header name the gateway
// sets on the request to the pod, or "".
func checkHeaderName(h string) string {
	lower := strings.ToLower(h)
	switch {
	case h == "" || len(h) > 64 || h[0] == '-' || !allBytes(h, "-"):
		return "is not a header name (letters, digits and \"-\")"
	case slices.Contains(forbiddenHeaders, lower),
		strings.HasPrefix(lower, "sec-websocket-"), strings.HasPrefix(lower, "x-forwarded-"):
		return "carries the handshake or the client's credentials"
	}
	return ""
}

// allBytes reports whether s is made of ASCII letters, digits and the
// bytes of extra.
func allBytes(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if (b < 'a' || b > 'z') && (b < 'A' || b > 'Z') && (b < '0' || b > '9') && !strings.ContainsRune(extra, rune(b)) {
			return false
		}
	}
	return true
}

// validToken reports whether s is an HTTP token (RFC 9110), as cookie
// names are.
func validToken(s string) bool {
	return s != "" && allBytes(s, "!#$%&'*+.^_|~-")
}

// boundValue is the value of pod that a token's binding claim must
// include, or "" when the pod has none.
func (a *compiledAuth) boundValue(pod *Pod, name string) string {
	switch a.binding {
	case bindLabel:
		v, _ := pod.labels().Lookup(a.bindingKey)
		return v
	case bindAnnotation:
		v, _ := pod.annotation(a.bindingKey)
		return v
	case bindPodName:
		return name
	}
	return ""
}

// noKeys is the key set of a route whose keys are not usable: it verifies
// nothing.
type noKeys struct{ why string }

func (n noKeys) Keys(context.Context, string) ([]jose.JSONWebKey, error) {
	return nil, errors.New(n.why)
}

func (noKeys) Symmetric() bool { return false }

// keyOutcome is what a route's key source gives now.
type keyOutcome struct {
	keys auth.KeySet // nil when no key is usable
	// ok is false when the condition must say False (a problem, even if
	// last good keys stay in use).
	ok      bool
	reason  string
	message string
}

// routeKeys resolves the keys of an accepted route with jwt, and records
// the issuers it asks the keyring for.
func routeKeys(c *candidate, in *Input, keyring Keyring, issuers map[string]bool) keyOutcome {
	a := c.auth
	switch a.source {
	case v1alpha1.KeysFromSecret, v1alpha1.KeysFromSharedSecret:
		return secretKeys(a.secret, in.KeySecrets)
	case v1alpha1.KeysFromIssuer:
		if keyring == nil {
			return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable,
				message: fmt.Sprintf("this gateway fetches no token keys, so the keys of issuer %q cannot be loaded", a.issuer)}
		}
		issuers[a.issuer] = true
		return remoteKeys(keyring.Issuer(a.issuer), fmt.Sprintf("issuer %q", a.issuer))
	case v1alpha1.KeysFromServiceAccountIssuer:
		var rk RemoteKeys
		ok := keyring != nil
		if ok {
			rk, ok = keyring.ServiceAccount()
		}
		if !ok {
			return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable,
				message: "this gateway does not read the cluster's ServiceAccount issuer"}
		}
		return remoteKeys(rk, "the cluster's ServiceAccount issuer")
	}
	return keyOutcome{reason: v1alpha1.ReasonKeySecretUnusable, message: "no key source"}
}

// secretKeys resolves keys from a Secret of the route's namespace. A
// Secret that broke keeps its last good keys in use, but the condition
// says False until it is fixed, as for certificate Secrets.
func secretKeys(ref KeySecretRef, secrets map[KeySecretRef]KeySecret) keyOutcome {
	out := keyOutcome{reason: v1alpha1.ReasonKeySecretUnusable}
	sec, found := secrets[ref]
	switch {
	case !found:
		out.message = fmt.Sprintf("Secret %s not found; wsgate reads keys only from Secrets labelled %s=true", ref, v1alpha1.JWKSLabel)
	case sec.Problem != "" && sec.Keys != nil:
		out.keys = sec.Keys
		out.message = fmt.Sprintf("Secret %s: %s; its last good keys stay in use", ref, sec.Problem)
	case sec.Problem != "":
		out.message = fmt.Sprintf("Secret %s: %s", ref, sec.Problem)
	case sec.Keys == nil:
		out.message = fmt.Sprintf("Secret %s holds no usable key", ref)
	default:
		what := "a JSON Web Key Set"
		if ref.Shared {
			what = "a shared key"
		}
		return keyOutcome{keys: sec.Keys, ok: true, reason: v1alpha1.ReasonKeysLoaded,
			message: fmt.Sprintf("Tokens are checked with %s from Secret %s (key %s)", what, ref, ref.Key)}
	}
	return out
}

// remoteKeys resolves a fetched key set. A set that holds keys is usable
// even when its last refresh failed: its keys stay in use, the condition
// stays True and its message names the error.
func remoteKeys(rk RemoteKeys, what string) keyOutcome {
	if rk == nil {
		return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable, message: "the keys of " + what + " are not available"}
	}
	st := rk.State()
	usable := st.Loaded && st.Keys > 0 && rk.Issuer() != ""
	switch {
	case usable && st.LastError != "":
		return keyOutcome{keys: rk, ok: true, reason: v1alpha1.ReasonKeysLoaded,
			message: fmt.Sprintf("Tokens are checked with %d key(s) of %s; its last refresh failed (%s), the keys fetched before stay in use", st.Keys, what, st.LastError)}
	case usable:
		return keyOutcome{keys: rk, ok: true, reason: v1alpha1.ReasonKeysLoaded,
			message: fmt.Sprintf("Tokens are checked with %d key(s) of %s", st.Keys, what)}
	case st.LastError != "":
		return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable,
			message: fmt.Sprintf("the keys of %s could not be fetched: %s", what, st.LastError)}
	case st.Loaded:
		return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable,
			message: fmt.Sprintf("%s publishes no usable key", what)}
	}
	return keyOutcome{reason: v1alpha1.ReasonIssuerUnreachable,
		message: fmt.Sprintf("the keys of %s are being fetched", what)}
}

// finishAuth completes an accepted route's routing.Auth from its keys and
// forward-auth pods and returns its AuthReady status.
func finishAuth(c *candidate, keys *keyOutcome, fwd *forwardOutcome) *AuthStatus {
	a := c.auth
	ra := a.route
	st := &AuthStatus{Ready: true, Reason: v1alpha1.ReasonKeysLoaded}
	var messages, problems []string
	fail := func(reason, msg string) {
		if st.Ready {
			st.Ready, st.Reason = false, reason
		}
		messages = append(messages, msg)
	}
	if a.source != "" {
		if keys.keys == nil {
			problems = append(problems, keys.message)
		}
		if keys.ok {
			messages = append(messages, keys.message)
		} else {
			fail(keys.reason, keys.message)
		}
		ks := keys.keys
		if ks == nil {
			ks = noKeys{why: "no usable token keys: " + keys.message}
		}
		cfg := auth.Config{Issuer: a.issuer, Audiences: a.audiences, Keys: ks}
		if a.source == v1alpha1.KeysFromServiceAccountIssuer {
			// The set knows the cluster's issuer. Any tenant may have a
			// token of its own ServiceAccounts made for any audience: only
			// the route's own namespace's are accepted.
			cfg.Issuer = ""
			cfg.SubjectPrefix = ServiceAccountSubjectPrefix(c.key.Namespace)
		}
		ra.Tokens = auth.NewVerifier(cfg)
		ra.TrustedSubjects = a.source == v1alpha1.KeysFromIssuer || a.source == v1alpha1.KeysFromServiceAccountIssuer
	}
	if a.forward != nil {
		f := *ra.Forward
		f.Service = c.key.Namespace + "/" + a.forward.service
		f.Addrs = fwd.addrs
		ra.Forward = &f
		if fwd.problem != "" {
			fail(v1alpha1.ReasonForwardAuthUnusable, fwd.problem)
		} else {
			messages = append(messages, fwd.message)
		}
	}
	ra.Problem = strings.Join(problems, "; ")
	c.route.Auth = &ra
	st.Message = strings.Join(messages, "; ") + "."
	if len(messages) > 0 {
		st.Message = strings.ToUpper(st.Message[:1]) + st.Message[1:]
	}
	return st
}
