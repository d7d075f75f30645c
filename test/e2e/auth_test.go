package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/internal/testissuer"
)

// The spec.auth tests: each person reaches their own pod, with a token
// from the cluster's ServiceAccount issuer, from an OpenID Provider the
// cluster admin grants, or signed by keys in a Secret. See
// auth_helpers_test.go for the setting.

// serviceAccountToken gets a token of the ServiceAccount ns/name for
// audience through the TokenRequest API.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name, audience string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

// TestAuthServiceAccountTokens: a route whose tokens are the cluster's own
// ServiceAccount tokens (keys read through the API server), bound to pods
// by sub. Alice's token reaches alice's pod, and only hers: bob's pod is
// a 404 for her and never sees the handshake; no token, a token for
// another audience and a token signed by other keys are 401.
func TestAuthServiceAccountTokens(t *testing.T) {
	ns := env.Namespace(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"alice", "bob"} {
		obj := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}
		if err := env.Client.Create(context.Background(), obj); err != nil {
			t.Fatalf("create ServiceAccount %s: %v", sa, err)
		}
	}
	const audience = "wsgate-e2e"
	aliceSub, bobSub := "system:serviceaccount:"+ns+":alice", "system:serviceaccount:"+ns+":bob"
	aliceIP, bobIP, nobodyIP := authIP(10), authIP(11), authIP(12)
	port, alicePod := ownedPod(t, ns, "alice-desk", aliceIP, 0, "desk", aliceSub)
	_, bobPod := ownedPod(t, ns, "bob-desk", bobIP, port, "desk", bobSub)
	// A selected pod without the annotation is reached by nobody.
	_, nobodyPod := ownedPod(t, ns, "nobody-desk", nobodyIP, port, "desk", "")

	g := startAuthGateway(t)
	prefix := "/" + ns
	createAuthRoute(t, ns, "desks", host, prefix, "desk", port,
		jwtAuth("", audience, wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromServiceAccountIssuer}))
	waitRouteServes(t, ns, "desks", "alice-desk", "bob-desk")
	r := waitAuthReady(t, ns, "desks", "True/"+wsgatev1alpha1.ReasonKeysLoaded)
	if r.Status.Access == "" || r.Status.Access == "Open" {
		t.Errorf("status.access of a route with tokens bound to pods is %q", r.Status.Access)
	}
	unbound := int32(0)
	for _, s := range r.Status.Endpoints.Skipped {
		if s.Reason == wsgatev1alpha1.SkippedUnbound {
			unbound = s.Count
		}
	}
	if unbound != 1 {
		t.Errorf("status.endpoints.skipped = %+v, want 1 pod Unbound", r.Status.Endpoints.Skipped)
	}
	// What an operator sees.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	out, err := env.Kubectl(ctx, "", "get", "wsr", "-n", ns, "-o", "wide")
	cancel()
	if err != nil {
		t.Fatalf("kubectl get wsr -o wide: %v\n%s", err, out)
	}
	t.Logf("kubectl get wsr -o wide:\n%s", out)
	if !strings.Contains(out, "ACCESS") || !strings.Contains(out, r.Status.Access) {
		t.Errorf("kubectl get wsr -o wide does not show the access %q:\n%s", r.Status.Access, out)
	}

	aliceTok := serviceAccountToken(t, cs, ns, "alice", audience)
	bobTok := serviceAccountToken(t, cs, ns, "bob", audience)
	toAlice, toBob, toNobody := harness.PodPath(prefix, aliceIP, "/"), harness.PodPath(prefix, bobIP, "/"), harness.PodPath(prefix, nobodyIP, "/")
	g.waitStatusWith(t, waitTimeout, toAlice, bearer(aliceTok), http.StatusSwitchingProtocols)

	t.Run("alice's token reaches alice's pod, and the pod never sees it", func(t *testing.T) {
		c, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(aliceTok)})
		mustEcho(t, c, "hello alice")
		checkNoToken(t, seenBy(t, c), aliceTok)
	})

	t.Run("alice's token on bob's pod is a 404 and bob's pod sees nothing", func(t *testing.T) {
		if got, _ := g.answer(t, toBob, bearer(aliceTok)); got != http.StatusNotFound {
			t.Errorf("alice's token on bob's pod: status %d, want 404", got)
		}
		// The same answer as an address that is no pod at all.
		if got, _ := g.answer(t, harness.PodPath(prefix, authIP(99), "/"), bearer(aliceTok)); got != http.StatusNotFound {
			t.Errorf("alice's token on an address without a pod: status %d, want 404", got)
		}
		if got, _ := g.answer(t, toNobody, bearer(aliceTok)); got != http.StatusNotFound {
			t.Errorf("alice's token on the unbound pod: status %d, want 404", got)
		}
		if n := bobPod.Accepted(); n != 0 {
			t.Errorf("bob's pod accepted %d websockets from alice", n)
		}
		if n := nobodyPod.Accepted(); n != 0 {
			t.Errorf("the unbound pod accepted %d websockets", n)
		}
		// Bob's pod is there: bob reaches it.
		c, _ := g.open(t, toBob, &websocket.DialOptions{HTTPHeader: bearer(bobTok)})
		mustEcho(t, c, "hello bob")
		if n := bobPod.Accepted(); n != 1 {
			t.Errorf("bob's pod accepted %d websockets, want bob's 1", n)
		}
	})

	t.Run("no token, another audience or other keys: 401", func(t *testing.T) {
		before := alicePod.Accepted()
		status, h := g.answer(t, toAlice, nil)
		if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("no token: status %d, WWW-Authenticate %q; want 401 with a Bearer challenge", status, h.Get("WWW-Authenticate"))
		}
		other := serviceAccountToken(t, cs, ns, "alice", "another-audience")
		g.checkUnauthorized(t, "a token for another audience", toAlice, bearer(other))
		// alice's claims, as the cluster's issuer writes them, signed by
		// a key that is not the cluster's but bears its key ID.
		claims := tokenClaims(t, aliceTok)
		forged := newTokenKey(t, tokenKID(t, aliceTok)).sign(t, claims)
		g.checkUnauthorized(t, "alice's claims signed by another key", toAlice, bearer(forged))
		g.checkUnauthorized(t, "a malformed token", toAlice, bearer("not.a.token"))
		if n := alicePod.Accepted(); n != before {
			t.Errorf("alice's pod accepted %d websockets without a valid token", n-before)
		}
	})

	t.Run("the refusals are counted", func(t *testing.T) {
		for _, result := range []string{"ok", "missing", "invalid", "unbound"} {
			labels := map[string]string{"namespace": ns, "route": "desks", "result": result}
			if got := g.metric(t, "wsgate_auth_total", labels); got < 1 {
				t.Errorf("wsgate_auth_total%v = %v, want at least 1", labels, got)
			}
		}
		// Another person's pod is answered as an address without a pod:
		// a 404 of no route.
		for _, labels := range []map[string]string{
			{"namespace": ns, "route": "desks", "code": "401"},
			{"namespace": "", "route": "", "code": "404"},
		} {
			if got := g.metric(t, "wsgate_handshakes_total", labels); got < 1 {
				t.Errorf("wsgate_handshakes_total%v = %v, want at least 1", labels, got)
			}
		}
	})
}

