package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// The tenant-isolation tests: tenants are adversaries. Each test makes a
// victim namespace and an attacker namespace, grants each its own names
// with WsGrants of its own (the grant-everything WsGrant of the other
// tests is removed meanwhile: gatewayConfig.ownGrants), and checks that
// the victim keeps its names, certificate, pods and cookies while the
// attacker's routes say why they are refused and get no traffic.
//
// Pods are echo servers on 127.0.5.200-249 (tenantIP).

// tenantIP returns the n-th address of the tenant tests' loopback range.
func tenantIP(n int) string {
	return fmt.Sprintf("127.0.5.%d", 200+n)
}

// startTenantGateway starts cert-manager (once for the package) and a
// gateway with a TLS listener, wired with cert-manager, whose WsGrants are
// the test's own.
func startTenantGateway(t *testing.T, cfg gatewayConfig) *gateway {
	t.Helper()
	startCertManager(t)
	cfg.certManager, cfg.tls, cfg.ownGrants = true, true, true
	return startGatewayWith(t, cfg)
}

// withoutGrantEverything deletes the grant-everything WsGrant that the
// other tests share, if it exists, and puts it back when the test ends.
func withoutGrantEverything(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	g := &wsgatev1alpha1.WsGrant{ObjectMeta: metav1.ObjectMeta{Name: testenv.GrantEverythingName}}
	err := env.Client.Delete(ctx, g)
	switch {
	case apierrors.IsNotFound(err):
		return
	case err != nil:
		t.Fatalf("delete WsGrant %s: %v", g.Name, err)
	}
	t.Cleanup(func() { env.GrantEverything(t) })
	harness.Eventually(t, waitTimeout, "WsGrant "+g.Name+" is gone", func() error {
		return absent(env.Client.Get(ctx, client.ObjectKeyFromObject(g), g))
	})
}

// grant gives namespace ns, through a WsGrant of its own, the hostname
// patterns hosts (and what extra adds); the WsGrant is deleted when the
// test ends.
func grant(t *testing.T, ns string, hosts []string, extra ...func(*wsgatev1alpha1.WsGrantSpec)) *wsgatev1alpha1.WsGrant {
	t.Helper()
	g := &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "tenants-" + ns + "-"},
		Spec:       wsgatev1alpha1.WsGrantSpec{Namespaces: []wsgatev1alpha1.GrantedNamespace{wsgatev1alpha1.GrantedNamespace(ns)}},
	}
	for _, h := range hosts {
		g.Spec.Hostnames = append(g.Spec.Hostnames, wsgatev1alpha1.HostnamePattern(h))
	}
	for _, f := range extra {
		f(&g.Spec)
	}
	if err := env.Client.Create(context.Background(), g); err != nil {
		t.Fatalf("create WsGrant for %s: %v", ns, err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, g) })
	return g
}

// absent turns the error of a Get into what a wait for the object's
// absence expects: nil for NotFound, an error while the object exists
// (or the Get failed otherwise).
func absent(getErr error) error {
	switch {
	case getErr == nil:
		return errors.New("it exists")
	case apierrors.IsNotFound(getErr):
		return nil
	}
	return getErr
}

// catchAll grants the catch-all.
func catchAll(s *wsgatev1alpha1.WsGrantSpec) { s.CatchAll = true }

// clusterIssuers grants ClusterIssuers.
func clusterIssuers(names ...string) func(*wsgatev1alpha1.WsGrantSpec) {
	return func(s *wsgatev1alpha1.WsGrantSpec) {
		for _, n := range names {
			s.ClusterIssuers = append(s.ClusterIssuers, wsgatev1alpha1.GrantedIssuer(n))
		}
	}
}

// updateGrant applies change to the current WsGrant.
func updateGrant(t *testing.T, g *wsgatev1alpha1.WsGrant, change func(*wsgatev1alpha1.WsGrantSpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur wsgatev1alpha1.WsGrant
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(g), &cur); err != nil {
			return err
		}
		change(&cur.Spec)
		return env.Client.Update(context.Background(), &cur)
	})
	if err != nil {
		t.Fatalf("update WsGrant %s: %v", g.Name, err)
	}
}

// tenantRoute describes a WsRoute of a tenant.
type tenantRoute struct {
	name      string
	hostnames []string // none: the catch-all (or the default host)
	prefix    string   // "" is "/"
	app       string   // selects pods labelled app=<app>
	port      int32
	origins   []string
	// secret is tls.secretName ("" leaves tls out); issuer, when set,
	// names a ClusterIssuer for tls.issuerRef.
	secret, issuer string
}

