package auth

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// issuerServer is an OpenID Connect issuer over TLS on 127.0.0.1.
type issuerServer struct {
	srv *httptest.Server

	mu         sync.Mutex
	jwks       []byte
	jwksStatus int
	discovery  func(base string) (status int, body string)
	block      chan struct{} // when not nil, JWKS answers wait for it

	discoveryHits atomic.Int32
	jwksHits      atomic.Int32
	otherHits     atomic.Int32
}

func newIssuerServer(t *testing.T, jwks []byte) *issuerServer {
	t.Helper()
	s := &issuerServer{jwks: jwks, jwksStatus: http.StatusOK}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the tests mean to fail
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	if !strings.HasPrefix(s.srv.URL, "https://127.0.0.1:") {
		t.Fatalf("test server at %s, not on 127.0.0.1", s.srv.URL)
	}
	return s
}

func (s *issuerServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	jwks, status, discovery, block := s.jwks, s.jwksStatus, s.discovery, s.block
	s.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		s.discoveryHits.Add(1)
		code, body := http.StatusOK, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, s.srv.URL, s.srv.URL+"/jwks")
		if discovery != nil {
			code, body = discovery(s.srv.URL)
		}
		if code == http.StatusFound {
			http.Redirect(w, r, body, code)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	case "/jwks":
		s.jwksHits.Add(1)
		if block != nil {
			<-block
		}
		w.WriteHeader(status)
		_, _ = w.Write(jwks)
	default:
		s.otherHits.Add(1)
		_, _ = w.Write(jwks)
	}
}

