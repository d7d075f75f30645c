package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"strings"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// asymmetricAlgs are the algorithms accepted with every key set but a
// shared key.
var asymmetricAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// symmetricAlgs are the algorithms accepted with a shared key, and only
// with one.
var symmetricAlgs = []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}

// maxCandidates bounds the keys a token's signature is checked against:
// those of its key ID, or every key when it names none. A key set may hold
// many keys of one ID; each check costs up to a millisecond.
const maxCandidates = 4

// Verifier checks tokens against one route's Config. It is safe for
// concurrent use.
type Verifier struct {
	cfg       Config
	audiences jwt.Audience
	leeway    time.Duration
	cache     verifiedCache
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg Config) *Verifier {
	v := &Verifier{cfg: cfg, leeway: cfg.Leeway}
	for _, a := range cfg.Audiences {
		if a != "" {
			v.audiences = append(v.audiences, a)
		}
	}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	}
	if v.leeway < 0 {
		v.leeway = 0
	}
	return v
}

// Issuer is the issuer whose tokens v accepts.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// ValidUntil is when a token with claims c stops being accepted: its exp
// plus the leeway. A tunnel opened with it is closed then.
func (v *Verifier) ValidUntil(c *Claims) time.Time { return c.Expiry.Add(v.leeway) }

// candidateKeys are the keys of keys (those of the token's key ID) that
// may check a signature of alg, at most maxCandidates.
func candidateKeys(keys []jose.JSONWebKey, alg jose.SignatureAlgorithm) []any {
	var out []any
	for i := range keys {
		k := &keys[i]
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(alg) {
			continue
		}
		if !keyFits(alg, k.Key) {
			continue
		}
		out = append(out, k.Key)
		if len(out) == maxCandidates {
			break
		}
	}
	return out
}

func refuse(description string) *Error {
	return &Error{Code: "invalid_token", Description: description}
}

// Verify checks token's signature, issuer, audience and times at now, and
// returns its claims, or an *Error. A token verified before by v is not
// verified again while now is within its times (see verifiedCache).
func (v *Verifier) Verify(ctx context.Context, token string, now time.Time) (*Claims, error) {
	switch {
	case token == "":
		return nil, refuse("no token")
	case len(token) > MaxTokenBytes:
		return nil, refuse("token too long")
	case strings.Count(token, ".") == 4:
		return nil, refuse("encrypted tokens are not accepted")
	}
	if v.cfg.Keys == nil {
		return nil, refuse("no signing keys")
	}
	issuer := v.cfg.Issuer
	if issuer == "" {
		if ik, ok := v.cfg.Keys.(IssuerKeySet); ok {
			issuer = ik.Issuer()
		}
		if issuer == "" {
			return nil, refuse("issuer not known yet")
		}
	}
	if len(v.audiences) == 0 {
		return nil, refuse("no audience accepted")
	}
	if now.IsZero() {
		now = time.Now()
	}
	key := sha256.Sum256([]byte(token))
	var version uint64
	if vk, ok := v.cfg.Keys.(VersionedKeySet); ok {
		version = vk.Version()
	}
	if c, ok := v.cache.get(key, issuer, version, now); ok {
		return c, nil
	}
	c, from, err := v.verify(ctx, token, issuer, now)
	if err != nil {
		return nil, err
	}
	v.cache.put(key, verifiedToken{claims: c, issuer: issuer, version: version, from: from, until: v.ValidUntil(c)})
	return c, nil
}

