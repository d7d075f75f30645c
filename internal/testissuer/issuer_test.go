package testissuer

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

type discovery struct {
	Issuer        string   `json:"issuer"`
	JWKSURI       string   `json:"jwks_uri"`
	TokenEndpoint string   `json:"token_endpoint"`
	GrantTypes    []string `json:"grant_types_supported"`
	IDTokenAlgs   []string `json:"id_token_signing_alg_values_supported"`
}

func get(t *testing.T, c *http.Client, u string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, http.NoBody)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func fetchDiscovery(t *testing.T, iss *Issuer) discovery {
	t.Helper()
	code, body := get(t, iss.HTTPClient(), iss.URL()+"/.well-known/openid-configuration")
	if code != http.StatusOK {
		t.Fatalf("discovery: %d %s", code, body)
	}
	var d discovery
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func fetchJWKS(t *testing.T, iss *Issuer) jose.JSONWebKeySet {
	t.Helper()
	code, body := get(t, iss.HTTPClient(), iss.JWKSURL())
	if code != http.StatusOK {
		t.Fatalf("jwks: %d %s", code, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	slices.Sort(out)
	return out
}

type claims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      []string `json:"aud"`
	Exp      int64    `json:"exp"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Jti      string   `json:"jti"`
	Groups   []string `json:"groups"`
	Email    string   `json:"email"`
	Scope    string   `json:"scope"`
	ClientID string   `json:"client_id"`
}

// verify checks tok's signature against the key in set named by its kid
// header and returns the kid and the claims.
func verify(t *testing.T, tok string, alg jose.SignatureAlgorithm, set jose.JSONWebKeySet) (string, claims) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	h := jws.Signatures[0].Header
	if h.Algorithm != string(alg) {
		t.Fatalf("alg = %q, want %q", h.Algorithm, alg)
	}
	if typ := h.ExtraHeaders[jose.HeaderType]; typ != "JWT" {
		t.Fatalf("typ = %v, want JWT", typ)
	}
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in the JWKS %v", h.KeyID, len(keys), kids(set))
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return h.KeyID, c
}

func TestDiscoveryAndJWKS(t *testing.T) {
	iss := Start(t)
	u, err := url.Parse(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Path != "" {
		t.Fatalf("URL() = %q", iss.URL())
	}

	d := fetchDiscovery(t, iss)
	if d.Issuer != iss.URL() {
		t.Errorf("discovery issuer = %q, want %q", d.Issuer, iss.URL())
	}
	ju, err := url.Parse(d.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	if ju.Scheme != "https" || ju.Host != u.Host || d.JWKSURI != iss.JWKSURL() {
		t.Errorf("jwks_uri = %q (JWKSURL %q), want https on %s", d.JWKSURI, iss.JWKSURL(), u.Host)
	}
	if !slices.Contains(d.GrantTypes, "client_credentials") {
		t.Errorf("grant_types_supported = %v", d.GrantTypes)
	}
	if !slices.Equal(d.IDTokenAlgs, []string{"ES256"}) {
		t.Errorf("id_token_signing_alg_values_supported = %v", d.IDTokenAlgs)
	}
	if iss.DiscoveryRequests() != 1 || iss.JWKSRequests() != 0 {
		t.Errorf("requests: discovery %d, jwks %d", iss.DiscoveryRequests(), iss.JWKSRequests())
	}

	set := fetchJWKS(t, iss)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID != iss.ActiveKID() || k.Algorithm != "ES256" || k.Use != "sig" || !k.IsPublic() || !k.Valid() {
		t.Errorf("key: kid %q (active %q) alg %q use %q public %v", k.KeyID, iss.ActiveKID(), k.Algorithm, k.Use, k.IsPublic())
	}
	if got := iss.JWKSRequests(); got != 1 {
		t.Errorf("JWKSRequests = %d, want 1", got)
	}
	fetchJWKS(t, iss)
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKSRequests = %d, want 2", got)
	}
}

func TestTLS(t *testing.T) {
	iss := Start(t)

	// A client built from CAPEM alone trusts the server, by IP and by name.
	pool := iss.CAPool()
	if !pool.AppendCertsFromPEM(iss.CAPEM()) {
		t.Fatal("CAPEM holds no certificate")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(c.CloseIdleConnections)
	u, _ := url.Parse(iss.URL())
	for _, host := range []string{u.Host, "localhost:" + u.Port()} {
		if code, body := get(t, c, "https://"+host+"/.well-known/openid-configuration"); code != http.StatusOK {
			t.Errorf("%s: %d %s", host, code, body)
		}
	}

	// The system roots do not.
	plain := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(plain.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, iss.URL(), http.NoBody)
	resp, err := plain.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a client without the CA connected")
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Errorf("untrusted client error: %v, want a certificate verification error", err)
	}
}

func TestToken(t *testing.T) {
	iss := Start(t)
	before := time.Now().Add(-time.Second)
	tok := iss.Token(t, "alice", []string{"wsgate", "other"}, 5*time.Minute, map[string]any{
		"groups": []string{"a", "b"},
		"email":  "x@y",
		"scope":  "read write",
	})
	after := time.Now().Add(time.Second)
	if iss.JWKSRequests() != 0 || iss.DiscoveryRequests() != 0 {
		t.Errorf("Token made network requests: jwks %d discovery %d", iss.JWKSRequests(), iss.DiscoveryRequests())
	}

	kid, c := verify(t, tok, jose.ES256, fetchJWKS(t, iss))
	if kid != iss.ActiveKID() {
		t.Errorf("kid = %q, want %q", kid, iss.ActiveKID())
	}
	if c.Iss != iss.URL() || c.Sub != "alice" || !slices.Equal(c.Aud, []string{"wsgate", "other"}) {
		t.Errorf("iss %q sub %q aud %v", c.Iss, c.Sub, c.Aud)
	}
	if c.Iat < before.Unix() || c.Iat > after.Unix() || c.Nbf != c.Iat {
		t.Errorf("iat %d nbf %d, want within [%d, %d]", c.Iat, c.Nbf, before.Unix(), after.Unix())
	}
	if exp := time.Unix(c.Exp, 0); exp.Before(before.Add(5*time.Minute)) || exp.After(after.Add(5*time.Minute)) {
		t.Errorf("exp %v, want about 5m from now", exp)
	}
	if !slices.Equal(c.Groups, []string{"a", "b"}) || c.Email != "x@y" || c.Scope != "read write" {
		t.Errorf("extra claims: groups %v email %q scope %q", c.Groups, c.Email, c.Scope)
	}
	if c.Jti == "" || c.ClientID == "" {
		t.Errorf("jti %q client_id %q", c.Jti, c.ClientID)
	}

	// An expired token, and the default lifetime.
	_, c = verify(t, iss.Token(t, "bob", []string{"wsgate"}, -time.Minute, nil), jose.ES256, fetchJWKS(t, iss))
	if c.Exp >= time.Now().Unix() || c.Sub != "bob" {
		t.Errorf("negative lifetime: exp %d sub %q", c.Exp, c.Sub)
	}
	_, c = verify(t, iss.Token(t, "bob", []string{"wsgate"}, 0, nil), jose.ES256, fetchJWKS(t, iss))
	if d := time.Until(time.Unix(c.Exp, 0)); d < DefaultTokenLifetime-time.Minute || d > DefaultTokenLifetime+time.Minute {
		t.Errorf("zero lifetime: exp in %v, want %v", d, DefaultTokenLifetime)
	}
}

func TestTokenConcurrent(t *testing.T) {
	iss := Start(t)
	set := fetchJWKS(t, iss)
	subjects := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	toks := make([]string, len(subjects))
	var wg sync.WaitGroup
	for n, s := range subjects {
		wg.Go(func() {
			toks[n] = iss.Token(t, s, []string{"aud-" + s}, time.Minute, map[string]any{"email": s + "@example.test"})
		})
	}
	wg.Wait()
	for n, s := range subjects {
		_, c := verify(t, toks[n], jose.ES256, set)
		if c.Sub != s || !slices.Equal(c.Aud, []string{"aud-" + s}) || c.Email != s+"@example.test" {
			t.Errorf("token %d: sub %q aud %v email %q", n, c.Sub, c.Aud, c.Email)
		}
	}
}

func TestRotate(t *testing.T) {
	iss := Start(t)
	first := iss.ActiveKID()
	tok1 := iss.Token(t, "alice", []string{"wsgate"}, time.Minute, nil)

	oldKID, newKID := iss.Rotate(t)
	if oldKID != first || newKID == first || iss.ActiveKID() != newKID {
		t.Fatalf("Rotate = (%q, %q), first %q, active %q", oldKID, newKID, first, iss.ActiveKID())
	}
	tok2 := iss.Token(t, "alice", []string{"wsgate"}, time.Minute, nil)

	set := fetchJWKS(t, iss)
	if got, want := kids(set), kids(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{KeyID: oldKID}, {KeyID: newKID}}}); !slices.Equal(got, want) {
		t.Fatalf("JWKS after Rotate: %v, want %v", got, want)
	}
	if got := iss.KIDs(); !slices.Equal(got, []string{oldKID, newKID}) {
		t.Errorf("KIDs = %v", got)
	}
	if kid, _ := verify(t, tok1, jose.ES256, set); kid != oldKID {
		t.Errorf("old token kid %q, want %q", kid, oldKID)
	}
	if kid, _ := verify(t, tok2, jose.ES256, set); kid != newKID {
		t.Errorf("new token kid %q, want %q", kid, newKID)
	}

	iss.DropOld(t)
	set = fetchJWKS(t, iss)
	if got := kids(set); !slices.Equal(got, []string{newKID}) {
		t.Fatalf("JWKS after DropOld: %v, want [%s]", got, newKID)
	}
	if len(set.Key(oldKID)) != 0 {
		t.Error("old key still listed")
	}
	if kid, _ := verify(t, tok2, jose.ES256, set); kid != newKID {
		t.Errorf("new token kid %q after DropOld", kid)
	}
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKSRequests = %d, want 2", got)
	}
}

func TestSetDown(t *testing.T) {
	iss := Start(t)
	fetchJWKS(t, iss)

	iss.SetDown(true)
	for _, u := range []string{iss.JWKSURL(), iss.DiscoveryURL()} {
		if code, _ := get(t, iss.HTTPClient(), u); code != http.StatusServiceUnavailable {
			t.Errorf("%s while down: %d, want 503", u, code)
		}
	}
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKSRequests = %d, want 2 (the 503 counts)", got)
	}
	// Tokens can still be minted while the issuer is unreachable.
	tok := iss.Token(t, "alice", []string{"wsgate"}, time.Minute, nil)

	iss.SetDown(false)
	if _, c := verify(t, tok, jose.ES256, fetchJWKS(t, iss)); c.Sub != "alice" {
		t.Errorf("sub %q", c.Sub)
	}
	if got := iss.JWKSRequests(); got != 3 {
		t.Errorf("JWKSRequests = %d, want 3", got)
	}
}

func TestRS256(t *testing.T) {
	iss := StartWith(t, Options{Alg: "RS256"})
	if iss.Alg() != "RS256" {
		t.Fatalf("Alg = %q", iss.Alg())
	}
	d := fetchDiscovery(t, iss)
	if !slices.Equal(d.IDTokenAlgs, []string{"RS256"}) {
		t.Errorf("id_token_signing_alg_values_supported = %v", d.IDTokenAlgs)
	}
	tok := iss.Token(t, "carol", []string{"wsgate"}, time.Minute, map[string]any{"groups": []string{"g"}})
	if _, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256}); err == nil {
		t.Error("an RS256 token parsed as ES256")
	}
	set := fetchJWKS(t, iss)
	_, c := verify(t, tok, jose.RS256, set)
	if c.Sub != "carol" || c.Iss != iss.URL() || !slices.Equal(c.Groups, []string{"g"}) {
		t.Errorf("claims %+v", c)
	}
	_, newKID := iss.Rotate(t)
	set = fetchJWKS(t, iss)
	if kid, _ := verify(t, iss.Token(t, "carol", nil, time.Minute, nil), jose.RS256, set); kid != newKID {
		t.Errorf("kid after Rotate %q, want %q", kid, newKID)
	}
}

func TestTwoIssuersDistinct(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.URL() == b.URL() || a.ActiveKID() == b.ActiveKID() {
		t.Fatalf("issuers share URL or kid: %s %s", a.URL(), a.ActiveKID())
	}
	// b's client does not trust a's certificate.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.JWKSURL(), http.NoBody)
	if resp, err := b.HTTPClient().Do(req); err == nil {
		resp.Body.Close()
		t.Error("b's client trusted a's certificate")
	}
	tok := a.Token(t, "alice", []string{"wsgate"}, time.Minute, nil)
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if set := fetchJWKS(t, b); len(set.Key(jws.Signatures[0].Header.KeyID)) != 0 {
		t.Error("a's kid is listed by b")
	}
}
