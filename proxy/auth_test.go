package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

// The identity rules at the handshake, tried as an attacker would: every
// way to get a token past the check or into the pod's hands, and every
// way to reach another person's pod. Each case counts dials, pod
// connections and the loopback canary.

const (
	testIssuer   = "https://issuer.test"
	testAudience = "rooms"
)

// signer signs test tokens with one key.
type signer struct {
	alg jose.SignatureAlgorithm
	key any
	kid string
	pub jose.JSONWebKey
}

func newES256Signer(t testing.TB, kid string) *signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{alg: jose.ES256, key: k, kid: kid, pub: jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}}
}

// verifier verifies the test issuer's tokens for the test audience with
// sg's public key (a static key set).
func (s *signer) verifier(t testing.TB) *auth.Verifier {
	t.Helper()
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.pub}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.StaticKeys(doc)
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewVerifier(auth.Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: keys})
}

// sign returns a compact JWS of claims with extra protected headers.
func (s *signer) sign(t testing.TB, claims map[string]any, headers map[jose.HeaderKey]any, embedJWK bool) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s.signPayload(t, payload, headers, embedJWK)
}

// signPayload signs payload as it is (claims the JSON encoder would not
// write, such as duplicate members), naming the signer's kid unless the
// key itself is embedded.
func (s *signer) signPayload(t testing.TB, payload []byte, headers map[jose.HeaderKey]any, embedJWK bool) string {
	t.Helper()
	opts := &jose.SignerOptions{EmbedJWK: embedJWK}
	if !embedJWK {
		opts = opts.WithHeader("kid", s.kid)
	}
	for k, v := range headers {
		opts = opts.WithHeader(k, v)
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: s.key}, opts.WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// claimsFor are valid claims for sub, with overrides (nil deletes).
func claimsFor(sub string, over map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": testIssuer, "aud": []string{testAudience}, "sub": sub,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix()}
	for k, v := range over {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// authFixture is a gateway with routes that bind tokens to pods.
type authFixture struct {
	*hostileFixture
	good, evil *signer
	private    *routing.Route // /me: podA is alice's, podB is bob's
	team       *routing.Route // /team: binds claim "team"; podC is team blue's
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	f := &authFixture{hostileFixture: newHostileFixture(t, Options{MaxHeaderBytes: 64 << 10}),
		good: newES256Signer(t, "good-1"), evil: newES256Signer(t, "good-1")}
	verifier := f.good.verifier(t)
	bound := func(p *fakePod, name, value string) routing.Backend {
		b := p.backend(name)
		b.Bound = value
		return b
	}
	f.private = testRoute("private", "/me", bound(f.podA, "a", "alice"), bound(f.podB, "b", "bob"))
	f.private.Auth = &routing.Auth{Tokens: verifier, Cookie: "wsg", Query: "access_token", BindingClaim: "sub",
		SubjectHeader: "X-User", ClaimHeaders: []routing.ClaimHeader{{Claim: "email", Header: "X-Email"}}, CloseOnExpiry: true}
	f.team = testRoute("team", "/team", bound(f.podC, "c", "blue"))
	f.team.Auth = &routing.Auth{Tokens: verifier, BindingClaim: "team"}
	f.g.publish(f.routeRooms, f.routeOther, f.routeTenant, f.routeApp, f.routeAny, f.routeWild, f.routeClaimed, f.private, f.team)
	return f
}

func TestAuthHostileTokens(t *testing.T) {
	f := newAuthFixture(t)
	a, b, c := f.podA, f.podB, f.podC
	good := func(sub string, over map[string]any) string { return f.good.sign(t, claimsFor(sub, over), nil, false) }
	alice := good("alice", map[string]any{"email": "alice@example.com"})
	bob := good("bob", nil)
	bearer := func(tok string) string { return "Authorization: Bearer " + tok }
	protocol := func(tok string) string {
		return "Sec-WebSocket-Protocol: " + bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok)) + ", chat"
	}
	aPath, bPath := "/me/"+a.addr.Addr().String()+"/x", "/me/"+b.addr.Addr().String()+"/x"
	cPath := "/team/" + c.addr.Addr().String() + "/"
	absent := "/me/127.0.0.99/x"

	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(mustJSON(t, claimsFor("alice", nil))) + "."
	// HS256 keyed with the public key: the classic algorithm confusion.
	pubJSON := mustJSON(t, f.good.pub)
	hs := &signer{alg: jose.HS256, key: pubJSON, kid: f.good.kid}
	confused := hs.sign(t, claimsFor("alice", nil), nil, false)
	canaryURL := "http://" + f.canaryHost + "/jwks.json"
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaEvil := &signer{alg: jose.RS256, key: rsaKey, kid: "good-1"}

	ok := func(name, req string, pod *fakePod, target string) hostileCase {
		return hostileCase{name: name, req: req, want: 101, dial: pod.addr.String(), pod: pod, podTarget: target}
	}
	no := func(name, req string, want int, header string) hostileCase {
		return hostileCase{name: name, req: req, want: want, header: header}
	}
	const needToken = `Www-Authenticate: Bearer realm="wsgate"`
	invalid := func(name, tok string) hostileCase {
		return no(name, wsHead(aPath, bearer(tok)), 401, "")
	}
	cases := []hostileCase{
		ok("alice's token reaches alice's pod", wsHead(aPath, bearer(alice)), a, "/x"),
		ok("lower-case scheme", wsHead(aPath, "Authorization: bearer "+alice), a, "/x"),
		ok("token in the cookie", wsHead(aPath, "Cookie: theme=dark; wsg="+alice+"; x=y"), a, "/x"),
		ok("token in the subprotocol", wsHead(aPath, protocol(alice)), a, "/x"),
		ok("token in the query, removed from it", wsHead(aPath+"?room=1&access_token="+alice+"&b=2"), a, "/x?room=1&b=2"),
		ok("header first: alice's bearer with bob's cookie", wsHead(aPath, bearer(alice), "Cookie: wsg="+bob), a, "/x"),
		ok("array claim: any element binds", wsHead(cPath, bearer(good("carol", map[string]any{"team": []any{"red", "blue"}}))), c, "/"),

		no("no token", wsHead(aPath), 401, needToken),
		no("no token, pod that exists for nobody", wsHead(absent), 401, needToken),
		no("no token, other person's pod", wsHead(bPath), 401, needToken),
		no("empty bearer", wsHead(aPath, "Authorization: Bearer "), 401, ""),
		no("basic credentials are no token", wsHead(aPath, "Authorization: Basic YWxpY2U6cHc="), 401, needToken),
		no("alice's token on bob's pod", wsHead(bPath, bearer(alice)), 404, ""),
		no("header first: alice's bearer, bob's cookie, bob's pod", wsHead(bPath, bearer(alice), "Cookie: wsg="+bob), 404, ""),
		no("two bearer tokens", wsHead(aPath, bearer(alice), "+"+bearer(bob)), 400, ""),
		no("two cookies of the token's name", wsHead(aPath, "Cookie: wsg="+alice+"; wsg="+bob), 400, ""),
		no("two query parameters", wsHead(aPath+"?access_token="+alice+"&access_token="+bob), 400, ""),
		no("subprotocol token not base64url", wsHead(aPath, "Sec-WebSocket-Protocol: "+bearerProtocolPrefix+"***"), 400, ""),
		no("subprotocol token not in canonical base64url", wsHead(aPath, "Sec-WebSocket-Protocol: "+bearerProtocolPrefix+nonCanonical(alice)), 400, ""),
		no("valid token, address not allowlisted", wsHead(absent, bearer(alice)), 404, ""),
		invalid("alg none", none),
		invalid("HS256 keyed with the public key", confused),
		invalid("expired", good("alice", map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()})),
		invalid("no exp", good("alice", map[string]any{"exp": nil})),
		invalid("not yet valid", good("alice", map[string]any{"nbf": time.Now().Add(10 * time.Minute).Unix()})),
		invalid("issued in the future", good("alice", map[string]any{"iat": time.Now().Add(10 * time.Minute).Unix()})),
		invalid("wrong issuer", good("alice", map[string]any{"iss": "https://issuer.test/"})),
		invalid("issuer case", good("alice", map[string]any{"iss": "HTTPS://ISSUER.TEST"})),
		invalid("wrong audience", good("alice", map[string]any{"aud": "other"})),
		invalid("no audience", good("alice", map[string]any{"aud": nil})),
		invalid("unknown kid", (&signer{alg: jose.ES256, key: f.good.key, kid: "rotated-away"}).sign(t, claimsFor("alice", nil), nil, false)),
		invalid("another key under a known kid", f.evil.sign(t, claimsFor("alice", nil), nil, false)),
		invalid("RS256 under a known kid", rsaEvil.sign(t, claimsFor("alice", nil), nil, false)),
		invalid("jku to the canary", f.evil.sign(t, claimsFor("alice", nil), map[jose.HeaderKey]any{"jku": canaryURL}, false)),
		invalid("x5u to the canary", f.evil.sign(t, claimsFor("alice", nil), map[jose.HeaderKey]any{"x5u": canaryURL}, false)),
		invalid("kid as a path", (&signer{alg: jose.ES256, key: f.evil.key, kid: "../../../../etc/passwd"}).sign(t, claimsFor("alice", nil), nil, false)),
		invalid("kid as a URL", (&signer{alg: jose.ES256, key: f.evil.key, kid: canaryURL}).sign(t, claimsFor("alice", nil), nil, false)),
		invalid("embedded jwk of the attacker", f.evil.sign(t, claimsFor("alice", nil), nil, true)),
		invalid("oversized", good("alice", map[string]any{"pad": strings.Repeat("x", 12<<10)})),
		invalid("garbage", "not.a.token"),
		invalid("two segments", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9"),
		invalid("signature cut off", alice[:strings.LastIndexByte(alice, '.')+1]),
		invalid("payload swapped", swapPayload(t, bob, claimsFor("alice", nil))),
		no("sub as a number", wsHead("/me/"+a.addr.Addr().String()+"/x", bearer(good("", map[string]any{"sub": nil, "uid": 1}))), 404, ""),
		no("binding is case-sensitive", wsHead(cPath, bearer(good("carol", map[string]any{"team": "Blue"}))), 404, ""),
		no("binding claim as a number", wsHead(cPath, bearer(good("carol", map[string]any{"team": 7}))), 404, ""),
		no("binding claim as an array of numbers", wsHead(cPath, bearer(good("carol", map[string]any{"team": []any{7}}))), 404, ""),
		no("binding claim as an object", wsHead(cPath, bearer(good("carol", map[string]any{"team": map[string]any{"blue": "blue"}}))), 404, ""),
		no("binding claim absent", wsHead(cPath, bearer(good("carol", nil))), 404, ""),
		no("binding claim empty", wsHead(cPath, bearer(good("carol", map[string]any{"team": ""}))), 404, ""),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { f.run(t, tc) })
	}

	// A pod one may not reach looks exactly like one that does not exist.
	other := exchange(t, f.g.addr, wsHead(bPath, bearer(alice)))
	missing := exchange(t, f.g.addr, wsHead(absent, bearer(alice)))
	if other.resp.StatusCode != missing.resp.StatusCode || other.body != missing.body || !sameHeaderNames(other.resp.Header, missing.resp.Header) {
		t.Errorf("another person's pod answers %d %q %v, a missing one %d %q %v", other.resp.StatusCode, other.body, other.resp.Header,
			missing.resp.StatusCode, missing.body, missing.resp.Header)
	}
	// A refusal names the error code, never the token.
	bad := exchange(t, f.g.addr, wsHead(aPath, bearer(good("alice", map[string]any{"aud": "other"}))))
	if h := bad.resp.Header.Get("Www-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate %q, want error=\"invalid_token\"", h)
	}
	waitNoTunnels(t, f.g)
}

