package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
)

// These tests run the CRD from config/crd/bases on a real kube-apiserver and
// drive it with a real kubectl, the way a user would: what they pin is the
// schema and CEL rules generated from the markers in wsroute_types.go.

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// Spec fragments, written at the indentation of spec's own fields.
const (
	selector = "selector:\n  matchLabels:\n    app: game-server\n"
	portWS   = "port: ws\n"
	valid    = selector + portWS
)

// route returns a WsRoute document named name whose spec is the given
// fragments, each written at the indentation of spec's own fields.
func route(name string, spec ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: wsgate.io/v1alpha1\nkind: WsRoute\nmetadata:\n  name: " + name + "\nspec:\n")
	for _, line := range strings.Split(strings.TrimRight(strings.Join(spec, ""), "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

// kubectl runs kubectl against the test API server with a deadline.
func kubectl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return env.Kubectl(ctx, stdin, args...)
}

// apply runs `kubectl apply -f -` with doc in namespace ns and fails the
// test unless kubectl succeeds without warnings.
func apply(t *testing.T, ns, doc string) string {
	t.Helper()
	out, err := kubectl(t, doc, "apply", "-n", ns, "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply failed: %v\n%s\ndocument:\n%s", err, out, doc)
	}
	if strings.Contains(strings.ToLower(out), "warning") {
		t.Fatalf("kubectl apply warned:\n%s\ndocument:\n%s", out, doc)
	}
	return out
}

// get reads the WsRoute ns/name with the controller-runtime client.
func get(t *testing.T, ns, name string) *wsgatev1alpha1.WsRoute {
	t.Helper()
	var r wsgatev1alpha1.WsRoute
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &r); err != nil {
		t.Fatalf("get WsRoute %s/%s: %v", ns, name, err)
	}
	return &r
}

