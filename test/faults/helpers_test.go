package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

// A name belongs to one namespace, so the routes of each namespace are
// on a host of their own, <namespace>.example.com, and every path starts
// with /<namespace>: a client takes the Host from the path (hostFor).

// nsHost is the host of namespace ns's routes.
func nsHost(ns string) string { return ns + ".example.com" }

// hostFor is the Host of a request for path: the host of the namespace
// that the path's first segment names.
func hostFor(path string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return nsHost(first)
}

// Bounds of the waits in this package.
const (
	waitTimeout = 15 * time.Second
	pollEvery   = harness.PollEvery
	// revokeWithin is how soon after the API write a revoked tunnel must
	// get its Close frame.
	revokeWithin = time.Second
)

// logs collects the log lines of the in-process gateways' controllers and
// proxies (bounded: the churn tests log a lot); a test that fails prints
// the lines written while it ran.
var logs = harness.LogBuffer{Limit: 64 << 20}

// ---------------------------------------------------------------------------
// Echo pods and Pod objects

// freePort returns a port that was free on all of ips a moment ago.
func freePort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			_ = l2.Close()
		}
		_ = l.Close()
		if ok {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

// pod describes a Pod object. The API server runs no kubelet: the test
// writes the pod's IP and readiness into its status.
type pod struct {
	name   string
	ip     string
	labels map[string]string
	// port, when set, is declared as the container port named "ws".
	port  int32
	ready bool
}

// createPodE creates a pod and writes its status; it returns the object.
func createPodE(ctx context.Context, ns string, p pod) (*corev1.Pod, error) {
	c := corev1.Container{Name: "app", Image: "registry.invalid/echo:1"}
	if p.port != 0 {
		c.Ports = []corev1.ContainerPort{{Name: "ws", ContainerPort: p.port, Protocol: corev1.ProtocolTCP}}
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns, Labels: p.labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
	}
	if err := env.Client.Create(ctx, obj); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, p.name, err)
	}
	if err := setPodStatusE(ctx, obj, p.ip, p.ready); err != nil {
		return nil, err
	}
	return obj, nil
}

// setPodStatusE writes a pod's IP and Ready condition.
func setPodStatusE(ctx context.Context, obj *corev1.Pod, ip string, ready bool) error {
	obj.Status.Phase = corev1.PodRunning
	obj.Status.PodIP, obj.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	obj.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("update status of pod %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	return nil
}

// relabelE replaces an object's labels with a merge patch.
func relabelE(ctx context.Context, obj client.Object, labels map[string]string) error {
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	obj.SetLabels(labels)
	if err := env.Client.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("relabel %s: %w", obj.GetName(), err)
	}
	return nil
}

// createPod creates a Ready pod that is deleted when the test ends.
func createPod(t *testing.T, ns string, p pod) *corev1.Pod {
	t.Helper()
	p.ready = true
	obj, err := createPodE(context.Background(), ns, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, obj) })
	return obj
}

// mustDelete deletes an object (a pod at once: it is bound to no node).
func mustDelete(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), obj); err != nil {
		t.Fatalf("delete %T %s: %v", obj, obj.GetName(), err)
	}
}

// ---------------------------------------------------------------------------
// Routes

// route describes a WsRoute on host.
type route struct {
	name   string
	prefix string
	hosts  []wsgatev1alpha1.Hostname // default: the namespace's host (nsHost)
	app    string                    // selects pods labelled app=<app>
	port   intstr.IntOrString
	revoke wsgatev1alpha1.RevokePolicy
	// origins is spec.allowedOrigins.
	origins  []wsgatev1alpha1.Origin
	timeouts *wsgatev1alpha1.Timeouts
	// perPod is spec.maxConnectionsPerPod (0: unset).
	perPod int32
	// secret is spec.tls.secretName ("": no tls).
	secret string
}

func (r route) object(ns string) *wsgatev1alpha1.WsRoute {
	hosts := r.hosts
	if hosts == nil {
		hosts = []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname(nsHost(ns))}
	}
	obj := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: r.name},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:      hosts,
			PathPrefix:     r.prefix,
			Selector:       metav1.LabelSelector{MatchLabels: map[string]string{"app": r.app}},
			Port:           r.port,
			RevokePolicy:   r.revoke,
			AllowedOrigins: r.origins,
			Timeouts:       r.timeouts,
		},
	}
	if r.perPod > 0 {
		obj.Spec.MaxConnectionsPerPod = ptr.To(r.perPod)
	}
	if r.secret != "" {
		obj.Spec.TLS = &wsgatev1alpha1.RouteTLS{SecretName: r.secret}
	}
	return obj
}

