package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	cmcontroller "github.com/cert-manager/cert-manager/pkg/controller"
	cmlogs "github.com/cert-manager/cert-manager/pkg/logs"

	// The controllers register themselves with cmcontroller.Known, the
	// issuer kinds with the issuer registry.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// certManagerModule is the module that holds cert-manager's CRDs and
// controllers; go.mod pins its version.
const certManagerModule = "github.com/cert-manager/cert-manager"

// certManagerControllers are the cert-manager controllers StartCertManager
// runs: enough to issue Certificates from SelfSigned and CA issuers
// (namespaced and cluster-scoped). ACME, Vault, Venafi, the ingress and
// gateway shims and the CertificateSigningRequest signers are left out.
var certManagerControllers = []string{
	"issuers",
	"clusterissuers",
	"certificaterequests-approver",
	"certificaterequests-issuer-selfsigned",
	"certificaterequests-issuer-ca",
	"certificates-trigger",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-issuing",
	"certificates-readiness",
	"certificates-revision-manager",
}

// CertManagerClusterResourceNamespace is where ClusterIssuers started by
// StartCertManager look for their secrets (a CA ClusterIssuer's key pair),
// as in a default cert-manager installation.
const CertManagerClusterResourceNamespace = "kube-system"

// AddCertManagerToScheme adds cert-manager's kinds (cert-manager.io and
// acme.cert-manager.io) to s.
func AddCertManagerToScheme(s *k8sruntime.Scheme) error {
	return cmscheme.AddToScheme(s)
}

var (
	crdsOnce sync.Once
	crdsDir  string
	crdsErr  error
)

// CertManagerCRDs returns the path of cert-manager's CRD folder
// (deploy/crds) in the module cache, downloading the module version that
// go.mod requires when it is not there yet.
func CertManagerCRDs() (string, error) {
	crdsOnce.Do(func() {
		dir, err := certManagerModuleDir()
		if err != nil {
			crdsErr = err
			return
		}
		d := filepath.Join(dir, "deploy", "crds")
		if _, err := os.Stat(filepath.Join(d, "cert-manager.io_certificates.yaml")); err != nil {
			crdsErr = fmt.Errorf("cert-manager CRDs: %w", err)
			return
		}
		crdsDir = d
	})
	return crdsDir, crdsErr
}

// certManagerModuleDir finds cert-manager's module folder: from the build
// information and the module cache when the binary was built with it (no go
// command needed), else by asking the go command in the repository, which
// downloads the module if needed.
func certManagerModuleDir() (string, error) {
	if dir := moduleCacheDir(); dir != "" {
		return dir, nil
	}
	var stderr bytes.Buffer
	cmd := exec.Command("go", "mod", "download", "-json", certManagerModule)
	cmd.Dir = RepoRoot()
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &m); jerr == nil && m.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", certManagerModule, m.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w: %s", certManagerModule, err, strings.TrimSpace(stderr.String()))
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no folder in %q", certManagerModule, out)
	}
	return m.Dir, nil
}

// moduleCacheDir returns cert-manager's folder in the module cache when the
// running binary links the module and that folder exists.
func moduleCacheDir() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	version := ""
	for _, d := range bi.Deps {
		if d.Path == certManagerModule {
			version = d.Version
			if d.Replace != nil {
				if d.Replace.Version == "" {
					return "" // a local replacement: ask the go command
				}
				version = d.Replace.Version
			}
		}
	}
	if version == "" {
		return ""
	}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
	}
	dir := filepath.Join(cache, filepath.FromSlash(escapeModulePath(certManagerModule))+"@"+escapeModulePath(version))
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return ""
	}
	return dir
}