func TestInvalidRoutesAreRefusedByKubectlApply(t *testing.T) {
	seventeenHosts := "hostnames:\n"
	for i := range 17 {
		seventeenHosts += "  - h" + string(rune('a'+i)) + ".example.com\n"
	}

	cases := []struct {
		name string
		// spec of the WsRoute, at the indentation of spec's own fields.
		spec string
		// field is the path kubectl must name; message a fragment of the
		// reason it must give.
		field, message string
	}{
		// selector
		{"an empty selector would expose every pod", "selector: {}\n" + portWS,
			"spec.selector", "selector must not be empty"},
		{"a selector with empty matchLabels would expose every pod", "selector:\n  matchLabels: {}\n" + portWS,
			"spec.selector", "selector must not be empty"},
		{"a selector with empty matchLabels and matchExpressions would expose every pod", "selector:\n  matchLabels: {}\n  matchExpressions: []\n" + portWS,
			"spec.selector", "selector must not be empty"},
		{"a route without a selector", portWS,
			"spec.selector", "Required value"},

		// pathPrefix
		{"a path prefix without a leading slash", valid + "pathPrefix: rooms\n",
			"spec.pathPrefix", "should match"},
		{"a path prefix with a dot-dot segment", valid + "pathPrefix: /rooms/../admin\n",
			"spec.pathPrefix", "pathPrefix must not contain '..'"},
		{"a path prefix with a dot segment in the middle", valid + "pathPrefix: /rooms/./lobby\n",
			"spec.pathPrefix", "pathPrefix must not contain a '.' segment"},
		{"a path prefix ending in a dot segment", valid + "pathPrefix: /rooms/.\n",
			"spec.pathPrefix", "pathPrefix must not contain a '.' segment"},
		{"a path prefix with an empty segment", valid + "pathPrefix: /rooms//lobby\n",
			"spec.pathPrefix", "pathPrefix must not contain '//'"},
		{"a path prefix with a percent-encoded dot", valid + "pathPrefix: /rooms/%2e%2e\n",
			"spec.pathPrefix", "should match"},
		{"a path prefix with a trailing slash", valid + "pathPrefix: /rooms/\n",
			"spec.pathPrefix", "pathPrefix must not end with '/'"},
		{"an empty path prefix", valid + "pathPrefix: \"\"\n",
			"spec.pathPrefix", "at least 1 chars long"},

		// port
		{"a route without a port", selector,
			"spec.port", "Required value"},
		{"port number zero", selector + "port: 0\n",
			"spec.port", "port must be a number in 1-65535"},
		{"port number above 65535", selector + "port: 70000\n",
			"spec.port", "port must be a number in 1-65535"},
		{"a negative port number", selector + "port: -1\n",
			"spec.port", "port must be a number in 1-65535"},
		{"a port name with upper case", selector + "port: WebSocket\n",
			"spec.port", "or a port name"},
		{"a port name of 16 characters", selector + "port: websocket-server\n",
			"spec.port", "at most 15"},
		{"a port name of digits only, as a string", selector + "port: \"8080\"\n",
			"spec.port", "with at least one letter"},
		{"a port name with a double hyphen", selector + "port: ws--main\n",
			"spec.port", "or a port name"},
		{"a port name ending in a hyphen", selector + "port: ws-\n",
			"spec.port", "or a port name"},
		{"an empty port name", selector + "port: \"\"\n",
			"spec.port", "or a port name"},

		// hostnames
		{"a hostname with upper case", valid + "hostnames: [WS.example.com]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname with two wildcard labels", valid + "hostnames: [\"*.*.example.com\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname with a wildcard in the middle", valid + "hostnames: [\"a.*.example.com\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a bare wildcard hostname", valid + "hostnames: [\"*\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname with an underscore", valid + "hostnames: [game_server.example.com]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname with a trailing dot", valid + "hostnames: [ws.example.com.]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname with a port", valid + "hostnames: [\"ws.example.com:443\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a hostname label longer than 63 characters", valid + "hostnames: [" + strings.Repeat("a", 64) + ".example.com]\n",
			"spec.hostnames[0]", "should match"},
		{"the second of two hostnames being invalid", valid + "hostnames: [ws.example.com, \"ws.Example.com\"]\n",
			"spec.hostnames[1]", "should match"},
		{"the same hostname twice", valid + "hostnames: [ws.example.com, ws.example.com]\n",
			"spec.hostnames[1]", "Duplicate value"},
		{"more than 16 hostnames", valid + seventeenHosts,
			"spec.hostnames", "must have at most 16 items"},

		// allowedOrigins
		{"an origin with a path", valid + "allowedOrigins: [\"https://a.example.com/x\"]\n",
			"spec.allowedOrigins[0]", "should match"},
		{"an origin without a scheme", valid + "allowedOrigins: [a.example.com]\n",
			"spec.allowedOrigins[0]", "should match"},
		{"an origin with a trailing slash", valid + "allowedOrigins: [\"https://a.example.com/\"]\n",
			"spec.allowedOrigins[0]", "should match"},
		{"an origin with upper case", valid + "allowedOrigins: [\"https://Game.example.com\"]\n",
			"spec.allowedOrigins[0]", "should match"},
		{"an origin with a wildcard host", valid + "allowedOrigins: [\"https://*.example.com\"]\n",
			"spec.allowedOrigins[0]", "should match"},
		{"an empty origin", valid + "allowedOrigins: [\"\"]\n",
			"spec.allowedOrigins[0]", "at least 1 chars long"},

		// timeouts
		{"a handshake timeout of zero", valid + "timeouts:\n  handshake: 0s\n",
			"spec.timeouts.handshake", "timeouts.handshake must be between 100ms and 1m"},
		{"a handshake timeout above one minute", valid + "timeouts:\n  handshake: 2m\n",
			"spec.timeouts.handshake", "timeouts.handshake must be between 100ms and 1m"},
		{"an idle timeout below one second", valid + "timeouts:\n  idle: 500ms\n",
			"spec.timeouts.idle", "timeouts.idle must be between 1s and 24h"},
		{"an idle timeout above a day", valid + "timeouts:\n  idle: 25h\n",
			"spec.timeouts.idle", "timeouts.idle must be between 1s and 24h"},
		{"a maximum lifetime above 30 days", valid + "timeouts:\n  maxLifetime: 1000h\n",
			"spec.timeouts.maxLifetime", "timeouts.maxLifetime must be between 1s and 720h"},
		{"a timeout that is not a duration", valid + "timeouts:\n  handshake: soon\n",
			"spec.timeouts.handshake", "should match"},
		{"a timeout without a unit", valid + "timeouts:\n  idle: \"30\"\n",
			"spec.timeouts.idle", "should match"},
		{"a negative timeout", valid + "timeouts:\n  maxLifetime: -1h\n",
			"spec.timeouts.maxLifetime", "should match"},

		// maxConnectionsPerPod
		{"zero connections per pod", valid + "maxConnectionsPerPod: 0\n",
			"spec.maxConnectionsPerPod", "should be greater than or equal to 1"},
		{"a negative number of connections per pod", valid + "maxConnectionsPerPod: -1\n",
			"spec.maxConnectionsPerPod", "should be greater than or equal to 1"},
		{"more than a million connections per pod", valid + "maxConnectionsPerPod: 1000001\n",
			"spec.maxConnectionsPerPod", "should be less than or equal to 1000000"},

		// revokePolicy
		{"an unknown revoke policy", valid + "revokePolicy: Sometimes\n",
			"spec.revokePolicy", `supported values: "Close", "Drain"`},

		// tls
		{"an issuer without hostnames to certify", valid + "tls:\n  secretName: ws-tls\n  issuerRef:\n    name: letsencrypt\n",
			"spec.tls.issuerRef", "tls.issuerRef needs at least one entry in hostnames"},
		{"an issuer with an empty hostname list", valid + "hostnames: []\ntls:\n  secretName: ws-tls\n  issuerRef:\n    name: letsencrypt\n",
			"spec.tls.issuerRef", "tls.issuerRef needs at least one entry in hostnames"},
		{"an issuer of an unknown kind", valid + "hostnames: [ws.example.com]\ntls:\n  secretName: ws-tls\n  issuerRef:\n    name: letsencrypt\n    kind: Foo\n",
			"spec.tls.issuerRef.kind", `supported values: "Issuer", "ClusterIssuer"`},
		{"an issuer without a name", valid + "hostnames: [ws.example.com]\ntls:\n  secretName: ws-tls\n  issuerRef:\n    kind: ClusterIssuer\n",
			"spec.tls.issuerRef.name", "Required value"},
		{"an empty secret name", valid + "tls:\n  secretName: \"\"\n",
			"spec.tls.secretName", "at least 1 chars long"},
		{"a secret name that is not a DNS name", valid + "tls:\n  secretName: WS_TLS\n",
			"spec.tls.secretName", "should match"},
		{"tls without a secret name", valid + "hostnames: [ws.example.com]\ntls:\n  issuerRef:\n    name: letsencrypt\n",
			"spec.tls.secretName", "Required value"},

		// backendPath
		{"a backend path with a dot-dot segment", valid + "backendPath: /api/../admin\n",
			"spec.backendPath", "backendPath must not contain '..'"},
		{"a backend path with a dot segment", valid + "backendPath: /./ws\n",
			"spec.backendPath", "backendPath must not contain a '.' segment"},
		{"a backend path with an empty segment", valid + "backendPath: /api//ws\n",
			"spec.backendPath", "backendPath must not contain '//'"},
		{"a backend path without a leading slash", valid + "backendPath: ws\n",
			"spec.backendPath", "should match"},
		{"a backend path with a percent-encoded dot", valid + "backendPath: /%2e%2e/admin\n",
			"spec.backendPath", "should match"},

		// unknown fields are refused by kubectl's strict field validation
		{"a misspelt field", valid + "pathprefix: /rooms\n",
			"spec.pathprefix", "unknown field"},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refusedRoute(t, tc.spec, tc.field, tc.message)
		})
	}
}

