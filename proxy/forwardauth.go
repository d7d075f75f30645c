package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/routing"
)

// The headers that name the matched pod to a forward-auth service; the
// client's own fields of these names are dropped.
const (
	headerPodNamespace = "X-Wsgate-Pod-Namespace"
	headerPodName      = "X-Wsgate-Pod-Name"
	headerPodAddress   = "X-Wsgate-Pod-Address"
)

// forwardAuthBodyLimit bounds what is read of a forward-auth answer's
// body (it is not used; reading it lets the connection be reused).
const forwardAuthBodyLimit = 4 << 10

// maxForwardAuthWaits bounds the handshakes of one namespace's routes
// that wait for a forward-auth service at once; beyond it, 503. Those
// handshakes hold no slot yet, so without it a slow service would let
// them pile up without bound.
const maxForwardAuthWaits = 256

// forwardAuthWaits counts the handshakes waiting for forward auth, per
// namespace.
type forwardAuthWaits struct {
	mu sync.Mutex
	n  map[string]int
}

// take counts one more waiting handshake of namespace ns, unless
// maxForwardAuthWaits already wait.
func (w *forwardAuthWaits) take(ns string) (release func(), ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = make(map[string]int)
	}
	if w.n[ns] >= maxForwardAuthWaits {
		return nil, false
	}
	w.n[ns]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.n[ns]--; w.n[ns] == 0 {
			delete(w.n, ns)
		}
	}, true
}

// newForwardAuthClient returns the client that asks forward-auth
// services. It dials with dial (the pod dialer: a service is reached at
// the addresses of its pods, from the table, like pods) and never through
// a proxy from the environment.
func newForwardAuthClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dial,
			MaxIdleConnsPerHost:    8,
			IdleConnTimeout:        30 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
			DisableCompression:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// askForwardAuth asks the route's forward-auth service whether to admit
// the handshake adm, with the client's header (hop-by-hop fields
// removed) and the matched pod's namespace, name and address. A 2xx
// admits it, and the answer's passHeaders go on to the pod; 401 and 403
// are relayed; anything else, a timeout or a failure is 503: forward
// auth fails closed.
func (s *Server) askForwardAuth(r *http.Request, adm *admitted) *answer {
	fa := adm.route.Auth.Forward
	deny := func(status int, text, result string) *answer {
		s.opts.Metrics.auth(adm.route, result)
		a := refuse(status, text)
		if status == http.StatusServiceUnavailable {
			a.header = s.retryAfter()
		}
		a.route = adm.route
		return a
	}
	if len(fa.Addrs) == 0 {
		return deny(http.StatusServiceUnavailable, "the route's auth service has no ready pod", "forward_error")
	}
	release, ok := s.forwardAuthWaits.take(adm.route.Key.Namespace)
	if !ok {
		return deny(http.StatusServiceUnavailable, "too many handshakes are waiting for this namespace's auth services", "forward_error")
	}
	defer release()
	addr := fa.Addrs[rand.IntN(len(fa.Addrs))]
	ctx, cancel := context.WithTimeout(context.Background(), fa.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+fa.Path, nil)
	if err != nil {
		return deny(http.StatusServiceUnavailable, "the route's auth service cannot be asked", "forward_error")
	}
	req.Header = forwardAuthHeader(r, adm.route, adm.backend)
	req.Host = r.Host
	resp, err := s.forwardAuth.Do(req)
	if err != nil {
		return deny(http.StatusServiceUnavailable, "the route's auth service did not answer", "forward_error")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, forwardAuthBodyLimit))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		s.opts.Metrics.auth(adm.route, "forward_ok")
		for _, name := range fa.PassHeaders {
			adm.header.Del(name)
			for _, v := range resp.Header.Values(name) {
				if httpguts.ValidHeaderFieldValue(v) {
					adm.header.Add(name, v)
				}
			}
		}
		unlistFromConnection(adm.header, fa.PassHeaders)
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		a := deny(resp.StatusCode, "refused by the route's auth service", "forward_denied")
		a.tenant = true
		if v := resp.Header.Get("Www-Authenticate"); v != "" && httpguts.ValidHeaderFieldValue(v) && resp.StatusCode == http.StatusUnauthorized {
			a.header = http.Header{"Www-Authenticate": {v}}
		}
		return a
	default:
		return deny(http.StatusServiceUnavailable, "the route's auth service failed", "forward_error")
	}
}

// forwardAuthHeader is the header a forward-auth service gets: the
// client's, without hop-by-hop fields and the gateway's own, with the
// matched pod and the forwarding fields.
func forwardAuthHeader(r *http.Request, route *routing.Route, b routing.Backend) http.Header {
	h := r.Header.Clone()
	removeHopByHop(h)
	for _, k := range podRequestDropped {
		h.Del(k)
	}
	for k := range h {
		if !plainName(k) {
			delete(h, k)
		}
	}
	for _, f := range forwardedFields(r) {
		h.Set(f.name, f.value)
	}
	h.Set("X-Forwarded-Method", r.Method)
	path, _, _ := strings.Cut(r.RequestURI, "?")
	h.Set("X-Forwarded-Uri", path)
	h.Set(headerPodNamespace, route.Key.Namespace)
	h.Set(headerPodName, b.Pod)
	h.Set(headerPodAddress, b.Addr.Addr().String())
	return h
}
