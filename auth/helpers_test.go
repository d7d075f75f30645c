package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// testNow is the time tokens are checked at.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	testIssuer   = "https://issuer.test"
	testAudience = "wsgate"
)

var (
	rsaOnce  sync.Once
	rsaCache []*rsa.PrivateKey
)

// rsaKey returns the i-th of a few 2048-bit RSA keys generated once per
// test binary.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaCache = append(rsaCache, k)
		}
	})
	return rsaCache[i]
}

func ecKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publicOf returns the public key of a private key.
func publicOf(key any) any {
	if s, ok := key.(crypto.Signer); ok {
		return s.Public()
	}
	return key
}

// jwksOf returns a JSON Web Key Set document of the public keys given.
func jwksOf(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		k.Key = publicOf(k.Key)
		set.Keys = append(set.Keys, k)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims returns the usual claims of a good token at testNow.
func goodClaims() map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"sub": "alice",
		"aud": []string{"other", testAudience},
		"exp": testNow.Add(time.Hour).Unix(),
		"iat": testNow.Add(-time.Minute).Unix(),
		"nbf": testNow.Add(-time.Minute).Unix(),
	}
}

// with returns goodClaims changed by edit.
func with(edit func(map[string]any)) map[string]any {
	c := goodClaims()
	edit(c)
	return c
}

// sign returns a compact JWS of claims signed with key under alg, with
// kid and extra headers.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any, opts *jose.SignerOptions) string {
	t.Helper()
	if opts == nil {
		opts = &jose.SignerOptions{}
	}
	opts.WithType("JWT")
	sk := key
	if kid != "" {
		sk = jose.JSONWebKey{Key: key, KeyID: kid}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: sk}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
