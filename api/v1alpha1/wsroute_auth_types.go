package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// HeaderName is an HTTP header name the gateway sets on the request to the
// pod: letters, digits and "-", and none that carries the handshake, the
// client's credentials or the gateway's own forwarding headers.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9]*$`
// +kubebuilder:validation:XValidation:rule="!(self.lowerAscii() in ['host', 'connection', 'upgrade', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'authorization', 'cookie', 'content-length', 'origin', 'forwarded', 'x-real-ip'])",message="this header carries the handshake or the client's credentials and cannot hold an identity"
// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().startsWith('sec-websocket-') && !self.lowerAscii().startsWith('x-forwarded-')",message="Sec-WebSocket-* and X-Forwarded-* headers cannot hold an identity"
type HeaderName string

// ClaimName is the name of a top-level JWT claim.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.:/-]+$`
type ClaimName string

// KeySource says where the keys that sign a route's tokens come from.
//
// +kubebuilder:validation:Enum=Secret;SharedSecret;Issuer;ServiceAccountIssuer
type KeySource string

const (
	// KeysFromSecret reads a JSON Web Key Set from a Secret in the route's
	// namespace (labelled wsgate.io/jwks=true). Only asymmetric keys are
	// used.
	KeysFromSecret KeySource = "Secret"
	// KeysFromSharedSecret reads a shared HMAC key from a Secret in the
	// route's namespace (labelled wsgate.io/jwks=true): the only source
	// under which HS256, HS384 and HS512 tokens are accepted.
	KeysFromSharedSecret KeySource = "SharedSecret"
	// KeysFromIssuer fetches the JSON Web Key Set of jwt.issuer over
	// HTTPS (OpenID Connect discovery). A WsGrant must give the route's
	// namespace that issuer.
	KeysFromIssuer KeySource = "Issuer"
	// KeysFromServiceAccountIssuer uses the cluster's own ServiceAccount
	// token issuer, whose keys the gateway reads through the API server:
	// in-cluster clients present projected ServiceAccount tokens with one
	// of the route's audiences. Only tokens of ServiceAccounts in the
	// route's own namespace are accepted (sub
	// "system:serviceaccount:<namespace>:<name>"): any tenant can have a
	// token made for any audience. Needs no grant.
	KeysFromServiceAccountIssuer KeySource = "ServiceAccountIssuer"
)

// ExpiryPolicy says what happens to an open tunnel when its token expires.
//
// +kubebuilder:validation:Enum=Close;Keep
type ExpiryPolicy string

const (
	// ExpiryClose closes the tunnel with a Close frame 1008 when the token
	// it was opened with expires (exp plus the leeway).
	ExpiryClose ExpiryPolicy = "Close"
	// ExpiryKeep lets the tunnel run on; the token is checked only at the
	// handshake.
	ExpiryKeep ExpiryPolicy = "Keep"
)

// JWKSLabel marks the Secrets wsgate reads token keys from (value
// "true"): the gateway caches only those.
const JWKSLabel = "wsgate.io/jwks"

// DefaultJWKSKey is the key of a Secret's data that holds the keys when
// keys.secret.key is not set.
const DefaultJWKSKey = "jwks.json"

// BindingAnnotationPrefix starts the pod annotation keys podBinding may
// name: the gateway keeps only those annotations of each pod.
const BindingAnnotationPrefix = "bind.wsgate.io/"