// escapeModulePath applies the module cache's case encoding ("!" before a
// lower-cased upper-case letter).
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// StartCertManager runs cert-manager's issuer and certificate controllers
// (those for SelfSigned and CA issuers, Issuers and ClusterIssuers) in this
// process against cfg until ctx ends. cert-manager's CRDs must be installed
// (Options.CertManager). It returns once the controllers' informers have
// synced (at most a minute); whatever it started before an error also
// stops when ctx ends. The controllers log through the logr.Logger in ctx
// when there is one, else through klog.
func StartCertManager(ctx context.Context, cfg *rest.Config) error {
	// Without the CRDs the informers would retry their lists forever.
	if err := checkCertManagerCRDs(cfg); err != nil {
		return err
	}
	kubeconfig, err := writeRESTKubeconfig(cfg)
	if err != nil {
		return err
	}
	defer os.Remove(kubeconfig)

	// Values of a default cert-manager installation, except that failed
	// issuances are retried after a second instead of an hour.
	factory, err := cmcontroller.NewContextFactory(ctx, cmcontroller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: cmcontroller.IssuerOptions{
			ClusterResourceNamespace: CertManagerClusterResourceNamespace,
		},
		CertificateOptions: cmcontroller.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Second,
			CertificateRequestMaximumBackoffDuration: 10 * time.Second,
		},
	})
	if err != nil {
		return fmt.Errorf("cert-manager controller context: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("cert-manager controller context: %w", err)
	}

	known := cmcontroller.Known()
	type named struct {
		name string
		c    cmcontroller.Interface
	}
	var controllers []named
	for _, name := range certManagerControllers {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("cert-manager controller %q is not registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("cert-manager controller %q: %w", name, err)
		}
		controllers = append(controllers, named{name, c})
	}

	log := cmlogs.FromContext(ctx, "cert-manager")
	var wg sync.WaitGroup
	for _, n := range controllers {
		wg.Go(func() {
			if err := n.c.Run(2, ctx); err != nil && ctx.Err() == nil {
				log.Error(err, "controller stopped", "controller", n.name)
			}
		})
	}
	// Informers are created by the constructors above, so the factories
	// start after them.
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		wg.Wait()
		base.SharedInformerFactory.Shutdown()
		base.KubeSharedInformerFactory.Shutdown()
	}()

	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var unsynced []string
	for t, ok := range base.SharedInformerFactory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			unsynced = append(unsynced, t.String())
		}
	}
	for t, ok := range base.KubeSharedInformerFactory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			unsynced = append(unsynced, t)
		}
	}
	if len(unsynced) > 0 {
		return fmt.Errorf("cert-manager informers not synced (%s): %w", strings.Join(unsynced, ", "), context.Cause(syncCtx))
	}
	return ctx.Err()
}

// checkCertManagerCRDs reports an error unless the API server serves
// cert-manager.io/v1's Certificates, CertificateRequests, Issuers and
// ClusterIssuers.
func checkCertManagerCRDs(cfg *rest.Config) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("cert-manager: discovery client: %w", err)
	}
	gv := cmapi.SchemeGroupVersion.String()
	list, err := dc.ServerResourcesForGroupVersion(gv)
	if err != nil {
		return fmt.Errorf("cert-manager: %s is not served, are its CRDs installed (testenv.Options.CertManager)? %w", gv, err)
	}
	served := map[string]bool{}
	for _, r := range list.APIResources {
		served[r.Name] = true
	}
	for _, r := range []string{"certificates", "certificaterequests", "issuers", "clusterissuers"} {
		if !served[r] {
			return fmt.Errorf("cert-manager: %s %s is not served, are its CRDs installed (testenv.Options.CertManager)?", gv, r)
		}
	}
	return nil
}

// writeRESTKubeconfig writes cfg as a kubeconfig file, which is what
// cert-manager's controller context is built from.
func writeRESTKubeconfig(cfg *rest.Config) (string, error) {
	if cfg == nil || cfg.Host == "" {
		return "", errors.New("cert-manager: no API server in the rest config")
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthority:     cfg.CAFile,
		CertificateAuthorityData: cfg.CAData,
		InsecureSkipTLSVerify:    cfg.Insecure,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{
		ClientCertificate:     cfg.CertFile,
		ClientCertificateData: cfg.CertData,
		ClientKey:             cfg.KeyFile,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
		TokenFile:             cfg.BearerTokenFile,
		Username:              cfg.Username,
		Password:              cfg.Password,
		Impersonate:           cfg.Impersonate.UserName,
		ImpersonateUID:        cfg.Impersonate.UID,
		ImpersonateGroups:     cfg.Impersonate.Groups,
		ImpersonateUserExtra:  cfg.Impersonate.Extra,
	}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return "", fmt.Errorf("cert-manager kubeconfig: %w", err)
	}
	f, err := os.CreateTemp("", "wsgate-cert-manager-kubeconfig-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
