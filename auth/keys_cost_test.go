package auth

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// A key set is written by a tenant (a key Secret) or an issuer; what one
// forged token makes the gateway compute must not be theirs to choose.

// dupKidJWKS is a key set document of n random RSA moduli of bits bits,
// all under key ID "k", with public exponent e (base64url).
func dupKidJWKS(t testing.TB, n, bits int, e string) []byte {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		m, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
		if err != nil {
			t.Fatal(err)
		}
		m.SetBit(m, bits-1, 1)
		m.SetBit(m, 0, 1)
		keys[i] = fmt.Sprintf(`{"kty":"RSA","kid":"k","n":%q,"e":%q}`, base64.RawURLEncoding.EncodeToString(m.Bytes()), e)
	}
	return []byte(`{"keys":[` + strings.Join(keys, ",") + `]}`)
}

// A token is checked against at most maxCandidates keys, whether it names
// a key ID that many keys share or none.
func TestSignatureChecksPerTokenAreCapped(t *testing.T) {
	keys, err := StaticKeys(dupKidJWKS(t, MaxJWKSKeys, 2048, "AQAB"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{"k", ""} {
		ks, err := keys.Keys(t.Context(), kid)
		if err != nil || len(ks) != MaxJWKSKeys {
			t.Fatalf("kid %q: %d keys, %v; want all %d", kid, len(ks), err, MaxJWKSKeys)
		}
		if n := len(candidateKeys(ks, jose.RS512)); n != maxCandidates {
			t.Errorf("kid %q: a token is checked against %d keys, want at most %d", kid, n, maxCandidates)
		}
	}
}

// RSA keys other than e = 65537 are not used: a large exponent makes each
// check as slow as its writer likes.
func TestRSAKeysNeedTheUsualExponent(t *testing.T) {
	bigE := base64.RawURLEncoding.EncodeToString(big.NewInt(1<<31 - 1).Bytes())
	if _, err := StaticKeys(dupKidJWKS(t, 2, 2048, bigE)); err == nil {
		t.Error("a key set of RSA keys with e = 2^31-1 was accepted")
	}
	if _, err := StaticKeys(dupKidJWKS(t, 1, 2048, "Aw")); err == nil {
		t.Error("a key set of an RSA key with e = 3 was accepted")
	}
	if _, err := StaticKeys(dupKidJWKS(t, 1, 2048, "AQAB")); err != nil {
		t.Errorf("an RSA key with e = 65537: %v", err)
	}
}
