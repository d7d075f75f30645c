package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// The claims of the run's tokens, and the key set's key ID.
const (
	benchIssuer   = "https://bench.invalid"
	benchAudience = "wsgate-bench"
	benchSubject  = "bench"
	benchKeyID    = "bench-1"
)

// fwdAuthIP is the forward-auth service's address: below the pods
// (127.0.0.11 and up), apart from the clients (127.0.0.100 and up).
const fwdAuthIP = "127.0.0.9"

// identityEnv is what the identity rows share for the whole run: the
// ES256 key that signs the tokens, its key set in a file for the gateway
// child, the token the clients send on /auth in the same-token row, the
// distinct tokens of the new-token row, and the forward-auth service of
// /fwd.
type identityEnv struct {
	key      *ecdsa.PrivateKey
	jwks     []byte
	jwksFile string
	token    string
	// fresh are the header lines of distinct tokens, each sent once in
	// the run while there are enough; freshNext is the next one's index,
	// and freshReused counts those sent a second time.
	fresh       []string
	freshNext   atomic.Int64
	freshReused atomic.Int64
	// fwdAddr is the forward-auth service's ip:port; fwdHits counts the
	// requests it answered.
	fwdAddr string
	fwdHits atomic.Int64
	fwdStop func()
}

// newIdentityEnv generates the run's ES256 key, writes its key set into
// dir, signs the clients' token (sub "bench", valid for an hour) and
// starts the forward-auth service.
func newIdentityEnv(dir string) (*identityEnv, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ie := &identityEnv{key: key, jwksFile: filepath.Join(dir, "jwks.json")}
	ie.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &key.PublicKey, KeyID: benchKeyID, Algorithm: string(jose.ES256), Use: "sig",
	}}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(ie.jwksFile, ie.jwks, 0o644); err != nil {
		return nil, err
	}
	if ie.token, err = ie.sign(benchIssuer, benchKeyID, randomID()); err != nil {
		return nil, err
	}
	if err := ie.startForwardAuth(); err != nil {
		return nil, err
	}
	return ie, nil
}

// signFresh signs n distinct tokens for the new-token row: the claims of
// the clients' token, each with its own jti (as long as the clients'
// token's), so that each binds to the pods alike and each is new to the
// gateway.
func (ie *identityEnv) signFresh(n int) error {
	ie.fresh = make([]string, n)
	for i := range ie.fresh {
		tok, err := ie.sign(benchIssuer, benchKeyID, fmt.Sprintf("%016x", i+1))
		if err != nil {
			return err
		}
		ie.fresh[i] = bearerHeader(tok)
	}
	return nil
}

// nextFresh is the header line of the next distinct token; past the last
// one it starts again from the first, and counts the reuse.
func (ie *identityEnv) nextFresh() string {
	i := ie.freshNext.Add(1) - 1
	if i >= int64(len(ie.fresh)) {
		ie.freshReused.Add(1)
	}
	return ie.fresh[i%int64(len(ie.fresh))]
}

// randomID is 16 random hexadecimal digits.
func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sign returns a token of the run's key, naming kid in its header, with
// issuer, the bench's audience and subject, the ID jti, valid for an
// hour.
func (ie *identityEnv) sign(issuer, kid, jti string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ie.key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   issuer,
		Subject:  benchSubject,
		Audience: jwt.Audience{benchAudience},
		ID:       jti,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Hour)),
	}).Serialize()
}