// createTenantRoute creates a WsRoute; it is deleted when the test ends.
func createTenantRoute(t *testing.T, ns string, r tenantRoute) *wsgatev1alpha1.WsRoute {
	t.Helper()
	obj := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: r.name},
		Spec: wsgatev1alpha1.WsRouteSpec{
			PathPrefix: r.prefix,
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": r.app}},
			Port:       intstr.FromInt32(r.port),
		},
	}
	for _, h := range r.hostnames {
		obj.Spec.Hostnames = append(obj.Spec.Hostnames, wsgatev1alpha1.Hostname(h))
	}
	for _, o := range r.origins {
		obj.Spec.AllowedOrigins = append(obj.Spec.AllowedOrigins, wsgatev1alpha1.Origin(o))
	}
	if r.secret != "" {
		obj.Spec.TLS = &wsgatev1alpha1.RouteTLS{SecretName: r.secret}
		if r.issuer != "" {
			obj.Spec.TLS.IssuerRef = &wsgatev1alpha1.IssuerReference{Name: r.issuer, Kind: cmapi.ClusterIssuerKind, Group: certManagerGroup}
		}
	}
	createRouteObject(t, obj)
	return obj
}

// setHostnames replaces a route's hostnames.
func setHostnames(t *testing.T, ns, name string, hostnames ...string) {
	t.Helper()
	updateRoute(t, ns, name, func(r *wsgatev1alpha1.WsRoute) {
		r.Spec.Hostnames = nil
		for _, h := range hostnames {
			r.Spec.Hostnames = append(r.Spec.Hostnames, wsgatev1alpha1.Hostname(h))
		}
	})
}

// waitAccepted waits until the route's Accepted condition reads want
// ("Status/Reason") for its current generation, with a message that
// contains each of parts, and returns the route.
func waitAccepted(t *testing.T, ns, name, want string, parts ...string) *wsgatev1alpha1.WsRoute {
	t.Helper()
	typ := wsgatev1alpha1.ConditionAccepted
	var r wsgatev1alpha1.WsRoute
	harness.Eventually(t, waitTimeout, fmt.Sprintf("route %s/%s has %s=%s", ns, name, typ, want), func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		if r.Status.ObservedGeneration != r.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", r.Status.ObservedGeneration, r.Generation)
		}
		msg := conditionMessage(&r, typ)
		if got := harness.Condition(&r, typ); got != want {
			return fmt.Errorf("%s is %q (%s)", typ, got, msg)
		}
		for _, p := range parts {
			if !strings.Contains(msg, p) {
				return fmt.Errorf("the %s message %q does not contain %q", typ, msg, p)
			}
		}
		return nil
	})
	return &r
}

// waitObserved waits until the route's status is written for its current
// generation, and returns it.
func waitObserved(t *testing.T, ns, name string) *wsgatev1alpha1.WsRoute {
	t.Helper()
	var r wsgatev1alpha1.WsRoute
	harness.Eventually(t, waitTimeout, fmt.Sprintf("route %s/%s has a status for its generation", ns, name), func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		if r.Status.ObservedGeneration != r.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", r.Status.ObservedGeneration, r.Generation)
		}
		return nil
	})
	return &r
}

// accepted returns the route's Accepted condition as "Status/Reason:
// message".
func accepted(r *wsgatev1alpha1.WsRoute) string {
	return harness.Condition(r, wsgatev1alpha1.ConditionAccepted) + ": " + conditionMessage(r, wsgatev1alpha1.ConditionAccepted)
}

// checkAccepted fails the test (and goes on) unless the route's Accepted
// condition reads want ("Status/Reason") with a message that contains
// each of parts.
func checkAccepted(t *testing.T, r *wsgatev1alpha1.WsRoute, want string, parts ...string) {
	t.Helper()
	msg := conditionMessage(r, wsgatev1alpha1.ConditionAccepted)
	if got := harness.Condition(r, wsgatev1alpha1.ConditionAccepted); got != want {
		t.Errorf("route %s/%s: Accepted is %q (%s), want %q", r.Namespace, r.Name, got, msg, want)
		return
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("route %s/%s: the Accepted message %q does not contain %q", r.Namespace, r.Name, msg, p)
		}
	}
}

// afterCreationSecond waits until the clock is past the second of obj's
// creationTimestamp (the API server stamps creation to the second), so
// that routes created from now on are younger than obj.
func afterCreationSecond(obj client.Object) {
	time.Sleep(time.Until(obj.GetCreationTimestamp().Add(time.Second + 20*time.Millisecond)))
}

