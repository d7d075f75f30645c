package auth

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// testSet is a StaticKeys set of one key of each kind, and the private
// keys that sign for it.
type testSet struct {
	keys KeySet
	rsa  any // kid "rsa1", no alg
	rs   any // kid "rs256-only", alg RS256
	ec   any // kid "ec1", alg ES256
	ec3  any // kid "ec384"
	ec5  any // kid "ec521"
	ed   any // kid "ed1"
}

func newTestSet(t testing.TB) *testSet {
	t.Helper()
	s := &testSet{
		rsa: rsaKey(t, 0),
		rs:  rsaKey(t, 1),
		ec:  ecKey(t, elliptic.P256()),
		ec3: ecKey(t, elliptic.P384()),
		ec5: ecKey(t, elliptic.P521()),
		ed:  edKey(t),
	}
	doc := jwksOf(t,
		jose.JSONWebKey{Key: s.rsa, KeyID: "rsa1", Use: "sig"},
		jose.JSONWebKey{Key: s.rs, KeyID: "rs256-only", Algorithm: "RS256"},
		jose.JSONWebKey{Key: s.ec, KeyID: "ec1", Algorithm: "ES256", Use: "sig"},
		jose.JSONWebKey{Key: s.ec3, KeyID: "ec384"},
		jose.JSONWebKey{Key: s.ec5, KeyID: "ec521"},
		jose.JSONWebKey{Key: s.ed, KeyID: "ed1"},
	)
	keys, err := StaticKeys(doc)
	if err != nil {
		t.Fatal(err)
	}
	s.keys = keys
	return s
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signPayload signs payload bytes as they are, to build claims the JWT
// builder would not write.
func signPayload(t testing.TB, alg jose.SignatureAlgorithm, key any, kid, payload string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// selfSigned returns a DER certificate for key's public key, signed by
// key.
func selfSigned(t testing.TB, key any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, publicOf(key), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// assertRefused checks that err is an *Error that refuses the token for
// the reason want, and holds no part of it.
func assertRefused(t *testing.T, token string, claims *Claims, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted (subject %q), want refusal %q", claims.Subject, want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *Error", err)
	}
	if e.Code != "invalid_token" {
		t.Errorf("code %q, want invalid_token", e.Code)
	}
	if e.Description != want {
		t.Errorf("description %q, want %q", e.Description, want)
	}
	for _, part := range strings.FieldsFunc(token, func(r rune) bool { return r == '.' }) {
		if len(part) >= 6 && strings.Contains(e.Error(), part) {
			t.Errorf("error %q holds part of the token", e.Error())
		}
	}
}

func TestVerifyRefusesAttacks(t *testing.T) {
	s := newTestSet(t)
	attacker := rsaKey(t, 2)
	attackerEC := ecKey(t, elliptic.P256())

	// A server an attacker names in jku and x5u: nothing may reach it.
	var attackerHits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write(jwksOf(t, jose.JSONWebKey{Key: attacker, KeyID: "rsa1"}))
	}))
	defer evil.Close()

	rsaPubDER, err := x509.MarshalPKIXPublicKey(publicOf(s.rsa))
	if err != nil {
		t.Fatal(err)
	}
	rsaPubJWK := mustJSON(t, jose.JSONWebKey{Key: publicOf(s.rsa), KeyID: "rsa1"})
	good := goodClaims()
	goodPayload := b64(mustJSON(t, good))
	valid := sign(t, jose.ES256, s.ec, "ec1", good, nil)
	validParts := strings.Split(valid, ".")
	otherValid := sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["sub"] = "mallory" }), nil)
	tamperedPayload := validParts[0] + "." + strings.Split(otherValid, ".")[1] + "." + validParts[2]

	pointing := func(kid string) *jose.SignerOptions {
		o := &jose.SignerOptions{EmbedJWK: true}
		o.WithHeader("jku", evil.URL+"/jwks")
		o.WithHeader("x5u", evil.URL+"/cert")
		o.WithHeader("x5c", []string{base64.StdEncoding.EncodeToString(selfSigned(t, attacker))})
		if kid != "" {
			o.WithHeader(jose.HeaderKey("kid"), kid)
		}
		return o
	}

	rsaJWE := func() string {
		enc, err := jose.NewEncrypter(jose.A128GCM,
			jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: publicOf(s.rsa)},
			(&jose.EncrypterOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Encrypted(enc).Claims(good).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	twoSignatures := func() string {
		signer, err := jose.NewMultiSigner([]jose.SigningKey{
			{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: s.rsa, KeyID: "rsa1"}},
			{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.ec, KeyID: "ec1"}},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		jws, err := signer.Sign([]byte(mustJSON(t, good)))
		if err != nil {
			t.Fatal(err)
		}
		return jws.FullSerialize()
	}

	flattened := func() string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.ec, KeyID: "ec1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		jws, err := signer.Sign([]byte(mustJSON(t, good)))
		if err != nil {
			t.Fatal(err)
		}
		return jws.FullSerialize()
	}

	critical := (&jose.SignerOptions{}).WithCritical("wsgate").WithHeader("wsgate", true)

	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"empty", "", "no token"},
		{"garbage", "not a token", "malformed token"},
		{"three empty parts", "..", "signature algorithm not accepted"},
		{"bad base64", "eyJ!.eyJ!.abc", "malformed token"},
		{"header not JSON", b64("alg") + "." + goodPayload + ".", "malformed token"},
		{"trailing space", valid + " ", "malformed token"},
		{"alg none", b64(`{"alg":"none","typ":"JWT"}`) + "." + goodPayload + ".", "signature algorithm not accepted"},
		{"alg None", b64(`{"alg":"None","typ":"JWT","kid":"rsa1"}`) + "." + goodPayload + ".", "signature algorithm not accepted"},
		{"alg none with a signature", b64(`{"alg":"none"}`) + "." + goodPayload + "." + validParts[2], "signature algorithm not accepted"},
		{"HS256 with the RSA public key's DER", sign(t, jose.HS256, rsaPubDER, "rsa1", good, nil), "signature algorithm not accepted"},
		{"HS256 with the RSA public key's JWK", sign(t, jose.HS256, []byte(rsaPubJWK), "rsa1", good, nil), "signature algorithm not accepted"},
		{"HS256 with a random secret", sign(t, jose.HS256, []byte(strings.Repeat("k", 32)), "", good, nil), "signature algorithm not accepted"},
		{"jwk, jku, x5u, x5c to the attacker's key, no kid", sign(t, jose.RS256, attacker, "", good, pointing("")), "bad signature"},
		{"jwk, jku, x5u, x5c to the attacker's key, set's kid", sign(t, jose.RS256, attacker, "", good, pointing("rsa1")), "bad signature"},
		{"attacker's key, set's kid", sign(t, jose.RS256, attacker, "rsa1", good, nil), "bad signature"},
		{"attacker's EC key, no kid", sign(t, jose.ES256, attackerEC, "", good, nil), "bad signature"},
		{"payload swapped", tamperedPayload, "bad signature"},
		{"signature cut", validParts[0] + "." + validParts[1] + ".", "bad signature"},
		{"wrong issuer", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["iss"] = "https://evil.test" }), nil), "wrong issuer"},
		{"issuer with a trailing slash", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["iss"] = testIssuer + "/" }), nil), "wrong issuer"},
		{"issuer in other case", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["iss"] = strings.ToUpper(testIssuer) }), nil), "wrong issuer"},
		{"no issuer", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { delete(c, "iss") }), nil), "wrong issuer"},
		{"issuer under ISS", signPayload(t, jose.ES256, s.ec, "ec1", `{"ISS":"`+testIssuer+`","aud":"wsgate","exp":`+mustJSON(t, good["exp"])+`}`), "wrong issuer"},
		{"two issuers", signPayload(t, jose.ES256, s.ec, "ec1", `{"iss":"https://evil.test","iss":"`+testIssuer+`","aud":"wsgate","exp":`+mustJSON(t, good["exp"])+`}`), "malformed token"},
		{"wrong audience", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["aud"] = "other" }), nil), "wrong audience"},
		{"audience in other case", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["aud"] = []string{"WSGATE"} }), nil), "wrong audience"},
		{"no audience", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { delete(c, "aud") }), nil), "wrong audience"},
		{"empty audience", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["aud"] = []string{} }), nil), "wrong audience"},
		{"no exp", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { delete(c, "exp") }), nil), "token has no expiry"},
		{"exp as a string", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["exp"] = "4102444800" }), nil), "malformed token"},
		{"exp past the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["exp"] = testNow.Add(-31 * time.Second).Unix() }), nil), "token expired"},
		{"nbf beyond the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["nbf"] = testNow.Add(31 * time.Second).Unix() }), nil), "token not valid yet"},
		{"iat beyond the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["iat"] = testNow.Add(2 * time.Minute).Unix() }), nil), "token issued in the future"},
		{"unknown kid", sign(t, jose.ES256, s.ec, "ec-unknown", good, nil), "unknown signing key"},
		{"kid in other case", sign(t, jose.ES256, s.ec, "EC1", good, nil), "unknown signing key"},
		{"PS256 naming an EC key", sign(t, jose.PS256, s.rsa, "ec1", good, nil), "signing key does not fit the algorithm"},
		{"ES384 naming a P-256 key", sign(t, jose.ES384, s.ec3, "ec1", good, nil), "signing key does not fit the algorithm"},
		{"EdDSA naming an RSA key", sign(t, jose.EdDSA, s.ed, "rsa1", good, nil), "signing key does not fit the algorithm"},
		{"PS256 with a key whose alg is RS256", sign(t, jose.PS256, s.rs, "rs256-only", good, nil), "signing key does not fit the algorithm"},
		{"unknown critical header", sign(t, jose.ES256, s.ec, "ec1", good, critical), "malformed token"},
		{"too long", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["pad"] = strings.Repeat("a", MaxTokenBytes) }), nil), "token too long"},
		{"JWE", rsaJWE(), "encrypted tokens are not accepted"},
		{"two signatures, JSON serialization", twoSignatures(), "malformed token"},
		{"flattened JSON serialization", flattened(), "malformed token"},
	}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.token, testNow)
			assertRefused(t, tt.token, c, err, tt.want)
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Errorf("the server a token named was asked %d times", n)
	}
}