// createRoute creates a WsRoute that is deleted when the test ends.
func createRoute(t *testing.T, ns string, r route) *wsgatev1alpha1.WsRoute {
	t.Helper()
	obj := r.object(ns)
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create WsRoute %s/%s: %v", ns, r.name, err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, obj) })
	return obj
}

// patchRoute applies edit to a route with a merge patch (no conflict with
// the controller's status writes).
func patchRoute(t *testing.T, r *wsgatev1alpha1.WsRoute, edit func(*wsgatev1alpha1.WsRoute)) {
	t.Helper()
	patch := client.MergeFrom(r.DeepCopy())
	edit(r)
	if err := env.Client.Patch(context.Background(), r, patch); err != nil {
		t.Fatalf("patch WsRoute %s/%s: %v", r.Namespace, r.Name, err)
	}
}

// getRoute reads a route.
func getRoute(ns, name string) (*wsgatev1alpha1.WsRoute, error) {
	var r wsgatev1alpha1.WsRoute
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r)
	return &r, err
}

// messageOf returns the message of a route's condition.
func messageOf(r *wsgatev1alpha1.WsRoute, typ string) string {
	for _, c := range r.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// waitRoute waits until the route's status, for its current generation,
// passes check.
func waitRoute(t *testing.T, ns, name string, check func(*wsgatev1alpha1.WsRoute) error) *wsgatev1alpha1.WsRoute {
	t.Helper()
	r, err := pollRoute(ns, name, waitTimeout, check)
	if err != nil {
		t.Fatalf("route %s/%s: still failing after %s: %v", ns, name, waitTimeout, err)
	}
	return r
}

// pollRoute is waitRoute returning the last error instead of failing.
func pollRoute(ns, name string, timeout time.Duration, check func(*wsgatev1alpha1.WsRoute) error) (*wsgatev1alpha1.WsRoute, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := getRoute(ns, name)
		if err == nil {
			if r.Status.ObservedGeneration != r.Generation {
				err = fmt.Errorf("observedGeneration %d, generation %d", r.Status.ObservedGeneration, r.Generation)
			} else {
				err = check(r)
			}
		}
		if err == nil || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(pollEvery)
	}
}

// readyWith checks Ready=True with n allowlisted pods.
func readyWith(n int) func(*wsgatev1alpha1.WsRoute) error {
	return func(r *wsgatev1alpha1.WsRoute) error {
		if got := harness.Condition(r, wsgatev1alpha1.ConditionReady); got != "True/"+wsgatev1alpha1.ReasonReady {
			return fmt.Errorf("Ready is %q", got)
		}
		if int(r.Status.Endpoints.Count) != n {
			return fmt.Errorf("%d pods allowlisted, want %d", r.Status.Endpoints.Count, n)
		}
		return nil
	}
}

// waitEvent waits for an Event about the route with this type and reason.
func waitEvent(t *testing.T, ns, name, typ, reason string) eventsv1.Event {
	t.Helper()
	return harness.WaitEvent(t, env.Client, waitTimeout, ns, name, typ, reason)
}

// podPath is harness.PodPath, the gateway path of a pod under a route
// prefix.
func podPath(prefix, ip, rest string) string {
	return harness.PodPath(prefix, ip, rest)
}

// ---------------------------------------------------------------------------
// The gateway, in process

// gateway is one replica wired as cmd/wsgate wires it: a manager with
// controllers.CacheOptions, the TableBuilder publishing tables (with its
// metrics), the RouteReconciler writing status and Events, the proxy with
// its metrics serving a loopback listener through proxy.Runnable, and
// cmd/wsgate's health and readiness checks on a loopback probe port.
// What differs: leader election is off (as without --leader-elect), the
// cluster has no cert-manager, there is no TLS listener or admin
// endpoint, metrics go to a registry of the gateway's own (not served),
// and the dialer refuses anything but loopback.
type gateway struct {
	wsClient
	probeAddr string
	tables    *routing.Publisher
	builder   *controllers.TableBuilder
	server    *proxy.Server
	// dials counts the proxy's connection attempts to pods.
	dials atomic.Int64
	// stop stops the manager (graceful proxy shutdown) and returns its
	// error; it also runs when the test ends.
	stop func() error
}

// gatewayConfig is what differs between the tests' gateways.
type gatewayConfig struct {
	// proxy options; Log, AccessLog, Metrics and Dial are set here.
	proxy proxy.Options
	// drain and grace are --drain-timeout and --shutdown-grace-period
	// (defaults 1s and 5s).
	drain, grace time.Duration
	// noStatus leaves the RouteReconciler out: route status and Events
	// come from other replicas only.
	noStatus bool
}

