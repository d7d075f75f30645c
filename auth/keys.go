package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

const (
	// MaxStaticJWKSBytes bounds a key set read from a Secret.
	MaxStaticJWKSBytes = 64 << 10
	// MaxRemoteJWKSBytes bounds a key set fetched from an issuer.
	MaxRemoteJWKSBytes = 256 << 10
	// MaxJWKSKeys bounds the number of keys in a key set document.
	MaxJWKSKeys = 64
	// MinSharedKeyBytes is the shortest shared HMAC key accepted.
	MinSharedKeyBytes = 32
	// MinRSABits is the size of the smallest RSA key accepted.
	MinRSABits = 2048
	// MaxRSABits bounds the size of RSA keys, and so the cost of
	// checking a signature.
	MaxRSABits = 4096
)

// staticKeys is a fixed set of public keys.
type staticKeys struct {
	keys      []jose.JSONWebKey
	symmetric bool
}

func (s *staticKeys) Keys(_ context.Context, kid string) ([]jose.JSONWebKey, error) {
	return keysByID(s.keys, kid), nil
}

func (s *staticKeys) Symmetric() bool { return s.symmetric }

// sharedKey is one HMAC key. It has no key ID: it is used whatever kid a
// token names.
type sharedKey struct {
	keys []jose.JSONWebKey
}

func (s *sharedKey) Keys(context.Context, string) ([]jose.JSONWebKey, error) {
	return s.keys, nil
}

func (s *sharedKey) Symmetric() bool { return true }

// keysByID returns the keys whose key ID is kid, or all of them when kid
// is "".
func keysByID(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// StaticKeys returns the set of the signing keys in a JSON Web Key Set
// document (at most MaxStaticJWKSBytes and MaxJWKSKeys keys). Only public
// asymmetric keys are kept: RSA of MinRSABits to MaxRSABits bits, EC on
// P-256, P-384 or P-521, and Ed25519. The private part of a private key is
// dropped; keys whose use is not "sig", whose alg is not a signature
// algorithm of their type, symmetric keys and keys of other types are
// skipped. It is an error if no key is left.
func StaticKeys(jwks []byte) (KeySet, error) {
	keys, err := parseJWKS(jwks, MaxStaticJWKSBytes)
	if err != nil {
		return nil, err
	}
	return &staticKeys{keys: keys}, nil
}

// SharedKey returns the set of one shared HMAC key of at least
// MinSharedKeyBytes bytes, under which HS256, HS384 and HS512 tokens, and
// only those, are accepted (HS384 with a key of 48 bytes or more, HS512 of
// 64 or more).
func SharedKey(secret []byte) (KeySet, error) {
	if len(secret) < MinSharedKeyBytes {
		return nil, fmt.Errorf("shared key has %d bytes, at least %d are needed", len(secret), MinSharedKeyBytes)
	}
	key := make([]byte, len(secret))
	copy(key, secret)
	return &sharedKey{keys: []jose.JSONWebKey{{Key: key, Use: "sig"}}}, nil
}

// parseJWKS reads the usable signing keys of a JSON Web Key Set document.
// A key the JOSE library cannot read is skipped like any other unusable
// key, so that one odd key does not hide the others.
func parseJWKS(doc []byte, maxBytes int) ([]jose.JSONWebKey, error) {
	if len(doc) > maxBytes {
		return nil, fmt.Errorf("key set document is larger than %d bytes", maxBytes)
	}
	var set struct {
		Keys []josejson.RawMessage `json:"keys"`
	}
	if err := josejson.Unmarshal(doc, &set); err != nil {
		return nil, errors.New("key set document is not a JSON Web Key Set")
	}
	if len(set.Keys) > MaxJWKSKeys {
		return nil, fmt.Errorf("key set document has %d keys, at most %d are read", len(set.Keys), MaxJWKSKeys)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if pk, ok := signingKey(&k); ok {
			keys = append(keys, pk)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable signing key")
	}
	return keys, nil
}

// signingKey returns the public part of k when it is a usable signing key.
func signingKey(k *jose.JSONWebKey) (jose.JSONWebKey, bool) {
	if k.Use != "" && k.Use != "sig" {
		return jose.JSONWebKey{}, false
	}
	var pub any
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		pub = key
	case *rsa.PrivateKey:
		pub = &key.PublicKey
	case *ecdsa.PublicKey:
		pub = key
	case *ecdsa.PrivateKey:
		pub = &key.PublicKey
	case ed25519.PublicKey:
		pub = key
	case ed25519.PrivateKey:
		pub = key.Public()
	default:
		return jose.JSONWebKey{}, false
	}
	var algs []jose.SignatureAlgorithm
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if !rsaSizeOK(key) {
			return jose.JSONWebKey{}, false
		}
		algs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256():
			algs = []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			algs = []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			algs = []jose.SignatureAlgorithm{jose.ES512}
		default:
			return jose.JSONWebKey{}, false
		}
	case ed25519.PublicKey:
		if len(key) != ed25519.PublicKeySize {
			return jose.JSONWebKey{}, false
		}
		algs = []jose.SignatureAlgorithm{jose.EdDSA}
	}
	if k.Algorithm != "" && !slices.Contains(algs, jose.SignatureAlgorithm(k.Algorithm)) {
		return jose.JSONWebKey{}, false
	}
	return jose.JSONWebKey{Key: pub, KeyID: k.KeyID, Algorithm: k.Algorithm, Use: k.Use}, true
}

// rsaSizeOK accepts RSA keys of MinRSABits to MaxRSABits with the public
// exponent 65537, as every issuer makes them: a large exponent would make
// each signature check cost what the tenant who wrote the key chose.
func rsaSizeOK(k *rsa.PublicKey) bool {
	if k == nil || k.N == nil || k.E != 65537 {
		return false
	}
	n := k.N.BitLen()
	return n >= MinRSABits && n <= MaxRSABits
}