// refusedRoute applies a WsRoute of spec (fragments at the indentation of
// spec's own fields) in a namespace of its own, and fails t unless
// kubectl refuses it naming field and saying message, and nothing was
// created.
func refusedRoute(t *testing.T, spec, field, message string) {
	t.Helper()
	ns := env.Namespace(t)
	doc := route("bad", spec)

	out, err := kubectl(t, doc, "apply", "-n", ns, "-f", "-")
	if err == nil {
		t.Fatalf("kubectl apply accepted an invalid route:\n%s\ndocument:\n%s", out, doc)
	}
	if !strings.Contains(out, field) {
		t.Errorf("kubectl output does not name the field %q:\n%s\ndocument:\n%s", field, out, doc)
	}
	if !strings.Contains(out, message) {
		t.Errorf("kubectl output does not say %q:\n%s\ndocument:\n%s", message, out, doc)
	}

	// Nothing was created, as kubectl and the API see it.
	got, err := kubectl(t, "", "get", "wsr", "-n", ns)
	if err != nil {
		t.Fatalf("kubectl get wsr: %v\n%s", err, got)
	}
	if strings.TrimSpace(got) != "No resources found in "+ns+" namespace." {
		t.Errorf("kubectl get wsr -n %s lists routes after a refused apply:\n%s", ns, got)
	}
	var list wsgatev1alpha1.WsRouteList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list WsRoutes: %v", err)
	}
	if len(list.Items) != 0 {
		t.Errorf("found %d WsRoutes after a refused apply, want 0", len(list.Items))
	}
}

