package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

// bearerProtocolPrefix starts the Sec-WebSocket-Protocol entry that
// carries a token, in unpadded base64url, as Kubernetes clients send it.
const bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// identity is who a handshake's token says is asking.
type identity struct {
	claims *auth.Claims
}

// findToken looks for the token of a route with auth in the documented
// places, in this order: the Authorization header (Bearer), the route's
// cookie, a Sec-WebSocket-Protocol entry, the route's query parameter.
// The first place that holds one is used (podHeader removes them all).
// Two tokens in one place are ambiguous and refused with 400; no token
// is a 401.
func findToken(r *http.Request, a *routing.Auth) (string, *answer) {
	var bearer, cookies, protocols, query []string
	for _, v := range r.Header.Values("Authorization") {
		if tok, ok := bearerToken(v); ok {
			bearer = append(bearer, tok)
		}
	}
	if a.Cookie != "" {
		for _, c := range r.Cookies() {
			if c.Name == a.Cookie {
				cookies = append(cookies, c.Value)
			}
		}
	}
	for _, p := range subprotocols(r.Header) {
		if enc, ok := strings.CutPrefix(p, bearerProtocolPrefix); ok {
			// Strict decoding still skips CR and LF: the entry must be
			// exactly the token's encoding.
			tok, err := base64.RawURLEncoding.Strict().DecodeString(enc)
			if err != nil || base64.RawURLEncoding.EncodeToString(tok) != enc {
				return "", tokenRefusal(http.StatusBadRequest, "invalid_request", "the token in Sec-WebSocket-Protocol is not unpadded base64url")
			}
			protocols = append(protocols, string(tok))
		}
	}
	if a.Query != "" {
		query = queryValues(r.RequestURI, a.Query)
	}
	for _, place := range [...][]string{bearer, cookies, protocols, query} {
		switch {
		case len(place) > 1:
			return "", tokenRefusal(http.StatusBadRequest, "invalid_request", "more than one token in one place")
		case len(place) == 1 && place[0] != "":
			return place[0], nil
		case len(place) == 1:
			return "", tokenRefusal(http.StatusUnauthorized, "invalid_token", "the token is empty")
		}
	}
	a2 := refuse(http.StatusUnauthorized, "a bearer token is required")
	a2.header = http.Header{"Www-Authenticate": {`Bearer realm="wsgate"`}}
	return "", a2
}