func TestVerifyAccepts(t *testing.T) {
	s := newTestSet(t)
	good := goodClaims()
	tests := []struct {
		name  string
		token string
	}{
		{"RS256", sign(t, jose.RS256, s.rsa, "rsa1", good, nil)},
		{"RS512", sign(t, jose.RS512, s.rsa, "rsa1", good, nil)},
		{"PS256", sign(t, jose.PS256, s.rsa, "rsa1", good, nil)},
		{"PS384", sign(t, jose.PS384, s.rsa, "rsa1", good, nil)},
		{"RS256 with a key whose alg is RS256", sign(t, jose.RS256, s.rs, "rs256-only", good, nil)},
		{"ES256", sign(t, jose.ES256, s.ec, "ec1", good, nil)},
		{"ES384", sign(t, jose.ES384, s.ec3, "ec384", good, nil)},
		{"ES512", sign(t, jose.ES512, s.ec5, "ec521", good, nil)},
		{"EdDSA", sign(t, jose.EdDSA, s.ed, "ed1", good, nil)},
		{"ES256 without kid", sign(t, jose.ES256, s.ec, "", good, nil)},
		{"EdDSA without kid", sign(t, jose.EdDSA, s.ed, "", good, nil)},
		{"audience as a string", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["aud"] = testAudience }), nil)},
		{"exp within the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["exp"] = testNow.Add(-10 * time.Second).Unix() }), nil)},
		{"nbf within the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["nbf"] = testNow.Add(10 * time.Second).Unix() }), nil)},
		{"iat within the leeway", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["iat"] = testNow.Add(10 * time.Second).Unix() }), nil)},
		{"no iat nor nbf", sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { delete(c, "iat"); delete(c, "nbf") }), nil)},
	}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{"nobody", testAudience}, Keys: s.keys})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.token, testNow)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if c.Subject != "alice" {
				t.Errorf("subject %q", c.Subject)
			}
		})
	}
	c, err := v.Verify(context.Background(), tests[0].token, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(good["exp"].(int64), 0); !c.Expiry.Equal(want) {
		t.Errorf("expiry %v, want %v", c.Expiry, want)
	}
}

