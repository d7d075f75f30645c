// Package e2e runs wsgate end to end: a real kube-apiserver and etcd, the
// controllers and the proxy wired as cmd/wsgate wires them (or the built
// binary itself), echo servers standing in for pods on loopback addresses,
// and real websocket clients.
//
// Network: loopback only. Pods are echo servers on 127.0.3.x (and
// 127.0.4.x for the TLS tests, 127.0.5.200-249 for the tenant-isolation
// tests), addresses no other package uses; the in-process gateway's
// dialer refuses anything that is not loopback.
//
// The control plane has cert-manager's CRDs; the TLS tests start
// cert-manager's controllers and the garbage collector once for the
// package (startCertManager).
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
)

var env *testenv.Env

// stopPackage stops what the tests started once for the whole package
// (cert-manager's controllers, see startCertManager); TestMain calls it
// before the control plane stops, so that it does not log the API
// server's disappearance.
var stopPackage context.CancelFunc = func() {}

// wsgateBin is the wsgate binary of the tests that run it, built on first
// use.
var wsgateBin harness.Binary

func TestMain(m *testing.M) {
	// One logger for the whole process (controller-runtime keeps the first
	// one): it writes into logs, which a failing test prints.
	ctrl.SetLogger(logs.Logger(1))
	code := testenv.Run(m, &env, testenv.Options{CertManager: true}, func() { stopPackage() })
	wsgateBin.Remove()
	os.Exit(code)
}

// Bounds of every wait in this package.
const (
	waitTimeout = 10 * time.Second
	pollEvery   = harness.PollEvery
	// revokeWithin is how soon after the API write a revoked tunnel must
	// get its Close frame.
	revokeWithin = time.Second
)

// host is the Host header of every request to the gateway.
const host = "ws.example.com"

// logs collects the log lines of the in-process gateways' controllers and
// proxies; a test that fails prints the lines written while it ran.
var logs harness.LogBuffer

// ---------------------------------------------------------------------------
// Pods: echo servers on loopback, and the Pod objects that describe them

// podSpec describes a Pod object for an echo server.
type podSpec struct {
	name   string
	ip     string
	labels map[string]string
	// port, when set, is declared as the container port named "ws".
	port int32
}

// createPod creates a Ready pod with the address ip in its status; it is
// deleted when the test ends.
func createPod(t *testing.T, ns string, p podSpec) *corev1.Pod {
	t.Helper()
	spec := testenv.Pod{Name: p.name, Labels: p.labels, IPs: []string{p.ip}, Ready: true}
	if p.port != 0 {
		spec.Ports = map[string]int32{"ws": p.port}
	}
	pod := env.CreatePod(t, ns, spec)
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, pod) })
	return pod
}

// deletePod deletes a pod (at once: it is bound to no node).
func deletePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("delete pod %s: %v", pod.Name, err)
	}
}

// relabelPod replaces a pod's labels.
func relabelPod(t *testing.T, pod *corev1.Pod, labels map[string]string) {
	t.Helper()
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Labels = labels
	if err := env.Client.Patch(context.Background(), pod, patch); err != nil {
		t.Fatalf("relabel pod %s: %v", pod.Name, err)
	}
}

// makeUnready sets the pod's Ready condition to False, keeping its IP.
func makeUnready(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	env.SetPodStatus(t, pod, []string{pod.Status.PodIP}, false)
}

// ---------------------------------------------------------------------------
// Routes

// routeSpec describes a WsRoute on host.
type routeSpec struct {
	name        string
	prefix      string
	app         string // selects pods labelled app=<app>
	port        intstr.IntOrString
	backendPath string
	revoke      wsgatev1alpha1.RevokePolicy
}

// createRoute creates a WsRoute; it is deleted when the test ends.
func createRoute(t *testing.T, ns string, r routeSpec) *wsgatev1alpha1.WsRoute {
	t.Helper()
	obj := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: r.name},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:    []wsgatev1alpha1.Hostname{host},
			PathPrefix:   r.prefix,
			Selector:     metav1.LabelSelector{MatchLabels: map[string]string{"app": r.app}},
			Port:         r.port,
			BackendPath:  r.backendPath,
			RevokePolicy: r.revoke,
		},
	}
	createRouteObject(t, obj)
	return obj
}

// createRouteObject creates the WsRoute; it is deleted when the test
// ends.
func createRouteObject(t *testing.T, obj *wsgatev1alpha1.WsRoute) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create WsRoute %s/%s: %v", obj.Namespace, obj.Name, err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, obj) })
}

