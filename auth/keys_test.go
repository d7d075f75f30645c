package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestStaticKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec := ecKey(t, elliptic.P256())
	ed := edKey(t)

	// A private JWKS, as pasted into a Secret by mistake.
	private, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: ec, KeyID: "ec"},
		{Key: rsaKey(t, 0), KeyID: "rsa"},
		{Key: ed, KeyID: "ed"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := StaticKeys(private)
	if err != nil {
		t.Fatal(err)
	}
	if set.Symmetric() {
		t.Error("a JWKS set is symmetric")
	}
	keys, _ := set.Keys(context.Background(), "")
	if len(keys) != 3 {
		t.Fatalf("%d keys, want 3", len(keys))
	}
	for _, k := range keys {
		if !k.IsPublic() {
			t.Errorf("key %q kept its private part (%T)", k.KeyID, k.Key)
		}
		switch k.Key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			t.Errorf("key %q kept its private part (%T)", k.KeyID, k.Key)
		}
	}
	if keys, _ := set.Keys(context.Background(), "rsa"); len(keys) != 1 || keys[0].KeyID != "rsa" {
		t.Errorf("Keys(rsa) = %v", keys)
	}
	if keys, _ := set.Keys(context.Background(), "nope"); len(keys) != 0 {
		t.Errorf("Keys(nope) = %v", keys)
	}

	mixed := jwksOf(t,
		jose.JSONWebKey{Key: small, KeyID: "small"},
		jose.JSONWebKey{Key: rsaKey(t, 0), KeyID: "enc", Use: "enc"},
		jose.JSONWebKey{Key: rsaKey(t, 0), KeyID: "oaep", Algorithm: "RSA-OAEP-256"},
		jose.JSONWebKey{Key: ec, KeyID: "ec-as-es384", Algorithm: "ES384"},
		jose.JSONWebKey{Key: []byte(strings.Repeat("s", 32)), KeyID: "oct"},
		jose.JSONWebKey{Key: ed, KeyID: "good"},
	)
	// An entry the JOSE library cannot read is skipped too.
	mixed = []byte(strings.Replace(string(mixed), `"keys":[`, `"keys":[{"kty":"unknown","kid":"odd"},`, 1))
	set, err = StaticKeys(mixed)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ = set.Keys(context.Background(), "")
	if len(keys) != 1 || keys[0].KeyID != "good" {
		var ids []string
		for _, k := range keys {
			ids = append(ids, k.KeyID)
		}
		t.Errorf("kept %q, want only good", ids)
	}

	many := jose.JSONWebKeySet{}
	for i := range MaxJWKSKeys + 1 {
		many.Keys = append(many.Keys, jose.JSONWebKey{Key: ed.Public(), KeyID: fmt.Sprint(i)})
	}
	manyDoc, _ := json.Marshal(many)
	for name, doc := range map[string][]byte{
		"not JSON":       []byte("{"),
		"not a key set":  []byte(`"keys"`),
		"empty":          []byte(`{"keys":[]}`),
		"only unusable":  jwksOf(t, jose.JSONWebKey{Key: small, KeyID: "small"}),
		"only symmetric": []byte(`{"keys":[{"kty":"oct","k":"` + strings.Repeat("A", 43) + `"}]}`),
		"too many keys":  manyDoc,
		"too large":      []byte(`{"keys":[],"x":"` + strings.Repeat("x", MaxStaticJWKSBytes) + `"}`),
	} {
		if _, err := StaticKeys(doc); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
