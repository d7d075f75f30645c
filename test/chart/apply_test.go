package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
)

// The Prometheus operator's module holds the ServiceMonitor CRD; the test
// downloads it into the module cache (it is not a dependency in go.mod), at
// PROMETHEUS_OPERATOR_VERSION in hack/versions.env.
const (
	promOperatorModule = "github.com/prometheus-operator/prometheus-operator"
	serviceMonitorCRD  = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
)

var (
	crdOnce sync.Once
	crdErr  error
)

// installChartCRDs applies the chart's crds/ folder once (testenv installed
// config/crd/bases already; the chart's copy must apply over it cleanly).
func installChartCRDs(t *testing.T) {
	t.Helper()
	crdOnce.Do(func() {
		out, err := env.Kubectl(context.Background(), "", "apply", "--validate=strict", "-f", filepath.Join(chartDir(), "crds"))
		if err != nil {
			crdErr = fmt.Errorf("kubectl apply -f charts/wsgate/crds: %w\n%s", err, out)
		}
	})
	if crdErr != nil {
		t.Fatal(crdErr)
	}
}

// installServiceMonitorCRD installs the ServiceMonitor CRD from the pinned
// Prometheus operator module, downloading it when needed; the error says
// why it could not (e.g. no network and an empty module cache).
func installServiceMonitorCRD() error {
	return serviceMonitors.install()
}

// promOperatorCRD is one CRD of the pinned Prometheus operator module,
// installed once per test binary.
type promOperatorCRD struct {
	kind, name, file string
	once             sync.Once
	err              error
}

var (
	serviceMonitors = &promOperatorCRD{kind: "ServiceMonitor", name: "servicemonitors.monitoring.coreos.com", file: serviceMonitorCRD}
	prometheusRules = &promOperatorCRD{kind: "PrometheusRule", name: "prometheusrules.monitoring.coreos.com", file: prometheusRuleCRD}
)

var (
	promOperatorOnce sync.Once
	promOperatorDir  string
	promOperatorErr  error
)

// promOperatorModuleDir downloads the pinned Prometheus operator module
// (once) and returns its folder in the module cache.
func promOperatorModuleDir() (string, error) {
	promOperatorOnce.Do(func() {
		promOperatorVersion, err := testenv.PinnedVersion("PROMETHEUS_OPERATOR_VERSION")
		if err != nil {
			promOperatorErr = err
			return
		}
		tmp, err := os.MkdirTemp("", "wsgate-chart-gomod-")
		if err != nil {
			promOperatorErr = err
			return
		}
		defer os.RemoveAll(tmp)
		// Outside the repository: the download must not touch its go.mod.
		cmd := exec.Command("go", "mod", "download", "-json", promOperatorModule+"@"+promOperatorVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var mod struct{ Dir, Error string }
		_ = json.Unmarshal(out, &mod)
		if err != nil {
			promOperatorErr = fmt.Errorf("go mod download %s@%s: %w: %s %s", promOperatorModule, promOperatorVersion, err, mod.Error, strings.TrimSpace(stderr.String()))
			return
		}
		if mod.Dir == "" {
			promOperatorErr = fmt.Errorf("go mod download %s@%s: no folder: %s", promOperatorModule, promOperatorVersion, mod.Error)
			return
		}
		promOperatorDir = mod.Dir
	})
	return promOperatorDir, promOperatorErr
}

// install applies the CRD (server-side: it is too large for kubectl's
// last-applied annotation) and waits until it is established.
func (c *promOperatorCRD) install() error {
	c.once.Do(func() {
		dir, err := promOperatorModuleDir()
		if err != nil {
			c.err = err
			return
		}
		ctx := context.Background()
		if out, err := env.Kubectl(ctx, "", "apply", "--server-side", "-f", filepath.Join(dir, c.file)); err != nil {
			c.err = fmt.Errorf("apply the %s CRD: %w\n%s", c.kind, err, out)
			return
		}
		if out, err := env.Kubectl(ctx, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/"+c.name); err != nil {
			c.err = fmt.Errorf("wait for the %s CRD: %w\n%s", c.kind, err, out)
		}
	})
	return c.err
}

// apply applies a manifest with kubectl (strict field validation on the
// server) and checks that every object exists afterwards.
func apply(t *testing.T, m manifest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.Kubectl(ctx, m.list(t), "apply", "--validate=strict", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	for _, o := range m.objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("%s %s/%s after apply: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// Each variant's manifests are installed on the real API server: the
// built-in kinds, the Certificate (cert-manager's CRDs) and the
// ServiceMonitor (the Prometheus operator's CRD) pass the server's
// validation, strictly (no unknown fields).
func TestApply(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	smErr := installServiceMonitorCRD()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			c := site{NS: env.Namespace(t)}
			c.Watch = [2]string{env.Namespace(t), env.Namespace(t)}
			m := template(t, v.release+"-"+c.NS, c.NS, v.values(c))
			if len(m.all("ServiceMonitor")) > 0 && smErr != nil {
				t.Logf("ServiceMonitor left out: its CRD is not available (%v); the rest is applied", smErr)
				m = m.without("ServiceMonitor")
			}
			apply(t, m)
			var d appsv1.Deployment
			dm := m.one(t, "Deployment")
			if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(dm), &d); err != nil {
				t.Fatal(err)
			}
			if want := as[appsv1.Deployment](t, dm); *d.Spec.Template.Spec.TerminationGracePeriodSeconds != *want.Spec.Template.Spec.TerminationGracePeriodSeconds ||
				len(d.Spec.Template.Spec.Containers[0].Args) != len(want.Spec.Template.Spec.Containers[0].Args) {
				t.Errorf("stored Deployment differs from the rendered one")
			}
			// The WsGrants pass the CRD's validation (patterns, at least
			// one thing granted) and are stored as rendered.
			for _, o := range m.all("WsGrant") {
				var g wsgatev1alpha1.WsGrant
				if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(o), &g); err != nil {
					t.Fatal(err)
				}
				if want := as[wsgatev1alpha1.WsGrant](t, o); !reflect.DeepEqual(g.Spec, want.Spec) {
					t.Errorf("stored WsGrant %s spec = %+v, rendered %+v", g.Name, g.Spec, want.Spec)
				}
			}
		})
	}
}

