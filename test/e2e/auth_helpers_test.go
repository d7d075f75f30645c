package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// The tests of spec.auth run the wsgate binary itself (wsgateBin), so that
// what they check is wired exactly as cmd/wsgate wires it: the keyring,
// the ServiceAccount issuer read through the API server, the cache of
// JWKS Secrets and --token-issuer-ca-file. Pods are echo servers on
// 127.0.7.x (authIP), annotated with their owner.

// authIP returns the n-th address of the auth tests' loopback range.
func authIP(n int) string {
	return fmt.Sprintf("127.0.7.%d", n)
}

// ownerAnnotation is the pod annotation the auth tests bind tokens to:
// its value may hold what labels cannot (a ServiceAccount's sub has ':').
const ownerAnnotation = wsgatev1alpha1.BindingAnnotationPrefix + "owner"

// authGateway is the wsgate binary with plain-HTTP metrics.
type authGateway struct {
	*wsgateProcess
	metricsAddr string
}

// startAuthGateway runs the wsgate binary with its metrics on a loopback
// port and extraArgs (later flags win).
func startAuthGateway(t *testing.T, extraArgs ...string) *authGateway {
	t.Helper()
	bin := wsgateBin.Path(t)
	metricsAddr := harness.FreeAddr(t)
	args := append([]string{"--metrics-bind-address", metricsAddr, "--metrics-secure=false"}, extraArgs...)
	return &authGateway{wsgateProcess: startWsgate(t, bin, args...), metricsAddr: metricsAddr}
}

// metric returns the value of a counter or gauge series of the gateway
// whose labels include labels; 0 when there is none.
func (g *authGateway) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	v := sample(scrape(t, "http://"+g.metricsAddr+"/metrics"), name, labels)
	return max(v, 0)
}

// writeCAFile writes PEM certificates into a file of the test's and
// returns its path (for --token-issuer-ca-file).
func writeCAFile(t *testing.T, pems ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token-issuer-ca.pem")
	var all []byte
	for _, p := range pems {
		all = append(all, p...)
	}
	if err := os.WriteFile(path, all, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ownedPod starts an echo server on ip and port (0: any) and creates its
// Ready pod, labelled app=<app> and, unless owner is "", annotated
// bind.wsgate.io/owner=<owner>; the pod is deleted when the test ends.
func ownedPod(t *testing.T, ns, name, ip string, port int32, app, owner string) (int32, *echopod.Server) {
	t.Helper()
	var srv *echopod.Server
	if port == 0 {
		p, servers := harness.EchoPods(t, ip)
		port, srv = p, servers[0]
	} else {
		s, err := echopod.Start(fmt.Sprintf("%s:%d", ip, port))
		if err != nil {
			t.Fatalf("echo server on %s:%d: %v", ip, port, err)
		}
		t.Cleanup(func() { _ = s.Close() })
		srv = s
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/echo:1"}}},
	}
	if owner != "" {
		pod.Annotations = map[string]string{ownerAnnotation: owner}
	}
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, pod) })
	env.SetPodStatus(t, pod, []string{ip}, true)
	return port, srv
}

// createAuthRoute creates a WsRoute on hostname with prefix, selecting
// pods labelled app=<app> on port, with spec.auth a; it is deleted when
// the test ends. (A hostname belongs to the namespace that claims it
// first: each namespace of a test uses its own.)
func createAuthRoute(t *testing.T, ns, name, hostname, prefix, app string, port int32, a *wsgatev1alpha1.RouteAuth) *wsgatev1alpha1.WsRoute {
	t.Helper()
	obj := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:  []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname(hostname)},
			PathPrefix: prefix,
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Port:       intstr.FromInt32(port),
			Auth:       a,
		},
	}
	createRouteObject(t, obj)
	return obj
}

// jwtAuth is spec.auth with a JWT check of audience and the given keys,
// tokens bound to pods by sub = the owner annotation, and the cookie
// "wsgate_token" as a place for the token.
func jwtAuth(issuer, audience string, keys wsgatev1alpha1.JWTKeys) *wsgatev1alpha1.RouteAuth {
	return &wsgatev1alpha1.RouteAuth{
		JWT: &wsgatev1alpha1.JWTAuth{
			Issuer:    issuer,
			Audiences: []string{audience},
			Keys:      keys,
			Token:     &wsgatev1alpha1.TokenSources{Cookie: "wsgate_token"},
		},
		PodBinding: &wsgatev1alpha1.PodBinding{Claim: "sub", Annotation: ownerAnnotation},
	}
}

// waitAuthReady waits until the route's AuthReady condition reads want
// ("Status/Reason") for its current generation, and returns the route.
func waitAuthReady(t *testing.T, ns, name, want string) *wsgatev1alpha1.WsRoute {
	t.Helper()
	var r wsgatev1alpha1.WsRoute
	harness.Eventually(t, waitTimeout, fmt.Sprintf("route %s/%s has AuthReady=%s", ns, name, want), func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		if r.Status.ObservedGeneration != r.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", r.Status.ObservedGeneration, r.Generation)
		}
		if got := harness.Condition(&r, wsgatev1alpha1.ConditionAuthReady); got != want {
			return fmt.Errorf("AuthReady is %q (%s)", got, conditionMessage(&r, wsgatev1alpha1.ConditionAuthReady))
		}
		return nil
	})
	return &r
}

