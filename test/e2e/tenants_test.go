package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// The tenant-isolation tests about names and certificates (see
// tenants_helpers_test.go for the setting).

// TestTenantCertificateTakeover: an attacker granted "*.example.com"
// brings its own certificate for victim.example.com and "*.example.com"
// and claims the victim's host (on a longer prefix) and the wildcard. The
// victim's host keeps the default certificate and its pod; the attacker's
// wildcard certificate serves only names nobody claims exactly.
func TestTenantCertificateTakeover(t *testing.T) {
	admin, victim, attacker := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	ca := testcerts.NewCA(t, "wsgate e2e tenants CA")
	defaultLeaf := ca.Issue(t, time.Hour, "victim.example.com", "default.example.com")
	createSecret(t, harness.TLSSecret(admin, "default-tls", defaultLeaf))
	defaultCert := leafOf(t, defaultLeaf)
	g := startTenantGateway(t, gatewayConfig{defaultCertificate: types.NamespacedName{Namespace: admin, Name: "default-tls"}})
	cca := newClusterCA(t)
	grant(t, victim, []string{"victim.example.com"})
	grant(t, attacker, []string{"*.example.com"}, clusterIssuers(cca.name))

	victimIP, attackerIP := tenantIP(1), tenantIP(2)
	vport, vsrv := echoPod(t, victim, "victim", victimIP, "victim")
	aport, asrv := echoPod(t, attacker, "attacker", attackerIP, "attacker")
	rooms := createTenantRoute(t, victim, tenantRoute{name: "rooms", hostnames: []string{"victim.example.com"}, prefix: "/rooms", app: "victim", port: vport})
	waitRouteServes(t, victim, "rooms", "victim")
	// The attacker comes later (TestTenantSameSecondClaimCannotTakeAServedName
	// is about routes of the same second).
	afterCreationSecond(rooms)
	toVictim := dialSpec{host: "victim.example.com", path: harness.PodPath("/rooms", victimIP, "/"), tls: true, roots: ca.Pool()}
	g.waitStatusAs(t, toVictim, http.StatusSwitchingProtocols)

	// The attacker's own CA, whose certificate names the victim's host.
	evil := testcerts.NewCA(t, "attacker CA")
	stolenLeaf := evil.Issue(t, time.Hour, "victim.example.com", "*.example.com")
	stolen := leafOf(t, stolenLeaf)
	createSecret(t, harness.TLSSecret(attacker, "stolen", stolenLeaf))
	createTenantRoute(t, attacker, tenantRoute{name: "shadow", hostnames: []string{"victim.example.com"}, prefix: "/rooms/" + victimIP, app: "attacker", port: aport, secret: "stolen"})
	createTenantRoute(t, attacker, tenantRoute{name: "wild", hostnames: []string{"*.example.com"}, prefix: "/", app: "attacker", port: aport, secret: "stolen"})
	// And asks the admin's CA, which it is granted, for the victim's name.
	createTenantRoute(t, attacker, tenantRoute{name: "shadow-cert", hostnames: []string{"victim.example.com"}, prefix: "/", app: "attacker", port: aport, secret: "victim-cert", issuer: cca.name})

	// The wildcard is the attacker's by its grant, with its certificate.
	waitRouteServes(t, attacker, "wild", "attacker")
	// Whatever the status says, the traffic and certificate checks
	// below run.
	r := waitObserved(t, attacker, "shadow")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonHostnameConflict,
		`host "victim.example.com"`, fmt.Sprintf("namespace %q", victim), victim+"/rooms")
	t.Logf("the attacker's route on the victim's host: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))
	if got := harness.Condition(r, wsgatev1alpha1.ConditionReady); got != "False/"+wsgatev1alpha1.ReasonNotAccepted {
		t.Errorf("the refused route's Ready is %q", got)
	}
	if r.Status.Endpoints.Count != 0 {
		t.Errorf("the refused route lists %d endpoints", r.Status.Endpoints.Count)
	}
	waitCertificateReady(t, attacker, "wild", "True/"+wsgatev1alpha1.ReasonCertificateIssued)
	harness.Eventually(t, waitTimeout, "other.example.com is served the attacker's wildcard certificate", func() error {
		leaf, err := presentedLeaf(g.tlsAddr, "other.example.com")
		if err != nil {
			return err
		}
		if !leaf.Equal(stolen) {
			return fmt.Errorf("served %s", describeCert(leaf))
		}
		return nil
	})

	r = waitObserved(t, attacker, "shadow-cert")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonHostnameConflict, fmt.Sprintf("namespace %q", victim))
	holds(t, 3*time.Second, "no Certificate for the victim's name", func() error {
		if c, err := getCertificate(attacker, "victim-cert"); absent(err) != nil {
			return fmt.Errorf("Certificate victim-cert for %v: %w", c.Spec.DNSNames, absent(err))
		}
		var s corev1.Secret
		if err := absent(env.Client.Get(context.Background(), client.ObjectKey{Namespace: attacker, Name: "victim-cert"}, &s)); err != nil {
			return fmt.Errorf("Secret victim-cert: %w", err)
		}
		return nil
	})

	t.Run("the victim's host keeps the default certificate", func(t *testing.T) {
		for _, sni := range []string{"victim.example.com", "VICTIM.example.com", "Victim.Example.Com"} {
			for range 3 {
				leaf, err := servedCertificate(g.tlsAddr, sni, ca.Pool())
				if err != nil {
					t.Fatalf("server name %q: %v (not a certificate of the CA, so not the default one)", sni, err)
				}
				if !leaf.Equal(defaultCert) {
					t.Fatalf("server name %q: served %s, want the default certificate", sni, describeCert(leaf))
				}
			}
		}
		// Names that nobody claims and the one-label wildcard does not
		// cover get the default: under the victim's name, two labels
		// down.
		for _, sni := range []string{"x.victim.example.com", "a.b.example.com"} {
			leaf, err := presentedLeaf(g.tlsAddr, sni)
			if err != nil || leaf.Equal(stolen) {
				t.Errorf("server name %q: served %s, %v; want the default certificate", sni, describeCert(leaf), err)
			}
		}
	})

	t.Run("the victim's pod is reached on its prefix and the attacker's pod is not", func(t *testing.T) {
		before := asrv.Accepted()
		for _, tlsOn := range []bool{true, false} {
			for _, path := range []string{harness.PodPath("/rooms", victimIP, "/"), harness.PodPath("/rooms", victimIP, "/"+attackerIP+"/")} {
				d := dialSpec{host: "victim.example.com", path: path, tls: tlsOn, roots: ca.Pool()}
				c := g.openAs(t, d)
				if tlsOn && !c.leaf.Equal(defaultCert) {
					t.Errorf("wss %s: served %s, want the default certificate", path, describeCert(c.leaf))
				}
				mustEcho(t, c.Conn, "to the victim over "+path)
				if seen := podSees(t, c.Conn); seen.Host != "victim.example.com" {
					t.Errorf("the pod saw Host %q", seen.Host)
				}
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
			// The victim's host does not fall back on the attacker's
			// wildcard for paths its routes do not hold.
			for _, path := range []string{harness.PodPath("/", attackerIP, "/"), harness.PodPath("/rooms", attackerIP, "/")} {
				if got := g.statusAs(t, dialSpec{host: "victim.example.com", path: path, tls: tlsOn, roots: ca.Pool()}); got != http.StatusNotFound {
					t.Errorf("victim.example.com%s (tls %v): %d, want 404", path, tlsOn, got)
				}
			}
		}
		if n := vsrv.Accepted(); n < 4 {
			t.Errorf("the victim's pod accepted %d handshakes, want at least 4", n)
		}
		if n := asrv.Accepted() - before; n != 0 {
			t.Errorf("the attacker's pod accepted %d handshakes meant for the victim's host", n)
		}
	})

	t.Run("the attacker's wildcard serves its own names", func(t *testing.T) {
		c := g.openAs(t, dialSpec{host: "other.example.com", path: harness.PodPath("/", attackerIP, "/"), tls: true})
		if !c.leaf.Equal(stolen) {
			t.Errorf("served %s, want the attacker's wildcard certificate", describeCert(c.leaf))
		}
		mustEcho(t, c.Conn, "the attacker on its own name")
	})
}