// helm itself installs, upgrades and uninstalls the chart on the real API
// server, and prints the notes.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	ns := env.Namespace(t)
	release := "wsgate-helm"
	ctx := context.Background()

	out, stderr, err := runHelm(t, env.Kubeconfig, "install", release, chartDir(), "--namespace", ns,
		"--set", "defaultHost=ws.example.com", "--set", "gatewayCertificate.enabled=true", "--set", "gatewayCertificate.issuerRef.name=letsencrypt",
		"--set", "service.type=LoadBalancer")
	if err != nil {
		t.Fatalf("helm install: %v\n%s%s", err, out, stderr)
	}
	for _, want := range []string{
		"STATUS: deployed",
		"kubectl -n " + ns + " rollout status deployment/" + release,
		// Routes need a grant; the chart grants nothing by default.
		"This release grants nothing (the grants value is empty).",
		"kind: WsGrant",
		"namespaces: [games]",
		`clusterIssuers: ["letsencrypt"]`,
		"kubectl get wsgrants",
		"Routes without spec.hostnames claim ws.example.com (defaultHost)",
		"kind: WsRoute",
		`hostnames: ["games.example.com"]`,
		"issuerRef: {name: letsencrypt, kind: ClusterIssuer}",
		"kubectl get wsr -A -o wide",
		"HostnameNotAllowed",
		"kubectl -n " + ns + " get service " + release + " -o jsonpath='{.status.loadBalancer.ingress[0]}'",
		"wss://games.example.com/rooms/<podIP>/",
		"served from the Secret " + ns + "/" + release + "-tls",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output (notes) lacks %q:\n%s", want, out)
		}
	}
	checkNotesExamples(t, out, ns, "ws.example.com")
	if n := len(releaseGrants(t, release)); n != 0 {
		t.Errorf("%d WsGrants of the release after install with no grants, want none", n)
	}

	key := types.NamespacedName{Namespace: ns, Name: release}
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, key, &d); err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("Deployment after install: %v, replicas %v", err, d.Spec.Replicas)
	}

	// An upgrade adds grants: helm creates the WsGrants and the notes name them.
	out, stderr, err = runHelm(t, env.Kubeconfig, "upgrade", release, chartDir(), "--namespace", ns, "--reuse-values", "--set", "replicas=3",
		"-f", writeValues(t, "grants: [{name: games, namespaces: [games], hostnames: [games.example.com], clusterIssuers: [letsencrypt]}]"))
	if err != nil {
		t.Fatalf("helm upgrade: %v\n%s%s", err, out, stderr)
	}
	if want := "This release created the WsGrants " + release + "-games (the grants value)."; !strings.Contains(out, want) {
		t.Errorf("helm upgrade output (notes) lacks %q:\n%s", want, out)
	}
	if err := env.Client.Get(ctx, key, &d); err != nil || *d.Spec.Replicas != 3 {
		t.Fatalf("Deployment after upgrade: %v, replicas %v, want 3", err, d.Spec.Replicas)
	}
	grants := releaseGrants(t, release)
	if len(grants) != 1 || grants[0].Name != release+"-games" {
		t.Fatalf("WsGrants of the release after the upgrade = %v, want %s-games", grants, release)
	}
	wantSpec := wsgatev1alpha1.WsGrantSpec{
		Namespaces:     []wsgatev1alpha1.GrantedNamespace{"games"},
		Hostnames:      []wsgatev1alpha1.HostnamePattern{"games.example.com"},
		ClusterIssuers: []wsgatev1alpha1.GrantedIssuer{"letsencrypt"},
	}
	if !reflect.DeepEqual(grants[0].Spec, wantSpec) {
		t.Errorf("WsGrant %s spec = %+v, want %+v", grants[0].Name, grants[0].Spec, wantSpec)
	}

	if out, stderr, err := runHelm(t, env.Kubeconfig, "uninstall", release, "--namespace", ns); err != nil {
		t.Fatalf("helm uninstall: %v\n%s%s", err, out, stderr)
	}
	if err := env.Client.Get(ctx, key, &d); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment after uninstall: %v, want NotFound", err)
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Name: release}, &rbacv1.ClusterRole{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRole after uninstall: %v, want NotFound", err)
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Name: release + "-games"}, &wsgatev1alpha1.WsGrant{}); !apierrors.IsNotFound(err) {
		t.Errorf("WsGrant %s-games after uninstall: %v, want NotFound", release, err)
	}
	// Helm never deletes what crds/ installed.
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := env.Client.Get(ctx, types.NamespacedName{Name: "wsroutes.wsgate.io"}, crd); err != nil {
		t.Errorf("CRD after uninstall: %v", err)
	}
}