// deleteRoute deletes a WsRoute.
func deleteRoute(t *testing.T, r *wsgatev1alpha1.WsRoute) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), r); err != nil {
		t.Fatalf("delete WsRoute %s/%s: %v", r.Namespace, r.Name, err)
	}
}

// waitRouteServes waits until the route's status says Ready=True with
// exactly the named pods allowlisted, and returns it.
func waitRouteServes(t *testing.T, ns, name string, pods ...string) *wsgatev1alpha1.WsRoute {
	t.Helper()
	var r wsgatev1alpha1.WsRoute
	harness.Eventually(t, waitTimeout, "route "+ns+"/"+name+" becomes Ready", func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		if r.Status.ObservedGeneration != r.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", r.Status.ObservedGeneration, r.Generation)
		}
		if got := harness.Condition(&r, wsgatev1alpha1.ConditionReady); got != "True/"+wsgatev1alpha1.ReasonReady {
			return fmt.Errorf("Ready condition is %q", got)
		}
		var names []string
		for _, p := range r.Status.Endpoints.Pods {
			names = append(names, p.Name)
		}
		if int(r.Status.Endpoints.Count) != len(pods) || strings.Join(names, ",") != strings.Join(pods, ",") {
			return fmt.Errorf("endpoints: count %d, pods %v; want %v", r.Status.Endpoints.Count, names, pods)
		}
		return nil
	})
	return &r
}

// ---------------------------------------------------------------------------
// The gateway, in process

// gateway is one replica wired as cmd/wsgate wires it: a manager with the
// pod cache transform, the TableBuilder publishing tables, the
// RouteReconciler writing status (leader election off), and the proxy
// serving a loopback listener from the TableBuilder's Publisher (and, with
// gatewayConfig.tls, a TLS listener as well).
type gateway struct {
	wsClient
	// tlsAddr is the TLS listener's address ("" without one).
	tlsAddr string
	tables  *routing.Publisher
	server  *proxy.Server
	// dials counts the proxy's connection attempts to pods.
	dials atomic.Int64
}

// gatewayConfig is what differs between the gateways of the tests; the
// zero value is a gateway without TLS or cert-manager.
type gatewayConfig struct {
	// certManager wires the gateway as cmd/wsgate does when the cluster
	// serves cert-manager's Certificate API (it checks that it does):
	// the cache holds wsgate's Certificates and routes own them.
	certManager bool
	// defaultCertificate is --default-certificate.
	defaultCertificate types.NamespacedName
	// tls adds a TLS listener on 127.0.0.1 (--tls-listen-address), with
	// the configuration cmd/wsgate uses (no --tls-cert-file).
	tls bool
	// ownGrants: the test's own WsGrants decide what each namespace may
	// claim. The grant-everything WsGrant that the other tests share is
	// removed while the test runs (see withoutGrantEverything).
	ownGrants bool
	// defaultHost is --default-host.
	defaultHost string
	// maxTunnels is --max-tunnels (0: the default), and
	// maxTunnelsPerNamespace the share of it one namespace's routes may
	// hold (0: no cap).
	maxTunnels, maxTunnelsPerNamespace int
}

// startGateway starts a gateway that runs until the test ends.
func startGateway(t *testing.T) *gateway {
	t.Helper()
	return startGatewayWith(t, gatewayConfig{})
}

