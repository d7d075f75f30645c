package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/routing"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// gateway is one running replica's control plane: manager, table builder
// and status reconciler.
type gateway struct {
	tables  *routing.Publisher
	builder *controllers.TableBuilder
	// stop stops the manager (also done when the test ends).
	stop func()
	// leader campaigns for the Lease (nil: leader election off).
	leader *controllers.LeaderElection
	// elected is closed when this replica first becomes the leader.
	elected <-chan struct{}
	// exited is closed when the manager has stopped.
	exited <-chan struct{}
}

// startGateway runs a manager like cmd/wsgate does until the test ends.
func startGateway(t testing.TB, defaultHost string) *gateway {
	t.Helper()
	return startReplica(t, defaultHost, replicaOptions{})
}

// replicaOptions are what startReplica adds to startGateway.
type replicaOptions struct {
	// leader runs leader election as cmd/wsgate's --leader-elect does
	// (nil: off).
	leader *controllers.LeaderElectionOptions
	// config reaches the API server (nil: env.Config).
	config *rest.Config
}

// startReplica is startGateway with options.
func startReplica(t testing.TB, defaultHost string, o replicaOptions) *gateway {
	t.Helper()
	// The manager's own goroutines (the Event broadcaster) may log after
	// the test ends, so they do not log through t.
	ctrl.SetLogger(logr.Discard())
	cfg := o.config
	if cfg == nil {
		cfg = env.Config
	}
	cacheOpts := controllers.CacheOptions(false)
	cacheOpts.NewInformer = controllers.NewInformer
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		// Each test starts its own manager with the same controller name.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	env.GrantEverything(t)
	g := &gateway{tables: routing.NewPublisher()}
	g.builder = &controllers.TableBuilder{Cache: mgr.GetCache(), Publisher: g.tables, DefaultHost: defaultHost, Log: testr.NewWithInterface(t, testr.Options{})}
	if g.builder.KeySecrets, err = controllers.NewKeySecretCache(mgr); err != nil {
		t.Fatal(err)
	}
	saKeys, err := controllers.ServiceAccountFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.builder.Keyring = auth.NewKeyring(auth.KeyringOptions{ServiceAccount: saKeys, OnChange: g.builder.KeysChanged})
	if err := mgr.Add(g.builder); err != nil {
		t.Fatal(err)
	}
	elected := make(chan struct{})
	if o.leader != nil {
		if g.leader, err = controllers.NewLeaderElection(cfg, mgr, *o.leader); err != nil {
			t.Fatalf("leader election: %v", err)
		}
		var once sync.Once
		g.leader.OnElected(func() { once.Do(func() { close(elected) }) })
		if err := mgr.Add(g.leader); err != nil {
			t.Fatal(err)
		}
	} else {
		close(elected)
	}
	g.elected = elected
	if err := (&controllers.RouteReconciler{Client: mgr.GetClient(), Builds: g.builder, Recorder: mgr.GetEventRecorder("wsgate"), Leader: g.leader}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- mgr.Start(ctx)
		close(exited)
	}()
	g.exited = exited
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(g.stop)
	eventually(t, 30*time.Second, func() error {
		if !g.tables.Ready() {
			return errors.New("no table published yet")
		}
		return nil
	})
	return g
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	harness.Eventually(t, timeout, "waiting", f)
}

// route returns a WsRoute on host <ns>.example.com (a name belongs to one
// namespace) selecting app=<app> on a numbered port.
func route(ns, name, app string, mutate ...func(*wsgatev1alpha1.WsRoute)) *wsgatev1alpha1.WsRoute {
	r := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:  []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname(ns + ".example.com")},
			PathPrefix: "/" + name,
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Port:       intstr.FromInt32(8080),
		},
	}
	for _, m := range mutate {
		m(r)
	}
	return r
}

func create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// allowlisted returns the route's backends in the current table as
// sorted "ip:port" strings, or nil when the route is not in the table.
func (g *gateway) allowlisted(ns, name string) []string {
	r, ok := g.tables.Load().Route(routing.RouteKey{Namespace: ns, Name: name})
	if !ok {
		return nil
	}
	out := []string{}
	for _, b := range r.Backends {
		out = append(out, b.Addr.String())
	}
	sort.Strings(out)
	return out
}

// waitAllowlist waits until the route is in the table and allowlists
// exactly want.
func (g *gateway) waitAllowlist(t testing.TB, ns, name string, want ...string) {
	t.Helper()
	sort.Strings(want)
	eventually(t, 10*time.Second, func() error {
		got := g.allowlisted(ns, name)
		if got == nil {
			return fmt.Errorf("route %s/%s is not in the table", ns, name)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("route %s/%s allowlists %v, want %v", ns, name, got, want)
		}
		return nil
	})
}

// waitRouteGone waits until the route is not in the table.
func (g *gateway) waitRouteGone(t testing.TB, ns, name string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if got := g.allowlisted(ns, name); got != nil {
			return fmt.Errorf("route %s/%s is still in the table with %v", ns, name, got)
		}
		return nil
	})
}

// waitStatus waits until the route's status satisfies check.
func waitStatus(t testing.TB, ns, name string, check func(*wsgatev1alpha1.WsRoute) error) *wsgatev1alpha1.WsRoute {
	t.Helper()
	var r wsgatev1alpha1.WsRoute
	eventually(t, 10*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		return check(&r)
	})
	return &r
}

// condition returns "Status/Reason" of a condition, or "" if absent.
func condition(r *wsgatev1alpha1.WsRoute, typ string) string {
	for _, c := range r.Status.Conditions {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return ""
}

// lookup resolves host+path through the current table as the proxy will.
func (g *gateway) lookup(host, path, ip string) bool {
	r, _, ok := g.tables.Load().Match(host, path)
	if !ok {
		return false
	}
	_, ok = r.Backend(netip.MustParseAddr(ip))
	return ok
}
