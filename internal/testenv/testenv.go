// Package testenv starts the real control plane (etcd and kube-apiserver,
// built from source by hack/envtest.sh) for the test suites, with wsgate's
// CRDs installed from config/crd/bases and, on request, cert-manager's CRDs
// (StartCertManager runs its controllers in-process), the garbage
// collector of kube-controller-manager (Env.StartGarbageCollector), and a
// control plane whose kube-apiserver and etcd can be killed and started
// again (Options.Restartable, see restart.go).
//
// The wsgate binary and the helpers the end-to-end and fault suites share
// (log buffer, waiting, the binary as a child process) are in the
// subpackage harness.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// AssetsEnv names the variable that points at the folder holding
// kube-apiserver, etcd, kubectl and kube-controller-manager. When unset, hack/envtest.sh is run to
// build them (or to find the cached build).
const AssetsEnv = "WSGATE_ENVTEST_ASSETS"

// NoControlPlaneEnv names the variable that make unit sets: the packages
// it tests are meant to need no control plane, so with it set Assets (and
// so Start) fails at once, naming the Makefile list that a package whose
// tests do start one belongs in.
const NoControlPlaneEnv = "WSGATE_NO_CONTROL_PLANE"

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// Scheme knows the built-in kinds and wsgate's.
	Scheme *k8sruntime.Scheme
	// Assets is the folder holding the control-plane binaries.
	Assets string
	// Kubeconfig is the path of a kubeconfig file for this API server.
	Kubeconfig string

	env *envtest.Environment
	// dirs are removed by Stop (a restartable control plane's
	// certificates and etcd data).
	dirs []string
	// apiDir and etcdDir are kube-apiserver's certificate folder and
	// etcd's data folder of a restartable control plane.
	apiDir, etcdDir string
	// apiDown and etcdDown say what KillAPIServer and KillEtcd stopped.
	apiDown, etcdDown bool

	gcMu     sync.Mutex
	gcProcs  []*gcProcess
	gcLogs   []string
	stopping bool
}

// Options selects what StartWith adds to the control plane.
type Options struct {
	// CertManager installs cert-manager's CRDs (from the module cache, see
	// CertManagerCRDs) and adds cert-manager's kinds to the scheme. It does
	// not run cert-manager's controllers: call StartCertManager for that.
	CertManager bool
	// Restartable keeps kube-apiserver's certificates and etcd's data in
	// folders of the Env's own, so that KillAPIServer, KillEtcd and their
	// Start counterparts can stop and start each again: a restarted API
	// server serves the same CA on the same port, and clients reconnect.
	Restartable bool
}

// RepoRoot returns the repository's top folder, found from this file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	assetsOnce sync.Once
	assetsDir  string
	assetsErr  error
)

// Assets returns the folder with the control-plane binaries, building them
// with hack/envtest.sh when AssetsEnv is not set. It fails when
// NoControlPlaneEnv is set.
func Assets() (string, error) {
	assetsOnce.Do(func() {
		if os.Getenv(NoControlPlaneEnv) != "" {
			assetsErr = fmt.Errorf("%s is set (make unit), but these tests start a control plane: list their package in UNIT_EXCLUDE in the Makefile", NoControlPlaneEnv)
			return
		}
		if d := os.Getenv(AssetsEnv); d != "" {
			assetsDir = d
			return
		}
		cmd := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "envtest.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			assetsErr = fmt.Errorf("build control plane with hack/envtest.sh: %w", err)
			return
		}
		assetsDir = strings.TrimSpace(string(out))
	})
	return assetsDir, assetsErr
}

// NewScheme returns a scheme with the built-in kinds, wsgate's, and
// cert-manager's Certificate API (as cmd/wsgate registers them).
func NewScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, wsgatev1alpha1.AddToScheme, cmapi.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Start starts etcd and kube-apiserver and installs wsgate's CRDs. Stop it
// with Stop; the processes and their data are removed then.
func Start() (*Env, error) {
	return StartWith(Options{})
}