// startGatewayWith starts a gateway configured by cfg that runs until the
// test ends.
func startGatewayWith(t *testing.T, cfg gatewayConfig) *gateway {
	t.Helper()
	// These suites are about other rules than WsGrants, which tablebuild,
	// controllers and the tenant-isolation suite cover.
	if cfg.ownGrants {
		withoutGrantEverything(t)
	} else {
		env.GrantEverything(t)
	}
	logs.PrintOnFailure(t)
	log := logs.Logger(1)
	if cfg.certManager {
		installed, err := controllers.CertManagerInstalled(env.Config)
		if err != nil || !installed {
			t.Fatalf("cert-manager's Certificate API: installed %v, %v", installed, err)
		}
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(cfg.certManager),
		// Every test starts its own manager with the same controller name.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	g := &gateway{tables: routing.NewPublisher()}
	tb := &controllers.TableBuilder{Cache: mgr.GetCache(), Publisher: g.tables, DefaultHost: cfg.defaultHost, DefaultCertificate: cfg.defaultCertificate, Log: log.WithName("table")}
	if err := mgr.Add(tb); err != nil {
		t.Fatal(err)
	}
	if err := (&controllers.RouteReconciler{
		Client: mgr.GetClient(), Builds: tb, Recorder: mgr.GetEventRecorder("wsgate"), CertManager: cfg.certManager,
	}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	g.server = proxy.New(g.tables, proxy.Options{
		Log: log.WithName("proxy"),
		// Loopback only, counted.
		Dial:                   harness.LoopbackDial(&g.dials),
		MaxTunnels:             cfg.maxTunnels,
		MaxTunnelsPerNamespace: cfg.maxTunnelsPerNamespace,
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.wsClient = wsClient{addr: l.Addr().String()}
	listeners := []proxy.Listener{{Listener: l}}
	if cfg.tls {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g.tlsAddr = tl.Addr().String()
		listeners = append(listeners, proxy.Listener{Listener: tl, TLS: g.server.TLSConfig(nil)})
	}
	if err := mgr.Add(&proxy.Runnable{Server: g.server, Listeners: listeners, Grace: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway stopped with: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("gateway did not stop within 30s")
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

// ---------------------------------------------------------------------------
// Websocket clients

// wsClient opens websockets through a gateway listening on addr.
type wsClient struct{ addr string }

// handshake opens a websocket to path on host, and returns the gateway's
// answer: its status (0 when none came) and headers.
func (c wsClient) handshake(ctx context.Context, path string, opts *websocket.DialOptions) (*websocket.Conn, int, http.Header, error) {
	o := websocket.DialOptions{}
	if opts != nil {
		o = *opts
	}
	o.Host = host
	return harness.Dial(ctx, "ws://"+c.addr+path, &o)
}

// open opens a websocket to path, closed when the test ends, and returns
// it with the headers of the gateway's 101 answer; it fails the test if
// the handshake fails.
func (c wsClient) open(t *testing.T, path string, opts *websocket.DialOptions) (*websocket.Conn, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, status, header, err := c.handshake(ctx, path, opts)
	if err != nil {
		t.Fatalf("handshake for %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn, header
}

// status returns the status of a handshake for path: 101 for one that
// opened (it is closed again), the gateway's answer otherwise.
func (c wsClient) status(t *testing.T, path string) int {
	t.Helper()
	return c.statusWith(t, path, nil)
}

// statusWith is status with extra request headers.
func (c wsClient) statusWith(t *testing.T, path string, header http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, status, _, err := c.handshake(ctx, path, &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		return http.StatusSwitchingProtocols
	}
	if status == 0 {
		t.Fatalf("handshake for %s got no answer: %v", path, err)
	}
	return status
}

// waitStatus waits until a handshake for path gets want.
func (c wsClient) waitStatus(t *testing.T, path string, want int) {
	t.Helper()
	harness.Eventually(t, waitTimeout, fmt.Sprintf("handshake for %s answers %d", path, want), func() error {
		if got := c.status(t, path); got != want {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
}

// echo sends msg and expects it back unchanged.
func echo(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, msg []byte) error {
	if err := c.Write(ctx, typ, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	gotTyp, got, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if gotTyp != typ || !bytes.Equal(got, msg) {
		return fmt.Errorf("echo: got %v of %d bytes %q, want %v of %d bytes %q", gotTyp, len(got), truncate(got), typ, len(msg), truncate(msg))
	}
	return nil
}

// mustEcho is echo that fails the test.
func mustEcho(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := echo(ctx, c, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// watchClose starts reading each connection in the background (they must
// carry no traffic of the test's own from now on) and returns a function
// that waits for all of them to be closed by the gateway.
func watchClose(conns ...*websocket.Conn) func(t *testing.T) []harness.Closed {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	out := make([]harness.Closed, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = harness.AwaitClose(ctx, c)
		}()
	}
	return func(t *testing.T) []harness.Closed {
		t.Helper()
		wg.Wait()
		cancel()
		return out
	}
}

// chatter exchanges messages on c without pause until stopped.
type chatter struct {
	exchanged atomic.Int64
	stop      chan struct{}
	done      chan error
}

// startChatter keeps c busy with echoes in the background.
func startChatter(c *websocket.Conn) *chatter {
	ch := &chatter{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
		defer cancel()
		for i := 0; ; i++ {
			select {
			case <-ch.stop:
				ch.done <- nil
				return
			default:
			}
			if err := echo(ctx, c, websocket.MessageText, []byte(fmt.Sprintf("message %d", i))); err != nil {
				ch.done <- fmt.Errorf("after %d messages: %w", i, err)
				return
			}
			ch.exchanged.Add(1)
		}
	}()
	return ch
}

// finish stops the chatter and returns its first error.
func (ch *chatter) finish() error {
	close(ch.stop)
	select {
	case err := <-ch.done:
		return err
	case <-time.After(waitTimeout):
		return errors.New("the exchange hung")
	}
}