func TestVerifyLeeway(t *testing.T) {
	s := newTestSet(t)
	tok := sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["exp"] = testNow.Add(-10 * time.Second).Unix() }), nil)
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys, Leeway: 5 * time.Second})
	c, err := v.Verify(context.Background(), tok, testNow)
	assertRefused(t, tok, c, err, "token expired")
	v = NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys, Leeway: time.Minute})
	if _, err := v.Verify(context.Background(), tok, testNow); err != nil {
		t.Errorf("refused within a one-minute leeway: %v", err)
	}
}

func TestVerifySharedKey(t *testing.T) {
	s := newTestSet(t)
	secret := []byte(strings.Repeat("0123456789abcdef", 4))
	shared, err := SharedKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	good := goodClaims()
	hs := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: shared})
	static := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys})

	for _, alg := range []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512} {
		tok := sign(t, alg, secret, "", good, nil)
		if _, err := hs.Verify(context.Background(), tok, testNow); err != nil {
			t.Errorf("%s refused with the shared key: %v", alg, err)
		}
		c, err := static.Verify(context.Background(), tok, testNow)
		assertRefused(t, tok, c, err, "signature algorithm not accepted")
	}
	// Any kid names the shared key.
	if _, err := hs.Verify(context.Background(), sign(t, jose.HS256, secret, "whatever", good, nil), testNow); err != nil {
		t.Errorf("HS256 with a kid refused: %v", err)
	}
	for name, tok := range map[string]string{
		"other secret": sign(t, jose.HS256, []byte(strings.Repeat("x", 32)), "", good, nil),
		"RS256":        sign(t, jose.RS256, s.rsa, "rsa1", good, nil),
		"ES256":        sign(t, jose.ES256, s.ec, "", good, nil),
		"alg none":     b64(`{"alg":"none"}`) + "." + b64(mustJSON(t, good)) + ".",
	} {
		c, err := hs.Verify(context.Background(), tok, testNow)
		want := "signature algorithm not accepted"
		if name == "other secret" {
			want = "bad signature"
		}
		t.Run(name, func(t *testing.T) { assertRefused(t, tok, c, err, want) })
	}
	if _, err := SharedKey(secret[:31]); err == nil {
		t.Error("a 31-byte shared key was taken")
	}

	// A 32-byte key signs HS256 only.
	short, err := SharedKey(secret[:32])
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: short})
	if _, err := v.Verify(context.Background(), sign(t, jose.HS256, secret[:32], "", good, nil), testNow); err != nil {
		t.Errorf("HS256 with a 32-byte key refused: %v", err)
	}
	hs512 := sign(t, jose.HS512, secret, "", good, nil)
	c, err := v.Verify(context.Background(), hs512, testNow)
	assertRefused(t, hs512, c, err, "signing key does not fit the algorithm")
}