// bearerToken returns the token of an Authorization value of the Bearer
// scheme.
func bearerToken(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// queryValues returns the values of the query parameter name in uri: the
// parts of its query that isQueryParameter picks, as withoutQueryParameter
// removes them, so that the parameter read is the one removed.
func queryValues(uri, name string) []string {
	_, query, ok := strings.Cut(uri, "?")
	if !ok {
		return nil
	}
	var out []string
	for part := range strings.SplitSeq(query, "&") {
		if !isQueryParameter(part, name) {
			continue
		}
		_, v, _ := strings.Cut(part, "=")
		val, err := url.QueryUnescape(v)
		if err != nil {
			val = ""
		}
		out = append(out, val)
	}
	return out
}

// tokenRefusal is a 401 or 400 that names the RFC 6750 error code and a
// description, never the token.
func tokenRefusal(status int, code, description string) *answer {
	a := refuse(status, description)
	a.header = http.Header{"Www-Authenticate": {`Bearer realm="wsgate", error="` + code + `", error_description="` + description + `"`}}
	return a
}

// subprotocols returns the entries of the Sec-WebSocket-Protocol fields.
func subprotocols(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// verifyWait bounds how long a handshake waits for its route's keys (a
// first fetch, or a refetch for a key ID not seen yet).
const verifyWait = 3 * time.Second

// authenticate checks the token of a handshake on a route with auth. It
// runs before the pod address is looked up: without a valid token the
// client learns nothing about the route's pods.
func (s *Server) authenticate(r *http.Request, route *routing.Route) (*identity, *answer) {
	a := route.Auth
	if a.Tokens == nil {
		return nil, nil
	}
	if a.Problem != "" {
		s.opts.Metrics.auth(route, "unavailable")
		return nil, tokenRefusal(http.StatusUnauthorized, "invalid_token", "the route's keys are not available")
	}
	token, refusal := findToken(r, a)
	if refusal != nil {
		s.opts.Metrics.auth(route, authResult(refusal.status))
		return nil, refusal
	}
	ctx, cancel := context.WithTimeout(context.Background(), verifyWait)
	claims, err := a.Tokens.Verify(ctx, token, time.Now())
	cancel()
	if err != nil {
		var ae *auth.Error
		if !errors.As(err, &ae) {
			ae = &auth.Error{Code: "invalid_token", Description: "the token cannot be verified"}
		}
		s.opts.Metrics.auth(route, "invalid")
		return nil, tokenRefusal(http.StatusUnauthorized, ae.Code, ae.Description)
	}
	s.opts.Metrics.auth(route, "ok")
	return &identity{claims: claims}, nil
}

// authResult names a refusal in wsgate_auth_total.
func authResult(status int) string {
	if status == http.StatusBadRequest {
		return "malformed"
	}
	return "missing"
}

// bound reports whether the identity may reach backend b of route: on a
// route that binds tokens to pods, the backend's bound value must be one
// of the binding claim's values.
func (id *identity) bound(route *routing.Route, b routing.Backend) bool {
	claim := route.Auth.BindingClaim
	if claim == "" {
		return true
	}
	return b.Bound != "" && slices.Contains(id.claims.Values(claim), b.Bound)
}

// podHeader is the client's header as the pod gets it on a route with
// auth: without the client's own copies of the identity headers, with
// the identity's and, on routes with tokens, without a token in any of
// the places findToken looks. Forward auth's headers are added to it
// later (askForwardAuth).
func podHeader(r *http.Request, a *routing.Auth, id *identity) http.Header {
	h := r.Header.Clone()
	if a.Tokens != nil {
		withoutTokens(h, a.Cookie)
	}
	if a.SubjectHeader != "" {
		h.Del(a.SubjectHeader)
		if id != nil && id.claims.Subject != "" && httpguts.ValidHeaderFieldValue(id.claims.Subject) {
			h.Set(a.SubjectHeader, id.claims.Subject)
		}
	}
	for _, ch := range a.ClaimHeaders {
		h.Del(ch.Header)
		if id == nil {
			continue
		}
		if v, ok := id.claims.HeaderValue(ch.Claim); ok {
			h.Set(ch.Header, v)
		}
	}
	set := make([]string, 0, 1+len(a.ClaimHeaders))
	if a.SubjectHeader != "" {
		set = append(set, a.SubjectHeader)
	}
	for _, ch := range a.ClaimHeaders {
		set = append(set, ch.Header)
	}
	unlistFromConnection(h, set)
	return h
}

// unlistFromConnection removes names from h's Connection field, where
// the client could list the headers the gateway sets to have them dropped
// as hop-by-hop on the way to the pod.
func unlistFromConnection(h http.Header, names []string) {
	vs := h.Values("Connection")
	if len(vs) == 0 || len(names) == 0 {
		return
	}
	var kept []string
	for _, v := range vs {
		for item := range strings.SplitSeq(v, ",") {
			// As connectionNames reads the list.
			item = textproto.TrimString(item)
			if item != "" && !slices.Contains(names, textproto.CanonicalMIMEHeaderKey(item)) {
				kept = append(kept, item)
			}
		}
	}
	h.Del("Connection")
	if len(kept) > 0 {
		h.Set("Connection", strings.Join(kept, ", "))
	}
}

// withoutTokens removes from h the Bearer Authorization values, the
// cookie named cookie and the bearer subprotocol entries.
func withoutTokens(h http.Header, cookie string) {
	if vs := h.Values("Authorization"); len(vs) > 0 {
		h.Del("Authorization")
		for _, v := range vs {
			if _, bearer := bearerToken(v); !bearer {
				h.Add("Authorization", v)
			}
		}
	}
	if cookie != "" && len(h.Values("Cookie")) > 0 {
		setCookiesWithout(h, cookie)
	}
	if ps := subprotocols(h); len(ps) > 0 {
		h.Del("Sec-Websocket-Protocol")
		if rest := slices.DeleteFunc(ps, func(p string) bool { return strings.HasPrefix(p, bearerProtocolPrefix) }); len(rest) > 0 {
			h.Set("Sec-Websocket-Protocol", strings.Join(rest, ", "))
		}
	}
}

// setCookiesWithout rewrites h's Cookie fields without the cookies named
// name.
func setCookiesWithout(h http.Header, name string) {
	var kept []string
	for _, line := range h.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			p := strings.TrimSpace(part)
			if p == "" {
				continue
			}
			if n, _, _ := strings.Cut(p, "="); strings.TrimSpace(n) == name {
				continue
			}
			kept = append(kept, p)
		}
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// isQueryParameter reports whether part ("key=value" or "key" of a query
// split on "&") is the parameter name: its key, unescaped, is name.
func isQueryParameter(part, name string) bool {
	k, _, _ := strings.Cut(part, "=")
	key, err := url.QueryUnescape(k)
	return err == nil && key == name
}

// withoutQueryParameter returns uri without the query parameter name;
// the other parameters keep their order and encoding.
func withoutQueryParameter(uri, name string) string {
	path, query, ok := strings.Cut(uri, "?")
	if !ok {
		return uri
	}
	var kept []string
	for part := range strings.SplitSeq(query, "&") {
		if !isQueryParameter(part, name) {
			kept = append(kept, part)
		}
	}
	if len(kept) == 0 {
		return path
	}
	return path + "?" + strings.Join(kept, "&")
}