// holds checks f every 50 ms for d, and fails the test the first time
// it returns an error.
func holds(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Connections as a tenant's client makes them

// dialSpec is one websocket handshake through a gateway.
type dialSpec struct {
	// host is the Host header (and, over TLS, the server name).
	host, path string
	header     http.Header
	// tls dials the gateway's TLS listener; roots verify its certificate
	// for host (nil: the certificate is taken as it comes, and returned).
	tls   bool
	roots *x509.CertPool
}

// tenantConn is an open websocket and, over TLS, the certificate the
// gateway presented.
type tenantConn struct {
	*websocket.Conn
	leaf *x509.Certificate
}

// dial makes the handshake d; it returns the gateway's status when the
// handshake failed with an HTTP answer (0 when none came) and its
// headers.
func (g *gateway) dial(ctx context.Context, d dialSpec) (*tenantConn, int, http.Header, error) {
	opts := &websocket.DialOptions{HTTPHeader: d.header}
	url := "ws://" + g.addr + d.path
	var (
		mu   sync.Mutex
		leaf *x509.Certificate
	)
	if d.tls {
		url = "wss://" + d.host + d.path
		tr := &http.Transport{
			DisableKeepAlives: true,
			DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				cfg := &tls.Config{RootCAs: d.roots, ServerName: d.host, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
				if d.roots == nil {
					// The attacker's own certificates: taken as they come,
					// and compared by the test.
					cfg.InsecureSkipVerify = true //nolint:gosec // see above
				}
				conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, g.tlsAddr)
				if err != nil {
					return nil, err
				}
				mu.Lock()
				leaf = conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
				mu.Unlock()
				return conn, nil
			},
		}
		defer tr.CloseIdleConnections()
		opts.HTTPClient = &http.Client{Transport: tr}
	} else {
		opts.Host = d.host
	}
	conn, status, header, err := harness.Dial(ctx, url, opts)
	if err != nil {
		return nil, status, header, err
	}
	mu.Lock()
	defer mu.Unlock()
	return &tenantConn{Conn: conn, leaf: leaf}, status, header, nil
}

// openAs opens the websocket d, closed when the test ends; it fails the
// test if the handshake fails.
func (g *gateway) openAs(t *testing.T, d dialSpec) *tenantConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, status, _, err := g.dial(ctx, d)
	if err != nil {
		t.Fatalf("handshake on %s%s (tls %v): %v (status %d)", d.host, d.path, d.tls, err, status)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// statusAs returns the status of the handshake d: 101 for one that opened
// (it is closed again), the gateway's answer otherwise.
func (g *gateway) statusAs(t *testing.T, d dialSpec) int {
	t.Helper()
	status, _ := g.answerAs(t, d)
	return status
}

// answerAs is statusAs with the answer's headers.
func (g *gateway) answerAs(t *testing.T, d dialSpec) (int, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, status, header, err := g.dial(ctx, d)
	if err == nil {
		_ = c.Close(websocket.StatusNormalClosure, "")
		return http.StatusSwitchingProtocols, header
	}
	if status == 0 {
		t.Fatalf("handshake on %s%s (tls %v) got no answer: %v", d.host, d.path, d.tls, err)
	}
	return status, header
}

// waitStatusAs waits until the handshake d gets want.
func (g *gateway) waitStatusAs(t *testing.T, d dialSpec, want int) {
	t.Helper()
	harness.Eventually(t, waitTimeout, fmt.Sprintf("handshake on %s%s answers %d", d.host, d.path, want), func() error {
		if got := g.statusAs(t, d); got != want {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
}

// presentedLeaf makes a TLS handshake with the gateway for serverName and
// returns the certificate it presented, unverified.
func presentedLeaf(addr, serverName string) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: serverName, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true} //nolint:gosec // the test compares the certificate itself
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// describeCert names a certificate in a failure message.
func describeCert(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	return fmt.Sprintf("%v from %q (serial %s)", c.DNSNames, c.Issuer.CommonName, c.SerialNumber)
}

// leafOf parses a Leaf's certificate.
func leafOf(t *testing.T, l testcerts.Leaf) *x509.Certificate {
	t.Helper()
	return testcerts.ParseCertificates(t, l.CertPEM)[0]
}

// ---------------------------------------------------------------------------
// A CA ClusterIssuer, as a cluster admin installs it

// clusterCA is a CA ClusterIssuer whose key pair Secret is in
// cert-manager's cluster resource namespace.
type clusterCA struct {
	name string
	ca   *testcerts.CA
}

// newClusterCA installs a CA ClusterIssuer and waits until it is Ready;
// both it and its Secret are deleted when the test ends.
func newClusterCA(t *testing.T) *clusterCA {
	t.Helper()
	ctx := context.Background()
	ca := testcerts.NewCA(t, "wsgate e2e cluster CA")
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "tenants-ca-", Namespace: testenv.CertManagerClusterResourceNamespace},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       ca.PEM,
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		},
	}
	createSecret(t, secret)
	issuer := &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: secret.Name},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: secret.Name}}},
	}
	if err := env.Client.Create(ctx, issuer); err != nil {
		t.Fatalf("create ClusterIssuer: %v", err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, issuer) })
	waitIssuerReady(t, issuer)
	return &clusterCA{name: issuer.Name, ca: ca}
}
