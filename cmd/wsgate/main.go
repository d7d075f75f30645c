// Command wsgate is the websocket gateway: a controller that builds an
// allowlist of pods from WsRoutes, and the proxy that serves it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/routing"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
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
		holdoff, maxHoldoff                 time.Duration
		showVersion                         bool
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address of the metrics endpoint, e.g. :8080; \"0\" turns it off.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&defaultHost, "default-host", "", "Host name for WsRoutes without spec.hostnames, e.g. ws.example.com; empty makes such routes answer on every host no other route names.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader among replicas to write route status and Events; every replica serves traffic either way.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the pod's namespace).")
	flag.DurationVar(&holdoff, "rebuild-holdoff", controllers.DefaultHoldoff, "Quiet time after a cluster change before the routing table is rebuilt.")
	flag.DurationVar(&maxHoldoff, "rebuild-max-holdoff", controllers.DefaultMaxHoldoff, "Longest a cluster change waits for the routing table rebuild under a steady stream of changes.")
	flag.BoolVar(&showVersion, "version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: wsgate [flags]\n\nwsgate watches WsRoutes and Pods and allowlists the selected pods behind its websocket gateway.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if showVersion {
		fmt.Println(version)
		return nil
	}
	if maxHoldoff < holdoff {
		return fmt.Errorf("--rebuild-max-holdoff (%s) must not be shorter than --rebuild-holdoff (%s)", maxHoldoff, holdoff)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("wsgate")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(wsgatev1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "wsgate.wsgate.io",
		LeaderElectionNamespace: leaderElectionNamespace,
		// Replicas give up leadership on shutdown so the next one takes
		// over status writes at once.
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}: {Transform: controllers.TrimPod},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	tables := routing.NewPublisher()
	tb := &controllers.TableBuilder{
		Cache:       mgr.GetCache(),
		Publisher:   tables,
		DefaultHost: defaultHost,
		Holdoff:     holdoff,
		MaxHoldoff:  maxHoldoff,
		Log:         log.WithName("table"),
	}
	if err := mgr.Add(tb); err != nil {
		return fmt.Errorf("add table builder: %w", err)
	}
	if err := (&controllers.RouteReconciler{
		Client:   mgr.GetClient(),
		Builds:   tb,
		Recorder: mgr.GetEventRecorder("wsgate"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up WsRoute controller: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("routing-table", func(*http.Request) error {
		if !tables.Ready() {
			return errors.New("no routing table built yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}

	log.Info("starting", "version", version, "defaultHost", defaultHost, "leaderElection", leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
