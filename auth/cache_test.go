package auth

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// countingSet counts the lookups of a key set: a lookup is a signature
// check to come.
type countingSet struct {
	KeySet
	lookups atomic.Int64
}

func (s *countingSet) Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	s.lookups.Add(1)
	return s.KeySet.Keys(ctx, kid)
}

func TestVerifiedTokensAreNotVerifiedAgain(t *testing.T) {
	s := newTestSet(t)
	set := &countingSet{KeySet: s.keys}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: set})
	ctx := context.Background()
	tok := sign(t, jose.ES256, s.ec, "ec1", goodClaims(), nil)
	for range 5 {
		if _, err := v.Verify(ctx, tok, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if n := set.lookups.Load(); n != 1 {
		t.Errorf("5 handshakes with one token checked its signature %d times, want 1", n)
	}

	// A cached token still expires: past exp and the leeway it is
	// refused, checked afresh.
	exp := time.Unix(goodClaims()["exp"].(int64), 0)
	c, err := v.Verify(ctx, tok, exp.Add(DefaultLeeway+time.Second))
	assertRefused(t, tok, c, err, "token expired")
	// And is not valid before its time either.
	c, err = v.Verify(ctx, tok, testNow.Add(-time.Hour))
	if err == nil {
		t.Errorf("a cached token was accepted an hour before it was issued: %+v", c)
	}

	// Refused tokens are not remembered: each is checked again.
	bad := sign(t, jose.ES256, s.ec, "ec1", with(func(c map[string]any) { c["aud"] = "other" }), nil)
	before := set.lookups.Load()
	for range 3 {
		if _, err := v.Verify(ctx, bad, testNow); err == nil {
			t.Fatal("a token for another audience was accepted")
		}
	}
	if n := set.lookups.Load() - before; n != 3 {
		t.Errorf("3 refusals of one token made %d key lookups, want 3", n)
	}
	if n := len(v.cache.entries); n != 1 {
		t.Errorf("the cache holds %d tokens, want 1 (refusals are not kept)", n)
	}
}

// A verifier for new keys (a new routing table) does not know the tokens
// the old one accepted: a token of a removed key is refused at once.
func TestVerifiedTokensDoNotOutliveTheirKeys(t *testing.T) {
	s := newTestSet(t)
	ctx := context.Background()
	tok := sign(t, jose.ES256, s.ec, "ec1", goodClaims(), nil)
	old := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys})
	if _, err := old.Verify(ctx, tok, testNow); err != nil {
		t.Fatal(err)
	}
	other := newTestSet(t)
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: other.keys})
	c, err := v.Verify(ctx, tok, testNow)
	assertRefused(t, tok, c, err, "bad signature")

	// A set that learns another issuer no longer accepts the cached token.
	set := &issuerSet{KeySet: s.keys, issuer: testIssuer}
	v = NewVerifier(Config{Audiences: []string{testAudience}, Keys: set})
	if _, err := v.Verify(ctx, tok, testNow); err != nil {
		t.Fatal(err)
	}
	set.issuer = "https://other.test"
	c, err = v.Verify(ctx, tok, testNow)
	assertRefused(t, tok, c, err, "wrong issuer")
}

func TestVerifiedCacheIsBounded(t *testing.T) {
	s := newTestSet(t)
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: s.keys})
	for i := range verifiedCacheSize + 100 {
		tok := sign(t, jose.EdDSA, s.ed, "ed1", with(func(c map[string]any) { c["sub"] = fmt.Sprint("user-", i) }), nil)
		if _, err := v.Verify(context.Background(), tok, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cache.entries); n != verifiedCacheSize {
		t.Errorf("the cache holds %d tokens, want %d", n, verifiedCacheSize)
	}
}

// versionedSet is a key set whose keys a test swaps, as a fetch does.
type versionedSet struct {
	KeySet
	version uint64
}

func (s *versionedSet) Version() uint64 { return s.version }

// A token accepted before its key set changed is verified again: a key
// removed from a fetched set stops its tokens at once, before any new
// routing table.
func TestVerifiedTokensAreCheckedAgainWhenTheKeysChange(t *testing.T) {
	s := newTestSet(t)
	set := &versionedSet{KeySet: s.keys}
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: set})
	tok := sign(t, jose.ES256, s.ec, "ec1", goodClaims(), nil)
	if _, err := v.Verify(context.Background(), tok, testNow); err != nil {
		t.Fatal(err)
	}
	set.KeySet, set.version = newTestSet(t).keys, 1
	c, err := v.Verify(context.Background(), tok, testNow)
	assertRefused(t, tok, c, err, "bad signature")
}