func TestValidRoutesAreAcceptedWithDefaults(t *testing.T) {
	samples := filepath.Join(testenv.RepoRoot(), "config", "samples")

	t.Run("the sample applies cleanly and keeps its values", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		file := filepath.Join(samples, "wsgate_v1alpha1_wsroute.yaml")
		doc, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out := apply(t, ns, string(doc))
		if !strings.Contains(out, "wsroute.wsgate.io/game-server created") {
			t.Errorf("kubectl apply output = %q, want the sample route created", out)
		}

		r := get(t, ns, "game-server")
		s := r.Spec
		if len(s.Hostnames) != 1 || s.Hostnames[0] != "ws.example.com" {
			t.Errorf("hostnames = %q, want [ws.example.com]", s.Hostnames)
		}
		if s.PathPrefix != "/rooms" || s.BackendPath != "/" {
			t.Errorf("pathPrefix, backendPath = %q, %q; want /rooms, /", s.PathPrefix, s.BackendPath)
		}
		if s.Selector.MatchLabels["app"] != "game-server" || len(s.Selector.MatchLabels) != 1 || len(s.Selector.MatchExpressions) != 0 {
			t.Errorf("selector = %+v, want matchLabels app: game-server", s.Selector)
		}
		if s.Port != intstr.FromString("ws") {
			t.Errorf("port = %+v, want the name ws", s.Port)
		}
		if len(s.AllowedOrigins) != 1 || s.AllowedOrigins[0] != "https://game.example.com" {
			t.Errorf("allowedOrigins = %q, want [https://game.example.com]", s.AllowedOrigins)
		}
		if s.Timeouts == nil || s.Timeouts.Handshake == nil || s.Timeouts.Idle == nil || s.Timeouts.MaxLifetime == nil {
			t.Fatalf("timeouts = %+v, want all three set", s.Timeouts)
		}
		if s.Timeouts.Handshake.Duration != 10*time.Second || s.Timeouts.Idle.Duration != 5*time.Minute || s.Timeouts.MaxLifetime.Duration != 12*time.Hour {
			t.Errorf("timeouts = %v, %v, %v; want 10s, 5m, 12h", s.Timeouts.Handshake, s.Timeouts.Idle, s.Timeouts.MaxLifetime)
		}
		if s.MaxConnectionsPerPod == nil || *s.MaxConnectionsPerPod != 500 {
			t.Errorf("maxConnectionsPerPod = %v, want 500", s.MaxConnectionsPerPod)
		}
		if s.RevokePolicy != wsgatev1alpha1.RevokeClose {
			t.Errorf("revokePolicy = %q, want Close", s.RevokePolicy)
		}
		if s.TLS == nil || s.TLS.SecretName != "ws-example-com-tls" || s.TLS.IssuerRef == nil ||
			*s.TLS.IssuerRef != (wsgatev1alpha1.IssuerReference{Name: "letsencrypt", Kind: "ClusterIssuer", Group: "cert-manager.io"}) {
			t.Errorf("tls = %+v, want secret ws-example-com-tls from ClusterIssuer letsencrypt", s.TLS)
		}

		// Applying the unchanged file again is a no-op.
		out = apply(t, ns, string(doc))
		if !strings.Contains(out, "wsroute.wsgate.io/game-server unchanged") {
			t.Errorf("second kubectl apply output = %q, want unchanged", out)
		}
	})

	t.Run("the samples kustomization applies cleanly", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		out, err := kubectl(t, "", "apply", "-n", ns, "-k", samples)
		if err != nil {
			t.Fatalf("kubectl apply -k %s: %v\n%s", samples, err, out)
		}
		if strings.Contains(strings.ToLower(out), "warning") {
			t.Errorf("kubectl apply -k warned:\n%s", out)
		}
		get(t, ns, "game-server")
	})

	t.Run("a minimal route gets the defaults", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		apply(t, ns, route("minimal", valid))
		s := get(t, ns, "minimal").Spec
		if s.PathPrefix != "/" {
			t.Errorf("pathPrefix = %q, want the default /", s.PathPrefix)
		}
		if s.BackendPath != "/" {
			t.Errorf("backendPath = %q, want the default /", s.BackendPath)
		}
		if s.RevokePolicy != wsgatev1alpha1.RevokeClose {
			t.Errorf("revokePolicy = %q, want the default Close", s.RevokePolicy)
		}
		if s.Hostnames != nil || s.AllowedOrigins != nil || s.Timeouts != nil || s.MaxConnectionsPerPod != nil || s.TLS != nil {
			t.Errorf("optional fields were filled in: %+v", s)
		}
	})

	t.Run("an issuer reference gets its kind and group defaulted", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		apply(t, ns, route("issuer", valid, "hostnames: [ws.example.com]\ntls:\n  secretName: ws-tls\n  issuerRef:\n    name: letsencrypt\n"))
		s := get(t, ns, "issuer").Spec
		want := wsgatev1alpha1.IssuerReference{Name: "letsencrypt", Kind: "Issuer", Group: "cert-manager.io"}
		if s.TLS == nil || s.TLS.IssuerRef == nil || *s.TLS.IssuerRef != want {
			t.Errorf("tls = %+v, want issuerRef %+v", s.TLS, want)
		}
	})

	sixteenHosts := "hostnames:\n"
	for i := range 16 {
		sixteenHosts += "  - h" + string(rune('a'+i)) + ".example.com\n"
	}
	edges := []struct {
		name string
		spec string
	}{
		{"the highest port number", selector + "port: 65535\n"},
		{"the lowest port number", selector + "port: 1\n"},
		{"a short port name", selector + "port: ws\n"},
		{"a port name of 15 characters with digits and a hyphen", selector + "port: websocket-8080\n"},
		{"a selector of match expressions only", "selector:\n  matchExpressions:\n    - {key: app, operator: In, values: [game-server]}\n" + portWS},
		{"a wildcard hostname", valid + "hostnames: [\"*.example.com\"]\n"},
		{"a hostname label of 63 characters", valid + "hostnames: [" + strings.Repeat("a", 63) + ".example.com]\n"},
		{"16 hostnames", valid + sixteenHosts},
		{"an IPv4 literal origin with a port", valid + "allowedOrigins: [\"http://127.0.0.1:8080\"]\n"},
		{"any origin", valid + "allowedOrigins: [\"*\"]\n"},
		{"an IPv6 literal origin with a port", valid + "allowedOrigins: [\"http://[::1]:8080\"]\n"},
		{"several origins", valid + "allowedOrigins: [\"https://game.example.com\", \"http://localhost:3000\"]\n"},
		{"a path prefix with unreserved characters", valid + "pathPrefix: /a/b-c_d.e~f\n"},
		{"a path prefix whose segment starts with a dot", valid + "pathPrefix: /.well-known/ws\n"},
		{"a backend path with a trailing slash", valid + "backendPath: /ws/\n"},
		{"the lowest timeouts", valid + "timeouts:\n  handshake: 100ms\n  idle: 1s\n  maxLifetime: 1s\n"},
		{"the highest timeouts", valid + "timeouts:\n  handshake: 1m\n  idle: 24h\n  maxLifetime: 720h\n"},
		{"compound and fractional durations", valid + "timeouts:\n  handshake: 1.5s\n  idle: 1h30m\n  maxLifetime: 2h45m30s\n"},
		{"the highest connection cap", valid + "maxConnectionsPerPod: 1000000\n"},
		{"the drain revoke policy", valid + "revokePolicy: Drain\n"},
		{"a secret without an issuer and without hostnames", valid + "tls:\n  secretName: ws-tls\n"},
	}
	for _, tc := range edges {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			out := apply(t, ns, route("edge", tc.spec))
			if !strings.Contains(out, "wsroute.wsgate.io/edge created") {
				t.Errorf("kubectl apply output = %q, want the route created", out)
			}
			get(t, ns, "edge")
		})
	}
}

