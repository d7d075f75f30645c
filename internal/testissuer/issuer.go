// Package testissuer runs a real OpenID Provider (github.com/zitadel/oidc
// op) for tests: discovery, JWKS and a token endpoint served over HTTPS on
// 127.0.0.1 with a certificate from its own CA, signing JWT access tokens
// with a key that tests can rotate, and a switch that makes it unreachable.
//
// Tokens are minted through the provider's own token endpoint: each Token
// call registers a one-shot confidential client bound to the requested
// subject, audience, lifetime and extra claims, and runs a
// client_credentials grant for it.
package testissuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// DefaultTokenLifetime is the lifetime of a token whose Token call passes
// a zero lifetime.
const DefaultTokenLifetime = 10 * time.Minute

// Options configure StartWith.
type Options struct {
	// Alg is the signing algorithm: "ES256" (the default when empty) or
	// "RS256". Rotate makes keys of the same algorithm.
	Alg string
}

// Issuer is an OpenID Provider served over HTTPS on 127.0.0.1 with its own CA.
type Issuer struct {
	url      string
	alg      jose.SignatureAlgorithm
	srv      *httptest.Server
	provider *op.Provider
	store    *storage
	caPEM    []byte
	pool     *x509.CertPool
	client   *http.Client

	jwksPath      string
	down          atomic.Bool
	jwksHits      atomic.Int64
	discoveryHits atomic.Int64
	tokenSeq      atomic.Int64
}

// Start serves an ES256 issuer on 127.0.0.1 with TLS (a fresh CA and a
// leaf certificate for 127.0.0.1, ::1 and "localhost") until t's cleanup.
func Start(t testing.TB) *Issuer {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Issuer {
	t.Helper()
	alg := jose.ES256
	if opts.Alg != "" {
		alg = jose.SignatureAlgorithm(opts.Alg)
	}
	first, err := newSigningKey(alg)
	if err != nil {
		t.Fatal(err)
	}

	caPEM, leaf, err := newServerCert()
	if err != nil {
		t.Fatalf("testissuer: certificates: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testissuer: listen: %v", err)
	}
	issuerURL := "https://" + ln.Addr().String()

	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		t.Fatal(err)
	}
	store := newStorage(first)
	provider, err := op.NewProvider(&op.Config{CryptoKey: cryptoKey}, store, op.StaticIssuer(issuerURL))
	if err != nil {
		_ = ln.Close()
		t.Fatalf("testissuer: provider: %v", err)
	}

	i := &Issuer{
		url:      issuerURL,
		alg:      alg,
		provider: provider,
		store:    store,
		caPEM:    caPEM,
		pool:     pool,
		jwksPath: provider.KeysEndpoint().Relative(),
	}
	i.srv = &httptest.Server{
		Listener: ln,
		Config:   &http.Server{Handler: http.HandlerFunc(i.serveHTTP), ReadHeaderTimeout: 10 * time.Second},
		TLS:      &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12},
	}
	i.srv.StartTLS()
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 4,
	}
	i.client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		i.srv.Close()
	})
	return i
}

// serveHTTP is the server's handler: it counts discovery and JWKS
// requests, answers 503 to everything while the issuer is down, and hands
// the rest to the provider.
func (i *Issuer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case i.jwksPath:
		i.jwksHits.Add(1)
	case oidc.DiscoveryEndpoint:
		i.discoveryHits.Add(1)
	}
	if i.down.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "testissuer: down", http.StatusServiceUnavailable)
		return
	}
	i.provider.ServeHTTP(w, r)
}

// URL is the issuer identifier, "https://127.0.0.1:<port>" with no
// trailing slash; discovery's "issuer" and every token's iss equal it.
func (i *Issuer) URL() string { return i.url }

// DiscoveryURL is URL() + "/.well-known/openid-configuration".
func (i *Issuer) DiscoveryURL() string { return i.url + oidc.DiscoveryEndpoint }

// JWKSURL is the jwks_uri that discovery announces.
func (i *Issuer) JWKSURL() string { return i.url + i.jwksPath }

// CAPool trusts the server's certificate.
func (i *Issuer) CAPool() *x509.CertPool { return i.pool.Clone() }

// CAPEM is the CA certificate that signed the server's certificate, in PEM.
func (i *Issuer) CAPEM() []byte { return append([]byte(nil), i.caPEM...) }

// HTTPClient is a client that trusts the issuer's CA. It is shared by
// every caller and its idle connections close at cleanup.
func (i *Issuer) HTTPClient() *http.Client { return i.client }

// Alg is the signing algorithm of the issuer's keys.
func (i *Issuer) Alg() string { return string(i.alg) }