// RouteAuth says who may open tunnels through a route, and to which pod.
// Without it the route is open: anyone who reaches the gateway may reach
// every pod it selects.
//
// +kubebuilder:validation:XValidation:rule="has(self.jwt) || has(self.forwardAuth)",message="auth needs jwt, forwardAuth or both"
// +kubebuilder:validation:XValidation:rule="!has(self.podBinding) || has(self.jwt)",message="podBinding compares a token claim with the pod: it needs jwt"
// +kubebuilder:validation:XValidation:rule="!has(self.identityHeaders) || has(self.jwt)",message="identityHeaders pass token claims to the pod: they need jwt"
type RouteAuth struct {
	// JWT makes the gateway require a signed JSON Web Token at the
	// handshake. It is looked for, in this order, in the Authorization
	// header ("Bearer <token>"), in the cookie token.cookie names, in a
	// Sec-WebSocket-Protocol entry "base64url.bearer.authorization.k8s.io.<token
	// in unpadded base64url>" (browsers cannot set headers on a
	// websocket), and in the query parameter token.queryParameter names.
	// The first place that holds a token is used; two tokens in one place,
	// or a subprotocol entry that is not the canonical unpadded base64url
	// of a token, are refused (400). Tokens in every one of these places are removed
	// from the request before it reaches the pod. No token or a bad one:
	// 401 with WWW-Authenticate: Bearer, before the pod address is looked
	// up.
	//
	// Only asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted, each
	// with a key of the matching type; HMAC (HS*) only with keys.source
	// SharedSecret; "none" never. Headers that point at keys elsewhere
	// (jku, x5u, x5c, jwk) are ignored and never fetched. exp is required;
	// exp, nbf and iat are checked with 30 seconds of leeway.
	//
	// +optional
	JWT *JWTAuth `json:"jwt,omitempty"`

	// PodBinding makes each token reach only the pods whose label (or
	// annotation, or name) equals one of the token's claim values. A pod
	// the token may not reach is answered exactly as a pod that does not
	// exist: 404, and nothing is dialled.
	//
	// +optional
	PodBinding *PodBinding `json:"podBinding,omitempty"`

	// IdentityHeaders pass the token's subject and chosen claims to the pod
	// as request headers. The client's own headers of those names are
	// removed.
	//
	// +optional
	IdentityHeaders *IdentityHeaders `json:"identityHeaders,omitempty"`

	// OnExpiry: Close (default) closes a tunnel with a Close frame 1008
	// when its token expires (at exp plus the 30 seconds of leeway the
	// handshake allows); Keep lets it run on.
	//
	// +optional
	// +kubebuilder:default=Close
	OnExpiry ExpiryPolicy `json:"onExpiry,omitempty"`

	// ForwardAuth asks a Service of the route's namespace whether to admit
	// each handshake (after the token, if any, is verified and the pod is
	// found).
	//
	// +optional
	ForwardAuth *ForwardAuth `json:"forwardAuth,omitempty"`
}

// JWTAuth is how a route's tokens are verified. Only asymmetric
// signatures (RS*, PS*, ES*, EdDSA) are accepted, each with a key of the
// matching type; HMAC (HS*) only with keys.source SharedSecret; "none"
// never. Headers that point at keys elsewhere (jku, x5u, x5c, jwk) are
// ignored and never fetched. exp is required; exp, nbf and iat are
// checked with 30 seconds of leeway for clock skew.
//
// +kubebuilder:validation:XValidation:rule="self.keys.source == 'ServiceAccountIssuer' || has(self.issuer)",message="issuer is required, except with keys.source ServiceAccountIssuer (the cluster's own issuer is used)"
// +kubebuilder:validation:XValidation:rule="self.keys.source != 'ServiceAccountIssuer' || !has(self.issuer)",message="with keys.source ServiceAccountIssuer the issuer is the cluster's own: leave issuer unset"
// +kubebuilder:validation:XValidation:rule="self.keys.source != 'Issuer' || self.issuer.startsWith('https://')",message="with keys.source Issuer the issuer must be an https:// URL"
type JWTAuth struct {
	// Issuer is compared exactly with the token's iss claim. With
	// keys.source Issuer it is also where the keys are fetched from
	// (<issuer>/.well-known/openid-configuration, then its jwks_uri), and
	// a WsGrant must give the route's namespace this issuer.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Issuer string `json:"issuer,omitempty"`

	// Audiences: the token's aud must contain at least one of them.
	//
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Audiences []string `json:"audiences"`

	// Keys says where the signing keys come from.
	Keys JWTKeys `json:"keys"`

	// Token names the other places, beside the Authorization header and
	// the websocket subprotocol, where the token may be.
	//
	// +optional
	Token *TokenSources `json:"token,omitempty"`
}

// JWTKeys is the source of a route's token keys.
//
// +kubebuilder:validation:XValidation:rule="(self.source == 'Secret' || self.source == 'SharedSecret') == has(self.secret)",message="keys.secret is required with source Secret or SharedSecret, and only then"
type JWTKeys struct {
	// Source: Secret (a JSON Web Key Set in a Secret of the route's
	// namespace), SharedSecret (an HMAC key in such a Secret), Issuer
	// (fetched from jwt.issuer, which a WsGrant must list in
	// tokenIssuers) or ServiceAccountIssuer (the cluster's own; only
	// tokens of ServiceAccounts of the route's namespace are accepted).
	Source KeySource `json:"source"`

	// Secret holds the keys with source Secret (a JSON Web Key Set) or
	// SharedSecret (the raw HMAC key, at least 32 bytes). It must be in
	// the route's namespace and labelled wsgate.io/jwks=true.
	//
	// +optional
	Secret *KeySecretRef `json:"secret,omitempty"`
}