// TestTenantCertificatesForNamesNotOwned: an attacker granted only
// "*.attacker.example.com" and no ClusterIssuer asks the admin's CA
// ClusterIssuer for certificates: for names outside its grant
// (HostnameNotAllowed), then for its own names (IssuerNotAllowed). Neither
// creates a Certificate. Granting the ClusterIssuer issues one, for its
// own name; revoking the grant deletes it again.
func TestTenantCertificatesForNamesNotOwned(t *testing.T) {
	attacker := env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{})
	cca := newClusterCA(t)
	ag := grant(t, attacker, []string{"*.attacker.example.com"})
	ctx := context.Background()

	noCertificate := func(t *testing.T, after string) {
		t.Helper()
		holds(t, 3*time.Second, "no Certificate "+after, func() error {
			var certs cmapi.CertificateList
			if err := env.Client.List(ctx, &certs, client.InNamespace(attacker)); err != nil {
				return err
			}
			if len(certs.Items) > 0 {
				return fmt.Errorf("Certificate %s for %v exists", certs.Items[0].Name, certs.Items[0].Spec.DNSNames)
			}
			var s corev1.Secret
			if err := absent(env.Client.Get(ctx, client.ObjectKey{Namespace: attacker, Name: "grab"}, &s)); err != nil {
				return fmt.Errorf("Secret grab: %w", err)
			}
			return nil
		})
		for _, e := range routeEvents(t, attacker, "grab") {
			if e.Reason == "CertificateCreated" {
				t.Errorf("Event %s: %s", e.Reason, e.Note)
			}
		}
	}

	createTenantRoute(t, attacker, tenantRoute{name: "grab", app: "nothing", port: 8080, secret: "grab", issuer: cca.name,
		hostnames: []string{"bank.example.org", "*.example.com", "kubernetes.default.svc"}})
	// Whatever the status says, the Certificate check below runs.
	r := waitObserved(t, attacker, "grab")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, fmt.Sprintf("namespace %q", attacker), "example")
	t.Logf("names outside the grant: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))
	if c := harness.Condition(r, wsgatev1alpha1.ConditionCertificateReady); c != "" {
		t.Errorf("the refused route has CertificateReady %q", c)
	}
	noCertificate(t, "for names outside the grant")

	setHostnames(t, attacker, "grab", "grab.attacker.example.com")
	r = waitObserved(t, attacker, "grab")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonIssuerNotAllowed, fmt.Sprintf("namespace %q", attacker), fmt.Sprintf("issuer %q", cca.name))
	t.Logf("a ClusterIssuer outside the grant: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))
	noCertificate(t, "from a ClusterIssuer outside the grant")

	granted := time.Now()
	updateGrant(t, ag, clusterIssuers(cca.name))
	waitAccepted(t, attacker, "grab", "True/"+wsgatev1alpha1.ReasonAccepted)
	harness.Eventually(t, issueTimeout, "grab.attacker.example.com is served the issued certificate", func() error {
		leaf, err := servedCertificate(g.tlsAddr, "grab.attacker.example.com", cca.ca.Pool())
		if err != nil {
			return err
		}
		return wantDNSNames("grab.attacker.example.com")(leaf)
	})
	t.Logf("ClusterIssuer granted → its certificate served: %v", time.Since(granted).Round(time.Millisecond))
	waitCertificateReady(t, attacker, "grab", "True/"+wsgatev1alpha1.ReasonCertificateIssued)
	cert, err := getCertificate(attacker, "grab")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.Spec.DNSNames, []string{"grab.attacker.example.com"}) || cert.Spec.IssuerRef.Name != cca.name || cert.Spec.IssuerRef.Kind != cmapi.ClusterIssuerKind {
		t.Errorf("the Certificate is for %v from %+v", cert.Spec.DNSNames, cert.Spec.IssuerRef)
	}

	waitGone := func(t *testing.T) {
		t.Helper()
		harness.Eventually(t, waitTimeout, "the route's Certificate is deleted", func() error {
			_, err := getCertificate(attacker, "grab")
			return absent(err)
		})
		harness.Eventually(t, waitTimeout, "grab.attacker.example.com is no longer served", func() error {
			if leaf, err := presentedLeaf(g.tlsAddr, "grab.attacker.example.com"); err == nil {
				return fmt.Errorf("served %s", describeCert(leaf))
			}
			return nil
		})
	}
	t.Run("taking the ClusterIssuer back deletes the Certificate", func(t *testing.T) {
		revoked := time.Now()
		updateGrant(t, ag, func(s *wsgatev1alpha1.WsGrantSpec) { s.ClusterIssuers = nil })
		waitAccepted(t, attacker, "grab", "False/"+wsgatev1alpha1.ReasonIssuerNotAllowed, cca.name)
		waitGone(t)
		t.Logf("ClusterIssuer taken back → Certificate deleted, name no longer served: %v", time.Since(revoked).Round(time.Millisecond))
	})
	t.Run("the deletion is announced in an Event", func(t *testing.T) {
		waitRouteEvent(t, attacker, "grab", corev1.EventTypeNormal, "CertificateDeleted")
	})
	t.Run("deleting the grant refuses the names again", func(t *testing.T) {
		updateGrant(t, ag, clusterIssuers(cca.name))
		waitAccepted(t, attacker, "grab", "True/"+wsgatev1alpha1.ReasonAccepted)
		harness.Eventually(t, waitTimeout, "the Certificate is back", func() error {
			_, err := getCertificate(attacker, "grab")
			return err
		})
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, ag)
		waitAccepted(t, attacker, "grab", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, `"grab.attacker.example.com"`)
		waitGone(t)
	})
}