func TestKubectlExplainDescribesTheSpec(t *testing.T) {
	fields := []string{
		"hostnames", "pathPrefix", "selector", "port", "backendPath",
		"allowedOrigins", "timeouts", "maxConnectionsPerPod", "revokePolicy", "tls",
	}
	// The CRD's schema reaches the OpenAPI document that explain reads a
	// moment after the CRD is established: retry for a while.
	var out string
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = kubectl(t, "", "explain", "wsroute.spec")
		if err == nil && strings.Contains(out, "FIELDS:") && strings.Contains(out, "maxConnectionsPerPod") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl explain wsroute.spec did not describe the spec within 20s: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}

	if !regexp.MustCompile(`(?m)^GROUP:\s+wsgate\.io$`).MatchString(out) {
		t.Errorf("kubectl explain does not name the group wsgate.io:\n%s", out)
	}
	for _, f := range fields {
		// A field is listed as "  <name>\t<type>" under FIELDS.
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(f) + `\s+<`).MatchString(out) {
			t.Errorf("kubectl explain wsroute.spec does not list the field %q:\n%s", f, out)
		}
	}
	for _, required := range []string{"selector", "port"} {
		if !regexp.MustCompile(`(?m)^\s+` + required + `\s+<[^>]+> -required-`).MatchString(out) {
			t.Errorf("kubectl explain wsroute.spec does not mark %q as required:\n%s", required, out)
		}
	}
	// The descriptions come from the doc comments of wsroute_types.go.
	for _, fragment := range []string{"an empty selector would", "Close frame 1008"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), fragment) {
			t.Errorf("kubectl explain wsroute.spec does not say %q:\n%s", fragment, out)
		}
	}
}