// TestAuthIssuerKeysRotate: a route whose keys come from an OpenID
// Provider over HTTPS (its CA given with --token-issuer-ca-file), which a
// WsGrant gives the route's namespace. The provider rotates its key: the
// gateway refetches for the new kid, open tunnels run on; tokens with
// random unknown kids do not make it hammer the provider; while the
// provider is down, the last good keys stay in use. Routes of namespaces
// without the grant are refused (TokenIssuerNotAllowed), carry nothing,
// and an issuer granted to nobody is never contacted.
func TestAuthIssuerKeysRotate(t *testing.T) {
	iss := testissuer.Start(t)
	// An issuer that only a route without a grant names: the gateway must
	// never connect to it, although it trusts its CA.
	stranger := testissuer.Start(t)
	ns, other := env.Namespace(t), env.Namespace(t)
	grant(t, ns, nil, func(s *wsgatev1alpha1.WsGrantSpec) { s.TokenIssuers = []string{iss.URL()} })

	const audience = "wsgate-e2e"
	aliceIP, otherIP, strangerIP := authIP(20), authIP(21), authIP(22)
	port, alicePod := ownedPod(t, ns, "alice-desk", aliceIP, 0, "desk", "alice")
	_, otherPod := ownedPod(t, other, "alice-desk", otherIP, port, "desk", "alice")
	_, strangerPod := ownedPod(t, other, "stranger-desk", strangerIP, port, "stranger", "alice")

	// Every refusal below comes from one client address, more than a
	// minute's refusal budget: the budget is off here (the proxy's tests
	// cover it), so that each answer is the identity check's.
	g := startAuthGateway(t, "--token-issuer-ca-file", writeCAFile(t, iss.CAPEM(), stranger.CAPEM()), "--client-refusal-budget=0")
	prefix, otherPrefix := "/"+ns, "/"+other
	// The other namespace's own host: its routes could serve, but for
	// the issuer.
	const otherHost = "auth-other.example.com"
	keys := wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromIssuer}
	createAuthRoute(t, ns, "desks", host, prefix, "desk", port, jwtAuth(iss.URL(), audience, keys))
	createAuthRoute(t, other, "desks", otherHost, otherPrefix, "desk", port, jwtAuth(iss.URL(), audience, keys))
	createAuthRoute(t, other, "stranger", otherHost, otherPrefix+"/stranger", "stranger", port, jwtAuth(stranger.URL(), audience, keys))

	waitRouteServes(t, ns, "desks", "alice-desk")
	waitAuthReady(t, ns, "desks", "True/"+wsgatev1alpha1.ReasonKeysLoaded)
	toAlice := harness.PodPath(prefix, aliceIP, "/")
	first := iss.Token(t, "alice", []string{audience}, 0, nil)
	g.waitStatusWith(t, waitTimeout, toAlice, bearer(first), http.StatusSwitchingProtocols)
	tunnel1, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(first)})
	mustEcho(t, tunnel1, "before the rotation")

	t.Run("routes of namespaces without the grant are refused", func(t *testing.T) {
		waitAccepted(t, other, "desks", "False/"+wsgatev1alpha1.ReasonTokenIssuerNotAllowed)
		waitAccepted(t, other, "stranger", "False/"+wsgatev1alpha1.ReasonTokenIssuerNotAllowed)
		toOther := harness.PodPath(otherPrefix, otherIP, "/")
		toStranger := harness.PodPath(otherPrefix+"/stranger", strangerIP, "/")
		strangerTok := stranger.Token(t, "alice", []string{audience}, 0, nil)
		holds(t, 2*time.Second, "the refused routes carry nothing", func() error {
			if got, _ := g.answerOn(t, otherHost, toOther, bearer(first)); got == http.StatusSwitchingProtocols {
				return fmt.Errorf("a valid token of the issuer opened a tunnel through %s/desks", other)
			}
			if got, _ := g.answerOn(t, otherHost, toStranger, bearer(strangerTok)); got == http.StatusSwitchingProtocols {
				return fmt.Errorf("a valid token of the ungranted issuer opened a tunnel through %s/stranger", other)
			}
			return nil
		})
		if n := otherPod.Accepted() + strangerPod.Accepted(); n != 0 {
			t.Errorf("the refused routes' pods accepted %d websockets", n)
		}
		if n := stranger.DiscoveryRequests() + stranger.JWKSRequests(); n != 0 {
			t.Errorf("the gateway sent %d requests to an issuer no WsGrant names", n)
		}
	})

	// The provider rotates its key and drops the old one.
	iss.Rotate(t)
	iss.DropOld(t)
	second := iss.Token(t, "alice", []string{audience}, 0, nil)
	t.Run("a token of the new key opens a tunnel; the open tunnel runs on", func(t *testing.T) {
		// A refetch for an unknown kid starts at most once per 10 seconds.
		g.waitStatusWith(t, 30*time.Second, toAlice, bearer(second), http.StatusSwitchingProtocols)
		tunnel2, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(second)})
		mustEcho(t, tunnel2, "after the rotation")
		mustEcho(t, tunnel1, "the first tunnel after the rotation")
		// The dropped key signs nothing any more.
		g.checkUnauthorized(t, "a token of the dropped key", toAlice, bearer(first))
	})
	lastFetch := time.Now()

	t.Run("tokens with unknown kids do not make the gateway hammer the provider", func(t *testing.T) {
		// Past the refetch interval: the flood may trigger a fetch.
		time.Sleep(time.Until(lastFetch.Add(11 * time.Second)))
		junk := newTokenKey(t, "")
		const flood, workers = 200, 16
		tokens := make(chan string, flood)
		for range flood {
			k := &tokenKey{kid: randomKID(t), priv: junk.priv}
			tokens <- k.token(t, iss.URL(), "alice", audience, time.Hour)
		}
		close(tokens)
		before := iss.JWKSRequests()
		var refused, unexpected atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for tok := range tokens {
					ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
					conn, status, _, err := g.handshake(ctx, toAlice, &websocket.DialOptions{HTTPHeader: bearer(tok)})
					cancel()
					switch {
					case err == nil:
						_ = conn.CloseNow()
						unexpected.Add(1)
					case status == http.StatusUnauthorized:
						refused.Add(1)
					default:
						unexpected.Add(1)
					}
				}
			})
		}
		wg.Wait()
		fetches := iss.JWKSRequests() - before
		t.Logf("%d handshakes with unknown kids in %v: %d refused with 401, %d other; %d JWKS fetches",
			flood, time.Since(start).Round(time.Millisecond), refused.Load(), unexpected.Load(), fetches)
		if refused.Load() != flood {
			t.Errorf("%d of %d handshakes with unknown kids were not refused with 401", unexpected.Load(), flood)
		}
		if fetches > 5 {
			t.Errorf("%d handshakes with unknown kids made %d JWKS fetches, want at most 5", flood, fetches)
		}
		mustEcho(t, tunnel1, "the first tunnel after the flood")
		if got, _ := g.answer(t, toAlice, bearer(second)); got != http.StatusSwitchingProtocols {
			t.Errorf("a valid token after the flood: status %d", got)
		}
	})
	lastFetch = time.Now()

	t.Run("while the provider is down the last good keys stay in use", func(t *testing.T) {
		iss.SetDown(true)
		defer iss.SetDown(false)
		// Past the refetch interval, a token with an unknown kid makes
		// the gateway fetch, and the fetch fails.
		time.Sleep(time.Until(lastFetch.Add(11 * time.Second)))
		before := iss.DiscoveryRequests() + iss.JWKSRequests()
		unknown := (&tokenKey{kid: randomKID(t), priv: newTokenKey(t, "").priv}).token(t, iss.URL(), "alice", audience, time.Hour)
		g.checkUnauthorized(t, "a token with an unknown kid while the provider is down", toAlice, bearer(unknown))
		harness.Eventually(t, waitTimeout, "the gateway tries the provider", func() error {
			if iss.DiscoveryRequests()+iss.JWKSRequests() == before {
				return fmt.Errorf("no request to the provider")
			}
			return nil
		})
		third := iss.Token(t, "alice", []string{audience}, 0, nil)
		holds(t, 2*time.Second, "tokens of the current key verify", func() error {
			if got, _ := g.answer(t, toAlice, bearer(third)); got != http.StatusSwitchingProtocols {
				return fmt.Errorf("a token of the current key while the provider is down: status %d", got)
			}
			return nil
		})
		mustEcho(t, tunnel1, "the first tunnel while the provider is down")
		var r wsgatev1alpha1.WsRoute
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "desks"}, &r); err == nil {
			t.Logf("while the provider is down: AuthReady %s (%s), Ready %s",
				harness.Condition(&r, wsgatev1alpha1.ConditionAuthReady), conditionMessage(&r, wsgatev1alpha1.ConditionAuthReady),
				harness.Condition(&r, wsgatev1alpha1.ConditionReady))
		}
	})
	if n := alicePod.Accepted(); n == 0 {
		t.Error("alice's pod accepted no websocket")
	}
}

