package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// requestOrigin is the request's Origin header, trimmed and lower-cased,
// and whether it has one. checkOrigin has refused requests with several.
func requestOrigin(r *http.Request) (string, bool) {
	v := r.Header.Values("Origin")
	if len(v) == 0 {
		return "", false
	}
	return strings.ToLower(strings.TrimSpace(v[0])), true
}

// originMatches reports whether a route's allowedOrigins admit origin (as
// requestOrigin gives it) for a request to host: an empty list admits
// the same origin only.
func originMatches(origin, host string, allowed []string) bool {
	if len(allowed) == 0 {
		u, err := url.Parse(origin)
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
	}
	for _, o := range allowed {
		if o == "*" || o == origin {
			return true
		}
	}
	return false
}