func TestPrinterColumns(t *testing.T) {
	ns := env.Namespace(t)
	apply(t, ns, route("columns", valid, "hostnames: [ws.example.com]\npathPrefix: /rooms\n"))

	header := func(args ...string) ([]string, string) {
		t.Helper()
		out, err := kubectl(t, "", append([]string{"get", "wsr", "-n", ns}, args...)...)
		if err != nil {
			t.Fatalf("kubectl get wsr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("kubectl get wsr %s printed %d lines, want a header and one route:\n%s", strings.Join(args, " "), len(lines), out)
		}
		return strings.Fields(lines[0]), lines[1]
	}

	wide, row := header("-o", "wide")
	if want := []string{"NAME", "HOSTS", "PREFIX", "PODS", "READY", "REASON", "ACCEPTED", "ACCESS", "AGE"}; strings.Join(wide, " ") != strings.Join(want, " ") {
		t.Errorf("kubectl get wsr -o wide header = %q, want %q", wide, want)
	}
	for _, cell := range []string{"columns", "ws.example.com", "/rooms"} {
		if !strings.Contains(row, cell) {
			t.Errorf("kubectl get wsr -o wide row %q does not show %q", row, cell)
		}
	}

	// REASON, ACCEPTED and ACCESS are wide-only columns (priority 1).
	narrow, _ := header()
	if want := []string{"NAME", "HOSTS", "PREFIX", "PODS", "READY", "AGE"}; strings.Join(narrow, " ") != strings.Join(want, " ") {
		t.Errorf("kubectl get wsr header = %q, want %q", narrow, want)
	}
}