// startForwardAuth starts the forward-auth service: a net/http server
// that admits every request with a 204.
func (ie *identityEnv) startForwardAuth() error {
	ln, err := net.Listen("tcp", fwdAuthIP+":0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			ie.fwdHits.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	ie.fwdAddr = ln.Addr().String()
	ie.fwdStop = func() { _ = srv.Close() }
	return nil
}

func (ie *identityEnv) stop() {
	if ie.fwdStop != nil {
		ie.fwdStop()
	}
}

// The token rows --------------------------------------------------------

// tokenRatePair is one round of a token row: new TLS connections with a
// token on /auth, and without one on "/", on the same gateway.
type tokenRatePair struct {
	token, open rateResult
	// cpu is the gateway's CPU time over both halves.
	cpu float64
	// sent is how many distinct tokens the new-token half took, reused
	// how many of them had been sent before.
	sent, reused int64
}

// tokenRowKey names the token rows in -rows: the same token on every
// connection, or a new one on each.
func tokenRowKey(fresh bool) string {
	if fresh {
		return "ratetlsauthnew"
	}
	return "ratetlsauth"
}

// tokenRowName is the token row's name, which also names its profile.
func tokenRowName(fresh bool) string {
	if fresh {
		return "new connections, TLS, a new ES256 token each"
	}
	return "new connections, TLS, the same ES256 token"
}

// tokenRateRowDef is a token row: each round runs new TLS connections
// with a token on /auth and, right before or after (the order
// alternates), as long without one on "/", on the same gateway. The
// token is the same on every connection (a client that reconnects, or
// opens several sockets: the gateway verifies it once and remembers it),
// or, when fresh, one not sent before on each (a client's first
// connection: the gateway verifies each).
func tokenRateRowDef(cfg *config, fresh bool) row {
	k := tokenRowKey(fresh)
	return row{
		name:       tokenRowName(fresh),
		key:        k,
		metrics:    []string{k, k + "cpu", k + "open", k + "opencpu", k + "paired", k + "verify"},
		rounds:     cfg.rounds,
		profile:    true,
		wsgateOnly: true,
		run: func(ctx context.Context, e *env, inst *instance, round int) (any, error) {
			d := cfg.rateDuration / time.Duration(cfg.rounds)
			same := bearerHeader(e.ident.token)
			hdr := func() string { return same }
			if fresh {
				hdr = e.ident.nextFresh
			}
			var pr tokenRatePair
			var err error
			halves := []func() error{
				func() error {
					next0, reused0 := e.ident.freshNext.Load(), e.ident.freshReused.Load()
					pr.token, err = connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d, true, "/auth", hdr)
					if fresh {
						pr.sent, pr.reused = e.ident.freshNext.Load()-next0, e.ident.freshReused.Load()-reused0
					}
					return err
				},
				func() error {
					pr.open, err = connRateRow(ctx, inst, cfg.pods, cfg.rateConcurrency, d, true, "", nil)
					return err
				},
			}
			if err := runPaired(ctx, round, min(time.Second, cfg.settle), halves); err != nil {
				return nil, err
			}
			pr.cpu = pr.token.cpu + pr.open.cpu
			return pr, nil
		},
		values: func(part any) map[string]float64 {
			r := part.(tokenRatePair)
			return map[string]float64{
				k: r.token.perSecond(), k + "cpu": 1e6 * r.token.cpuPerConn(),
				k + "open": r.open.perSecond(), k + "opencpu": 1e6 * r.open.cpuPerConn(),
				k + "paired": r.token.perSecond() / r.open.perSecond(),
				// The gateway's CPU per token connection, over both
				// halves: what a share of the row's profile is per token.
				k + "verify": 1e6 * r.cpu / float64(r.token.count),
			}
		},
		line: func(v map[string]float64, parts []any) string {
			var count, failed, sent, reused int64
			for _, p := range parts {
				q := p.(tokenRatePair)
				count += q.token.count + q.open.count
				failed += q.token.failed + q.open.failed
				sent += q.sent
				reused += q.reused
			}
			s := fmt.Sprintf("with the token %.0f/s, %.0f µs CPU each; without, same gateway, %.0f/s, %.0f µs CPU each; paired ratio ×%.2f (%d connections in all",
				v[k], v[k+"cpu"], v[k+"open"], v[k+"opencpu"], v[k+"paired"], count)
			if fresh {
				s += fmt.Sprintf("; %d distinct tokens sent, %d of them a second time", sent-reused, reused)
			}
			s += ")"
			if failed > 0 {
				s += fmt.Sprintf(", %d failed", failed)
			}
			return s
		},
	}
}

// The forward-auth row -------------------------------------------------

// hsLatencyResult is one round of the forward-auth row.
type hsLatencyResult struct {
	open, fwd latencies // handshakes on "/" and on "/fwd", sorted
	failed    int64
	firstErr  error
	asked     int64 // requests the forward-auth service answered
}

