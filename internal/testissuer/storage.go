package testissuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// errUnsupported answers every flow the test issuer does not offer
// (authorization code, refresh, device, introspection, userinfo).
var errUnsupported = errors.New("testissuer: not supported")

// signingKey is one key pair of the issuer. It is an op.SigningKey (the
// private half signs) and, through publicKey, an op.Key for the JWKS.
type signingKey struct {
	id   string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is the public half of a signingKey as the JWKS lists it.
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return p.k.alg }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.k.priv.Public() }

// newSigningKey makes a key for alg (ES256 or RS256) with a random key ID.
func newSigningKey(alg jose.SignatureAlgorithm) (*signingKey, error) {
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("testissuer: unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, err
	}
	return &signingKey{id: randomID(8), alg: alg, priv: priv}, nil
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// grant is what one Token call asks for. It is registered as a
// confidential client whose client_credentials grant yields an access
// token for the grant's subject rather than for the client itself.
type grant struct {
	clientID string
	secret   string
	subject  string
	audience []string
	lifetime time.Duration
	extra    map[string]any
}

// tokenRequest is the op.TokenRequest of a client_credentials grant.
type tokenRequest struct {
	g      *grant
	scopes []string
}

func (r *tokenRequest) GetSubject() string    { return r.g.subject }
func (r *tokenRequest) GetAudience() []string { return r.g.audience }
func (r *tokenRequest) GetScopes() []string   { return r.scopes }

// client is the op.Client of a grant: confidential, client_credentials
// only, JWT access tokens.
type client struct{ g *grant }

func (c *client) GetID() string                       { return c.g.clientID }
func (c *client) RedirectURIs() []string              { return nil }
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType  { return nil }
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c *client) LoginURL(string) string               { return "" }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return c.g.lifetime }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string { //nolint:revive // name fixed by op.Client
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// storage is the in-memory op.Storage of an Issuer. It keeps the signing
// keys (the last one signs) and the grants awaiting their token request.
type storage struct {
	mu     sync.Mutex
	keys   []*signingKey
	grants map[string]*grant
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.ClientCredentialsStorage       = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

func newStorage(first *signingKey) *storage {
	return &storage{keys: []*signingKey{first}, grants: map[string]*grant{}}
}

func (s *storage) active() *signingKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1]
}

// rotate makes k the signing key, keeping the earlier ones listed.
func (s *storage) rotate(k *signingKey) (oldKID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	oldKID = s.keys[len(s.keys)-1].id
	s.keys = append(s.keys, k)
	return oldKID
}

// dropOld forgets every key but the signing one.
func (s *storage) dropOld() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = []*signingKey{s.keys[len(s.keys)-1]}
}

func (s *storage) kids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.id
	}
	return out
}

func (s *storage) addGrant(g *grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[g.clientID] = g
}

func (s *storage) removeGrant(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.grants, clientID)
}

func (s *storage) grant(clientID string) (*grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.grants[clientID]
	if !ok {
		return nil, fmt.Errorf("testissuer: unknown client %q", clientID)
	}
	return g, nil
}

// Keys.

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.active(), nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{s.active().alg}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, 0, len(s.keys))
	for i := len(s.keys) - 1; i >= 0; i-- { // signing key first
		out = append(out, publicKey{s.keys[i]})
	}
	return out, nil
}

// Clients and the client_credentials grant.

func (s *storage) ClientCredentials(_ context.Context, clientID, clientSecret string) (op.Client, error) {
	g, err := s.grant(clientID)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(g.secret), []byte(clientSecret)) != 1 {
		return nil, errors.New("testissuer: wrong client secret")
	}
	return &client{g}, nil
}

func (s *storage) ClientCredentialsTokenRequest(_ context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	g, err := s.grant(clientID)
	if err != nil {
		return nil, err
	}
	return &tokenRequest{g: g, scopes: scopes}, nil
}

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	g, err := s.grant(clientID)
	if err != nil {
		return nil, err
	}
	return &client{g}, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, clientID, clientSecret string) error {
	_, err := s.ClientCredentials(ctx, clientID, clientSecret)
	return err
}

// Tokens.

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	r, ok := req.(*tokenRequest)
	if !ok {
		return "", time.Time{}, errUnsupported
	}
	return randomID(12), time.Now().Add(r.g.lifetime), nil
}

func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	r, ok := req.(*tokenRequest)
	if !ok {
		return nil, nil
	}
	return maps.Clone(r.g.extra), nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) Health(context.Context) error { return nil }

// Flows the test issuer does not offer.

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}

func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}

func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}

func (s *storage) SaveAuthCode(context.Context, string, string) error { return errUnsupported }

func (s *storage) DeleteAuthRequest(context.Context, string) error { return nil }

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrRequestNotSupported()
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errUnsupported
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errUnsupported
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}