// verify is Verify without the cache: it returns the claims and the
// earliest time (nbf and iat, less the leeway) they are valid from.
func (v *Verifier) verify(ctx context.Context, token, issuer string, now time.Time) (*Claims, time.Time, error) {

	algs := asymmetricAlgs
	if v.cfg.Keys.Symmetric() {
		algs = symmetricAlgs
	}
	tok, err := jwt.ParseSigned(token, algs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, time.Time{}, refuse("signature algorithm not accepted")
		}
		return nil, time.Time{}, refuse("malformed token")
	}
	if len(tok.Headers) != 1 {
		return nil, time.Time{}, refuse("malformed token")
	}
	header := tok.Headers[0]
	alg := jose.SignatureAlgorithm(header.Algorithm)
	if !slices.Contains(algs, alg) {
		return nil, time.Time{}, refuse("signature algorithm not accepted")
	}

	// Only the key set's own keys are used: jku, x5u, x5c and jwk headers
	// are never looked at.
	keys, err := v.cfg.Keys.Keys(ctx, header.KeyID)
	if err != nil {
		return nil, time.Time{}, refuse("signing keys unavailable")
	}
	if len(keys) == 0 {
		return nil, time.Time{}, refuse("unknown signing key")
	}
	candidates := candidateKeys(keys, alg)
	if len(candidates) == 0 {
		return nil, time.Time{}, refuse("signing key does not fit the algorithm")
	}

	var (
		std      jwt.Claims
		raw      claimMap
		verified bool
		badSig   = true
	)
	for _, key := range candidates {
		var c jwt.Claims
		var r claimMap
		err := tok.Claims(key, &c, &r)
		if err == nil {
			std, raw, verified = c, r, true
			break
		}
		if !errors.Is(err, jose.ErrCryptoFailure) {
			badSig = false
		}
	}
	if !verified {
		if badSig {
			return nil, time.Time{}, refuse("bad signature")
		}
		return nil, time.Time{}, refuse("malformed token")
	}

	if std.Expiry == nil {
		return nil, time.Time{}, refuse("token has no expiry")
	}
	err = std.ValidateWithLeeway(jwt.Expected{
		Issuer:      issuer,
		AnyAudience: v.audiences,
		Time:        now,
	}, v.leeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, time.Time{}, refuse("wrong issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, time.Time{}, refuse("wrong audience")
	case errors.Is(err, jwt.ErrExpired):
		return nil, time.Time{}, refuse("token expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, time.Time{}, refuse("token not valid yet")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, time.Time{}, refuse("token issued in the future")
	default:
		return nil, time.Time{}, refuse("invalid claims")
	}
	from := time.Time{}
	for _, t := range []*jwt.NumericDate{std.NotBefore, std.IssuedAt} {
		if t != nil && t.Time().After(from) {
			from = t.Time()
		}
	}
	if !from.IsZero() {
		from = from.Add(-v.leeway)
	}
	if !strings.HasPrefix(std.Subject, v.cfg.SubjectPrefix) {
		return nil, time.Time{}, refuse("the token's subject is not of this route's namespace")
	}
	return &Claims{Subject: std.Subject, Expiry: std.Expiry.Time(), raw: raw}, from, nil
}

// keyFits reports whether key is of the type, and the size or curve, that
// alg signs with.
func keyFits(alg jose.SignatureAlgorithm, key any) bool {
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		k, ok := key.(*rsa.PublicKey)
		return ok && rsaSizeOK(k)
	case jose.ES256:
		return ecCurve(key) == elliptic.P256()
	case jose.ES384:
		return ecCurve(key) == elliptic.P384()
	case jose.ES512:
		return ecCurve(key) == elliptic.P521()
	case jose.EdDSA:
		k, ok := key.(ed25519.PublicKey)
		return ok && len(k) == ed25519.PublicKeySize
	case jose.HS256:
		return hmacKeyBytes(key) >= MinSharedKeyBytes
	case jose.HS384:
		return hmacKeyBytes(key) >= 48
	case jose.HS512:
		return hmacKeyBytes(key) >= 64
	}
	return false
}

// hmacKeyBytes is the length of a shared key, 0 for other keys.
func hmacKeyBytes(key any) int {
	k, _ := key.([]byte)
	return len(k)
}

func ecCurve(key any) elliptic.Curve {
	k, ok := key.(*ecdsa.PublicKey)
	if !ok || k == nil {
		return nil
	}
	return k.Curve
}

// claimMap decodes a token's claims with numbers kept as json.Number, so
// that a number is never mistaken for a string, and with the case-exact
// member names and refusal of duplicate members of the JOSE library's
// decoder.
type claimMap map[string]any

func (m *claimMap) UnmarshalJSON(b []byte) error {
	d := josejson.NewDecoder(bytes.NewReader(b))
	d.SetNumberType(josejson.UnmarshalJSONNumber)
	var out map[string]any
	if err := d.Decode(&out); err != nil {
		return err
	}
	var rest any
	if err := d.Decode(&rest); !errors.Is(err, io.EOF) {
		return errors.New("data after the claims")
	}
	*m = out
	return nil
}

// Values returns the claim's values for a pod binding: a string claim as
// one value, an array claim's string elements; nothing for an absent
// claim, a claim of another type, or empty strings.
func (c *Claims) Values(name string) []string {
	if c == nil {
		return nil
	}
	switch v := c.raw[name].(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// HeaderValue returns the claim as a request header value: a string as
// is, a number or boolean in its JSON form, an array of strings joined by
// ", "; false for an absent claim or one of another type.
func (c *Claims) HeaderValue(name string) (string, bool) {
	if c == nil {
		return "", false
	}
	var s string
	switch v := c.raw[name].(type) {
	case string:
		s = v
	case josejson.Number:
		s = v.String()
	case bool:
		s = "false"
		if v {
			s = "true"
		}
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			es, ok := e.(string)
			if !ok {
				return "", false
			}
			parts = append(parts, es)
		}
		s = strings.Join(parts, ", ")
	default:
		return "", false
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", false
	}
	return s, true
}