// TestAuthTokenNeverReachesThePod checks the request the pod gets: no
// token wherever it was, the identity headers set by the gateway and the
// client's copies gone.
func TestAuthTokenNeverReachesThePod(t *testing.T) {
	f := newAuthFixture(t)
	alice := f.good.sign(t, claimsFor("alice", map[string]any{"email": "alice@example.com"}), nil, false)
	aPath := "/me/" + f.podA.addr.Addr().String() + "/x"
	forged := []string{"X-User: bob", "x-user: mallory", "X-Email: bob@example.com"}
	for name, edits := range map[string][]string{
		"bearer":      {"Authorization: Bearer " + alice},
		"cookie":      {"Cookie: a=1; wsg=" + alice + "; b=2"},
		"subprotocol": {"Sec-WebSocket-Protocol: chat, " + bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(alice))},
		"all at once": {"Authorization: Bearer " + alice, "Cookie: wsg=" + alice, "Sec-WebSocket-Protocol: " + bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(alice)) + ", chat"},
	} {
		t.Run(name, func(t *testing.T) {
			before := f.podA.accepted()
			ans := exchange(t, f.g.addr, wsHead(aPath+"?access_token="+alice+"&q=1", append(append([]string{}, edits...), forged...)...))
			if ans.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d %q", ans.resp.StatusCode, ans.body)
			}
			_ = ans.conn.Close()
			pc := f.podA.conn(before)
			pc.wait(t)
			head, req, _, _ := pc.recorded()
			if strings.Contains(head, alice) || strings.Contains(head, alice[:40]) {
				t.Fatalf("the pod got the token:\n%s", head)
			}
			if got := req.Header.Values("X-User"); len(got) != 1 || got[0] != "alice" {
				t.Errorf("X-User %q, want [alice]", got)
			}
			if got := req.Header.Values("X-Email"); len(got) != 1 || got[0] != "alice@example.com" {
				t.Errorf("X-Email %q, want [alice@example.com]", got)
			}
			if req.RequestURI != "/x?q=1" {
				t.Errorf("request-target %q, want /x?q=1", req.RequestURI)
			}
			if name == "cookie" && req.Header.Get("Cookie") != "a=1; b=2" {
				t.Errorf("Cookie %q, want the other cookies only", req.Header.Get("Cookie"))
			}
			if strings.Contains(name, "subprotocol") || name == "all at once" {
				if got := req.Header.Get("Sec-WebSocket-Protocol"); got != "chat" {
					t.Errorf("Sec-WebSocket-Protocol %q, want chat", got)
				}
			}
		})
	}
	waitNoTunnels(t, f.g)
}

