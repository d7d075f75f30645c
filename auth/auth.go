// Package auth verifies the JSON Web Tokens that routes require at the
// handshake, with keys from Secrets, from token issuers the cluster admin
// grants, or from the cluster's own ServiceAccount issuer. It never
// fetches a key from an address a token or a tenant names.
package auth

import (
	"context"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultLeeway is the clock skew allowed when checking exp, nbf and iat.
const DefaultLeeway = 30 * time.Second

// MaxTokenBytes bounds the length of a token; longer ones are refused
// before they are parsed.
const MaxTokenBytes = 8 << 10

// Error is why a token was refused, safe to show the client and to log:
// it never holds the token or any part of it.
type Error struct {
	// Code is the RFC 6750 error code: "invalid_request" or
	// "invalid_token".
	Code string
	// Description says what is wrong, in a few words.
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// KeySet gives the keys a token may be signed with.
type KeySet interface {
	// Keys returns the keys whose key ID is kid, or every key when kid is
	// "". A set that is fetched may refetch, at a bounded rate, when it
	// knows no key of that kid, waiting for the fetch at most until ctx
	// ends.
	Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error)
	// Symmetric reports whether the set holds a shared HMAC key: only then
	// are HS256, HS384 and HS512 accepted.
	Symmetric() bool
}

// VersionedKeySet is a KeySet whose keys change (a fetched set): the
// tokens a Verifier accepted are verified again once they do.
type VersionedKeySet interface {
	KeySet
	// Version changes whenever the keys do.
	Version() uint64
}

// IssuerKeySet is a KeySet that knows its issuer's name (the cluster's
// ServiceAccount issuer, learnt from the API server).
type IssuerKeySet interface {
	KeySet
	// Issuer is the issuer's name, or "" while it is not known yet.
	Issuer() string
}

// Config is what a Verifier checks.
type Config struct {
	// Issuer is compared exactly with iss. When "", Keys must be an
	// IssuerKeySet, whose Issuer is used (and every token is refused while
	// it is "").
	Issuer string
	// Audiences: aud must contain one of them.
	Audiences []string
	// Keys sign the tokens.
	Keys KeySet
	// Leeway for exp, nbf and iat; DefaultLeeway when 0.
	Leeway time.Duration
	// SubjectPrefix, when not "", must start sub: the ServiceAccount
	// issuer's tokens are limited to the ServiceAccounts of one namespace
	// ("system:serviceaccount:<namespace>:").
	SubjectPrefix string
}

// Claims are the claims of a verified token.
type Claims struct {
	// Subject is sub ("" when absent).
	Subject string
	// Expiry is exp.
	Expiry time.Time
	// raw holds every claim as decoded JSON.
	raw map[string]any
}