// issuerSet is an IssuerKeySet whose issuer the test sets.
type issuerSet struct {
	KeySet
	issuer string
}

func (s *issuerSet) Issuer() string { return s.issuer }

// errorSet is a key set that cannot give keys.
type errorSet struct{}

func (errorSet) Keys(context.Context, string) ([]jose.JSONWebKey, error) {
	return nil, errors.New("not loaded")
}
func (errorSet) Symmetric() bool { return false }

func TestVerifyIssuerFromKeySet(t *testing.T) {
	s := newTestSet(t)
	tok := sign(t, jose.ES256, s.ec, "ec1", goodClaims(), nil)
	set := &issuerSet{KeySet: s.keys}
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: set})
	c, err := v.Verify(context.Background(), tok, testNow)
	assertRefused(t, tok, c, err, "issuer not known yet")

	set.issuer = "https://other.test"
	c, err = v.Verify(context.Background(), tok, testNow)
	assertRefused(t, tok, c, err, "wrong issuer")

	set.issuer = testIssuer
	if _, err := v.Verify(context.Background(), tok, testNow); err != nil {
		t.Errorf("refused with the set's issuer: %v", err)
	}

	// A set that does not know its issuer refuses everything without
	// Config.Issuer.
	v = NewVerifier(Config{Audiences: []string{testAudience}, Keys: s.keys})
	c, err = v.Verify(context.Background(), tok, testNow)
	assertRefused(t, tok, c, err, "issuer not known yet")
}