// TestTenantSecretTypeAndName: a Secret wsgate must not read is never
// served: an Opaque Secret labelled for wsgate with a valid certificate
// and key, a kubernetes.io/tls Secret past the size cap, and another
// namespace's Secret named by its name. The routes say why, and their
// hosts get the default certificate.
func TestTenantSecretTypeAndName(t *testing.T) {
	admin, victim, attacker := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	ca := testcerts.NewCA(t, "wsgate e2e tenants CA")
	defaultLeaf := ca.Issue(t, time.Hour, "default.example.com")
	createSecret(t, harness.TLSSecret(admin, "default-tls", defaultLeaf))
	defaultCert := leafOf(t, defaultLeaf)
	g := startTenantGateway(t, gatewayConfig{defaultCertificate: types.NamespacedName{Namespace: admin, Name: "default-tls"}})
	grant(t, victim, []string{"victim.example.com"})
	grant(t, attacker, []string{"*.attacker.example.com"})

	// The victim's Secret and route.
	victimLeaf := ca.Issue(t, time.Hour, "victim.example.com")
	createSecret(t, harness.TLSSecret(victim, "victim-tls", victimLeaf))
	createTenantRoute(t, victim, tenantRoute{name: "rooms", hostnames: []string{"victim.example.com"}, app: "victim", port: 8080, secret: "victim-tls"})
	waitCertificateReady(t, victim, "rooms", "True/"+wsgatev1alpha1.ReasonCertificateIssued)

	opaqueLeaf := ca.Issue(t, time.Hour, "opaque.attacker.example.com")
	opaque := harness.TLSSecret(attacker, "opaque-tls", opaqueLeaf)
	opaque.Type = corev1.SecretTypeOpaque
	createSecret(t, opaque)
	bigLeaf := ca.Issue(t, time.Hour, "big.attacker.example.com")
	big := harness.TLSSecret(attacker, "big-tls", bigLeaf)
	// Text before the PEM block is skipped by PEM parsers: a valid pair
	// past the size cap.
	big.Data[corev1.TLSCertKey] = append([]byte(strings.Repeat("padding\n", 9<<10)), bigLeaf.CertPEM...)
	createSecret(t, big)

	cases := []struct {
		route, host, secret string
		parts               []string
	}{
		{"opaque", "opaque.attacker.example.com", "opaque-tls", []string{attacker + "/opaque-tls", "not found", string(corev1.SecretTypeTLS)}},
		{"big", "big.attacker.example.com", "big-tls", []string{attacker + "/big-tls", "more than the"}},
		{"borrow", "borrow.attacker.example.com", "victim-tls", []string{attacker + "/victim-tls", "not found"}},
	}
	for _, c := range cases {
		createTenantRoute(t, attacker, tenantRoute{name: c.route, hostnames: []string{c.host}, app: "attacker", port: 8080, secret: c.secret})
	}
	for _, c := range cases {
		t.Run(c.route, func(t *testing.T) {
			waitAccepted(t, attacker, c.route, "True/"+wsgatev1alpha1.ReasonAccepted)
			r := waitCertificateReady(t, attacker, c.route, "False/"+wsgatev1alpha1.ReasonSecretUnusable)
			msg := conditionMessage(r, wsgatev1alpha1.ConditionCertificateReady)
			for _, p := range c.parts {
				if !strings.Contains(msg, p) {
					t.Errorf("CertificateReady message %q does not contain %q", msg, p)
				}
			}
			t.Logf("CertificateReady=False/SecretUnusable: %s", msg)
			for range 3 {
				leaf, err := servedCertificate(g.tlsAddr, c.host, ca.Pool())
				if err != nil {
					t.Fatalf("server name %s: %v", c.host, err)
				}
				if !leaf.Equal(defaultCert) {
					t.Fatalf("server name %s: served %s, want the default certificate", c.host, describeCert(leaf))
				}
			}
		})
	}
	// The victim's certificate serves the victim's name only.
	leaf, err := servedCertificate(g.tlsAddr, "victim.example.com", ca.Pool())
	if err != nil || !leaf.Equal(leafOf(t, victimLeaf)) {
		t.Errorf("victim.example.com: served %s, %v; want the victim's certificate", describeCert(leaf), err)
	}
}