func fwdAuthRowDef(cfg *config) row {
	return row{
		name:       "handshakes, forward auth",
		key:        "fwdauth",
		metrics:    []string{"hs50", "hs99", "fwd50", "fwd99", "fwdadd50", "fwdadd99"},
		rounds:     cfg.rounds,
		wsgateOnly: true,
		run: func(ctx context.Context, e *env, inst *instance, _ int) (any, error) {
			return handshakeLatencyRow(ctx, e, inst, cfg.pods, cfg.fwdConns, cfg.fwdInterval, cfg.rateDuration/time.Duration(cfg.rounds))
		},
		values: func(part any) map[string]float64 {
			r := part.(hsLatencyResult)
			v := map[string]float64{"hs50": us(r.open.p(50)), "hs99": us(r.open.p(99)), "fwd50": us(r.fwd.p(50)), "fwd99": us(r.fwd.p(99))}
			v["fwdadd50"], v["fwdadd99"] = v["fwd50"]-v["hs50"], v["fwd99"]-v["hs99"]
			return v
		},
		line: func(v map[string]float64, parts []any) string {
			var n, asked, failed int
			for _, p := range parts {
				r := p.(hsLatencyResult)
				n += len(r.open) + len(r.fwd)
				asked += int(r.asked)
				failed += int(r.failed)
			}
			s := fmt.Sprintf("on / p50 %.0f µs, p99 %.0f µs; on /fwd p50 %.0f µs, p99 %.0f µs; added p50 %.0f µs, p99 %.0f µs (%d handshakes, %d forward-auth requests)",
				v["hs50"], v["hs99"], v["fwd50"], v["fwd99"], v["fwdadd50"], v["fwdadd99"], n, asked)
			if failed > 0 {
				s += fmt.Sprintf(", %d failed", failed)
			}
			return s
		},
	}
}