// releaseGrants lists the WsGrants that carry the release's instance label.
func releaseGrants(t *testing.T, release string) []wsgatev1alpha1.WsGrant {
	t.Helper()
	var list wsgatev1alpha1.WsGrantList
	if err := env.Client.List(context.Background(), &list, client.MatchingLabels{"app.kubernetes.io/instance": release}); err != nil {
		t.Fatalf("list WsGrants: %v", err)
	}
	return list.Items
}

// heredoc is one `kubectl ... <<'YAML'` example of the notes.
type heredoc struct {
	command, body string
}

// heredocs returns the notes' heredoc examples, their bodies unindented.
func heredocs(notes string) []heredoc {
	var out []heredoc
	lines := strings.Split(notes, "\n")
	for i := 0; i < len(lines); i++ {
		cmd, ok := strings.CutSuffix(strings.TrimSpace(lines[i]), "<<'YAML'")
		if !ok {
			continue
		}
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "YAML"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], strings.Repeat(" ", indent)))
		}
		out = append(out, heredoc{command: strings.TrimSpace(cmd), body: strings.Join(body, "\n") + "\n"})
	}
	return out
}

// checkNotesExamples checks the notes' WsGrant and WsRoute examples: the
// API server takes them (a server-side dry run, strict), and the grant is
// what the route needs: with it, the route is accepted in the namespace the
// notes apply it to; without it, it is not.
func checkNotesExamples(t *testing.T, notes, ns, defaultHost string) {
	t.Helper()
	docs := heredocs(notes)
	if len(docs) != 2 || docs[0].command != "kubectl apply -f -" || !strings.HasPrefix(docs[1].command, "kubectl apply -n ") {
		t.Fatalf("notes examples = %+v, want a WsGrant (kubectl apply -f -) then a WsRoute (kubectl apply -n <namespace> -f -)", docs)
	}
	var grant wsgatev1alpha1.WsGrant
	var route wsgatev1alpha1.WsRoute
	if err := yaml.UnmarshalStrict([]byte(docs[0].body), &grant); err != nil || grant.Kind != "WsGrant" {
		t.Fatalf("notes' first example is not a WsGrant (%v):\n%s", err, docs[0].body)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1].body), &route); err != nil || route.Kind != "WsRoute" {
		t.Fatalf("notes' second example is not a WsRoute (%v):\n%s", err, docs[1].body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := env.Kubectl(ctx, docs[0].body, "apply", "--dry-run=server", "--validate=strict", "-f", "-"); err != nil {
		t.Errorf("the notes' WsGrant: kubectl apply --dry-run=server: %v\n%s", err, out)
	}
	if out, err := env.Kubectl(ctx, docs[1].body, "apply", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-"); err != nil {
		t.Errorf("the notes' WsRoute: kubectl apply --dry-run=server: %v\n%s", err, out)
	}
	routeNS := strings.Fields(strings.TrimPrefix(docs[1].command, "kubectl apply -n "))[0]
	if got := buildReason(t, &route, routeNS, []*wsgatev1alpha1.WsGrant{&grant}, defaultHost); got != wsgatev1alpha1.ReasonAccepted {
		t.Errorf("the notes' WsRoute in namespace %s with the notes' WsGrant is %s, want Accepted", routeNS, got)
	}
	if got := buildReason(t, &route, routeNS, nil, defaultHost); got != wsgatev1alpha1.ReasonHostnameNotAllowed {
		t.Errorf("the notes' WsRoute in namespace %s without a grant is %s, want HostnameNotAllowed", routeNS, got)
	}
}

// The notes, rendered by helm install --dry-run=server for several value
// sets: what they say about grants, and their examples (see
// checkNotesExamples).
func TestNotes(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	for _, tc := range []struct {
		name, values, defaultHost string
		want, not                 []string
	}{
		{
			name: "defaults",
			want: []string{
				"This release grants nothing (the grants value is empty).",
				"To let the routes of namespace games claim games.example.com:",
				"needs catchAll: true in a grant",
				"kubectl get wsr -A -o wide",
			},
			not: []string{"clusterIssuers:", "tls:", "(defaultHost)"},
		},
		{
			name:        "namespaced issuer",
			values:      "{defaultHost: ws.example.com, gatewayCertificate: {enabled: true, issuerRef: {name: ca, kind: Issuer}}}",
			defaultHost: "ws.example.com",
			want:        []string{"Routes without spec.hostnames claim ws.example.com (defaultHost)"},
			not:         []string{"clusterIssuers:", "catchAll"},
		},
		{
			name:   "grants",
			values: "grants: [{name: a, namespaces: [a], catchAll: true}, {name: b, namespaces: [b], hostnames: [b.example.com]}]",
			want:   []string{"This release created the WsGrants wsgate-notes-a, wsgate-notes-b (the grants value)."},
			not:    []string{"grants nothing"},
		},
		{
			name:   "PROXY protocol without the load balancer's annotation",
			values: "{edge: {proxyProtocol: true, trustedProxies: [10.0.0.0/16]}, service: {type: LoadBalancer}}",
			want: []string{
				"PROXY protocol: connections from 10.0.0.0/16 (edge.trustedProxies) must start with a PROXY header",
				"WARNING: no annotation of the Service (service.annotations) turns on the PROXY protocol.",
			},
		},
		{
			name:   "PROXY protocol with the load balancer's annotation",
			values: `{edge: {proxyProtocol: true, trustedProxies: [10.0.0.0/16]}, service: {type: LoadBalancer, annotations: {service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol: "true"}}}`,
			want:   []string{"PROXY protocol: connections from 10.0.0.0/16"},
			not:    []string{"WARNING"},
		},
		{
			name:   "trusted proxies",
			values: "edge: {trustedProxies: [10.0.0.0/16, 192.0.2.10]}",
			want:   []string{"X-Forwarded-For from 10.0.0.0/16, 192.0.2.10 (edge.trustedProxies) names the client."},
			not:    []string{"PROXY"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			out, stderr, err := runHelm(t, env.Kubeconfig, "install", "wsgate-notes", chartDir(), "--namespace", ns,
				"--dry-run=server", "-f", writeValues(t, tc.values))
			if err != nil {
				t.Fatalf("helm install --dry-run=server: %v\n%s%s", err, out, stderr)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if !ok {
				t.Fatalf("no NOTES in the helm install output:\n%s", out)
			}
			// Words wrap at different places for different values.
			flat := strings.Join(strings.Fields(notes), " ")
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("notes lack %q:\n%s", w, notes)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(notes, w) {
					t.Errorf("notes have %q:\n%s", w, notes)
				}
			}
			checkNotesExamples(t, notes, ns, tc.defaultHost)
		})
	}
}
