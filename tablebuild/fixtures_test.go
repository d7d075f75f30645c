package tablebuild

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// t0 is the creation time of the oldest test route.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// podOpt changes a test pod.
type podOpt func(*corev1.Pod)

// newPod returns a Running, Ready pod with one container that declares the
// TCP port "ws" 8080. ip "" leaves the pod without an IP.
func newPod(ns, name, ip string, lbls map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      name,
			UID:       types.UID(ns + "/" + name),
			Labels:    lbls,
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "app",
				Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// compact returns the pods as a build reads them; nil stays nil.
func compact(pods ...*corev1.Pod) []*Pod {
	out := make([]*Pod, len(pods))
	for i, p := range pods {
		if p != nil {
			c := CompactPod(p)
			out[i] = &c
		}
	}
	return out
}

func notReady(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
}

func terminating(p *corev1.Pod) {
	ts := metav1.NewTime(t0)
	p.DeletionTimestamp = &ts
}

func noReadyCondition(p *corev1.Pod) { p.Status.Conditions = nil }

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

// podIPs sets status.podIPs (and status.podIP to the first entry).
func podIPs(ips ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.PodIPs = nil
		p.Status.PodIP = ""
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(ips) > 0 {
			p.Status.PodIP = ips[0]
		}
	}
}

// onlyPodIP sets status.podIP and clears status.podIPs.
func onlyPodIP(ip string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.PodIPs = nil
		p.Status.PodIP = ip
	}
}

// containerPorts replaces the app container's ports.
func containerPorts(ports ...corev1.ContainerPort) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports = ports }
}

// addContainer adds a second container with the given ports.
func addContainer(ports ...corev1.ContainerPort) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "second", Ports: ports})
	}
}

// initContainer adds an init container; always makes it a sidecar.
func initContainer(always bool, ports ...corev1.ContainerPort) podOpt {
	return func(p *corev1.Pod) {
		c := corev1.Container{Name: "init", Ports: ports}
		if always {
			rp := corev1.ContainerRestartPolicyAlways
			c.RestartPolicy = &rp
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	}
}

func tcpPort(name string, n int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: corev1.ProtocolTCP}
}

// routeOpt changes a test route.
type routeOpt func(*v1alpha1.WsRoute)

// newRoute returns a route created age seconds after t0 that selects
// app=<name> on port 8080, with no hostnames and the default path prefix.
func newRoute(ns, name string, age int, opts ...routeOpt) *v1alpha1.WsRoute {
	r := &v1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         ns,
			Name:              name,
			UID:               types.UID("uid-" + ns + "/" + name),
			Generation:        1,
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second)),
		},
		Spec: v1alpha1.WsRouteSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Port:     intstr.FromInt32(8080),
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func hosts(hs ...string) routeOpt {
	return func(r *v1alpha1.WsRoute) {
		r.Spec.Hostnames = nil
		for _, h := range hs {
			r.Spec.Hostnames = append(r.Spec.Hostnames, v1alpha1.Hostname(h))
		}
	}
}

func prefix(p string) routeOpt { return func(r *v1alpha1.WsRoute) { r.Spec.PathPrefix = p } }

func selector(s metav1.LabelSelector) routeOpt {
	return func(r *v1alpha1.WsRoute) { r.Spec.Selector = s }
}

func matchLabels(kv ...string) routeOpt {
	return func(r *v1alpha1.WsRoute) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		r.Spec.Selector = metav1.LabelSelector{MatchLabels: m}
	}
}

func port(p intstr.IntOrString) routeOpt { return func(r *v1alpha1.WsRoute) { r.Spec.Port = p } }

func generation(g int64) routeOpt { return func(r *v1alpha1.WsRoute) { r.Generation = g } }

func key(ns, name string) routing.RouteKey { return routing.RouteKey{Namespace: ns, Name: name} }

// podNames returns the names in a status's pod list.
func podNames(ep v1alpha1.RouteEndpoints) []string {
	var out []string
	for _, p := range ep.Pods {
		out = append(out, p.Name)
	}
	return out
}

// backendPods returns the pod names of a route's backends in table order.
func backendPods(t *routing.Table, k routing.RouteKey) []string {
	r, ok := t.Route(k)
	if !ok {
		return nil
	}
	var out []string
	for _, b := range r.Backends {
		out = append(out, b.Pod)
	}
	return out
}

// grantAll gives every namespace every hostname, the catch-all and every
// ClusterIssuer: the builds of tests about something else than grants.
var grantAll = []*v1alpha1.WsGrant{{
	ObjectMeta: metav1.ObjectMeta{Name: "all"},
	Spec: v1alpha1.WsGrantSpec{
		Namespaces:     []v1alpha1.GrantedNamespace{"*"},
		Hostnames:      []v1alpha1.HostnamePattern{"*"},
		CatchAll:       true,
		ClusterIssuers: []v1alpha1.GrantedIssuer{"*"},
	},
}}

// grantOpt changes a test grant.
type grantOpt func(*v1alpha1.WsGrantSpec)

// grant returns a WsGrant for namespace ns ("*": every namespace).
func grant(ns string, opts ...grantOpt) *v1alpha1.WsGrant {
	g := &v1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: "grant-" + ns},
		Spec:       v1alpha1.WsGrantSpec{Namespaces: []v1alpha1.GrantedNamespace{v1alpha1.GrantedNamespace(ns)}},
	}
	for _, o := range opts {
		o(&g.Spec)
	}
	return g
}

func withHosts(patterns ...string) grantOpt {
	return func(s *v1alpha1.WsGrantSpec) {
		for _, p := range patterns {
			s.Hostnames = append(s.Hostnames, v1alpha1.HostnamePattern(p))
		}
	}
}

func withCatchAll(s *v1alpha1.WsGrantSpec) { s.CatchAll = true }

func withIssuers(names ...string) grantOpt {
	return func(s *v1alpha1.WsGrantSpec) {
		for _, n := range names {
			s.ClusterIssuers = append(s.ClusterIssuers, v1alpha1.GrantedIssuer(n))
		}
	}
}

// withIssuer makes the route own a Certificate from the issuer (group ""
// is cert-manager's).
func withIssuer(kind, name, group string) routeOpt {
	return func(r *v1alpha1.WsRoute) {
		r.Spec.TLS = &v1alpha1.RouteTLS{SecretName: r.Name + "-tls", IssuerRef: &v1alpha1.IssuerReference{Kind: kind, Name: name, Group: group}}
	}
}

// serving sets status.hostnames: the gateway accepted the route for hs.
func serving(hs ...string) routeOpt {
	return func(r *v1alpha1.WsRoute) { r.Status.Hostnames = hs }
}