// TestAuthRouteWithoutKeysFailsClosed: a route whose keys are not loaded
// refuses every token, dialling nothing.
func TestAuthRouteWithoutKeysFailsClosed(t *testing.T) {
	f := newAuthFixture(t)
	broken := *f.private
	au := *f.private.Auth
	au.Problem = "the key Secret holds no usable key"
	broken.Auth = &au
	f.g.publish(&broken)
	alice := f.good.sign(t, claimsFor("alice", nil), nil, false)
	f.run(t, hostileCase{name: "keys not loaded", req: wsHead("/me/"+f.podA.addr.Addr().String()+"/x", "Authorization: Bearer "+alice), want: 401})
}

// nonCanonical is tok, lengthened with "x" to leave unused bits in the
// last character of its unpadded base64url, with one of those bits set:
// only a lenient decoder reads it (as a token that fails verification,
// 401); a strict one refuses it (400).
func nonCanonical(tok string) string {
	for len(tok)%3 != 1 {
		tok += "x"
	}
	enc := []byte(base64.RawURLEncoding.EncodeToString([]byte(tok)))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, enc[len(enc)-1])
	enc[len(enc)-1] = alphabet[last|1]
	return string(enc)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// swapPayload replaces a signed token's payload, keeping its signature.
func swapPayload(t *testing.T, tok string, claims map[string]any) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString(mustJSON(t, claims))
	return strings.Join(parts, ".")
}

func sameHeaderNames(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}