func (s *issuerServer) set(f func(*issuerServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *issuerServer) fetcher() Fetcher { return IssuerFetcher(s.srv.URL, s.srv.Client()) }

// issuerClaims are good claims from the test server's issuer.
func issuerClaims(s *issuerServer) map[string]any {
	return with(func(c map[string]any) { c["iss"] = s.srv.URL })
}

func TestIssuerFetcher(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	jwks := jwksOf(t, jose.JSONWebKey{Key: key, KeyID: "k1"})
	s := newIssuerServer(t, jwks)
	ctx := context.Background()

	iss, doc, err := s.fetcher()(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if iss != s.srv.URL || string(doc) != string(jwks) {
		t.Errorf("fetched %q, %s", iss, doc)
	}

	// Another server on 127.0.0.1 that the issuer's client trusts too.
	other := newIssuerServer(t, jwks)

	tests := []struct {
		name      string
		issuer    string
		discovery func(base string) (int, string)
		jwks      int
		wantJWKS  int32 // JWKS requests the test server may see
	}{
		{name: "jwks_uri on another port", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, base, other.srv.URL+"/jwks")
		}},
		{name: "jwks_uri over http", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, base, strings.Replace(base, "https:", "http:", 1)+"/jwks")
		}},
		{name: "jwks_uri with user info", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, base, strings.Replace(base, "https://", "https://u:p@", 1)+"/jwks")
		}},
		{name: "no jwks_uri", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q}`, base)
		}},
		{name: "other issuer", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, base+"/", base+"/jwks")
		}},
		{name: "issuer under another case", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"ISSUER":%q,"jwks_uri":%q}`, base, base+"/jwks")
		}},
		{name: "discovery redirected", discovery: func(base string) (int, string) {
			return http.StatusFound, base + "/moved"
		}},
		{name: "discovery 500", discovery: func(string) (int, string) { return 500, "" }},
		{name: "discovery not JSON", discovery: func(string) (int, string) { return 200, "<html>" }},
		{name: "discovery too large", discovery: func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q,"x":%q}`, base, base+"/jwks", strings.Repeat("x", MaxDiscoveryBytes))
		}},
		{name: "jwks 500", jwks: 500, wantJWKS: 1},
		{name: "jwks 201", jwks: 201, wantJWKS: 1},
		{name: "jwks redirected", jwks: http.StatusFound, wantJWKS: 1},
		{name: "issuer over http", issuer: "http://127.0.0.1:1"},
		{name: "issuer not a URL", issuer: "://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.set(func(s *issuerServer) {
				s.discovery, s.jwksStatus = tt.discovery, http.StatusOK
				if tt.jwks != 0 {
					s.jwksStatus = tt.jwks
				}
			})
			defer s.set(func(s *issuerServer) { s.discovery, s.jwksStatus = nil, http.StatusOK })
			before, otherBefore, movedBefore := s.jwksHits.Load(), other.jwksHits.Load()+other.discoveryHits.Load(), s.otherHits.Load()
			issuer := s.srv.URL
			if tt.issuer != "" {
				issuer = tt.issuer
			}
			_, _, err := IssuerFetcher(issuer, s.srv.Client())(ctx)
			if err == nil {
				t.Fatal("fetched")
			}
			if n := s.jwksHits.Load() - before; n != tt.wantJWKS {
				t.Errorf("%d JWKS requests, want %d", n, tt.wantJWKS)
			}
			if n := other.jwksHits.Load() + other.discoveryHits.Load() - otherBefore; n != 0 {
				t.Errorf("the other server was asked %d times", n)
			}
			if n := s.otherHits.Load() - movedBefore; n != 0 {
				t.Errorf("a redirect was followed %d times", n)
			}
		})
	}

	// A redirect is refused whatever the client given says.
	following := *s.srv.Client()
	following.CheckRedirect = func(*http.Request, []*http.Request) error { return nil }
	s.set(func(s *issuerServer) {
		s.discovery = func(base string) (int, string) { return http.StatusFound, base + "/moved" }
	})
	if _, _, err := IssuerFetcher(s.srv.URL, &following)(ctx); err == nil {
		t.Error("a redirect was followed")
	}
	s.set(func(s *issuerServer) { s.discovery = nil })
	if n := s.otherHits.Load(); n != 0 {
		t.Errorf("a redirect was followed %d times", n)
	}

	// A plain-HTTP issuer is never asked.
	var plainHits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { plainHits.Add(1) }))
	defer plain.Close()
	if _, _, err := IssuerFetcher(plain.URL, plain.Client())(ctx); err == nil {
		t.Error("fetched from an http issuer")
	}
	if plainHits.Load() != 0 {
		t.Error("an http issuer was asked")
	}

	// An issuer with a trailing slash reads <issuer>.well-known/… and
	// expects the document to name it with its slash.
	s.set(func(s *issuerServer) {
		s.discovery = func(base string) (int, string) {
			return 200, fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, base+"/", base+"/jwks")
		}
	})
	if iss, _, err := IssuerFetcher(s.srv.URL+"/", s.srv.Client())(ctx); err != nil || iss != s.srv.URL+"/" {
		t.Errorf("issuer with a trailing slash: %q, %v", iss, err)
	}
	s.set(func(s *issuerServer) { s.discovery = nil })

	// A client that does not trust the server's certificate fails.
	if _, _, err := IssuerFetcher(s.srv.URL, NewHTTPClient())(ctx); err == nil {
		t.Error("fetched over TLS without trusting the certificate")
	}
}

func TestSameHost(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"https://issuer.test", "https://issuer.test/keys", true},
		{"https://issuer.test", "https://ISSUER.test/keys", true},
		{"https://issuer.test", "https://issuer.test:443/keys", true},
		{"https://issuer.test:8443/realm", "https://issuer.test:8443/keys", true},
		{"https://issuer.test", "https://issuer.test:8443/keys", false},
		{"https://issuer.test", "https://keys.issuer.test/keys", false},
		{"https://issuer.test", "https://issuer.test.evil.test/keys", false},
		{"https://issuer.test", "https://evil.test/issuer.test", false},
		{"https://127.0.0.1:1", "https://[::1]:1/keys", false},
	} {
		a, err := httpsURL(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := httpsURL(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameHost(a, b); got != tt.want {
			t.Errorf("sameHost(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}

// wantChanges waits a little for OnChange to have been called n times,
// and fails if it was not, or was called more.
func wantChanges(t *testing.T, changes *atomic.Int32, n int32) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for changes.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	if got := changes.Load(); got != n {
		t.Errorf("OnChange called %d times, want %d", got, n)
	}
}

// waitLoaded waits until r has loaded keys.
func waitLoaded(t *testing.T, r *RemoteKeys) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.State().Loaded {
		if time.Now().After(deadline) {
			t.Fatalf("keys not loaded: %+v", r.State())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRemoteKeysRotation(t *testing.T) {
	k1, k2 := ecKey(t, elliptic.P256()), ecKey(t, elliptic.P256())
	s := newIssuerServer(t, jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}))
	var changes atomic.Int32
	r := NewRemoteKeys(s.srv.URL, s.fetcher(), RemoteOptions{
		Refresh:    time.Hour,
		MinRefetch: 50 * time.Millisecond,
		OnChange:   func() { changes.Add(1) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	r.Start(ctx) // a second Start does nothing
	waitLoaded(t, r)
	if r.Issuer() != s.srv.URL {
		t.Errorf("issuer %q", r.Issuer())
	}
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: r})
	claims := issuerClaims(s)
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k1, "k1", claims, nil), testNow); err != nil {
		t.Fatalf("k1 refused: %v", err)
	}

	s.set(func(s *issuerServer) { s.jwks = jwksOf(t, jose.JSONWebKey{Key: k2, KeyID: "k2"}) })
	time.Sleep(60 * time.Millisecond)
	before := s.jwksHits.Load()
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k2, "k2", claims, nil), testNow); err != nil {
		t.Fatalf("k2 refused after rotation: %v", err)
	}
	if n := s.jwksHits.Load() - before; n != 1 {
		t.Errorf("%d fetches for the new kid, want 1", n)
	}
	// k2 is known now: no fetch.
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k2, "k2", claims, nil), testNow); err != nil {
		t.Fatalf("k2 refused: %v", err)
	}
	if n := s.jwksHits.Load() - before; n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	wantChanges(t, &changes, 2)

	// A fetch that finds the same keys changes nothing.
	time.Sleep(60 * time.Millisecond)
	tok := sign(t, jose.ES256, k1, "k1", claims, nil)
	c, err := v.Verify(ctx, tok, testNow)
	assertRefused(t, tok, c, err, "unknown signing key")
	wantChanges(t, &changes, 2)
}

func TestRemoteKeysFlood(t *testing.T) {
	const window = time.Second
	k1 := ecKey(t, elliptic.P256())
	attacker := ecKey(t, elliptic.P256())
	s := newIssuerServer(t, jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}))
	r := NewRemoteKeys(s.srv.URL, s.fetcher(), RemoteOptions{Refresh: time.Hour, MinRefetch: window})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	waitLoaded(t, r)
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: r})
	claims := issuerClaims(s)
	tokens := make([]string, 1000)
	for i := range tokens {
		tokens[i] = sign(t, jose.ES256, attacker, fmt.Sprintf("kid-%d", i), claims, nil)
	}

	flood := func() {
		t.Helper()
		var wg sync.WaitGroup
		var accepted, other atomic.Int32
		for _, tok := range tokens {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err := v.Verify(ctx, tok, testNow)
				var e *Error
				switch {
				case err == nil:
					accepted.Add(1)
				case !errors.As(err, &e) || e.Description != "unknown signing key":
					other.Add(1)
				}
			})
		}
		wg.Wait()
		if accepted.Load() != 0 || other.Load() != 0 {
			t.Errorf("%d accepted, %d refused for another reason", accepted.Load(), other.Load())
		}
	}

	// Within the window of the first fetch: no fetch at all.
	before := s.jwksHits.Load()
	flood()
	if n := s.jwksHits.Load() - before; n != 0 {
		t.Errorf("%d fetches within the window of the first, want 0", n)
	}

	time.Sleep(window + 50*time.Millisecond)
	before = s.jwksHits.Load()
	flood()
	if n := s.jwksHits.Load() - before; n < 1 || n > 2 {
		t.Errorf("%d fetches for a flood of unknown kids, want 1 or 2", n)
	}
	before = s.jwksHits.Load()
	flood()
	if n := s.jwksHits.Load() - before; n > 1 {
		t.Errorf("%d more fetches for a second flood, want at most 1", n)
	}
	if d := s.discoveryHits.Load(); d != s.jwksHits.Load() {
		t.Errorf("%d discovery requests for %d JWKS requests", d, s.jwksHits.Load())
	}
}

func TestRemoteKeysKeepsLastGood(t *testing.T) {
	k1 := ecKey(t, elliptic.P256())
	s := newIssuerServer(t, jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}))
	var changes atomic.Int32
	reg := prometheus.NewRegistry()
	r := NewRemoteKeys(s.srv.URL, s.fetcher(), RemoteOptions{
		Refresh:    time.Hour,
		MinRefetch: 20 * time.Millisecond,
		OnChange:   func() { changes.Add(1) },
		Metrics:    NewMetrics(reg),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	waitLoaded(t, r)
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: r})
	claims := issuerClaims(s)
	good := sign(t, jose.ES256, k1, "k1", claims, nil)
	unknown := sign(t, jose.ES256, k1, "k-new", claims, nil)

	check := func(wantErr string) {
		t.Helper()
		time.Sleep(30 * time.Millisecond)
		c, err := v.Verify(ctx, unknown, testNow) // triggers a fetch
		assertRefused(t, unknown, c, err, "unknown signing key")
		st := r.State()
		if !st.Loaded || st.Keys != 1 || !strings.Contains(st.LastError, wantErr) || (wantErr == "") != (st.LastError == "") {
			t.Errorf("state %+v, want last error with %q", st, wantErr)
		}
		if _, err := v.Verify(ctx, good, testNow); err != nil {
			t.Errorf("the last good key is lost: %v", err)
		}
	}

	s.set(func(s *issuerServer) { s.jwksStatus = 500 })
	check("500")
	wantChanges(t, &changes, 2) // load, error
	s.set(func(s *issuerServer) { s.jwksStatus = 200; s.jwks = []byte(`{"keys":[]}`) })
	check("no usable signing key")
	s.set(func(s *issuerServer) { s.jwks = []byte(`{`) })
	check("not a JSON Web Key Set")
	s.set(func(s *issuerServer) { s.jwks = jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}) })
	check("")
	wantChanges(t, &changes, 5)
	s.srv.Close()
	check("https://127.0.0.1")

	fetches := map[string]float64{}
	var age *dto.Metric
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["issuer"] != s.srv.URL {
				t.Errorf("%s labelled %v", f.GetName(), labels)
			}
			switch f.GetName() {
			case "wsgate_auth_key_fetches_total":
				fetches[labels["result"]] = m.GetCounter().GetValue()
			case "wsgate_auth_keyset_age_seconds":
				age = m
			}
		}
	}
	if fetches["ok"] != 2 || fetches["error"] != 4 {
		t.Errorf("fetches %v, want 2 ok and 4 errors", fetches)
	}
	if age == nil || age.GetGauge().GetValue() <= 0 || age.GetGauge().GetValue() > 60 {
		t.Errorf("age %v", age)
	}

	r.Stop()
	families, _ = reg.Gather()
	for _, f := range families {
		if len(f.GetMetric()) != 0 {
			t.Errorf("%s still reported after Stop", f.GetName())
		}
	}
}

func TestRemoteKeysBeforeLoad(t *testing.T) {
	k1 := ecKey(t, elliptic.P256())
	s := newIssuerServer(t, jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}))
	release := make(chan struct{})
	s.set(func(s *issuerServer) { s.block = release })
	r := NewRemoteKeys(s.srv.URL, s.fetcher(), RemoteOptions{Refresh: time.Hour, MinRefetch: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: r})
	tok := sign(t, jose.ES256, k1, "k1", issuerClaims(s), nil)

	// Issuer unknown before the first load.
	c, err := v.Verify(ctx, tok, testNow)
	assertRefused(t, tok, c, err, "issuer not known yet")

	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if _, err := r.Keys(short, "k1"); err == nil {
		t.Error("keys given before the first load")
	}
	done := make(chan error, 1)
	go func() {
		keys, err := r.Keys(ctx, "k1")
		if err == nil && len(keys) != 1 {
			err = fmt.Errorf("%d keys", len(keys))
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Errorf("Keys waiting for the first load: %v", err)
	}
	if _, err := v.Verify(ctx, tok, testNow); err != nil {
		t.Errorf("refused after the first load: %v", err)
	}
	if n := s.jwksHits.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestRemoteKeysFailingFirstFetch(t *testing.T) {
	var calls atomic.Int32
	r := NewRemoteKeys("broken", func(context.Context) (string, []byte, error) {
		calls.Add(1)
		return "", nil, errors.New("unreachable")
	}, RemoteOptions{Refresh: 40 * time.Millisecond, MinRefetch: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: r})
	tok := sign(t, jose.ES256, ecKey(t, elliptic.P256()), "k1", goodClaims(), nil)
	// Not started: the first Keys fetches.
	c, err := v.Verify(ctx, tok, testNow)
	assertRefused(t, tok, c, err, "signing keys unavailable")
	if calls.Load() != 1 || !strings.Contains(r.State().LastError, "unreachable") {
		t.Errorf("%d calls, state %+v", calls.Load(), r.State())
	}
	// Retries back off up to Refresh.
	r.Start(ctx)
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n < 3 || n > 12 {
		t.Errorf("%d fetches in 300ms with retries up to 40ms apart", n)
	}
	r.Stop()
	time.Sleep(60 * time.Millisecond)
	n := calls.Load()
	time.Sleep(100 * time.Millisecond)
	if calls.Load() != n {
		t.Error("fetches go on after Stop")
	}
	// A stopped set does not fetch for unknown kids either.
	if _, err := r.Keys(ctx, "k1"); err == nil || calls.Load() != n {
		t.Errorf("stopped set: %v, %d calls", err, calls.Load())
	}
}

func TestKeyring(t *testing.T) {
	k1 := ecKey(t, elliptic.P256())
	s := newIssuerServer(t, jwksOf(t, jose.JSONWebKey{Key: k1, KeyID: "k1"}))
	saKey := edKey(t)
	var saCalls, changes atomic.Int32
	sa := func(context.Context) (string, []byte, error) {
		saCalls.Add(1)
		return "https://kubernetes.default.svc", jwksOf(t, jose.JSONWebKey{Key: saKey, KeyID: "sa"}), nil
	}
	kr := NewKeyring(KeyringOptions{
		HTTPClient:     s.srv.Client(),
		ServiceAccount: sa,
		Remote:         RemoteOptions{Refresh: 30 * time.Millisecond},
		OnChange:       func() { changes.Add(1) },
	})

	r := kr.Issuer(s.srv.URL)
	if kr.Issuer(s.srv.URL) != r {
		t.Error("two sets for one issuer")
	}
	time.Sleep(50 * time.Millisecond)
	if s.jwksHits.Load() != 0 || saCalls.Load() != 0 {
		t.Error("fetched before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kr.Start(ctx)
	waitLoaded(t, r)
	if r.Issuer() != s.srv.URL {
		t.Errorf("issuer %q", r.Issuer())
	}
	if saCalls.Load() != 0 {
		t.Error("the ServiceAccount set fetched before it was asked for")
	}
	saSet, ok := kr.ServiceAccount()
	if !ok {
		t.Fatal("no ServiceAccount set")
	}
	waitLoaded(t, saSet)
	v := NewVerifier(Config{Audiences: []string{testAudience}, Keys: saSet})
	saClaims := with(func(c map[string]any) { c["iss"] = "https://kubernetes.default.svc" })
	if _, err := v.Verify(ctx, sign(t, jose.EdDSA, saKey, "sa", saClaims, nil), testNow); err != nil {
		t.Errorf("ServiceAccount token refused: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Second); changes.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("OnChange called %d times, want 2 or more", changes.Load())
		}
	}

	// The issuer's set is refreshed until the grant is withdrawn.
	time.Sleep(100 * time.Millisecond)
	if s.jwksHits.Load() < 2 {
		t.Errorf("%d fetches in 100ms with a 30ms refresh", s.jwksHits.Load())
	}
	kr.Retain([]string{"https://other.test"})
	time.Sleep(50 * time.Millisecond)
	n := s.jwksHits.Load()
	time.Sleep(100 * time.Millisecond)
	if s.jwksHits.Load() != n {
		t.Error("a withdrawn issuer is still fetched")
	}
	if kr.Issuer(s.srv.URL) == r {
		t.Error("a withdrawn issuer's set is still kept")
	}

	if _, ok := NewKeyring(KeyringOptions{}).ServiceAccount(); ok {
		t.Error("a ServiceAccount set without a fetcher")
	}
}