// handshakeLatencyRow runs conns loops for duration, each starting a plain
// connection every interval (at its own phase) and timing it from the
// TCP connect to the 101, then closing it; the loops alternate between
// the open route ("/") and the forward-auth route ("/fwd"), so that both
// see the same load.
func handshakeLatencyRow(ctx context.Context, e *env, inst *instance, pods, conns int, interval, duration time.Duration) (hsLatencyResult, error) {
	asked0 := e.ident.fwdHits.Load()
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(duration)
	var (
		mu       sync.Mutex
		res      hsLatencyResult
		failed   atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for w := range conns {
		wg.Go(func() {
			var open, fwd latencies
			next := start.Add(interval * time.Duration(w) / time.Duration(conns))
			for k := w; ; k++ {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				if time.Now().After(end) || ctx.Err() != nil {
					break
				}
				prefix := ""
				if k%2 == 1 {
					prefix = "/fwd"
				}
				addr, path := inst.dial(k%pods, false)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				c, err := dialWS(cctx, addr, prefix+path, "", false)
				d := time.Since(t0)
				cancel()
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = fmt.Errorf("on %q: %w", prefix+"/", err) })
				} else {
					_ = c.Close()
					if prefix == "" {
						open = append(open, d)
					} else {
						fwd = append(fwd, d)
					}
				}
				next = next.Add(interval)
				if time.Since(next) > interval {
					next = time.Now()
				}
			}
			mu.Lock()
			res.open = append(res.open, open...)
			res.fwd = append(res.fwd, fwd...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(res.open)
	slices.Sort(res.fwd)
	res.failed, res.firstErr = failed.Load(), firstErr
	res.asked = e.ident.fwdHits.Load() - asked0
	n := int64(len(res.open) + len(res.fwd))
	if len(res.open) == 0 || len(res.fwd) == 0 || res.failed*100 > n+res.failed {
		return res, fmt.Errorf("%d of %d handshakes failed, first: %w", res.failed, n+res.failed, firstErr)
	}
	return res, nil
}

// The key-ID flood row -------------------------------------------------

// kidResult is the key-ID flood.
type kidResult struct {
	sent, refused int64 // tokens sent, and refused with a 401
	other         int64 // answers other than 401, and failures
	firstOther    string
	reason        string // the WWW-Authenticate value of a 401
	fetches       int64  // key set documents served during the flood
	before        int64  // ... before it (the first fetch)
	dur           time.Duration
	minRefetch    time.Duration
}

func (r kidResult) perMinute() float64 { return float64(r.fetches) / r.dur.Minutes() }

func kidFloodRowDef(cfg *config) row {
	return row{
		name:          "unknown key IDs",
		key:           "kidflood",
		metrics:       []string{"kidsent", "kid401", "kidfetches", "kidpermin"},
		rounds:        1,
		wsgateOnly:    true,
		selfContained: true,
		run: func(ctx context.Context, e *env, _ *instance, _ int) (any, error) {
			return kidFlood(ctx, e, cfg.kidTokens, cfg.kidDuration)
		},
		values: func(part any) map[string]float64 {
			r := part.(kidResult)
			return map[string]float64{"kidsent": float64(r.sent), "kid401": float64(r.refused), "kidfetches": float64(r.fetches), "kidpermin": r.perMinute()}
		},
		line: func(v map[string]float64, parts []any) string {
			r := parts[0].(kidResult)
			s := fmt.Sprintf("%d tokens in %s, %d refused 401 (%s); %d key set fetches during the flood (%.1f a minute; minimum refetch interval %s)",
				r.sent, r.dur.Round(10*time.Millisecond), r.refused, r.reason, r.fetches, v["kidpermin"], r.minRefetch)
			if r.other > 0 {
				s += fmt.Sprintf("; %d other answers (first: %s)", r.other, r.firstOther)
			}
			return s
		},
	}
}

// kidFlood measures what tokens of unknown key IDs cost a route whose
// keys are fetched: it starts an issuer (an HTTPS server on 127.0.0.1
// serving an OpenID Connect discovery document and the run's key set,
// counting the key set documents it serves) and a gateway in this process
// whose /auth route verifies tokens with an auth.RemoteKeys of that
// issuer (MinRefetch auth.DefaultMinRefetch), checks that a token of the
// known key is admitted, then sends n tokens of the issuer, each naming
// a random key ID, spread evenly over dur, each on its own plain
// connection.
func kidFlood(ctx context.Context, e *env, n int, dur time.Duration) (kidResult, error) {
	var served atomic.Int64
	mux := http.NewServeMux()
	issuer := httptest.NewUnstartedServer(mux)
	issuer.StartTLS()
	defer issuer.Close()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, issuer.URL, issuer.URL+"/jwks")
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(e.ident.jwks)
	})

	res := kidResult{minRefetch: auth.DefaultMinRefetch}
	keys := auth.NewRemoteKeys("bench-issuer", auth.IssuerFetcher(issuer.URL, issuer.Client()), auth.RemoteOptions{MinRefetch: res.minRefetch})
	keys.Start(ctx)
	defer keys.Stop()
	for deadline := time.Now().Add(10 * time.Second); !keys.State().Loaded; {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("the key set did not load: %s", keys.State().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var bs []routing.Backend
	for i := range e.pods {
		ap, err := netip.ParseAddrPort(podIP(i) + ":" + strconv.Itoa(e.echo.port))
		if err != nil {
			return res, err
		}
		bs = append(bs, routing.Backend{Pod: "pod-" + strconv.Itoa(i), Addr: ap})
	}
	verifier := auth.NewVerifier(auth.Config{Issuer: issuer.URL, Audiences: []string{benchAudience}, Keys: keys})
	tables := routing.NewPublisher()
	tables.Publish(routing.New(1, time.Now(), []*routing.Route{tokenRoute(bs, verifier)}))
	srv := proxy.New(tables, proxy.Options{MaxTunnels: 10000, IdleTimeout: -1, Log: logr.Discard()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	var serving sync.WaitGroup
	serving.Go(func() { _ = srv.Serve(ln) })
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx, 0)
		serving.Wait()
	}()
	addr := ln.Addr().String()

	// The route works: a token of the known key is admitted.
	good, err := e.ident.sign(issuer.URL, benchKeyID, randomID())
	if err != nil {
		return res, err
	}
	c, err := dialWS(ctx, addr, "/auth/"+podIP(0)+"/", bearerHeader(good), false)
	if err != nil {
		return res, fmt.Errorf("a token of the known key: %w", err)
	}
	_ = c.Close()

	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = e.ident.sign(issuer.URL, randomID(), randomID()); err != nil {
			return res, err
		}
	}

	res.before = served.Load()
	var (
		next, refused, other atomic.Int64
		mu                   sync.Mutex
		wg                   sync.WaitGroup
	)
	start := time.Now()
	for range min(32, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if d := time.Until(start.Add(dur * time.Duration(i) / time.Duration(n))); d > 0 {
					time.Sleep(d)
				}
				code, www, err := handshakeStatus(ctx, addr, "/auth/"+podIP(i%e.pods)+"/", bearerHeader(tokens[i]))
				if err == nil && code == http.StatusUnauthorized {
					refused.Add(1)
					mu.Lock()
					if res.reason == "" {
						res.reason = www
					}
					mu.Unlock()
					continue
				}
				other.Add(1)
				if err == nil {
					err = fmt.Errorf("answer %d", code)
				}
				mu.Lock()
				if res.firstOther == "" {
					res.firstOther = err.Error()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.dur = time.Since(start)
	res.fetches = served.Load() - res.before
	res.sent, res.refused, res.other = int64(n), refused.Load(), other.Load()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// handshakeStatus sends a handshake over a new plain connection and
// returns the answer's status code and WWW-Authenticate value.
func handshakeStatus(ctx context.Context, addr, path, hdr string) (int, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialConn(cctx, addr, false)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	return answerStatus(c, path, hdr)
}

// answerStatus sends a handshake for path with the extra header lines
// hdr over c and returns the answer's status code and WWW-Authenticate
// value.
func answerStatus(c net.Conn, path, hdr string) (int, string, error) {
	status, www, _, err := handshake(c, path, hdr)
	if err != nil {
		return 0, "", err
	}
	code, err := statusCode(status)
	return code, www, err
}

// statusCode is the code of an answer's status line.
func statusCode(status []byte) (int, error) {
	f := strings.Fields(string(status))
	if len(f) < 2 {
		return 0, fmt.Errorf("answer %q", strings.TrimSpace(string(status)))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("answer %q", strings.TrimSpace(string(status)))
	}
	return code, nil
}

// The report's section -------------------------------------------------

// identityPart is the section of the identity rows, between
// benchdoc.IdentityBegin and IdentityEnd, or "" when none of them ran.
func (r *report) identityPart() string {
	same, fresh := tokenRowKey(false), tokenRowKey(true)
	if !r.ranAny(same, fresh, "hs50", "kidsent") {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.cfg
	w("%s\n## Identity at the handshake\n\n", benchdoc.IdentityBegin)
	w("Written by `go run ./test/bench %s` on %s, in %s, on %s cores shared with the clients and the pods. ",
		strings.Join(os.Args[1:], " "), r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second), nproc())
	w("Each row but the last ran in %d rounds, the peers' order reversed every round, each on a fresh proxy; a figure is the median of its rounds. ", c.rounds)
	w("Only wsgate checks tokens or asks a forward-auth service: the token rows are compared with the rows without a token of the same run (not with the tables above, which come from another run). ")
	w("The gateway remembers the tokens it accepted (up to 1024 per route, until they expire), so two token rows: **the same token** on every connection is a client reconnecting, or opening several sockets, with a token the gateway has verified once; **a new token** on each connection is each client's first connection (or more clients at once than the gateway remembers), whose signature is checked each time. ")
	w("The goal of ≥ ×0.85 is the new-token rows': their cost is every connection's when tokens are new.\n\n")
	w("| Figure | wsgate | Reference (same run) | Goal |\n| --- | ---: | --- | --- |\n")
	tokenRows := []struct {
		key, what, goal string
	}{
		{same, "same token: reconnects, verified once", ""},
		{fresh, "a new token each connection: signature checked each time", "≥ ×0.85"},
	}
	for _, t := range tokenRows {
		goal := ""
		if t.goal != "" {
			goal = t.goal + " wsgate without a token"
		}
		w("| New connections, TLS, ES256 token on `/auth`, %s (`%s`), %d at a time | %s conn/s | ×%s wsgate without a token (`ratetls`, %s conn/s) · ×%s nginx (%s conn/s) | %s |\n",
			t.what, t.key, c.rateConcurrency, r.val(t.key, "wsgate", 0), r.crossRatio(t.key, "wsgate", "ratetls", "wsgate"), r.val("ratetls", "wsgate", 0),
			r.crossRatio(t.key, "wsgate", "ratetls", "nginx"), r.val("ratetls", "nginx", 0), goal)
	}
	for _, t := range tokenRows {
		w("| CPU per new connection, %s (`%s`) | %s µs | %s µs without a token (%s) · nginx %s µs | |\n",
			t.what, t.key, r.val(t.key+"cpu", "wsgate", 0), r.val("ratetlscpu", "wsgate", 0), r.diffText(t.key+"cpu", "ratetlscpu"), r.val("ratetlscpu", "nginx", 0))
	}
	for _, t := range tokenRows {
		w("| Paired (token and no token in turn on the same gateway, each round), %s (`%s`) | %s conn/s, %s µs | ×%s (median of the rounds' ratios) against %s conn/s, %s µs without a token (%s) | %s |\n",
			t.what, t.key, r.val(t.key, "wsgate", 0), r.val(t.key+"cpu", "wsgate", 0), r.val(t.key+"paired", "wsgate", 2),
			r.val(t.key+"open", "wsgate", 0), r.val(t.key+"opencpu", "wsgate", 0), r.diffText(t.key+"cpu", t.key+"opencpu"), t.goal)
	}
	w("| Handshake, plain, open route (`/`), p50 / p99 | %s / %s µs | | |\n", r.val("hs50", "wsgate", 0), r.val("hs99", "wsgate", 0))
	w("| Handshake, plain, forward auth (`/fwd`), p50 / p99 | %s / %s µs | | |\n", r.val("fwd50", "wsgate", 0), r.val("fwd99", "wsgate", 0))
	w("| Added by forward auth, p50 / p99 | %s / %s µs | | |\n", r.val("fwdadd50", "wsgate", 0), r.val("fwdadd99", "wsgate", 0))
	w("| Tokens of unknown key IDs sent / refused with 401 | %s / %s | | all refused |\n", r.val("kidsent", "wsgate", 0), r.val("kid401", "wsgate", 0))
	w("| Key set fetches during that flood | %s (%s a minute) | at most one per %s (%s a minute) | bounded |\n",
		r.val("kidfetches", "wsgate", 0), r.val("kidpermin", "wsgate", 1), auth.DefaultMinRefetch, benchFloat(time.Minute.Seconds()/auth.DefaultMinRefetch.Seconds()))
	w("\n")
	r.wsgateFailures(&b, []string{same, fresh, "hs50", "kidsent"})
	w("- **Token rows** (`%s`, `%s`): the new-connection row over TLS (%d loops; TLS handshake, websocket handshake, one 32-byte echo, close), on a second route of the same table, `/auth`, whose pods are bound to `bench`: each handshake carries `Authorization: Bearer` with an ES256 token (P-256 key generated for the run, `kid` of the run's static key set, `sub` `bench`, a 16-digit `jti`, one hour of validity), which the gateway verifies (signature, issuer, audience, times; or finds among the tokens it accepted before) and binds (`sub` must include the pod's value) before it dials the pod; the gateway removes the token from the pod's request. ",
		same, fresh, c.rateConcurrency)
	w("`%s` sends one token on every connection. `%s` sends tokens that differ only in their `jti`, signed before the rows (%d of them), each once: ", same, fresh, r.freshTokens)
	if r.freshSent > 0 {
		w("this run sent %d, %d of them a second time.\n", r.freshSent, r.freshReused)
	} else {
		w("this run sent none.\n")
	}
	w("- **Baselines of the token rows.** The row without a token is `ratetls` of the same run, on the open route `/`; it ran at another time than the token rows, so other work on the machine may fall on them unequally. Each round of a token row therefore also runs the row without a token on the same gateway, right before or after (the order alternates), for as long: the paired figures.\n")
	w("- **Forward-auth row** (`fwdauth`): %d loops each start a plain connection every %s (%s in all), alternating between the open route and `/fwd`, whose forward-auth service (a Go net/http server in the benchmark's process on %s, answering 204, reached over kept-alive connections) the gateway asks before it dials the pod; the time is from the TCP connect to the 101.\n",
		c.fwdConns, c.fwdInterval, c.rateDuration, fwdAuthIP)
	w("- **Unknown key IDs** (`kidflood`): a gateway in the benchmark's process whose `/auth` route verifies tokens with keys fetched from an issuer (an HTTPS server on 127.0.0.1 with a discovery document and the run's key set; `auth.RemoteKeys`, minimum refetch interval %s, loaded once before the flood); after one token of the known key is admitted, %d tokens signed by the run's key but each naming a random unknown `kid` go evenly over %s, one connection each. A fetch is a key set document served by the issuer during the flood. A token naming a key ID the set does not hold may start a fetch only when none started in the last %s, so a flood of d seconds that begins right after the load may cause at most ⌊d / %s⌋ fetches.\n\n",
		auth.DefaultMinRefetch, c.kidTokens, c.kidDuration, auth.DefaultMinRefetch, benchFloat(auth.DefaultMinRefetch.Seconds()))
	r.tokenProfiles(&b, tokenRows[0].key, tokenRows[1].key)
	w("%s", benchdoc.IdentityEnd)
	return b.String()
}

// tokenProfiles writes where the token rows' CPU goes in wsgate, one
// column per row that has a profile.
func (r *report) tokenProfiles(b *strings.Builder, keys ...string) {
	type column struct {
		key string
		p   *profileSummary
	}
	var cols []column
	for _, k := range keys {
		if p := r.profileOf(tokenRowName(k == tokenRowKey(true))); p != nil {
			cols = append(cols, column{k, p})
		}
	}
	if len(cols) == 0 {
		return
	}
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("Where the token rows' CPU goes in wsgate (share of each row's CPU profile over both halves, cumulative, overlapping; per token: the share times the row's CPU over both halves per token connection):\n\n| Stage |")
	for _, col := range cols {
		w(" `%s` |", col.key)
	}
	w("\n| --- |%s\n", strings.Repeat(" ---: |", len(cols)))
	for _, stage := range identityStages {
		w("| %s |", stage)
		for _, col := range cols {
			cell := "none sampled"
			for _, s := range col.p.stages {
				if strings.TrimSpace(s.what) != stage {
					continue
				}
				cell = fmt.Sprintf("%.0f%%", s.pct)
				if per, ok := r.res.get(col.key+"verify", "wsgate"); stage == "verifying tokens" && ok && per.err == nil {
					cell += fmt.Sprintf(" (about %.0f µs per token)", s.pct/100*per.v)
				}
			}
			w(" %s |", cell)
		}
		w("\n")
	}
	w("\n")
}

// identityStages are the profile stages the section shows.
var identityStages = []string{"TLS handshake with the client", "verifying tokens", "dialling the pod", "goroutine scheduling", "allocation", "garbage collection"}

// ranAny reports whether any of the metrics has a result: whether a
// section's rows ran.
func (r *report) ranAny(metrics ...string) bool {
	for _, k := range metrics {
		if _, ok := r.res[k]; ok {
			return true
		}
	}
	return false
}

// crossRatio is metric a of peer pa over metric b of peer pb, formatted,
// or "?".
func (r *report) crossRatio(a, pa, b, pb string) string {
	x, xok := r.res.get(a, pa)
	y, yok := r.res.get(b, pb)
	if !xok || !yok || x.err != nil || y.err != nil || y.v <= 0 || x.v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", x.v/y.v)
}

// diffText is "+N µs" for wsgate's metric a minus its metric b (CPU
// times in µs), or "?".
func (r *report) diffText(a, b string) string {
	x, xok := r.res.get(a, "wsgate")
	y, yok := r.res.get(b, "wsgate")
	if !xok || !yok || x.err != nil || y.err != nil {
		return "?"
	}
	d := x.v - y.v
	sign := "+"
	if d < 0 {
		sign = "−"
		d = -d
	}
	return sign + formatValue(d, 0) + " µs"
}

func benchFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// wsgateFailures lists, in a wsgate-only part, the failed cells of keys
// and the notes the rows noteRows left.
func (r *report) wsgateFailures(b *strings.Builder, keys []string, noteRows ...string) {
	var failures []string
	for _, k := range keys {
		if cl, ok := r.res.get(k, "wsgate"); ok && cl.err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", k, cl.err))
		}
	}
	for _, row := range noteRows {
		for _, n := range r.rowNotes[row]["wsgate"] {
			failures = append(failures, row+", "+n)
		}
	}
	for _, f := range failures {
		fmt.Fprintf(b, "- Failed: %s\n", mdEscape(f))
	}
	if len(failures) > 0 {
		b.WriteString("\n")
	}
}
