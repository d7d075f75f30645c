// Command wsgate is the websocket gateway: a controller that builds an
// allowlist of pods from WsRoutes, and the proxy that serves it, in one
// process.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "connect" {
		if err := connect(os.Args[2:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(os.Stderr, "wsgate connect: %v\n", err)
			}
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "wsgate: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr, probeAddr, defaultHost string
		leaderElect                         bool
		leaderElectionNamespace             string
		leaderElectionID                    string
		holdoff, maxHoldoff                 time.Duration
		showVersion                         bool
		secureMetrics                       bool
		adminAddr                           string
		debugAddresses                      bool

		listenAddr, tlsListenAddr, tlsCert, tlsKey string
		defaultCert, watchNamespaces               string
		tokenIssuerCAFile                          string
		tlsGroups, ticketKeysFile                  string
		drain, grace                               time.Duration
		namespaceShare                             int
		proxyOpts                                  proxy.Options
		edge                                       edgeFlags
		http2                                      bool
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address of the Prometheus metrics endpoint, e.g. :9090; \"0\" turns it off.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, for callers the API server authenticates and authorizes (RBAC on nonResourceURL /metrics); false serves plain HTTP, for local use.")
	flag.StringVar(&adminAddr, "admin-bind-address", "127.0.0.1:8082", "Address of the local admin endpoint (/debug/table); keep it off the Service. Empty turns it off.")
	flag.BoolVar(&debugAddresses, "debug-show-addresses", false, "Include pod addresses in /debug/table.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&defaultHost, "default-host", "", "Host name for WsRoutes without spec.hostnames, e.g. ws.example.com; empty makes such routes answer on every host no other route names.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader among replicas to write route status and Events; every replica serves traffic either way.")
	flag.StringVar(&leaderElectionID, "leader-election-id", "wsgate.wsgate.io", "Name of the leader-election Lease; give each installation in a namespace its own.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the pod's namespace).")
	flag.DurationVar(&holdoff, "rebuild-holdoff", controllers.DefaultHoldoff, "Quiet time after a cluster change before the routing table is rebuilt.")
	flag.DurationVar(&maxHoldoff, "rebuild-max-holdoff", controllers.DefaultMaxHoldoff, "Longest a cluster change waits for the routing table rebuild under a steady stream of changes.")
	flag.BoolVar(&showVersion, "version", false, "Print the version and exit.")

	flag.StringVar(&listenAddr, "listen-address", ":8080", "Address of the plain-HTTP websocket listener (ws://); empty turns it off.")
	flag.StringVar(&tlsListenAddr, "tls-listen-address", ":8443", "Address of the TLS websocket listener (wss://); empty turns it off. Certificates are chosen by SNI from the routes' Secrets.")
	flag.StringVar(&defaultCert, "default-certificate", "", "namespace/name of the TLS Secret that serves names no route's certificate covers (it needs the label "+wsgatev1alpha1.CertificateLabel+"=true).")
	flag.StringVar(&tlsCert, "tls-cert-file", "", "PEM certificate chain that serves names nothing else covers, when --default-certificate has none (for use without cert-manager).")
	flag.StringVar(&tlsKey, "tls-key-file", "", "PEM private key of --tls-cert-file.")
	flag.StringVar(&tlsGroups, "tls-key-exchange-groups", "", "Comma-separated TLS key-exchange groups the TLS listener accepts, in order of preference (X25519MLKEM768, X25519, CurveP256, CurveP384, CurveP521, SecP256r1MLKEM768, SecP384r1MLKEM1024). Empty: Go's default, the post-quantum hybrid X25519MLKEM768 first, as browsers offer it; X25519 alone costs less CPU per handshake and protects no recorded traffic from a future quantum computer.")
	flag.StringVar(&ticketKeysFile, "tls-session-ticket-keys-file", "", "File of TLS session ticket keys (one 32-byte key in base64 a line, the first sealing new tickets), reloaded every minute: mount it from one Secret in every replica so clients resume with any of them. Empty: each replica makes and rotates its own keys (resumption works with the replica that sealed the ticket).")
	flag.StringVar(&tokenIssuerCAFile, "token-issuer-ca-file", "", "PEM certificates trusted, beside the system roots, when fetching the keys of token issuers that WsGrants list (tokenIssuers), for issuers with a private CA.")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch for WsRoutes, Pods and Secrets; empty watches all.")
	flag.DurationVar(&proxyOpts.HandshakeTimeout, "handshake-timeout", proxy.Defaults.HandshakeTimeout, "Default bound on dialling a pod and its 101 answer (a route's timeouts.handshake overrides it).")
	flag.DurationVar(&proxyOpts.DialTimeout, "dial-timeout", proxy.Defaults.DialTimeout, "Bound on the TCP connect to a pod.")
	flag.DurationVar(&proxyOpts.IdleTimeout, "idle-timeout", proxy.Defaults.IdleTimeout, "Default idle timeout of tunnels (a route's timeouts.idle overrides it); negative turns it off.")
	flag.DurationVar(&proxyOpts.ReadHeaderTimeout, "read-header-timeout", proxy.Defaults.ReadHeaderTimeout, "Bound on the time a client takes to send its request head. On Linux, a connection that sends nothing is accepted about 1s after it is made (TCP_DEFER_ACCEPT), and timed from then.")
	flag.IntVar(&proxyOpts.MaxHeaderBytes, "max-header-bytes", proxy.Defaults.MaxHeaderBytes, "Largest request head accepted from a client (431 beyond), and largest answer head accepted from a pod.")
	flag.IntVar(&proxyOpts.MaxTunnels, "max-tunnels", proxy.Defaults.MaxTunnels, "Most open tunnels per gateway process; 503 with Retry-After beyond it. Each tunnel holds two file descriptors.")
	flag.IntVar(&namespaceShare, "namespace-tunnel-share", 50, "Percent (1-100) of --max-tunnels that the routes of one namespace may hold, tunnels and handshakes in progress together, rounded up; 503 with Retry-After beyond it. 100: no share of their own.")
	flag.DurationVar(&proxyOpts.RetryAfter, "retry-after", proxy.Defaults.RetryAfter, "Retry-After sent with 503 answers.")
	flag.DurationVar(&drain, "drain-timeout", 20*time.Second, "On SIGTERM, how long open tunnels may run on before they get a Close frame 1001.")
	flag.DurationVar(&grace, "shutdown-grace-period", 28*time.Second, "On SIGTERM, bound on the whole shutdown; keep it under the pod's terminationGracePeriodSeconds.")
	edge.bind(flag.CommandLine)
	flag.BoolVar(&http2, "http2", false, "Offer HTTP/2 (h2 in ALPN) on the TLS listener and accept websockets over it (RFC 8441 extended CONNECT): a page's websockets share one TLS connection. On Linux the gateway serves HTTP/2 itself, on its event loops; built for another system it needs GODEBUG=http2xconnect=1 in the environment at start. h2c stays refused.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: wsgate [flags]\n       wsgate connect [flags] <ws[s]://url>   (a websocket client: see wsgate connect --help)\n\n"+
			"wsgate watches WsRoutes and Pods and allowlists the selected pods behind its websocket gateway.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if showVersion {
		fmt.Println(version)
		return nil
	}
	if grace <= 0 || drain < 0 {
		return fmt.Errorf("--shutdown-grace-period must be positive and --drain-timeout not negative")
	}
	if (tlsCert == "") != (tlsKey == "") {
		return fmt.Errorf("--tls-cert-file and --tls-key-file go together")
	}
	if listenAddr == "" && tlsListenAddr == "" {
		return fmt.Errorf("no listener: set --listen-address or --tls-listen-address")
	}
	defaultCertKey, err := parseNamespacedName(defaultCert)
	if err != nil {
		return fmt.Errorf("--default-certificate: %w", err)
	}
	if defaultHost != "" {
		if errs := validation.IsDNS1123Subdomain(defaultHost); len(errs) > 0 {
			return fmt.Errorf("--default-host %q: %s", defaultHost, strings.Join(errs, "; "))
		}
	}
	if proxyOpts.MaxTunnels <= 0 {
		return fmt.Errorf("--max-tunnels must be positive")
	}
	if proxyOpts.MaxTunnelsPerNamespace, err = namespaceTunnelCap(proxyOpts.MaxTunnels, namespaceShare); err != nil {
		return err
	}
	if err := edge.apply(&proxyOpts); err != nil {
		return err
	}
	if http2 {
		switch {
		case tlsListenAddr == "":
			return fmt.Errorf("--http2 needs the TLS listener (--tls-listen-address): HTTP/2 is offered over TLS only")
		case !proxy.ExtendedConnect():
			return fmt.Errorf("--http2 needs GODEBUG=http2xconnect=1 in the environment when wsgate starts on this system (Go's HTTP/2 server serves HTTP/2 here, and reads it then to accept websockets over HTTP/2)")
		}
		proxyOpts.HTTP2 = true
	}
	if maxHoldoff < holdoff {
		return fmt.Errorf("--rebuild-max-holdoff (%s) must not be shorter than --rebuild-holdoff (%s)", maxHoldoff, holdoff)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("wsgate")
	if limit, ok := descriptorLimit(); ok {
		if advice := descriptorAdvice(limit, proxyOpts.MaxTunnels); advice != "" {
			log.Info(advice)
		}
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(wsgatev1alpha1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	certManager, err := controllers.CertManagerInstalled(cfg)
	if err != nil {
		return fmt.Errorf("look for cert-manager's Certificate API: %w", err)
	}
	if !certManager {
		log.Info("cert-manager's Certificate API is not installed: routes with tls.issuerRef will report CertManagerMissing; restart wsgate after installing cert-manager")
	}
	cacheOpts := controllers.CacheOptions(certManager, splitList(watchNamespaces)...)
	cacheOpts.NewInformer = controllers.NewInformer
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress: probeAddr,
		// No leader election here: a manager that loses its Lease stops,
		// and with it the data plane. controllers.LeaderElection gates
		// the leader work only.
		GracefulShutdownTimeout: ptr.To(grace + 5*time.Second),
		Cache:                   cacheOpts,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	var leader *controllers.LeaderElection
	if leaderElect {
		leader, err = controllers.NewLeaderElection(cfg, mgr, controllers.LeaderElectionOptions{
			Namespace: leaderElectionNamespace,
			Name:      leaderElectionID,
			Log:       log.WithName("leader"),
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		if err := mgr.Add(leader); err != nil {
			return fmt.Errorf("add leader election: %w", err)
		}
	}

	keySecrets, err := controllers.NewKeySecretCache(mgr, splitList(watchNamespaces)...)
	if err != nil {
		return err
	}
	issuerClient, err := issuerHTTPClient(tokenIssuerCAFile)
	if err != nil {
		return fmt.Errorf("--token-issuer-ca-file: %w", err)
	}
	saKeys, err := controllers.ServiceAccountFetcher(cfg)
	if err != nil {
		return fmt.Errorf("ServiceAccount issuer client: %w", err)
	}

	tables := routing.NewPublisher()
	tb := &controllers.TableBuilder{
		Cache:              mgr.GetCache(),
		KeySecrets:         keySecrets,
		Publisher:          tables,
		DefaultHost:        defaultHost,
		DefaultCertificate: defaultCertKey,
		Holdoff:            holdoff,
		MaxHoldoff:         maxHoldoff,
		Log:                log.WithName("table"),
		Metrics:            controllers.NewTableMetrics(ctrlmetrics.Registry),
	}
	tb.Keyring = auth.NewKeyring(auth.KeyringOptions{
		HTTPClient:     issuerClient,
		ServiceAccount: saKeys,
		Remote:         auth.RemoteOptions{Metrics: auth.NewMetrics(ctrlmetrics.Registry)},
		OnChange:       tb.KeysChanged,
	})
	if err := mgr.Add(tb); err != nil {
		return fmt.Errorf("add table builder: %w", err)
	}
	if err := (&controllers.RouteReconciler{
		Client:      mgr.GetClient(),
		Builds:      tb,
		Recorder:    mgr.GetEventRecorder("wsgate"),
		CertManager: certManager,
		Leader:      leader,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up WsRoute controller: %w", err)
	}

	proxyOpts.Log = log.WithName("proxy")
	proxyOpts.AccessLog = ctrl.Log.WithName("access")
	proxyOpts.Metrics = proxy.NewMetrics(ctrlmetrics.Registry)
	gw := proxy.New(tables, proxyOpts)
	var fallback *tls.Certificate
	if tlsCert != "" {
		c, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
		if err != nil {
			return fmt.Errorf("load --tls-cert-file: %w", err)
		}
		fallback = &c
	}
	groups, err := proxy.ParseGroups(tlsGroups)
	if err != nil {
		return fmt.Errorf("--tls-key-exchange-groups: %w", err)
	}
	if tlsListenAddr == "" && (tlsGroups != "" || ticketKeysFile != "") {
		return fmt.Errorf("--tls-key-exchange-groups and --tls-session-ticket-keys-file: %w", errNoTLSListener)
	}
	tlsConfig := gw.TLSConfigWith(proxy.TLSOptions{Fallback: fallback, Groups: groups})
	if ticketKeysFile != "" {
		tk := &ticketKeys{path: ticketKeysFile, cfg: tlsConfig, log: log.WithName("tls")}
		if err := tk.load(); err != nil {
			return fmt.Errorf("--tls-session-ticket-keys-file: %w", err)
		}
		if err := mgr.Add(tk); err != nil {
			return fmt.Errorf("add session ticket keys: %w", err)
		}
	}
	listeners, err := listen(listenAddr, tlsListenAddr, tlsConfig)
	if err != nil {
		return err
	}
	if err := mgr.Add(&proxy.Runnable{Server: gw, Listeners: listeners, Drain: drain, Grace: grace}); err != nil {
		return fmt.Errorf("add proxy: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("routing-table", func(*http.Request) error {
		if !tables.Ready() {
			return errors.New("no routing table built yet")
		}
		if gw.Draining() {
			return errors.New("shutting down")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}

	if adminAddr != "" {
		if err := mgr.Add(adminServer(adminAddr, tables, debugAddresses)); err != nil {
			return fmt.Errorf("add admin server: %w", err)
		}
	}
	for _, l := range listeners {
		log.Info("listening", "address", l.Addr().String(), "tls", l.TLS != nil)
	}
	log.Info("starting", "version", version, "defaultHost", defaultHost, "leaderElection", leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// listen opens the gateway's listeners: plain on listenAddr and TLS on
// tlsAddr, each unless empty.
func listen(listenAddr, tlsAddr string, tlsConfig *tls.Config) ([]proxy.Listener, error) {
	var out []proxy.Listener
	for _, l := range []struct {
		addr string
		tls  *tls.Config
	}{{listenAddr, nil}, {tlsAddr, tlsConfig}} {
		if l.addr == "" {
			continue
		}
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", l.addr, err)
		}
		out = append(out, proxy.Listener{Listener: nl, TLS: l.tls})
	}
	return out, nil
}

// parseNamespacedName parses "namespace/name"; "" is the zero value.
func parseNamespacedName(s string) (types.NamespacedName, error) {
	if s == "" {
		return types.NamespacedName{}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("%q is not namespace/name", s)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// splitList splits a comma-separated list, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
