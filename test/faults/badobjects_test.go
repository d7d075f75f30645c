package faults

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// TestWrongButValidRoutesExplainThemselvesAndDisturbNothing creates
// WsRoutes that pass schema validation but cannot work as meant: a
// selector that matches nothing, a named port the pods lack, a TLS Secret
// that does not exist, a host and prefix another route owns, a selector
// the controller cannot parse. Each shows a condition and a Warning Event
// that say what is wrong, while the tunnels of a good route on the same
// host keep exchanging messages and new handshakes to it succeed.
func TestWrongButValidRoutesExplainThemselvesAndDisturbNothing(t *testing.T) {
	g := startGateway(t, gatewayConfig{})
	ns := env.Namespace(t)
	prefix := "/" + ns
	port, _ := harness.EchoPods(t, "127.0.5.60", "127.0.5.61", "127.0.5.62")
	createPod(t, ns, pod{name: "good-0", ip: "127.0.5.60", port: port, labels: map[string]string{"app": "good"}})
	createPod(t, ns, pod{name: "good-1", ip: "127.0.5.61", port: port, labels: map[string]string{"app": "good"}})
	// Selected by the route that loses the conflict, and by the route
	// whose port the pods lack.
	createPod(t, ns, pod{name: "contender", ip: "127.0.5.62", port: port, labels: map[string]string{"app": "contender"}})
	createPod(t, ns, pod{name: "portless", ip: "127.0.5.63", labels: map[string]string{"app": "portless"}})
	// Selected by a route whose only pod is not Ready yet.
	starting, err := createPodE(t.Context(), ns, pod{name: "starting", ip: "127.0.5.64", port: port, labels: map[string]string{"app": "starting"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, starting) })
	createRoute(t, ns, route{name: "good", prefix: prefix + "/good", app: "good", port: intstr.FromString("ws")})
	waitRoute(t, ns, "good", readyWith(2))
	paths := []string{harness.PodPath(prefix+"/good", "127.0.5.60", "/"), harness.PodPath(prefix+"/good", "127.0.5.61", "/")}
	for _, p := range paths {
		g.waitServes(t, p)
	}
	// Make sure "good" is the older route of the conflict below.
	time.Sleep(1100 * time.Millisecond)
	tunnels := openPaced(t, g.wsClient, 0, paths, 50, nil, 100*time.Millisecond, 5*time.Minute)
	prober := startProber(g.wsClient, "", paths, 50*time.Millisecond)
	defer prober.stop()

	cases := []struct {
		name   string
		route  route
		mutate func(*wsgatev1alpha1.WsRoute)
		// condition "Type=Status/Reason", and what its message says.
		cond, says string
		// event is the Warning Event's reason.
		event string
		check func(t *testing.T, r *wsgatev1alpha1.WsRoute)
	}{
		{
			name:  "a selector that matches no pod is Ready=False NoEndpoints",
			route: route{name: "nothing", prefix: prefix + "/nothing", app: "nobody", port: intstr.FromString("ws")},
			cond:  wsgatev1alpha1.ConditionReady + "=False/" + wsgatev1alpha1.ReasonNoEndpoints, says: "No selected pod",
			event: wsgatev1alpha1.ReasonNoEndpoints,
		},
		{
			name:  "a named port the pods lack skips them as PortNotFound",
			route: route{name: "portless", prefix: prefix + "/portless", app: "portless", port: intstr.FromString("web")},
			cond:  wsgatev1alpha1.ConditionReady + "=False/" + wsgatev1alpha1.ReasonNoEndpoints, says: "PortNotFound=1",
			event: wsgatev1alpha1.ReasonNoEndpoints,
			check: func(t *testing.T, r *wsgatev1alpha1.WsRoute) {
				want := []wsgatev1alpha1.SkippedPods{{Reason: wsgatev1alpha1.SkippedPortNotFound, Count: 1}}
				if fmt.Sprint(r.Status.Endpoints.Skipped) != fmt.Sprint(want) {
					t.Errorf("status.endpoints.skipped %v, want %v", r.Status.Endpoints.Skipped, want)
				}
			},
		},
		{
			name:  "a route whose pods are not Ready yet is Ready=False NoEndpoints",
			route: route{name: "starting", prefix: prefix + "/starting", app: "starting", port: intstr.FromString("ws")},
			cond:  wsgatev1alpha1.ConditionReady + "=False/" + wsgatev1alpha1.ReasonNoEndpoints, says: "NotReady=1",
			event: wsgatev1alpha1.ReasonNoEndpoints,
		},
		{
			name: "a TLS Secret that does not exist is CertificateReady=False SecretUnusable",
			route: route{name: "no-secret", prefix: prefix + "/no-secret", app: "good", port: intstr.FromString("ws"),
				hosts: []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname("no-secret." + ns + ".example.com")}, secret: "missing-cert"},
			cond: wsgatev1alpha1.ConditionCertificateReady + "=False/" + wsgatev1alpha1.ReasonSecretUnusable, says: "not found",
			event: wsgatev1alpha1.ReasonSecretUnusable,
			check: func(t *testing.T, r *wsgatev1alpha1.WsRoute) {
				if got := harness.Condition(r, wsgatev1alpha1.ConditionReady); got != "False/"+wsgatev1alpha1.ReasonCertificateNotReady {
					t.Errorf("Ready is %q, want False/%s", got, wsgatev1alpha1.ReasonCertificateNotReady)
				}
			},
		},
		{
			name:  "a route claiming the host and prefix of an older one is Accepted=False Conflict",
			route: route{name: "contender", prefix: prefix + "/good", app: "contender", port: intstr.FromString("ws")},
			cond:  wsgatev1alpha1.ConditionAccepted + "=False/" + wsgatev1alpha1.ReasonConflict, says: "good",
			event: wsgatev1alpha1.ReasonConflict,
			check: func(t *testing.T, r *wsgatev1alpha1.WsRoute) {
				// The contender's pod is not reachable on the good
				// route's prefix.
				if got := g.status(harness.PodPath(prefix+"/good", "127.0.5.62", "/"), nil); got != http.StatusNotFound {
					t.Errorf("a handshake to the losing route's pod: %d, want 404", got)
				}
			},
		},
		{
			name:   "a selector the controller cannot parse is Accepted=False Invalid",
			route:  route{name: "unparsable", prefix: prefix + "/unparsable", app: "x", port: intstr.FromString("ws")},
			mutate: inWithoutValues,
			cond:   wsgatev1alpha1.ConditionAccepted + "=False/" + wsgatev1alpha1.ReasonInvalid, says: "selector",
			event: wsgatev1alpha1.ReasonInvalid,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			obj := c.route.object(ns)
			if c.mutate != nil {
				c.mutate(obj)
			}
			if err := env.Client.Create(t.Context(), obj); err != nil {
				t.Fatalf("the API server refused the route (it should pass schema validation): %v", err)
			}
			t.Cleanup(func() { harness.DeleteIgnoringNotFound(env.Client, waitTimeout, obj) })
			typ, want, _ := strings.Cut(c.cond, "=")
			check := func(r *wsgatev1alpha1.WsRoute) error {
				if got := harness.Condition(r, typ); got != want {
					return fmt.Errorf("%s is %q, want %q", typ, got, want)
				}
				return nil
			}
			r, err := pollRoute(ns, c.route.name, waitTimeout, check)
			if logs.Contains(countRequired, ns+"/"+c.route.name) {
				t.Errorf("the API server refused a status patch of route %s: %q", c.route.name, countRequired)
			}
			if err != nil {
				t.Fatalf("route %s/%s: still failing after %s: %v", ns, c.route.name, waitTimeout, err)
			}
			msg := messageOf(r, typ)
			if !strings.Contains(msg, c.says) {
				t.Errorf("%s message %q does not say %q", typ, msg, c.says)
			}
			ev := waitEvent(t, ns, c.route.name, corev1.EventTypeWarning, c.event)
			t.Logf("%s %s: %q; Event %s: %q", typ, want, msg, ev.Reason, ev.Note)
			if c.check != nil {
				c.check(t, r)
			}
		})
	}

	// The good route is as it was, and served all along.
	r := waitRoute(t, ns, "good", readyWith(2))
	if got := harness.Condition(r, wsgatev1alpha1.ConditionAccepted); got != "True/"+wsgatev1alpha1.ReasonAccepted {
		t.Errorf("the good route's Accepted is %q", got)
	}
	c := prober.stop()
	t.Logf("new handshakes to the good route meanwhile: %s", c)
	if c.failed > 0 || c.ok == 0 {
		t.Errorf("new handshakes to the good route: %s", c)
	}
	res := finishAll(tunnels, 10*time.Second)
	t.Logf("the good route's tunnels: %s", res)
	res.check(t, "the good route's tunnels")
}

// countRequired is the API server's answer to a status patch that leaves
// out status.endpoints.count, as a merge patch of a new route whose pods
// are all skipped would without the field's schema default (count 0
// equals the zero value, so the patch omits it). The controller's log
// must never show it.
const countRequired = "status.endpoints.count: Required value"

// inWithoutValues gives a route a selector expression "In" without values:
// the schema lets it through, labels.Parse refuses it.
func inWithoutValues(r *wsgatev1alpha1.WsRoute) {
	r.Spec.Selector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn}}}
}