// KeySecretRef names a Secret of the route's namespace and a key of its
// data.
type KeySecretRef struct {
	// Name of the Secret.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key of the Secret's data; jwks.json by default.
	//
	// +optional
	// +kubebuilder:default="jwks.json"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// TokenSources are the optional places of a token.
type TokenSources struct {
	// Cookie is the name of a cookie that may carry the token.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Cookie string `json:"cookie,omitempty"`

	// QueryParameter is the name of a query parameter that may carry the
	// token. Query strings end up in browser history and other proxies'
	// logs: prefer the cookie or the subprotocol.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~-]+$`
	QueryParameter string `json:"queryParameter,omitempty"`
}

// PodBinding compares a token claim with a value of each pod. The claim
// must be a string, or an array of strings (any element may match);
// values are compared exactly (case matters), and a claim of any other
// type, or an empty value, matches nothing. Pods without the value are
// reached by nobody (status.endpoints.skipped, reason Unbound).
//
// +kubebuilder:validation:XValidation:rule="[has(self.label), has(self.annotation), has(self.podName) && self.podName].filter(x, x).size() == 1",message="podBinding needs exactly one of label, annotation or podName: true"
type PodBinding struct {
	// Claim is the token claim to compare, "sub" by default.
	//
	// +optional
	// +kubebuilder:default=sub
	Claim ClaimName `json:"claim,omitempty"`

	// Label is the pod label whose value the claim must equal.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=316
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	Label string `json:"label,omitempty"`

	// Annotation is the pod annotation whose value the claim must equal.
	// Its key must start with bind.wsgate.io/ (the gateway keeps no other
	// annotations of pods). Annotations hold values labels cannot, such
	// as e-mail addresses.
	//
	// +optional
	// +kubebuilder:validation:MinLength=16
	// +kubebuilder:validation:MaxLength=316
	// +kubebuilder:validation:Pattern=`^bind\.wsgate\.io/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	Annotation string `json:"annotation,omitempty"`

	// PodName: the claim must equal the pod's name.
	//
	// +optional
	PodName bool `json:"podName,omitempty"`
}

// IdentityHeaders name the request headers that carry the token's
// identity to the pod.
type IdentityHeaders struct {
	// Subject is the header that carries the token's sub claim.
	//
	// +optional
	Subject HeaderName `json:"subject,omitempty"`

	// Claims are other claims to pass, each in its own header. A string
	// claim is passed as is; a number or boolean in its JSON form; an
	// array of strings comma-separated; a claim that is absent or of
	// another type leaves its header unset.
	//
	// +optional
	// +listType=map
	// +listMapKey=header
	// +kubebuilder:validation:MaxItems=16
	Claims []ClaimHeader `json:"claims,omitempty"`
}

// ClaimHeader passes one claim in one header.
type ClaimHeader struct {
	// Claim is the token claim.
	Claim ClaimName `json:"claim"`
	// Header is the request header that carries it.
	Header HeaderName `json:"header"`
}

// ForwardAuth asks a Service of the route's own namespace whether to admit
// a handshake. The gateway sends a GET to one of the Service's Ready pods
// (chosen through its selector, like the route's pods: never an address
// a tenant can write) with the client's request headers (hop-by-hop
// headers removed), and X-Wsgate-Pod-Namespace, X-Wsgate-Pod-Name and
// X-Wsgate-Pod-Address naming the matched pod. 2xx admits, and the
// headers the answer names in passHeaders go on to the pod; 401 and 403
// are relayed to the client; anything else, a timeout or an unreachable
// Service is 503 (fail closed).
type ForwardAuth struct {
	// Service is the name of a Service with a selector in the route's
	// namespace.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// Port is the Service's port, by number or name; the request goes to
	// the target port of the selected pod.
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : (self.size() <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",message="port must be a number in 1-65535 or a port name"
	Port intstr.IntOrString `json:"port"`

	// Path of the request, "/" by default. The client's query string is
	// not passed on.
	//
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$`
	Path string `json:"path,omitempty"`

	// Timeout of the whole request; between 100ms and 10s, 2s by default.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('100ms') && duration(self) <= duration('10s'))",message="forwardAuth.timeout must be between 100ms and 10s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// PassHeaders are the headers of a 2xx answer that go on to the pod
	// (replacing the client's headers of those names).
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	PassHeaders []HeaderName `json:"passHeaders,omitempty"`
}
