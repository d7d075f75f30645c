// Package chart tests the Helm chart in charts/wsgate with the pinned helm
// (hack/helm.sh builds it from the Go module proxy, as hack/envtest.sh
// builds the control plane): lint, rendering of several value sets, the
// refusals of values.schema.json, installation on a real kube-apiserver
// (with cert-manager's CRDs, and the Prometheus operator's ServiceMonitor
// CRD when its module can be downloaded), the RBAC checked as the chart's
// ServiceAccount, and the Dockerfile's build command.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/wsgate/wsgate/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	// cert-manager's CRDs make the chart's Certificate installable.
	testenv.MainWith(m, &env, testenv.Options{CertManager: true})
}

// HelmEnv names the variable that points at a helm binary; when unset,
// hack/helm.sh builds the pinned one (or finds the cached build).
const HelmEnv = "WSGATE_HELM"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBin returns the path of the pinned helm.
func helmBin(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv(HelmEnv); p != "" {
			helmPath = p
			return
		}
		cmd := exec.Command("bash", filepath.Join(testenv.RepoRoot(), "hack", "helm.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			helmErr = fmt.Errorf("build helm with hack/helm.sh: %w", err)
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// chartDir is the chart under test.
func chartDir() string { return filepath.Join(testenv.RepoRoot(), "charts", "wsgate") }

// runHelm runs helm with its configuration, cache and data folders in a
// temporary folder, against kubeconfig (none when empty), and returns its
// standard output and error apart.
func runHelm(t testing.TB, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	if kubeconfig == "" {
		kubeconfig = filepath.Join(home, "no-kubeconfig")
	}
	cmd := exec.Command(helmBin(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig,
	)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// writeValues writes a values file and returns its path.
func writeValues(t testing.TB, values string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// manifest is the output of helm template, parsed.
type manifest struct {
	objs []*unstructured.Unstructured
}

// template renders the chart as release in namespace ns with the values
// (YAML), and fails the test on an error.
func template(t testing.TB, release, ns, values string) manifest {
	t.Helper()
	out, stderr, err := runHelm(t, "", "template", release, chartDir(), "--namespace", ns, "-f", writeValues(t, values))
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr)
	}
	m, err := parseManifest(out)
	if err != nil {
		t.Fatalf("parse helm template output: %v\n%s", err, out)
	}
	return m
}

// parseManifest splits a multi-document YAML stream into objects.
func parseManifest(s string) (manifest, error) {
	var m manifest
	r := yaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return m, err
		}
		j, err := yaml.ToJSON(doc)
		if err != nil {
			return m, fmt.Errorf("%w in\n%s", err, doc)
		}
		if t := strings.TrimSpace(string(j)); t == "null" || t == "" {
			continue // comments only
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			return m, fmt.Errorf("%w in\n%s", err, doc)
		}
		m.objs = append(m.objs, u)
	}
}

// all returns the objects of a kind.
func (m manifest) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of a kind, failing the test otherwise.
func (m manifest) one(t testing.TB, kind string) *unstructured.Unstructured {
	t.Helper()
	objs := m.all(kind)
	if len(objs) != 1 {
		t.Fatalf("rendered %d %s objects, want 1: %v", len(objs), kind, m.names())
	}
	return objs[0]
}

// names lists kind/namespace/name of every object.
func (m manifest) names() []string {
	var out []string
	for _, o := range m.objs {
		out = append(out, o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName())
	}
	return out
}

// without returns the manifest without the objects of the kinds.
func (m manifest) without(kinds ...string) manifest {
	var out manifest
	for _, o := range m.objs {
		if !slices.Contains(kinds, o.GetKind()) {
			out.objs = append(out.objs, o)
		}
	}
	return out
}

// list encodes the objects as a v1 List (what kubectl apply -f - takes).
func (m manifest) list(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"apiVersion":"v1","kind":"List","items":[`)
	for i, o := range m.objs {
		j, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(j)
	}
	b.WriteString("]}")
	return b.String()
}

// as converts an object into a typed one, refusing fields the type does
// not have (a misspelled field in a template fails here).
func as[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, v, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return v
}

// readRepoFile reads a file of the repository.
func readRepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