// bearer is an Authorization header with tok.
func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// answer makes a handshake for path on host with header and returns the
// gateway's status (101 for a tunnel, closed again) and headers; it fails
// the test when no answer came.
func (c wsClient) answer(t *testing.T, path string, header http.Header) (int, http.Header) {
	t.Helper()
	return c.answerOn(t, host, path, header)
}

// answerOn is answer with another Host.
func (c wsClient) answerOn(t *testing.T, hostname, path string, header http.Header) (int, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, status, h, err := harness.Dial(ctx, "ws://"+c.addr+path, &websocket.DialOptions{Host: hostname, HTTPHeader: header})
	if err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		return http.StatusSwitchingProtocols, h
	}
	if status == 0 {
		t.Fatalf("handshake for %s got no answer: %v", path, err)
	}
	return status, h
}

// waitStatusWith waits until a handshake for path with header gets want.
func (c wsClient) waitStatusWith(t *testing.T, timeout time.Duration, path string, header http.Header, want int) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("handshake for %s answers %d", path, want), func() error {
		if got, _ := c.answer(t, path, header); got != want {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
}

// checkUnauthorized fails the test unless a handshake for path with
// header is answered 401 with a Bearer challenge.
func (c wsClient) checkUnauthorized(t *testing.T, what, path string, header http.Header) {
	t.Helper()
	status, h := c.answer(t, path, header)
	if status != http.StatusUnauthorized {
		t.Errorf("%s: status %d, want 401", what, status)
		return
	}
	if ch := h.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
		t.Errorf("%s: WWW-Authenticate is %q, want a Bearer challenge", what, ch)
	}
}

// seenBy asks the echo pod at the other end of c for the handshake it
// received.
func seenBy(t *testing.T, c *websocket.Conn) echopod.Seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(echopod.InfoRequest)); err != nil {
		t.Fatalf("ask the pod for its request: %v", err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read the pod's request: %v", err)
	}
	var seen echopod.Seen
	if err := json.Unmarshal(msg, &seen); err != nil {
		t.Fatalf("the pod's request %q: %v", msg, err)
	}
	return seen
}

// checkNoToken fails the test if the request the pod saw holds tok
// anywhere (header values, query) or an Authorization header.
func checkNoToken(t *testing.T, seen echopod.Seen, tok string) {
	t.Helper()
	if v := seen.Header.Values("Authorization"); len(v) > 0 {
		t.Errorf("the pod received an Authorization header (%d values)", len(v))
	}
	enc := base64.RawURLEncoding.EncodeToString([]byte(tok))
	for name, values := range seen.Header {
		for _, v := range values {
			if strings.Contains(v, tok) || strings.Contains(v, enc) {
				t.Errorf("the pod received the token in its %s header", name)
			}
		}
	}
	if strings.Contains(seen.RawQuery, tok) {
		t.Error("the pod received the token in its query")
	}
}

// ---------------------------------------------------------------------------
// Tokens of the test's own keys

// tokenKey is an ES256 key pair that signs test tokens.
type tokenKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

// newTokenKey makes a key with kid ("" for a random one).
func newTokenKey(t *testing.T, kid string) *tokenKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if kid == "" {
		kid = randomKID(t)
	}
	return &tokenKey{kid: kid, priv: k}
}

// randomKID is a key ID nobody uses.
func randomKID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// jwks is a JSON Web Key Set of the public halves of keys.
func jwks(t *testing.T, keys ...*tokenKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// token signs a JWT with iss, sub and aud, valid from now for lifetime.
func (k *tokenKey) token(t *testing.T, iss, sub, aud string, lifetime time.Duration) string {
	t.Helper()
	now := time.Now()
	return k.sign(t, map[string]any{
		"iss": iss, "sub": sub, "aud": []string{aud},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(lifetime).Unix(),
	})
}

// sign signs claims with the key, kid in the header.
func (k *tokenKey) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tokenKID returns the kid of a compact JWT's header.
func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	head, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.KID == "" {
		t.Fatalf("token header %s: no kid (%v)", b, err)
	}
	return h.KID
}

// tokenClaims decodes the claims of a compact JWT without verifying it.
func tokenClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatalf("token payload: %v", err)
	}
	return claims
}

// jwksSecret is a Secret of ns labelled wsgate.io/jwks=true (unless
// unlabelled) holding a key set under jwks.json.
func jwksSecret(ns, name string, set []byte, labelled bool) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data:       map[string][]byte{wsgatev1alpha1.DefaultJWKSKey: set},
	}
	if labelled {
		s.Labels = map[string]string{wsgatev1alpha1.JWKSLabel: "true"}
	}
	return s
}
