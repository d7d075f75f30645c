package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/yaml"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// site is what a variant's values depend on: the release namespace and
// two namespaces to watch.
type site struct {
	NS    string
	Watch [2]string
}

// variant is a set of values with what the rendered chart must hold.
type variant struct {
	name    string
	release string
	// fullname is the expected name of the chart's objects.
	fullname string
	values   func(c site) string
	check    func(t *testing.T, m manifest, c site, fullname string)
}

var variants = []variant{
	{
		name: "default", release: "wsgate", fullname: "wsgate",
		values: func(site) string { return "" },
		check: func(t *testing.T, m manifest, c site, fullname string) {
			d := deployment(t, m)
			if *d.Spec.Replicas != 2 {
				t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
			}
			wantArgs(t, d, "--leader-elect=true", "--leader-election-namespace="+c.NS,
				"--health-probe-bind-address=:8081", "--metrics-bind-address=0", "--metrics-secure=true",
				"--listen-address=:8080", "--tls-listen-address=:8443",
				"--handshake-timeout=10s", "--idle-timeout=1h", "--dial-timeout=5s", "--max-tunnels=9000",
				"--drain-timeout=20s", "--shutdown-grace-period=28s", "--zap-log-level=info",
				// The edge: the binary's defaults.
				"--proxy-protocol=false", "--client-handshake-rate=0", "--client-handshake-burst=0", "--client-max-tunnels=0",
				"--client-refusal-budget=100", "--client-refusal-block=1m", "--client-max-tracked=100000")
			noArgs(t, d, "--default-host", "--default-certificate", "--watch-namespaces", "--tls-key-exchange-groups", "--tls-session-ticket-keys-file",
				"--trusted-proxies")
			if g := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != 5+28+5 {
				t.Errorf("terminationGracePeriodSeconds = %d, want preStop 5 + grace 28 + 5 = 38", g)
			}
			ctr := d.Spec.Template.Spec.Containers[0]
			if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil || ctr.Lifecycle.PreStop.Sleep == nil || ctr.Lifecycle.PreStop.Sleep.Seconds != 5 {
				t.Errorf("preStop = %+v, want a 5s sleep", ctr.Lifecycle)
			}
			wantPorts(t, ctr, map[string]int32{"ws": 8080, "wss": 8443, "probes": 8081})
			checkProbe(t, "liveness", ctr.LivenessProbe, "/healthz")
			checkProbe(t, "readiness", ctr.ReadinessProbe, "/readyz")
			checkHardened(t, d)
			if q := ctr.Resources.Requests; q.Cpu().IsZero() || q.Memory().IsZero() {
				t.Errorf("resource requests = %v, want cpu and memory", q)
			}
			if q := ctr.Resources.Limits; q.Memory().IsZero() {
				t.Errorf("resource limits = %v, want memory", q)
			}
			aa := d.Spec.Template.Spec.Affinity
			if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
				aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" ||
				len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
				t.Errorf("affinity = %+v, want one preferred pod anti-affinity by kubernetes.io/hostname", aa)
			} else if sel := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector; !reflect.DeepEqual(sel.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("anti-affinity selects %v, want the Deployment's selector %v", sel.MatchLabels, d.Spec.Selector.MatchLabels)
			}
			if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				t.Errorf("selector %v != pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
			}

			svc := as[corev1.Service](t, m.one(t, "Service"))
			if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 ||
				svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort != intstr.FromString("wss") {
				t.Errorf("Service = %s %+v, want ClusterIP with 443 -> wss only", svc.Spec.Type, svc.Spec.Ports)
			}
			if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
				t.Errorf("Service selects %v, want %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
			}
			pdb := as[policyv1.PodDisruptionBudget](t, m.one(t, "PodDisruptionBudget"))
			if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
				t.Errorf("PDB = min %v max %v, want maxUnavailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
			checkRBAC(t, m, c)
			// WsGrant: a fresh install grants nothing.
			for _, k := range []string{"Certificate", "ServiceMonitor", "NetworkPolicy", "WsGrant"} {
				if n := len(m.all(k)); n != 0 {
					t.Errorf("rendered %d %s by default, want none", n, k)
				}
			}
			for _, o := range m.objs {
				if o.GetName() != fullname && !strings.HasPrefix(o.GetName(), fullname+"-") {
					t.Errorf("%s %s is not named after %s", o.GetKind(), o.GetName(), fullname)
				}
				if ns := o.GetNamespace(); ns != "" && ns != c.NS {
					t.Errorf("%s %s is in namespace %s, want %s", o.GetKind(), o.GetName(), ns, c.NS)
				}
			}
		},
	},
	{
		name: "tls", release: "gw", fullname: "gw-wsgate",
		values: func(site) string {
			return `
defaultHost: ws.example.com
gatewayCertificate:
  enabled: true
  issuerRef: {name: letsencrypt}
  duration: 2160h
listeners:
  wss: {keyExchangeGroups: [X25519, CurveP256], sessionTicketKeysSecret: gw-tickets, http2: true}
extraVolumes: [{name: issuer-ca, configMap: {name: issuer-ca}}]
extraVolumeMounts: [{name: issuer-ca, mountPath: /etc/wsgate/issuer-ca}]
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			cert := m.one(t, "Certificate")
			if cert.GetAPIVersion() != "cert-manager.io/v1" {
				t.Errorf("Certificate apiVersion %s", cert.GetAPIVersion())
			}
			secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
			if secret != fullname+"-tls" {
				t.Errorf("secretName = %q, want %s-tls", secret, fullname)
			}
			label, _, _ := unstructured.NestedString(cert.Object, "spec", "secretTemplate", "labels", "wsgate.io/certificate")
			if label != "true" {
				t.Errorf("secretTemplate label wsgate.io/certificate = %q, want \"true\"", label)
			}
			names, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
			if !slices.Equal(names, []string{"ws.example.com"}) {
				t.Errorf("dnsNames = %v, want the defaultHost", names)
			}
			ref, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
			if want := map[string]string{"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"}; !reflect.DeepEqual(ref, want) {
				t.Errorf("issuerRef = %v, want %v", ref, want)
			}
			d := deployment(t, m)
			wantArgs(t, d, "--default-host=ws.example.com", "--default-certificate="+c.NS+"/"+fullname+"-tls",
				"--tls-key-exchange-groups=X25519,CurveP256", "--tls-session-ticket-keys-file=/etc/wsgate/session-ticket-keys/keys", "--http2")
			// The gateway serves HTTP/2 itself: no GODEBUG setting of Go's
			// HTTP/2 server is needed.
			if env := d.Spec.Template.Spec.Containers[0].Env; len(env) != 0 {
				t.Errorf("env %v, want none with http2", env)
			}
			// The ticket keys' Secret is mounted beside the extra volumes.
			pod := d.Spec.Template.Spec
			var mounts, volumes []string
			for _, vm := range pod.Containers[0].VolumeMounts {
				mounts = append(mounts, vm.Name+":"+vm.MountPath)
			}
			for _, v := range pod.Volumes {
				switch {
				case v.Secret != nil:
					volumes = append(volumes, v.Name+":secret/"+v.Secret.SecretName)
				case v.ConfigMap != nil:
					volumes = append(volumes, v.Name+":configMap/"+v.ConfigMap.Name)
				}
			}
			if want := []string{"session-ticket-keys:/etc/wsgate/session-ticket-keys", "issuer-ca:/etc/wsgate/issuer-ca"}; !slices.Equal(mounts, want) {
				t.Errorf("volume mounts %v, want %v", mounts, want)
			}
			if want := []string{"session-ticket-keys:secret/gw-tickets", "issuer-ca:configMap/issuer-ca"}; !slices.Equal(volumes, want) {
				t.Errorf("volumes %v, want %v", volumes, want)
			}
		},
	},
	{
		name: "monitoring", release: "wsgate-monitoring", fullname: "wsgate-monitoring",
		values: func(site) string {
			return `
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
  readerSubjects:
    - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			d := deployment(t, m)
			wantArgs(t, d, "--metrics-bind-address=:9090", "--metrics-secure=true")
			wantPorts(t, d.Spec.Template.Spec.Containers[0], map[string]int32{"ws": 8080, "wss": 8443, "probes": 8081, "metrics": 9090})
			var metrics *corev1.Service
			for _, o := range m.all("Service") {
				if o.GetName() == fullname+"-metrics" {
					metrics = as[corev1.Service](t, o)
				}
			}
			if metrics == nil || metrics.Spec.Type != corev1.ServiceTypeClusterIP || len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].Port != 9090 {
				t.Fatalf("metrics Service = %+v, want ClusterIP on 9090", metrics)
			}
			sm := m.one(t, "ServiceMonitor")
			sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			for k, v := range sel {
				if metrics.Labels[k] != v {
					t.Errorf("ServiceMonitor selects %s=%s, which the metrics Service lacks (%v)", k, v, metrics.Labels)
				}
			}
			for _, o := range m.all("Service") {
				if o.GetName() == fullname {
					ok := true
					for k, v := range sel {
						ok = ok && o.GetLabels()[k] == v
					}
					if ok {
						t.Errorf("ServiceMonitor also selects the gateway Service")
					}
				}
			}
			if sm.GetLabels()["release"] != "prometheus" {
				t.Errorf("ServiceMonitor labels %v lack release=prometheus", sm.GetLabels())
			}
			// Secure metrics: Prometheus presents its token over HTTPS.
			eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if len(eps) != 1 {
				t.Fatalf("ServiceMonitor endpoints = %v", eps)
			}
			ep := eps[0].(map[string]any)
			if ep["scheme"] != "https" || ep["bearerTokenFile"] == nil || ep["port"] != "metrics" {
				t.Errorf("ServiceMonitor endpoint = %v, want https with the bearer token on port metrics", ep)
			}
			var reader *rbacv1.ClusterRole
			for _, o := range m.all("ClusterRole") {
				if o.GetName() == fullname+"-metrics-reader" {
					reader = as[rbacv1.ClusterRole](t, o)
				}
			}
			want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
			if reader == nil || !reflect.DeepEqual(reader.Rules, want) {
				t.Errorf("metrics-reader ClusterRole = %+v, want get /metrics", reader)
			}
			var bound bool
			for _, o := range m.all("ClusterRoleBinding") {
				crb := as[rbacv1.ClusterRoleBinding](t, o)
				bound = bound || crb.RoleRef.Name == fullname+"-metrics-reader" &&
					reflect.DeepEqual(crb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "monitoring"}})
			}
			if !bound {
				t.Errorf("the metrics reader is not bound to metrics.readerSubjects")
			}
		},
	},
	{
		name: "netpol", release: "wsgate-netpol", fullname: "wsgate-netpol",
		values: func(site) string {
			return `
metrics: {enabled: true, secure: false}
networkPolicy:
  enabled: true
  probesFrom:
    - ipBlock: {cidr: 10.0.0.0/8}
  egress:
    enabled: true
    apiServer:
      - ipBlock: {cidr: 172.18.0.2/32}
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			np := as[networkingv1.NetworkPolicy](t, m.one(t, "NetworkPolicy"))
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
				t.Errorf("policyTypes = %v", np.Spec.PolicyTypes)
			}
			if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, deployment(t, m).Spec.Selector.MatchLabels) {
				t.Errorf("podSelector = %v", np.Spec.PodSelector.MatchLabels)
			}
			ingress := map[int32][]networkingv1.NetworkPolicyPeer{}
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					ingress[p.Port.IntVal] = r.From
				}
			}
			for _, p := range []int32{8080, 8443} {
				if from, ok := ingress[p]; !ok || len(from) != 0 {
					t.Errorf("ingress to %d: %v (present %v), want from anywhere", p, from, ok)
				}
			}
			if from := ingress[8081]; len(from) != 1 || from[0].IPBlock == nil || from[0].IPBlock.CIDR != "10.0.0.0/8" {
				t.Errorf("ingress to probes 8081 from %+v, want probesFrom", from)
			}
			if from := ingress[9090]; len(from) != 1 || from[0].NamespaceSelector == nil {
				t.Errorf("ingress to metrics 9090 from %+v, want metricsFrom", from)
			}
			wantArgs(t, deployment(t, m), "--metrics-bind-address=:9090", "--metrics-secure=false")
			for _, o := range m.all("ClusterRole") {
				if strings.HasSuffix(o.GetName(), "-metrics-reader") {
					t.Errorf("a metrics-reader ClusterRole with plain metrics")
				}
			}
			if len(np.Spec.Egress) != 2 || len(np.Spec.Egress[0].To) != 1 || np.Spec.Egress[0].To[0].IPBlock.CIDR != "172.18.0.2/32" ||
				len(np.Spec.Egress[0].Ports) != 2 || len(np.Spec.Egress[1].Ports) != 0 {
				t.Errorf("egress = %+v, want the API server on 443/6443 and the pods on any port", np.Spec.Egress)
			}
		},
	},
	{
		name: "loadbalancer", release: "wsgate-lb", fullname: "wsgate-lb",
		values: func(site) string {
			return `
service:
  type: LoadBalancer
  annotations:
    service.beta.kubernetes.io/aws-load-balancer-type: nlb
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [203.0.113.0/24]
  wss: {nodePort: 30443}
  ws: {enabled: true}
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			svc := as[corev1.Service](t, m.one(t, "Service"))
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
				t.Errorf("Service type %s, externalTrafficPolicy %s", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
			}
			if svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-type"] != "nlb" {
				t.Errorf("annotations = %v", svc.Annotations)
			}
			if !slices.Equal(svc.Spec.LoadBalancerSourceRanges, []string{"203.0.113.0/24"}) {
				t.Errorf("loadBalancerSourceRanges = %v", svc.Spec.LoadBalancerSourceRanges)
			}
			ports := map[string]corev1.ServicePort{}
			for _, p := range svc.Spec.Ports {
				ports[p.Name] = p
			}
			if p := ports["wss"]; p.Port != 443 || p.TargetPort != intstr.FromString("wss") || p.NodePort != 30443 {
				t.Errorf("wss port = %+v", p)
			}
			if p := ports["ws"]; p.Port != 80 || p.TargetPort != intstr.FromString("ws") {
				t.Errorf("ws port = %+v", p)
			}
		},
	},
	{
		name: "edge", release: "wsgate-edge", fullname: "wsgate-edge",
		values: func(site) string {
			return `
edge:
  trustedProxies: [10.0.0.0/16, "2001:db8::/56", 192.0.2.10]
  proxyProtocol: true
  clientLimits: {handshakeRate: 0.5, handshakeBurst: 5, maxTunnels: 20, refusalBudget: 30, refusalBlock: 5m, maxTracked: 250000}
service:
  type: LoadBalancer
  annotations:
    service.beta.kubernetes.io/aws-load-balancer-proxy-protocol: "*"
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			wantArgs(t, deployment(t, m), "--trusted-proxies=10.0.0.0/16,2001:db8::/56,192.0.2.10", "--proxy-protocol=true",
				"--client-handshake-rate=0.5", "--client-handshake-burst=5", "--client-max-tunnels=20",
				"--client-refusal-budget=30", "--client-refusal-block=5m", "--client-max-tracked=250000")
			svc := as[corev1.Service](t, m.one(t, "Service"))
			if svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] != "*" {
				t.Errorf("Service annotations = %v, want the load balancer's PROXY protocol annotation", svc.Annotations)
			}
		},
	},
	{
		name: "watch", release: "wsgate-watch", fullname: "wsgate-watch",
		values: func(c site) string {
			return fmt.Sprintf(`
watchNamespaces: [%s, %s]
defaultHost: ws.example.com
gatewayCertificate:
  enabled: true
  issuerRef: {name: internal-ca, kind: Issuer}
`, c.Watch[0], c.Watch[1])
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			// The default certificate's namespace (the release's) is
			// watched too: the gateway reads Secrets only from there.
			wantArgs(t, deployment(t, m), fmt.Sprintf("--watch-namespaces=%s,%s,%s", c.Watch[0], c.Watch[1], c.NS))
			// The main ClusterRole keeps every generated rule, bound in
			// the watched namespaces only; the rules for cluster-scoped
			// resources (WsGrants), narrowed to them, get a ClusterRole
			// and the only ClusterRoleBinding.
			var main, scoped *rbacv1.ClusterRole
			for _, o := range m.all("ClusterRole") {
				switch o.GetName() {
				case fullname:
					main = as[rbacv1.ClusterRole](t, o)
				case fullname + "-cluster-scoped":
					scoped = as[rbacv1.ClusterRole](t, o)
				default:
					t.Errorf("unexpected ClusterRole %s", o.GetName())
				}
			}
			if main == nil || scoped == nil {
				t.Fatalf("ClusterRoles %s and %s-cluster-scoped: got %v", fullname, fullname, m.names())
			}
			if want := configRules(t, "config/rbac/role.yaml"); !reflect.DeepEqual(main.Rules, want) {
				t.Errorf("ClusterRole rules = %+v, want those of config/rbac/role.yaml", main.Rules)
			}
			if want := clusterScopedRules(t); !reflect.DeepEqual(scoped.Rules, want) {
				t.Errorf("%s rules = %+v, want %+v", scoped.Name, scoped.Rules, want)
			}
			for _, r := range scoped.Rules {
				if len(r.NonResourceURLs) > 0 {
					// The ServiceAccount issuer's discovery document and
					// keys, read only.
					if !slices.Equal(r.NonResourceURLs, []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}) || !slices.Equal(r.Verbs, []string{"get"}) || len(r.Resources) > 0 {
						t.Errorf("%s grants %v on %v, want get on the ServiceAccount issuer's URLs only", scoped.Name, r.Verbs, r.NonResourceURLs)
					}
					continue
				}
				if !slices.Equal(r.Resources, []string{"wsgrants"}) || !slices.Equal(r.APIGroups, []string{"wsgate.io"}) {
					t.Errorf("%s grants %v of %v cluster-wide, want wsgrants.wsgate.io only", scoped.Name, r.Resources, r.APIGroups)
				}
				for _, v := range r.Verbs {
					if !slices.Contains([]string{"get", "list", "watch"}, v) {
						t.Errorf("%s grants %s on %v, want reads only", scoped.Name, v, r.Resources)
					}
				}
			}
			crbs := m.all("ClusterRoleBinding")
			if len(crbs) != 1 {
				t.Fatalf("%d ClusterRoleBindings with watchNamespaces, want 1 (for cluster-scoped resources): %v", len(crbs), m.names())
			}
			crb := as[rbacv1.ClusterRoleBinding](t, crbs[0])
			subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: m.one(t, "ServiceAccount").GetName(), Namespace: c.NS}}
			if crb.Name != scoped.Name || crb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: scoped.Name}) ||
				!reflect.DeepEqual(crb.Subjects, subject) {
				t.Errorf("ClusterRoleBinding %s = %+v -> %+v, want %s -> %+v", crb.Name, crb.RoleRef, crb.Subjects, scoped.Name, subject)
			}
			var bound []string
			for _, o := range m.all("RoleBinding") {
				rb := as[rbacv1.RoleBinding](t, o)
				if rb.RoleRef.Kind == "ClusterRole" && rb.RoleRef.Name == fullname {
					bound = append(bound, rb.Namespace)
				}
			}
			slices.Sort(bound)
			want := []string{c.Watch[0], c.Watch[1], c.NS}
			slices.Sort(want)
			if !slices.Equal(bound, want) {
				t.Errorf("ClusterRole bound in %v, want %v", bound, want)
			}
		},
	},
	{
		name: "grants", release: "wsgate-grants", fullname: "wsgate-grants",
		values: func(site) string {
			return `
grants:
  - name: games
    namespaces: [games, games-staging]
    hostnames: [games.example.com, "*.games.example.com"]
    clusterIssuers: [letsencrypt]
  - name: everyone
    namespaces: ["*"]
    catchAll: true
  - name: issuers
    namespaces: [team-a]
    catchAll: false
    clusterIssuers: ["*"]
  - name: all.names
    namespaces: [ops]
    hostnames: ["*"]
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			type ns = wsgatev1alpha1.GrantedNamespace
			type host = wsgatev1alpha1.HostnamePattern
			type issuer = wsgatev1alpha1.GrantedIssuer
			want := map[string]wsgatev1alpha1.WsGrantSpec{
				fullname + "-games": {
					Namespaces:     []ns{"games", "games-staging"},
					Hostnames:      []host{"games.example.com", "*.games.example.com"},
					ClusterIssuers: []issuer{"letsencrypt"},
				},
				fullname + "-everyone":  {Namespaces: []ns{"*"}, CatchAll: true},
				fullname + "-issuers":   {Namespaces: []ns{"team-a"}, ClusterIssuers: []issuer{"*"}},
				fullname + "-all.names": {Namespaces: []ns{"ops"}, Hostnames: []host{"*"}},
			}
			labels := m.one(t, "ServiceAccount").GetLabels()
			got := map[string]bool{}
			for _, o := range m.all("WsGrant") {
				if o.GetAPIVersion() != "wsgate.io/v1alpha1" {
					t.Errorf("WsGrant %s apiVersion %s, want wsgate.io/v1alpha1", o.GetName(), o.GetAPIVersion())
				}
				if o.GetNamespace() != "" {
					t.Errorf("WsGrant %s in namespace %s, want none (cluster-scoped)", o.GetName(), o.GetNamespace())
				}
				if !reflect.DeepEqual(o.GetLabels(), labels) {
					t.Errorf("WsGrant %s labels = %v, want the chart's %v", o.GetName(), o.GetLabels(), labels)
				}
				g := as[wsgatev1alpha1.WsGrant](t, o)
				w, ok := want[g.Name]
				if !ok {
					t.Errorf("unexpected WsGrant %s", g.Name)
					continue
				}
				got[g.Name] = true
				if !reflect.DeepEqual(g.Spec, w) {
					t.Errorf("WsGrant %s spec = %+v, want %+v", g.Name, g.Spec, w)
				}
				// catchAll false is left out, as the API would.
				if _, set, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "catchAll"); set && !g.Spec.CatchAll {
					t.Errorf("WsGrant %s renders catchAll: false", g.Name)
				}
			}
			for name := range want {
				if !got[name] {
					t.Errorf("WsGrant %s not rendered: %v", name, m.names())
				}
			}
			// Grants change nothing else: the RBAC is the default's.
			checkRBAC(t, m, c)
		},
	},
	{
		name: "scaled", release: "wsgate-scaled", fullname: "wsgate-scaled",
		values: func(site) string {
			return `
replicas: 3
logLevel: debug
maxTunnels: 1000000
timeouts: {handshake: 3s, idle: 90m, dial: 1500ms}
shutdown: {preStopSleepSeconds: 0, drainSeconds: 30, gracePeriodSeconds: 40}
podDisruptionBudget: {minAvailable: 2}
extraArgs: ["--max-header-bytes=32768", "--retry-after=10s"]
resources:
  requests: {cpu: 500m, memory: 256Mi}
  limits: {cpu: "2", memory: 1Gi}
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			d := deployment(t, m)
			if *d.Spec.Replicas != 3 {
				t.Errorf("replicas = %d, want 3", *d.Spec.Replicas)
			}
			wantArgs(t, d, "--zap-log-level=debug", "--max-tunnels=1000000", "--handshake-timeout=3s", "--idle-timeout=90m",
				"--dial-timeout=1500ms", "--drain-timeout=30s", "--shutdown-grace-period=40s", "--max-header-bytes=32768", "--retry-after=10s")
			if g := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != 0+40+5 {
				t.Errorf("terminationGracePeriodSeconds = %d, want 45", g)
			}
			if lc := d.Spec.Template.Spec.Containers[0].Lifecycle; lc != nil {
				t.Errorf("lifecycle = %+v, want none without a preStop sleep", lc)
			}
			if l := d.Spec.Template.Spec.Containers[0].Resources.Limits; l.Cpu().String() != "2" || l.Memory().String() != "1Gi" {
				t.Errorf("limits = %v", l)
			}
			pdb := as[policyv1.PodDisruptionBudget](t, m.one(t, "PodDisruptionBudget"))
			if pdb.Spec.MaxUnavailable != nil || pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(2) {
				t.Errorf("PDB = min %v max %v, want minAvailable 2 only", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
		},
	},
	{
		name: "minimal", release: "wsgate-minimal", fullname: "wsgate-minimal",
		values: func(site) string {
			return `
listeners: {ws: {enabled: false}}
podDisruptionBudget: {enabled: false}
rbac: {create: false}
serviceAccount: {create: false, name: existing-sa}
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
`
		},
		check: func(t *testing.T, m manifest, c site, fullname string) {
			d := deployment(t, m)
			wantArgs(t, d, "--listen-address=", "--tls-listen-address=:8443")
			wantPorts(t, d.Spec.Template.Spec.Containers[0], map[string]int32{"wss": 8443, "probes": 8081})
			if d.Spec.Template.Spec.ServiceAccountName != "existing-sa" {
				t.Errorf("serviceAccountName = %s", d.Spec.Template.Spec.ServiceAccountName)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
				t.Errorf("image = %s, want the digest", img)
			}
			for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "PodDisruptionBudget"} {
				if n := len(m.all(k)); n != 0 {
					t.Errorf("rendered %d %s, want none", n, k)
				}
			}
		},
	},
}

// deployment returns the one Deployment, typed.
func deployment(t *testing.T, m manifest) *appsv1.Deployment {
	t.Helper()
	d := as[appsv1.Deployment](t, m.one(t, "Deployment"))
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	return d
}

// containerArgs returns the gateway container's arguments.
func containerArgs(t *testing.T, m manifest) []string {
	t.Helper()
	return deployment(t, m).Spec.Template.Spec.Containers[0].Args
}

func wantArgs(t *testing.T, d *appsv1.Deployment, want ...string) {
	t.Helper()
	args := d.Spec.Template.Spec.Containers[0].Args
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("args lack %s: %q", w, args)
		}
	}
}

func noArgs(t *testing.T, d *appsv1.Deployment, flags ...string) {
	t.Helper()
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		for _, f := range flags {
			if a == f || strings.HasPrefix(a, f+"=") {
				t.Errorf("unexpected arg %s", a)
			}
		}
	}
}

func wantPorts(t *testing.T, c corev1.Container, want map[string]int32) {
	t.Helper()
	got := map[string]int32{}
	for _, p := range c.Ports {
		got[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("container ports = %v, want %v", got, want)
	}
}

func checkProbe(t *testing.T, name string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("probes") {
		t.Errorf("%s probe = %+v, want GET %s on port probes (8081)", name, p, path)
	}
}

// checkHardened checks the pod and container security settings.
func checkHardened(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	ps := d.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 ||
		ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v", ps)
	}
	cs := d.Spec.Template.Spec.Containers[0].SecurityContext
	if cs == nil || cs.RunAsNonRoot == nil || !*cs.RunAsNonRoot || cs.RunAsUser == nil || *cs.RunAsUser != 65532 ||
		cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
		cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
		cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) != 0 ||
		cs.SeccompProfile == nil || cs.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container securityContext = %+v", cs)
	}
}

// checkRBAC checks that the chart's roles carry the rules of the generated
// and hand-written roles in config/rbac, bound to the ServiceAccount.
func checkRBAC(t *testing.T, m manifest, c site) {
	t.Helper()
	sa := m.one(t, "ServiceAccount")
	if d := deployment(t, m); d.Spec.Template.Spec.ServiceAccountName != sa.GetName() {
		t.Errorf("Deployment runs as %s, the chart's ServiceAccount is %s", d.Spec.Template.Spec.ServiceAccountName, sa.GetName())
	}
	cr := as[rbacv1.ClusterRole](t, m.one(t, "ClusterRole"))
	if want := configRules(t, "config/rbac/role.yaml"); !reflect.DeepEqual(cr.Rules, want) {
		t.Errorf("ClusterRole rules = %+v, want those of config/rbac/role.yaml %+v", cr.Rules, want)
	}
	role := as[rbacv1.Role](t, m.one(t, "Role"))
	if want := configRules(t, "config/rbac/leader_election_role.yaml"); !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("leader-election Role rules = %+v, want those of config/rbac/leader_election_role.yaml %+v", role.Rules, want)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.GetName(), Namespace: c.NS}}
	crb := as[rbacv1.ClusterRoleBinding](t, m.one(t, "ClusterRoleBinding"))
	if crb.RoleRef.Name != cr.Name || !reflect.DeepEqual(crb.Subjects, subject) {
		t.Errorf("ClusterRoleBinding = %+v -> %+v", crb.RoleRef, crb.Subjects)
	}
	rb := as[rbacv1.RoleBinding](t, m.one(t, "RoleBinding"))
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || !reflect.DeepEqual(rb.Subjects, subject) {
		t.Errorf("RoleBinding = %+v -> %+v", rb.RoleRef, rb.Subjects)
	}
}

func configRules(t *testing.T, file string) []rbacv1.PolicyRule {
	t.Helper()
	var r rbacv1.ClusterRole
	if err := yaml.Unmarshal(readRepoFile(t, file), &r); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(r.Rules) == 0 {
		t.Fatalf("%s has no rules", file)
	}
	return r.Rules
}

// clusterScopedRules are the rules of config/rbac/role.yaml that name
// cluster-scoped resources (wsgrants), narrowed to those resources, and
// those of non-resource URLs, in their order.
func clusterScopedRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	var out []rbacv1.PolicyRule
	for _, r := range configRules(t, "config/rbac/role.yaml") {
		if slices.Contains(r.Resources, "wsgrants") {
			r.Resources = []string{"wsgrants"}
			out = append(out, r)
		}
		if len(r.NonResourceURLs) > 0 {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		t.Fatal("config/rbac/role.yaml has no rule for wsgrants")
	}
	return out
}

func TestTemplate(t *testing.T) {
	t.Parallel()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			c := site{NS: "gateway", Watch: [2]string{"team-a", "team-b"}}
			m := template(t, v.release, c.NS, v.values(c))
			v.check(t, m, c, v.fullname)
		})
	}
}

func TestLint(t *testing.T) {
	t.Parallel()
	for _, strict := range []bool{false, true} {
		args := []string{"lint", chartDir()}
		if strict {
			args = append(args, "--strict")
		}
		out, stderr, err := runHelm(t, "", args...)
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
	}
	for _, v := range variants {
		out, stderr, err := runHelm(t, "", "lint", chartDir(), "--strict", "--namespace", "gateway",
			"-f", writeValues(t, v.values(site{NS: "gateway", Watch: [2]string{"team-a", "team-b"}})))
		if err != nil {
			t.Errorf("helm lint --strict with the %s values: %v\n%s%s", v.name, err, out, stderr)
		}
	}
}

// Bad values fail helm template (and so helm install) with a message that
// names the value.
func TestSchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, values string
		want         []string
	}{
		{"replicas not a number", `replicas: two`, []string{"/replicas", "want integer"}},
		{"negative replicas", `replicas: -1`, []string{"/replicas", "minimum"}},
		{"unknown service type", `service: {type: Foo}`, []string{"/service/type", "LoadBalancer"}},
		{"negative timeout", `timeouts: {idle: -5s}`, []string{"/timeouts/idle", "does not match pattern"}},
		{"timeout without unit", `timeouts: {handshake: 10}`, []string{"/timeouts/handshake", "want string"}},
		{"negative drain", `shutdown: {drainSeconds: -1}`, []string{"/shutdown/drainSeconds", "minimum"}},
		{"certificate without issuer", `{defaultHost: ws.example.com, gatewayCertificate: {enabled: true}}`, []string{"/gatewayCertificate/issuerRef/name"}},
		{"certificate with issuerRef removed", `{defaultHost: ws.example.com, gatewayCertificate: {enabled: true, issuerRef: null}}`, []string{"/gatewayCertificate", "issuerRef"}},
		{"misspelled key", `replica: 3`, []string{"additional properties 'replica' not allowed"}},
		{"misspelled nested key", `service: {typ: LoadBalancer}`, []string{"/service", "additional properties 'typ' not allowed"}},
		{"unknown log level", `logLevel: loud`, []string{"/logLevel"}},
		{"zero max tunnels", `maxTunnels: 0`, []string{"/maxTunnels", "minimum"}},
		{"upper-case default host", `defaultHost: WS.Example.com`, []string{"/defaultHost"}},
		{"default certificate not namespace/name", `defaultCertificate: my-tls`, []string{"/defaultCertificate"}},
		{"bad watched namespace", `watchNamespaces: [Team_A]`, []string{"/watchNamespaces/0"}},
		{"bad disruption budget", `podDisruptionBudget: {maxUnavailable: half}`, []string{"/podDisruptionBudget/maxUnavailable"}},
		{"unknown traffic policy", `service: {externalTrafficPolicy: Sometimes}`, []string{"/service/externalTrafficPolicy"}},
		{"port out of range", `service: {wss: {port: 70000}}`, []string{"/service/wss/port", "maximum"}},
		{"egress without the API server", `networkPolicy: {enabled: true, egress: {enabled: true}}`, []string{"/networkPolicy/egress/apiServer"}},
		{"grant without namespaces", `grants: [{name: g, hostnames: [a.example.com]}]`, []string{"/grants/0", "missing property 'namespaces'"}},
		{"grant with no namespace", `grants: [{name: g, namespaces: [], hostnames: [a.example.com]}]`, []string{"/grants/0/namespaces", "minItems"}},
		{"grant granting nothing", `grants: [{name: g, namespaces: [games]}]`, []string{"/grants/0", "anyOf", "hostnames", "catchAll", "clusterIssuers"}},
		{"grant granting empty lists", `grants: [{name: g, namespaces: [games], hostnames: [], clusterIssuers: [], catchAll: false}]`, []string{"/grants/0", "anyOf"}},
		{"grant to a bad namespace", `grants: [{name: g, namespaces: [Games], hostnames: [a.example.com]}]`, []string{"/grants/0/namespaces/0", "does not match pattern"}},
		{"grant of a bad hostname", `grants: [{name: g, namespaces: [games], hostnames: ["*example.com"]}]`, []string{"/grants/0/hostnames/0", "does not match pattern"}},
		{"grant of a mid-name wildcard", `grants: [{name: g, namespaces: [games], hostnames: [a.*.example.com]}]`, []string{"/grants/0/hostnames/0", "does not match pattern"}},
		{"grant of a bad issuer", `grants: [{name: g, namespaces: [games], clusterIssuers: [Lets_Encrypt]}]`, []string{"/grants/0/clusterIssuers/0", "does not match pattern"}},
		{"grant with a repeated hostname", `grants: [{name: g, namespaces: [games], hostnames: [a.example.com, a.example.com]}]`, []string{"/grants/0/hostnames", "items at 0 and 1 are equal"}},
		{"grant without a name", `grants: [{namespaces: [games], catchAll: true}]`, []string{"/grants/0", "missing property 'name'"}},
		{"grant with a bad name", `grants: [{name: Games, namespaces: [games], catchAll: true}]`, []string{"/grants/0/name", "does not match pattern"}},
		{"grant with a misspelled key", `grants: [{name: g, namespaces: [games], hostname: [a.example.com]}]`, []string{"/grants/0", "additional properties 'hostname' not allowed"}},
		{"grants not a list", `grants: {games: [games]}`, []string{"/grants", "want array"}},
		{"trusted proxy not an address", `edge: {trustedProxies: [lb.example.com]}`, []string{"/edge/trustedProxies/0", "does not match pattern"}},
		{"trusted proxies not a list", `edge: {trustedProxies: 10.0.0.0/8}`, []string{"/edge/trustedProxies", "want array"}},
		{"misspelled edge key", `edge: {proxyprotocol: true}`, []string{"/edge", "additional properties 'proxyprotocol' not allowed"}},
		{"negative handshake rate", `edge: {clientLimits: {handshakeRate: -1}}`, []string{"/edge/clientLimits/handshakeRate", "minimum"}},
		{"fractional burst", `edge: {clientLimits: {handshakeRate: 1, handshakeBurst: 1.5}}`, []string{"/edge/clientLimits/handshakeBurst", "want integer"}},
		{"negative refusal budget", `edge: {clientLimits: {refusalBudget: -1}}`, []string{"/edge/clientLimits/refusalBudget", "minimum"}},
		{"zero refusal block", `edge: {clientLimits: {refusalBlock: 0s}}`, []string{"/edge/clientLimits/refusalBlock"}},
		{"no clients tracked", `edge: {clientLimits: {maxTracked: 0}}`, []string{"/edge/clientLimits/maxTracked", "minimum"}},
		{"client limits removed", `edge: {clientLimits: null}`, []string{"/edge", "clientLimits"}},
		// Checks across values, in the templates.
		{"drain longer than the grace period", `shutdown: {drainSeconds: 40, gracePeriodSeconds: 30}`, []string{"shutdown.drainSeconds (40)", "gracePeriodSeconds - 2 (28)"}},
		{"certificate without a host", `gatewayCertificate: {enabled: true, issuerRef: {name: x}}`, []string{"gatewayCertificate.dnsNames or defaultHost"}},
		{"no listener", `listeners: {ws: {enabled: false}, wss: {enabled: false}}`, []string{"listeners.ws.enabled and listeners.wss.enabled"}},
		{"plain port without its listener", `{listeners: {ws: {enabled: false}}, service: {ws: {enabled: true}}}`, []string{"service.ws.enabled needs listeners.ws.enabled"}},
		{"no service account", `serviceAccount: {create: false}`, []string{"serviceAccount.name is required"}},
		{"PROXY protocol without trusted proxies", `edge: {proxyProtocol: true}`, []string{"edge.proxyProtocol needs edge.trustedProxies"}},
		{"handshake burst without a rate", `edge: {clientLimits: {handshakeBurst: 10}}`, []string{"edge.clientLimits.handshakeBurst needs edge.clientLimits.handshakeRate"}},
		{"two grants of one name", `grants: [{name: g, namespaces: [a], catchAll: true}, {name: g, namespaces: [b], hostnames: [b.example.com]}]`, []string{`grants: two grants are named "g"`, "wsgate-g"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runHelm(t, "", "template", "wsgate", chartDir(), "-f", writeValues(t, tc.values))
			if err == nil {
				t.Fatalf("helm template accepted %s:\n%s", tc.values, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("error lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// The RBAC template takes the rules for cluster-scoped resources from the
// generated role; without a rule for wsgrants the render fails, with
// or without watchNamespaces, rather than leave the gateway unable to read
// WsGrants.
func TestRBACNeedsTheWsGrantsRule(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "wsgate")
	if err := os.CopyFS(dir, os.DirFS(chartDir())); err != nil {
		t.Fatal(err)
	}
	role := filepath.Join(dir, "files", "rbac", "role.yaml")
	b, err := os.ReadFile(role)
	if err != nil {
		t.Fatal(err)
	}
	const line = "  - wsgrants\n"
	if strings.Count(string(b), line) != 1 {
		t.Fatalf("files/rbac/role.yaml has not one %q line:\n%s", line, b)
	}
	if err := os.WriteFile(role, []byte(strings.Replace(string(b), line, "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, values := range []string{"", "watchNamespaces: [team-a]"} {
		out, stderr, err := runHelm(t, "", "template", "wsgate", dir, "-f", writeValues(t, values))
		if err == nil {
			t.Errorf("helm template with no wsgrants rule (values %q) succeeded:\n%s", values, out)
			continue
		}
		if want := "files/rbac/role.yaml has no rule for wsgrants"; !strings.Contains(stderr, want) {
			t.Errorf("helm template with no wsgrants rule (values %q): error lacks %q:\n%s", values, want, stderr)
		}
	}
	// rbac.create false renders no RBAC, so no check.
	if out, stderr, err := runHelm(t, "", "template", "wsgate", dir, "-f", writeValues(t, "rbac: {create: false}")); err != nil {
		t.Errorf("helm template with rbac.create false: %v\n%s%s", err, out, stderr)
	}
}