// ActiveKID is the key ID that signs new tokens.
func (i *Issuer) ActiveKID() string { return i.store.active().id }

// KIDs lists the key IDs in the JWKS, oldest first (the last is the
// signing key).
func (i *Issuer) KIDs() []string { return i.store.kids() }

// reservedClaims are set by the provider itself and cannot come from
// Token's extra claims.
var reservedClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"}

// Token gets a signed JWT access token for subject with the given audience
// from the provider's token endpoint, and returns it in compact form.
//
// The token carries iss = URL(), sub = subject, aud = audience (a JSON
// array; when audience is empty the provider puts the one-shot client's ID
// there), exp = now + lifetime, iat = nbf = now, a jti, a client_id, and
// the extra claims (which may not be any of those registered names; others
// such as "scope", "groups" or "email" are fine). Its header has typ JWT,
// the issuer's alg, and the kid of the active key. A zero lifetime means
// DefaultTokenLifetime; a negative one gives a token that has already
// expired. exp, iat and nbf are whole seconds.
//
// The grant is served in process by the provider's handler, not over the
// network: it works while the issuer is down and does not count as a
// request in JWKSRequests or DiscoveryRequests.
func (i *Issuer) Token(t testing.TB, subject string, audience []string, lifetime time.Duration, extra map[string]any) string {
	t.Helper()
	for _, c := range reservedClaims {
		if _, ok := extra[c]; ok {
			t.Fatalf("testissuer: extra claim %q is set by the issuer itself", c)
		}
	}
	if lifetime == 0 {
		lifetime = DefaultTokenLifetime
	}
	g := &grant{
		clientID: "testissuer-token-" + strconv.FormatInt(i.tokenSeq.Add(1), 10),
		secret:   randomID(16),
		subject:  subject,
		audience: append([]string(nil), audience...),
		lifetime: lifetime,
		extra:    cloneClaims(t, extra),
	}
	i.store.addGrant(g)
	defer i.store.removeGrant(g.clientID)

	form := url.Values{"grant_type": {string(oidc.GrantTypeClientCredentials)}}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, i.url+i.provider.TokenEndpoint().Relative(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(g.clientID), url.QueryEscape(g.secret))
	rec := httptest.NewRecorder()
	i.provider.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("testissuer: token endpoint answered %d: %s", rec.Code, rec.Body.String())
	}
	var resp oidc.AccessTokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("testissuer: token response: %v", err)
	}
	if resp.AccessToken == "" || strings.Count(resp.AccessToken, ".") != 2 {
		t.Fatalf("testissuer: token endpoint returned no JWT: %s", rec.Body.String())
	}
	return resp.AccessToken
}

// cloneClaims deep-copies extra claims through JSON, so that later changes
// to the caller's map or slices do not reach the token and values that
// cannot be encoded fail here.
func cloneClaims(t testing.TB, extra map[string]any) map[string]any {
	t.Helper()
	if len(extra) == 0 {
		return nil
	}
	b, err := json.Marshal(extra)
	if err != nil {
		t.Fatalf("testissuer: extra claims: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("testissuer: extra claims: %v", err)
	}
	return out
}

// Rotate makes a new signing key active and returns the key IDs of the
// previous and the new signing key. Earlier keys stay in the JWKS, as
// real providers keep them during a rotation, until DropOld.
func (i *Issuer) Rotate(t testing.TB) (oldKID, newKID string) {
	t.Helper()
	k, err := newSigningKey(i.alg)
	if err != nil {
		t.Fatal(err)
	}
	return i.store.rotate(k), k.id
}

// DropOld removes every key but the active one from the JWKS. Tokens that
// older keys signed no longer verify against it.
func (i *Issuer) DropOld(t testing.TB) {
	t.Helper()
	i.store.dropOld()
}

// JWKSRequests counts the requests that reached the JWKS endpoint,
// including those answered 503 while the issuer was down.
func (i *Issuer) JWKSRequests() int { return int(i.jwksHits.Load()) }

// DiscoveryRequests counts the requests for the discovery document,
// including those answered 503 while the issuer was down.
func (i *Issuer) DiscoveryRequests() int { return int(i.discoveryHits.Load()) }

// SetDown makes every request answer 503 Service Unavailable while down
// is true. Token keeps working.
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// newServerCert makes a CA and a server certificate it signs for
// 127.0.0.1, ::1 and localhost, both valid from an hour ago for a day.
func newServerCert() (caPEM []byte, leaf tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "testissuer CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, leaf, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, leaf, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, leaf, err
	}
	leaf = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), leaf, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