// startGateway starts a gateway that runs until the test ends.
func startGateway(t *testing.T, cfg gatewayConfig) *gateway {
	t.Helper()
	// These suites are about other rules than WsGrants, which tablebuild,
	// controllers and the tenant-isolation suite cover.
	env.GrantEverything(t)
	logs.PrintOnFailure(t)
	log := ctrl.Log.WithName("wsgate")
	if cfg.grace == 0 {
		cfg.grace = 5 * time.Second
	}
	if cfg.drain == 0 {
		cfg.drain = time.Second
	}
	g := &gateway{tables: routing.NewPublisher(), probeAddr: harness.FreeAddr(t)}
	reg := prometheus.NewRegistry()
	cacheOpts := controllers.CacheOptions(false)
	cacheOpts.NewInformer = controllers.NewInformer
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                  env.Scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  g.probeAddr,
		GracefulShutdownTimeout: ptr.To(cfg.grace + 5*time.Second),
		Cache:                   cacheOpts,
		// Every test starts its own manager with the same controller name.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	g.builder = &controllers.TableBuilder{
		Cache: mgr.GetCache(), Publisher: g.tables,
		Log: log.WithName("table"), Metrics: controllers.NewTableMetrics(reg),
	}
	if err := mgr.Add(g.builder); err != nil {
		t.Fatal(err)
	}
	if !cfg.noStatus {
		if err := (&controllers.RouteReconciler{
			Client: mgr.GetClient(), Builds: g.builder, Recorder: mgr.GetEventRecorder("wsgate"),
		}).SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
	}
	opts := cfg.proxy
	opts.Log = log.WithName("proxy")
	opts.AccessLog = logr.Discard()
	opts.Metrics = proxy.NewMetrics(reg)
	// Loopback only, counted.
	opts.Dial = harness.LoopbackDial(&g.dials)
	g.server = proxy.New(g.tables, opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.wsClient = wsClient{addr: l.Addr().String()}
	if err := mgr.Add(&proxy.Runnable{Server: g.server, Listeners: []proxy.Listener{{Listener: l}}, Drain: cfg.drain, Grace: cfg.grace}); err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		t.Fatal(err)
	}
	// cmd/wsgate's readiness check, verbatim.
	if err := mgr.AddReadyzCheck("routing-table", func(*http.Request) error {
		if !g.tables.Ready() {
			return errors.New("no routing table built yet")
		}
		if g.server.Draining() {
			return errors.New("shutting down")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	var stopErr error
	g.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(cfg.grace + 30*time.Second):
				stopErr = errors.New("the gateway did not stop in time")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("gateway stopped with: %v", err)
		}
	})
	harness.Eventually(t, 30*time.Second, "the first routing table is published", func() error {
		if !g.tables.Ready() {
			return errors.New("no table yet")
		}
		return nil
	})
	return g
}

// waitServes waits until a handshake for path opens a tunnel.
func (c wsClient) waitServes(t *testing.T, path string) {
	t.Helper()
	c.waitStatus(t, path, http.StatusSwitchingProtocols)
}

// ---------------------------------------------------------------------------
// Websocket clients

// wsClient opens websockets through a gateway listening on addr.
type wsClient struct{ addr string }

// handshake opens a websocket to path on host with extra headers, and
// returns the gateway's answer: its status (0 when none came) and headers.
func (c wsClient) handshake(ctx context.Context, path string, header http.Header) (*websocket.Conn, int, http.Header, error) {
	return harness.Dial(ctx, "ws://"+c.addr+path, &websocket.DialOptions{Host: hostFor(path), HTTPHeader: header})
}

// open opens a websocket to path, closed when the test ends; it fails the
// test if the handshake fails.
func (c wsClient) open(t *testing.T, path string, header http.Header) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, status, _, err := c.handshake(ctx, path, header)
	if err != nil {
		t.Fatalf("handshake for %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn
}

// status returns the status of a handshake for path: 101 for one that
// opened (it is closed again), the gateway's answer otherwise, 0 for none.
func (c wsClient) status(path string, header http.Header) int {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, status, _, err := c.handshake(ctx, path, header)
	if err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		return http.StatusSwitchingProtocols
	}
	return status
}

// waitStatus waits until a handshake for path gets want.
func (c wsClient) waitStatus(t *testing.T, path string, want int) {
	t.Helper()
	harness.Eventually(t, waitTimeout, fmt.Sprintf("handshake for %s answers %d", path, want), func() error {
		if got := c.status(path, nil); got != want {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
}

// echo sends msg and expects it back unchanged.
func echo(ctx context.Context, c *websocket.Conn, msg string) error {
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// mustEcho is echo that fails the test.
func mustEcho(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := echo(ctx, c, msg); err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
}
