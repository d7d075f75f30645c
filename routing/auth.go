package routing

import (
	"net/netip"
	"time"

	"github.com/wsgate/wsgate/auth"
)

// Auth is a route's check of who is asking, compiled from spec.auth. A
// route without it is open.
type Auth struct {
	// Tokens verifies the route's JWTs; nil when the route has only
	// forward auth.
	Tokens *auth.Verifier
	// Cookie and Query name the cookie and query parameter that may carry
	// the token ("" for none).
	Cookie string
	Query  string
	// BindingClaim, when not "", is the claim whose values must include the
	// backend's Bound value.
	BindingClaim string
	// SubjectHeader carries the token's subject to the pod ("" for none).
	SubjectHeader string
	// ClaimHeaders carry claims to the pod.
	ClaimHeaders []ClaimHeader
	// CloseOnExpiry closes a tunnel with 1008 when its token expires.
	CloseOnExpiry bool
	// TrustedSubjects: the route's namespace cannot mint its tokens'
	// subjects (the keys are those of an issuer that the cluster admin
	// granted, or of the cluster's ServiceAccount issuer), so a subject is
	// one client across the gateway. With keys that the namespace holds
	// (a Secret), its subjects are its own to make up: the gateway's
	// per-client limits then count by address, and only the route's own
	// by subject.
	TrustedSubjects bool
	// Forward asks a service of the route's namespace; nil for none.
	Forward *ForwardAuth
	// Problem, when not "", says why the route's tokens cannot be checked
	// now (no usable keys): every token is refused, never let through. A
	// forward-auth service without pods shows as empty Forward.Addrs
	// (503).
	Problem string
}

// ClaimHeader passes one claim in one request header.
type ClaimHeader struct {
	Claim  string
	Header string
}

// ForwardAuth is a route's forward-auth service, resolved to the pods
// that serve it (the same eligibility rules as a route's backends).
type ForwardAuth struct {
	// Service is "namespace/name", for logs and metrics.
	Service string
	// Addrs are the Ready pods' addresses and target ports, sorted.
	Addrs []netip.AddrPort
	// Path is the request path on the service.
	Path string
	// Timeout bounds the whole request.
	Timeout time.Duration
	// PassHeaders are the canonical names of the answer's headers that
	// go on to the pod.
	PassHeaders []string
}
