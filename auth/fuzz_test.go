package auth

import (
	"context"
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, and
// must accept nothing but the tokens the set's key signed.
func FuzzVerify(f *testing.F) {
	key := ecKey(f, elliptic.P256())
	set, err := StaticKeys(jwksOf(f, jose.JSONWebKey{Key: key, KeyID: "k1"}))
	if err != nil {
		f.Fatal(err)
	}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: set})

	// The payloads the key signed; an accepted token must carry one.
	signed := map[string]bool{}
	add := func(claims map[string]any, kid string) {
		tok := sign(f, jose.ES256, key, kid, claims, nil)
		signed[strings.Split(tok, ".")[1]] = true
		f.Add(tok)
	}
	add(goodClaims(), "k1")
	add(goodClaims(), "")
	add(with(func(c map[string]any) { c["groups"] = []any{"a", 1, nil} }), "k1")
	f.Add(b64(`{"alg":"none"}`) + "." + b64(mustJSON(f, goodClaims())) + ".")
	f.Add(b64(`{"alg":"HS256","kid":"k1"}`) + "." + b64(mustJSON(f, goodClaims())) + ".c2ln")
	f.Add("a.b.c.d.e")
	f.Add("{}")

	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token, testNow)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != "invalid_token" || e.Description == "" {
				t.Fatalf("error %#v", err)
			}
			if len(token) >= 8 && strings.Contains(e.Description, token) {
				t.Fatalf("error %q holds the token", e.Description)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 || !signed[parts[1]] {
			t.Fatalf("accepted a token the key did not sign: %q", token)
		}
		if c.Subject != "alice" {
			t.Fatalf("accepted subject %q", c.Subject)
		}
		_ = c.Values("groups")
		_, _ = c.HeaderValue("groups")
	})
}