// TestAuthJWKSSecret: a route whose keys are a JSON Web Key Set in a
// labelled Secret of its namespace. A token of the key opens a tunnel;
// replacing the key in the Secret takes effect without a restart (old
// tokens 401, new ones 101). An attacker's Secret of the same name in its
// own namespace, and its route naming it, change nothing for the victim;
// an unlabelled Secret is not used.
func TestAuthJWKSSecret(t *testing.T) {
	victim, attacker := env.Namespace(t), env.Namespace(t)
	const (
		issuer   = "https://tokens.e2e.example"
		audience = "wsgate-e2e"
	)
	aliceIP, attackerIP, unlabelledIP := authIP(30), authIP(31), authIP(32)
	port, alicePod := ownedPod(t, victim, "alice-desk", aliceIP, 0, "desk", "alice")
	_, attackerPod := ownedPod(t, attacker, "alice-desk", attackerIP, port, "desk", "alice")
	_, unlabelledPod := ownedPod(t, victim, "carol-desk", unlabelledIP, port, "carol", "alice")

	keyA, keyB, evil := newTokenKey(t, "a"), newTokenKey(t, "b"), newTokenKey(t, "a")
	createSecret(t, jwksSecret(victim, "jwks", jwks(t, keyA), true))
	createSecret(t, jwksSecret(victim, "plain", jwks(t, keyA), false))
	g := startAuthGateway(t)
	secretKeys := func(name string) wsgatev1alpha1.JWTKeys {
		return wsgatev1alpha1.JWTKeys{Source: wsgatev1alpha1.KeysFromSecret, Secret: &wsgatev1alpha1.KeySecretRef{Name: name}}
	}
	prefix := "/" + victim
	createAuthRoute(t, victim, "desks", host, prefix, "desk", port, jwtAuth(issuer, audience, secretKeys("jwks")))
	createAuthRoute(t, victim, "carol", host, prefix+"/carol", "carol", port, jwtAuth(issuer, audience, secretKeys("plain")))
	waitRouteServes(t, victim, "desks", "alice-desk")
	waitAuthReady(t, victim, "desks", "True/"+wsgatev1alpha1.ReasonKeysLoaded)
	toAlice := harness.PodPath(prefix, aliceIP, "/")
	tokA := keyA.token(t, issuer, "alice", audience, time.Hour)
	g.waitStatusWith(t, waitTimeout, toAlice, bearer(tokA), http.StatusSwitchingProtocols)
	c, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(tokA)})
	mustEcho(t, c, "key a")

	t.Run("an unlabelled Secret is not used", func(t *testing.T) {
		waitAuthReady(t, victim, "carol", "False/"+wsgatev1alpha1.ReasonKeySecretUnusable)
		toCarol := harness.PodPath(prefix+"/carol", unlabelledIP, "/")
		holds(t, time.Second, "no tunnel through the route of the unlabelled Secret", func() error {
			if got, _ := g.answer(t, toCarol, bearer(tokA)); got == http.StatusSwitchingProtocols {
				return fmt.Errorf("a token of the unlabelled Secret's key opened a tunnel")
			}
			return nil
		})
		if n := unlabelledPod.Accepted(); n != 0 {
			t.Errorf("the pod behind the unlabelled Secret's route accepted %d websockets", n)
		}
	})

	t.Run("the attacker's Secret of the same name changes nothing for the victim", func(t *testing.T) {
		// Same Secret name, same issuer, same audience, same kid.
		createSecret(t, jwksSecret(attacker, "jwks", jwks(t, evil), true))
		// The attacker's own host (the victim's belongs to the victim)
		// and a prefix of its own.
		const attackerHost = "auth-attacker.example.com"
		attackerPrefix := "/" + attacker
		toAttacker := harness.PodPath(attackerPrefix, attackerIP, "/")
		createAuthRoute(t, attacker, "desks", attackerHost, attackerPrefix, "desk", port, jwtAuth(issuer, audience, secretKeys("jwks")))
		waitRouteServes(t, attacker, "desks", "alice-desk")
		waitAuthReady(t, attacker, "desks", "True/"+wsgatev1alpha1.ReasonKeysLoaded)
		evilTok := evil.token(t, issuer, "alice", audience, time.Hour)
		// The attacker's keys work on the attacker's route...
		harness.Eventually(t, waitTimeout, "the attacker's token opens the attacker's route", func() error {
			if got, _ := g.answerOn(t, attackerHost, toAttacker, bearer(evilTok)); got != http.StatusSwitchingProtocols {
				return fmt.Errorf("status %d", got)
			}
			return nil
		})
		// ...and nowhere else; the victim's keys only on the victim's.
		g.checkUnauthorized(t, "the attacker's token on the victim's route", toAlice, bearer(evilTok))
		if got, _ := g.answerOn(t, attackerHost, toAttacker, bearer(tokA)); got != http.StatusUnauthorized {
			t.Errorf("the victim's token on the attacker's route: status %d, want 401", got)
		}
		before := alicePod.Accepted()
		if got, _ := g.answer(t, toAlice, bearer(tokA)); got != http.StatusSwitchingProtocols {
			t.Errorf("the victim's token after the attacker's Secret: status %d", got)
		}
		if n := alicePod.Accepted() - before; n != 1 {
			t.Errorf("alice's pod accepted %d websockets, want the victim's 1", n)
		}
		if n := attackerPod.Accepted(); n != 1 {
			t.Errorf("the attacker's pod accepted %d websockets, want the attacker's own 1", n)
		}
	})

	t.Run("a new key in the Secret takes over without a restart", func(t *testing.T) {
		updateSecretData(t, victim, "jwks", map[string][]byte{wsgatev1alpha1.DefaultJWKSKey: jwks(t, keyB)})
		tokB := keyB.token(t, issuer, "alice", audience, time.Hour)
		g.waitStatusWith(t, waitTimeout, toAlice, bearer(tokB), http.StatusSwitchingProtocols)
		g.waitStatusWith(t, waitTimeout, toAlice, bearer(tokA), http.StatusUnauthorized)
		g.checkUnauthorized(t, "a token of the replaced key", toAlice, bearer(keyA.token(t, issuer, "alice", audience, time.Hour)))
		c, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(tokB)})
		mustEcho(t, c, "key b")
	})
	t.Run("a tunnel closes with 1008 when its token expires", func(t *testing.T) {
		// exp and the 30 seconds of leeway for clock skew end 3 seconds
		// from now.
		now := time.Now()
		exp := now.Add(3*time.Second - auth.DefaultLeeway)
		tok := keyB.sign(t, map[string]any{
			"iss": issuer, "sub": "alice", "aud": []string{audience},
			"iat": now.Add(-time.Minute).Unix(), "exp": exp.Unix(),
		})
		c, _ := g.open(t, toAlice, &websocket.DialOptions{HTTPHeader: bearer(tok)})
		mustEcho(t, c, "before the expiry")
		closed := watchClose(c)(t)[0]
		end := exp.Add(auth.DefaultLeeway)
		if closed.Code != websocket.StatusPolicyViolation {
			t.Fatalf("the tunnel of the expired token ended with %d %q, want a Close frame 1008", closed.Code, closed.Reason)
		}
		// exp is in whole seconds.
		if early, late := end.Sub(closed.At), closed.At.Sub(end); early > time.Second || late > 2*time.Second {
			t.Errorf("the tunnel closed at %v, the token's end (with leeway) is %v", closed.At.Format(time.StampMilli), end.Format(time.StampMilli))
		}
		t.Logf("closed with %d %q", closed.Code, closed.Reason)
	})
}
