package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// MaxDiscoveryBytes bounds an issuer's OpenID Connect discovery document.
const MaxDiscoveryBytes = 64 << 10

// Fetcher fetches a key set: its issuer's name and its JSON Web Key Set
// document. It returns when ctx ends at the latest.
type Fetcher func(ctx context.Context) (issuer string, jwks []byte, err error)

// errRedirect refuses every redirect: an issuer's documents are read from
// the addresses the issuer and its discovery document name, and from no
// other.
var errRedirect = errors.New("redirects are not followed")

// NewHTTPClient returns the client the gateway fetches key sets with:
// system roots, TLS 1.2 or later, no proxy from the environment, bounded
// dial, handshake and response times, and no redirects followed.
func NewHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: refuseRedirect,
		Timeout:       30 * time.Second,
	}
}

func refuseRedirect(*http.Request, []*http.Request) error { return errRedirect }

// IssuerFetcher fetches the keys of an OpenID Connect issuer: it reads
// <issuer>/.well-known/openid-configuration (a trailing "/" of issuer is
// dropped first), whose issuer must equal issuer exactly and whose
// jwks_uri must be an https URL on the issuer's own host and port, then
// reads jwks_uri. Both go over HTTPS only, must answer 200, are bounded
// in size (MaxDiscoveryBytes and MaxRemoteJWKSBytes), and no redirect is
// followed. client nil means NewHTTPClient(); a client given is used with
// redirects refused.
func IssuerFetcher(issuer string, client *http.Client) Fetcher {
	if client == nil {
		client = NewHTTPClient()
	} else {
		c := *client
		c.CheckRedirect = refuseRedirect
		client = &c
	}
	return func(ctx context.Context) (string, []byte, error) {
		base, err := httpsURL(issuer)
		if err != nil {
			return "", nil, fmt.Errorf("issuer: %w", err)
		}
		discovery := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
		body, err := get(ctx, client, discovery, MaxDiscoveryBytes)
		if err != nil {
			return "", nil, fmt.Errorf("discovery: %w", err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := josejson.Unmarshal(body, &doc); err != nil {
			return "", nil, errors.New("discovery: document is not valid JSON")
		}
		if doc.Issuer != issuer {
			return "", nil, fmt.Errorf("discovery: document names issuer %q, not %q", doc.Issuer, issuer)
		}
		jwksURL, err := httpsURL(doc.JWKSURI)
		if err != nil {
			return "", nil, fmt.Errorf("discovery: jwks_uri: %w", err)
		}
		if !sameHost(base, jwksURL) {
			return "", nil, fmt.Errorf("discovery: jwks_uri %q is not on the issuer's host", doc.JWKSURI)
		}
		jwks, err := get(ctx, client, jwksURL.String(), MaxRemoteJWKSBytes)
		if err != nil {
			return "", nil, fmt.Errorf("jwks: %w", err)
		}
		return issuer, jwks, nil
	}
}

// httpsURL parses an absolute https URL with a host and no user info.
func httpsURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an https URL", s)
	}
	if u.Hostname() == "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not an https URL with a host", s)
	}
	return u, nil
}

// sameHost reports whether a and b name the same host and port.
func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return "443"
}

// get reads an URL that must answer 200 with at most limit bytes.
func get(ctx context.Context, client *http.Client, target string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, http.NoBody)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", target, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s answered more than %d bytes", target, limit)
	}
	return body, nil
}
