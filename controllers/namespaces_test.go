package controllers_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/routing"
)

// startTableBuilder runs a manager whose cache watches only namespaces,
// as cmd/wsgate's --watch-namespaces does, with a table builder and no
// status reconciler, until the test ends.
func startTableBuilder(t *testing.T, namespaces ...string) *routing.Publisher {
	t.Helper()
	env.GrantEverything(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(false, namespaces...),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	tables := routing.NewPublisher()
	if err := mgr.Add(&controllers.TableBuilder{Cache: mgr.GetCache(), Publisher: tables, Log: testr.New(t)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	eventually(t, 30*time.Second, func() error {
		if !tables.Ready() {
			return errors.New("no table published yet")
		}
		return nil
	})
	return tables
}

func TestWatchedNamespacesLimitThePodsAndRoutes(t *testing.T) {
	nsA, nsB, nsC := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	echo := map[string]string{"app": "echo"}
	// Different names, so that the routes do not claim the same prefix.
	create(t, route(nsA, "a", "echo"))
	create(t, route(nsB, "b", "echo"))
	create(t, route(nsC, "c", "echo"))
	env.CreatePod(t, nsA, testenv.Pod{Name: "a", Labels: echo, IPs: []string{"127.0.0.31"}, Ready: true})
	env.CreatePod(t, nsB, testenv.Pod{Name: "b", Labels: echo, IPs: []string{"127.0.0.32"}, Ready: true})
	g := &gateway{tables: startTableBuilder(t, nsA, nsC)}

	// The first table already holds the pods that existed at start.
	if got := g.allowlisted(nsA, "a"); !slices.Equal(got, []string{"127.0.0.31:8080"}) {
		t.Errorf("the first table allowlists %v for %s, want the pod that existed at start", got, nsA)
	}
	c := env.CreatePod(t, nsC, testenv.Pod{Name: "c", Labels: echo, IPs: []string{"127.0.0.33"}, Ready: true})
	g.waitAllowlist(t, nsC, "c", "127.0.0.33:8080")
	env.SetPodStatus(t, c, []string{"127.0.0.33"}, false)
	g.waitAllowlist(t, nsC, "c")
	if got := g.allowlisted(nsB, "b"); got != nil {
		t.Errorf("a route of the unwatched namespace %s is in the table with %v", nsB, got)
	}
}