func TestVerifyMisconfigured(t *testing.T) {
	s := newTestSet(t)
	tok := sign(t, jose.ES256, s.ec, "ec1", goodClaims(), nil)
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no audiences", Config{Issuer: testIssuer, Keys: s.keys}, "no audience accepted"},
		{"empty audience", Config{Issuer: testIssuer, Audiences: []string{""}, Keys: s.keys}, "no audience accepted"},
		{"no keys", Config{Issuer: testIssuer, Audiences: []string{testAudience}}, "no signing keys"},
		{"keys unavailable", Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: errorSet{}}, "signing keys unavailable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewVerifier(tt.cfg).Verify(context.Background(), tok, testNow)
			assertRefused(t, tok, c, err, tt.want)
		})
	}
}

func TestClaimsValuesAndHeaderValue(t *testing.T) {
	s := newTestSet(t)
	claims := with(func(c map[string]any) {
		c["team"] = "blue"
		c["empty"] = ""
		c["groups"] = []any{"a", "", 7, "b", nil, []string{"x"}, "c"}
		c["num"] = 12345678901234567
		c["float"] = 1.5
		c["yes"] = true
		c["null"] = nil
		c["obj"] = map[string]any{"a": "b"}
		c["crlf"] = "a\r\nX-Injected: 1"
		c["nul"] = "a\x00b"
		c["tab"] = "a\tb"
		c["list"] = []string{"x", "y"}
		c["mixed"] = []any{"x", 1}
		c["badlist"] = []string{"x", "y\nz"}
		c["Team"] = "red"
	})
	tok := sign(t, jose.ES256, s.ec, "ec1", claims, nil)
	c, err := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys}).Verify(context.Background(), tok, testNow)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{
		"team":    {"blue"},
		"Team":    {"red"},
		"TEAM":    nil,
		"empty":   nil,
		"groups":  {"a", "b", "c"},
		"num":     nil,
		"yes":     nil,
		"null":    nil,
		"obj":     nil,
		"absent":  nil,
		"sub":     {"alice"},
		"aud":     {"other", testAudience},
		"exp":     nil,
		"list":    {"x", "y"},
		"badlist": {"x", "y\nz"},
	}
	for name, want := range values {
		if got := c.Values(name); strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Errorf("Values(%q) = %q, want %q", name, got, want)
		}
	}
	headers := map[string]struct {
		v  string
		ok bool
	}{
		"team":    {"blue", true},
		"empty":   {"", true},
		"num":     {"12345678901234567", true},
		"float":   {"1.5", true},
		"yes":     {"true", true},
		"exp":     {mustJSON(t, claims["exp"]), true},
		"list":    {"x, y", true},
		"aud":     {"other, " + testAudience, true},
		"mixed":   {"", false},
		"groups":  {"", false},
		"null":    {"", false},
		"obj":     {"", false},
		"absent":  {"", false},
		"crlf":    {"", false},
		"nul":     {"", false},
		"tab":     {"", false},
		"badlist": {"", false},
	}
	for name, want := range headers {
		v, ok := c.HeaderValue(name)
		if v != want.v || ok != want.ok {
			t.Errorf("HeaderValue(%q) = %q, %v; want %q, %v", name, v, ok, want.v, want.ok)
		}
	}
	var nilClaims *Claims
	if nilClaims.Values("sub") != nil {
		t.Error("nil claims have values")
	}
	if _, ok := nilClaims.HeaderValue("sub"); ok {
		t.Error("nil claims have a header value")
	}
}