// TestTenantDefaultHost: with --default-host, a route without hostnames
// claims the default host (there is no catch-all): it needs a grant for
// that name, and the name belongs to its first owner like any other.
func TestTenantDefaultHost(t *testing.T) {
	victim, attacker := env.Namespace(t), env.Namespace(t)
	const defaultHost = "ws.example.com"
	g := startTenantGateway(t, gatewayConfig{defaultHost: defaultHost})
	grant(t, victim, []string{defaultHost})
	ag := grant(t, attacker, []string{"*.attacker.example.com"}, catchAll)
	victimIP, attackerIP := tenantIP(15), tenantIP(16)
	vport, vsrv := echoPod(t, victim, "victim", victimIP, "victim")
	aport, asrv := echoPod(t, attacker, "attacker", attackerIP, "attacker")
	rooms := createTenantRoute(t, victim, tenantRoute{name: "rooms", prefix: "/rooms", app: "victim", port: vport})
	waitRouteServes(t, victim, "rooms", "victim")
	afterCreationSecond(rooms)
	toVictim := dialSpec{host: defaultHost, path: harness.PodPath("/rooms", victimIP, "/"+attackerIP+"/"), header: victimSecrets}
	g.waitStatusAs(t, toVictim, http.StatusSwitchingProtocols)
	if got := g.statusAs(t, dialSpec{host: "anything.example.net", path: toVictim.path}); got != http.StatusNotFound {
		t.Errorf("another host: %d, want 404 (a default host leaves no catch-all)", got)
	}

	// Granted the catch-all but not the default host, the attacker's
	// route without hostnames is refused for the default host.
	createTenantRoute(t, attacker, tenantRoute{name: "nohost", prefix: "/rooms/" + victimIP, app: "attacker", port: aport, origins: []string{"*"}})
	r := waitObserved(t, attacker, "nohost")
	checkAccepted(t, r, "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed, fmt.Sprintf("%q", defaultHost))
	t.Logf("a route without hostnames, the default host not granted: %s", conditionMessage(r, wsgatev1alpha1.ConditionAccepted))
	// Granted it too, the name is still the victim's.
	updateGrant(t, ag, func(s *wsgatev1alpha1.WsGrantSpec) { s.Hostnames = append(s.Hostnames, "*.example.com") })
	createTenantRoute(t, attacker, tenantRoute{name: "named", hostnames: []string{defaultHost}, prefix: "/other", app: "attacker", port: aport})
	waitAccepted(t, attacker, "nohost", "False/"+wsgatev1alpha1.ReasonHostnameConflict, fmt.Sprintf("namespace %q", victim), victim+"/rooms")
	waitAccepted(t, attacker, "named", "False/"+wsgatev1alpha1.ReasonHostnameConflict, fmt.Sprintf("namespace %q", victim), victim+"/rooms")

	before := vsrv.Accepted()
	c := g.openAs(t, toVictim)
	mustEcho(t, c.Conn, "the victim on the default host")
	if vsrv.Accepted() != before+1 || asrv.Accepted() != 0 {
		t.Errorf("the victim's pod accepted %d handshakes, the attacker's %d; want 1 and 0", vsrv.Accepted()-before, asrv.Accepted())
	}
}