// StartWith is Start with the additions that opts asks for. Programs that
// call it themselves (not through Main or Run) set controller-runtime's
// logger first (log.SetLogger): envtest logs through it.
func StartWith(opts Options) (*Env, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	s := NewScheme()
	crds := []string{filepath.Join(RepoRoot(), "config", "crd", "bases")}
	if opts.CertManager {
		dir, err := CertManagerCRDs()
		if err != nil {
			return nil, err
		}
		crds = append(crds, dir)
		if err := AddCertManagerToScheme(s); err != nil {
			return nil, fmt.Errorf("cert-manager scheme: %w", err)
		}
	}
	te := &envtest.Environment{
		Scheme:                   s,
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	e := &Env{Scheme: s, Assets: assets, env: te}
	if opts.Restartable {
		if err := e.fixDirs(); err != nil {
			e.removeDirs()
			return nil, err
		}
	}
	cfg, err := te.Start()
	if err != nil {
		e.removeDirs()
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	e.Config = cfg
	if e.Client, err = client.New(cfg, client.Options{Scheme: s}); err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	if e.Kubeconfig, err = e.writeKubeconfig(); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Env) writeKubeconfig() (string, error) {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "wsgate-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("add kubeconfig user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("render kubeconfig: %w", err)
	}
	f, err := os.CreateTemp("", "wsgate-kubeconfig-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(kc); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// Stop stops the garbage collector (if started) and the control plane and
// removes their files.
func (e *Env) Stop() error {
	e.stopGarbageCollectors()
	if e.Kubeconfig != "" {
		_ = os.Remove(e.Kubeconfig)
	}
	defer e.removeDirs()
	return e.env.Stop()
}

// Kubectl runs the kubectl built beside the API server against it and
// returns its combined output.
func (e *Env) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.Assets, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Main runs a package's tests against a fresh control plane and stops it
// afterwards. Use it from TestMain:
//
//	var env *testenv.Env
//	func TestMain(m *testing.M) { testenv.Main(m, &env) }
func Main(m *testing.M, env **Env) {
	MainWith(m, env, Options{})
}

// MainWith is Main with a control plane started by StartWith(opts). When
// the tests fail, the output of the garbage collector (if one was started)
// is printed before the control plane stops.
func MainWith(m *testing.M, env **Env, opts Options) {
	os.Exit(Run(m, env, opts, nil))
}

// Run is MainWith returning the exit status instead of exiting, for a
// TestMain with more to do. beforeStop, when not nil, runs after the tests
// and before the control plane stops: it stops what the tests started for
// the whole package, so that it does not see the API server disappear.
//
// controller-runtime's logs are discarded unless the package set a logger
// before (controller-runtime keeps the first one); without any, it would
// print a warning and a stack trace at its first log line 30 s in.
func Run(m *testing.M, env **Env, opts Options, beforeStop func()) int {
	crlog.SetLogger(logr.Discard())
	e, err := StartWith(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1
	}
	*env = e
	code := m.Run()
	if beforeStop != nil {
		beforeStop()
	}
	if code != 0 {
		if out := e.GarbageCollectorOutput(); out != "" {
			fmt.Fprintf(os.Stderr, "testenv: kube-controller-manager output:\n%s\n", out)
		}
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Namespace creates a namespace with a name derived from the test's and
// deletes it when the test ends. Namespaces are never fully removed by
// envtest (it runs no namespace controller), so names stay unique; the
// namespace's WsRoutes are deleted with it, as the namespace controller
// would, so that the hostnames they own are free for later tests.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := e.Client.DeleteAllOf(ctx, &wsgatev1alpha1.WsRoute{}, client.InNamespace(ns.Name)); err != nil {
			t.Logf("delete the WsRoutes of namespace %s: %v", ns.Name, err)
		}
		_ = e.Client.Delete(ctx, ns)
	})
	return ns.Name
}

// GrantEverything creates, unless it exists, a WsGrant that gives every
// namespace every hostname, the catch-all and every ClusterIssuer, for
// tests about other rules than grants.
func (e *Env) GrantEverything(t testing.TB) {
	t.Helper()
	err := e.Client.Create(context.Background(), &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: GrantEverythingName},
		Spec: wsgatev1alpha1.WsGrantSpec{
			Namespaces:     []wsgatev1alpha1.GrantedNamespace{"*"},
			Hostnames:      []wsgatev1alpha1.HostnamePattern{"*"},
			CatchAll:       true,
			ClusterIssuers: []wsgatev1alpha1.GrantedIssuer{"*"},
		},
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create WsGrant %s: %v", GrantEverythingName, err)
	}
}

// GrantEverythingName is the name of the WsGrant that GrantEverything
// creates.
const GrantEverythingName = "tests-grant-everything"
