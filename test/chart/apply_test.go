package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Prometheus operator's module holds the ServiceMonitor CRD; the test
// downloads it into the module cache (it is not a dependency in go.mod).
const (
	promOperatorModule  = "github.com/prometheus-operator/prometheus-operator"
	promOperatorVersion = "v0.85.0"
	serviceMonitorCRD   = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
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
		"kind: WsRoute",
		`hostnames: ["ws.example.com"]`,
		"kubectl -n " + ns + " get service " + release + " -o jsonpath='{.status.loadBalancer.ingress[0]}'",
		"wss://ws.example.com/rooms/<podIP>/",
		"served from the Secret " + ns + "/" + release + "-tls",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output (notes) lacks %q:\n%s", want, out)
		}
	}

	key := types.NamespacedName{Namespace: ns, Name: release}
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, key, &d); err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("Deployment after install: %v, replicas %v", err, d.Spec.Replicas)
	}

	if out, stderr, err := runHelm(t, env.Kubeconfig, "upgrade", release, chartDir(), "--namespace", ns, "--reuse-values", "--set", "replicas=3"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s%s", err, out, stderr)
	}
	if err := env.Client.Get(ctx, key, &d); err != nil || *d.Spec.Replicas != 3 {
		t.Fatalf("Deployment after upgrade: %v, replicas %v, want 3", err, d.Spec.Replicas)
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
	// Helm never deletes what crds/ installed.
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := env.Client.Get(ctx, types.NamespacedName{Name: "wsroutes.wsgate.io"}, crd); err != nil {
		t.Errorf("CRD after uninstall: %v", err)
	}
}
