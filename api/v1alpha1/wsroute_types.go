package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Hostname is a DNS name (RFC 1123, lower case, labels of at most 63
// characters) with at most one leading "*." wildcard label, such as
// "ws.example.com" or "*.rooms.example.com".
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`
type Hostname string

// Origin is a browser origin, "scheme://host" or "scheme://host:port" in
// lower case with no path, or "*" for any origin.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=300
// +kubebuilder:validation:Pattern=`^(\*|[a-z][a-z0-9+.-]*://([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?)$`
type Origin string

// RevokePolicy says what happens to open tunnels of a pod that leaves the
// route's allowlist (deleted, relabelled, no longer Ready, route deleted).
//
// +kubebuilder:validation:Enum=Close;Drain
type RevokePolicy string

const (
	// RevokeClose closes the pod's open tunnels at once with a websocket
	// Close frame, status 1008 (policy violation).
	RevokeClose RevokePolicy = "Close"
	// RevokeDrain lets the pod's open tunnels run on until they end or
	// reach the route's maximum lifetime; only new handshakes are refused.
	RevokeDrain RevokePolicy = "Drain"
)

// WsRouteSpec is the desired state of a WsRoute: which pods the gateway may
// reach, on which hosts and path, and with which limits.
//
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || !has(self.tls.issuerRef) || (has(self.hostnames) && size(self.hostnames) > 0)",message="tls.issuerRef needs at least one entry in hostnames to put into the Certificate",fieldPath=".tls.issuerRef"
type WsRouteSpec struct {
	// Hostnames are the hosts this route answers on (the request's Host, and
	// its TLS SNI). Empty means the gateway's default host, or, when it has
	// none, the catch-all (every host no route names). A name may start
	// with one "*." wildcard label, which matches exactly one label.
	//
	// A WsGrant must give the route's namespace each name (the catch-all:
	// catchAll), and a name belongs to one namespace at a time: the
	// namespace whose route serves it (status.hostnames), else that of the
	// oldest accepted route that claims it. Routes of other namespaces
	// that claim it are not accepted (HostnameConflict).
	// A wildcard never covers a name that another route claims exactly.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Hostnames []Hostname `json:"hostnames,omitempty"`

	// PathPrefix is the path under which this route's pods are addressed:
	// a request for <pathPrefix>/<podIP>/<rest> reaches the pod at <podIP>.
	// It starts with "/", has no trailing "/" (except "/" itself), and
	// contains no "..", "//" or "%".
	//
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$`
	// +kubebuilder:validation:XValidation:rule="!self.contains('..')",message="pathPrefix must not contain '..'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('/\\\\.(/|$)')",message="pathPrefix must not contain a '.' segment"
	// +kubebuilder:validation:XValidation:rule="!self.contains('//')",message="pathPrefix must not contain '//'"
	// +kubebuilder:validation:XValidation:rule="self == '/' || !self.endsWith('/')",message="pathPrefix must not end with '/' (except the root prefix '/')"
	PathPrefix string `json:"pathPrefix,omitempty"`

	// Selector selects the pods, in this route's own namespace, that the
	// gateway may reach. It must not be empty: an empty selector would
	// expose every pod of the namespace.
	//
	// +kubebuilder:validation:XValidation:rule="(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",message="selector must not be empty: an empty selector would expose every pod in the namespace"
	Selector metav1.LabelSelector `json:"selector"`

	// Port is the pod's websocket port: a number, or the name of a container
	// port, resolved for each pod (a pod without that named port is skipped).
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : (self.size() <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]') && !self.contains('--'))",message="port must be a number in 1-65535 or a port name (IANA_SVC_NAME: at most 15 lower-case letters, digits and '-', with at least one letter)"
	Port intstr.IntOrString `json:"port"`

	// BackendPath is the path prefix on the pod: <rest> of the request is
	// appended to it. Like pathPrefix it starts with "/" and contains no
	// "..", "//" or "%"; unlike pathPrefix it may end with "/".
	//
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$`
	// +kubebuilder:validation:XValidation:rule="!self.contains('..')",message="backendPath must not contain '..'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('/\\\\.(/|$)')",message="backendPath must not contain a '.' segment"
	// +kubebuilder:validation:XValidation:rule="!self.contains('//')",message="backendPath must not contain '//'"
	BackendPath string `json:"backendPath,omitempty"`

	// AllowedOrigins are the browser origins accepted in the Origin header,
	// compared exactly (scheme, host and port), or "*" for any. When empty,
	// an Origin passes only when it names one of the route's own hostnames
	// (a "*." name covers one label, and not a name another route claims
	// exactly; never the Host header the client sent, so a route without
	// hostnames admits no Origin), with scheme https on a TLS connection, or
	// http or https on a plain one (TLS may end at a load balancer in front),
	// on the port the request's Host names (without one: 443 on TLS, the
	// Origin scheme's default on a plain connection). Anything else is
	// refused with 403. Requests without an Origin header are not from
	// browsers (which always send it) and pass.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	AllowedOrigins []Origin `json:"allowedOrigins,omitempty"`

	// Timeouts bound the handshake, idle time and lifetime of tunnels.
	//
	// +optional
	Timeouts *Timeouts `json:"timeouts,omitempty"`

	// MaxConnectionsPerPod caps the open tunnels to any one pod through one
	// gateway replica; beyond it the gateway answers 503 with Retry-After.
	// Unset means only the gateway's global cap applies.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnectionsPerPod *int32 `json:"maxConnectionsPerPod,omitempty"`

	// RevokePolicy says what happens to open tunnels of a pod that leaves
	// this route: Close (default) sends them a Close frame 1008 at once;
	// Drain lets them run until they end or reach their maximum lifetime.
	//
	// +optional
	// +kubebuilder:default=Close
	RevokePolicy RevokePolicy `json:"revokePolicy,omitempty"`

	// TLS names the certificate for this route's hostnames.
	//
	// +optional
	TLS *RouteTLS `json:"tls,omitempty"`

	// Auth says who may open tunnels through the route, and to which pod.
	// Without it the route is open (status.access Open): anyone who
	// reaches the gateway may reach every pod the route selects.
	//
	// +optional
	Auth *RouteAuth `json:"auth,omitempty"`

	// Limits bound what one client may do on this route, on each gateway
	// replica, beside the gateway's own per-client limits: 429 with
	// Retry-After beyond them.
	//
	// +optional
	Limits *ClientLimits `json:"limits,omitempty"`
}

// Timeouts bound the phases of a tunnel. Durations use Go syntax ("30s",
// "1h30m").
type Timeouts struct {
	// Handshake bounds the time from the client's request to the pod's 101
	// answer, dial included. Between 100ms and 1m; the gateway's default
	// applies when unset.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('100ms') && duration(self) <= duration('1m'))",message="timeouts.handshake must be between 100ms and 1m"
	Handshake *metav1.Duration `json:"handshake,omitempty"`

	// Idle closes a tunnel that moved no bytes, in either direction, for
	// this long. Between 1s and 24h; the gateway's default applies when
	// unset.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",message="timeouts.idle must be between 1s and 24h"
	Idle *metav1.Duration `json:"idle,omitempty"`

	// MaxLifetime closes a tunnel this long after it opened, with a Close
	// frame 1001. Between 1s and 720h (30 days); unlimited when unset.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('720h'))",message="timeouts.maxLifetime must be between 1s and 720h"
	MaxLifetime *metav1.Duration `json:"maxLifetime,omitempty"`
}

// RouteTLS names the Secret that holds the certificate for the route's
// hostnames and, optionally, the cert-manager issuer that fills it.
type RouteTLS struct {
	// SecretName is a kubernetes.io/tls Secret in the route's namespace,
	// labelled wsgate.io/certificate=true. Its certificate is served only
	// for the names the route's namespace owns.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName"`

	// IssuerRef, when set, makes the controller own a cert-manager
	// Certificate for the route's hostnames, written into SecretName, while
	// the route is accepted. A ClusterIssuer must be granted to the
	// route's namespace by a WsGrant.
	//
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`
}

// IssuerReference points at a cert-manager Issuer or ClusterIssuer.
type IssuerReference struct {
	// Name of the issuer.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Kind of the issuer: Issuer (in the route's namespace) or
	// ClusterIssuer.
	//
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	Kind string `json:"kind,omitempty"`

	// Group of the issuer's API.
	//
	// +optional
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// WsRouteStatus is what the controller observed of a WsRoute.
type WsRouteStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Endpoints describes the pods that are allowlisted.
	//
	// +optional
	Endpoints RouteEndpoints `json:"endpoints,omitempty"`

	// Hostnames are the names the route serves, as the gateway last
	// accepted it: its hostnames (or the gateway's default host), or
	// CatchAllHostname for the catch-all. Empty while it is not accepted.
	// A name stays with the namespace whose route serves it for as long as
	// that route claims it: a route that adds the name later, or was
	// created in the same second, does not take it over, however old it
	// is. Only the gateway writes status; tenants must not be allowed to
	// update wsroutes/status.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=17
	Hostnames []string `json:"hostnames,omitempty"`

	// Access says who may use the route: Open (anyone), or what it
	// checks: Token, Token bound to pod, ForwardAuth, or both.
	//
	// +optional
	Access string `json:"access,omitempty"`

	// Conditions: Accepted (valid and not in conflict), CertificateReady
	// (when tls.issuerRef is set), AuthReady (when auth is set: its keys
	// and forward-auth Service are usable) and Ready (serving traffic).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CatchAllHostname stands for the catch-all (a route without hostnames
// on a gateway without a default host) in status.hostnames.
const CatchAllHostname = "*"

// MaxStatusPods bounds the pods listed in status.endpoints.pods.
const MaxStatusPods = 32

// RouteEndpoints describes the allowlisted pods of a route.
type RouteEndpoints struct {
	// Count is the number of allowlisted pods.
	//
	// +kubebuilder:default=0
	Count int32 `json:"count"`

	// Pods lists allowlisted pods by name, at most 32, sorted by name.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Pods []EndpointPod `json:"pods,omitempty"`

	// Skipped counts pods that the selector matched but that are not
	// allowlisted, by reason.
	//
	// +optional
	// +listType=map
	// +listMapKey=reason
	// +kubebuilder:validation:MaxItems=8
	Skipped []SkippedPods `json:"skipped,omitempty"`
}

// EndpointPod is one allowlisted pod.
type EndpointPod struct {
	// Name of the pod.
	Name string `json:"name"`
	// Addresses are the pod's IPs, as the gateway expects them in the path.
	//
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	Addresses []string `json:"addresses"`
	// Port is the resolved port number.
	Port int32 `json:"port"`
}

// SkippedReason says why a selected pod is not allowlisted.
type SkippedReason string

const (
	// SkippedNoIP means the pod has no IP yet.
	SkippedNoIP SkippedReason = "NoIP"
	// SkippedNotReady means the pod's Ready condition is not True.
	SkippedNotReady SkippedReason = "NotReady"
	// SkippedTerminating means the pod is being deleted.
	SkippedTerminating SkippedReason = "Terminating"
	// SkippedPortNotFound means the route names a port that the pod's containers
	// do not declare.
	SkippedPortNotFound SkippedReason = "PortNotFound"
	// SkippedHostNetwork means the pod uses the node's network: its IP is
	// the node's, and allowlisting it would expose the node's ports.
	SkippedHostNetwork SkippedReason = "HostNetwork"
	// SkippedUnbound means the route binds tokens to pods (auth.podBinding)
	// and the pod has no value to bind to (the label, annotation or name
	// is absent or empty): nobody may reach it.
	SkippedUnbound SkippedReason = "Unbound"
)

// SkippedPods counts selected pods that are not allowlisted for one reason.
type SkippedPods struct {
	// Reason the pods are skipped.
	Reason SkippedReason `json:"reason"`
	// Count of pods skipped for that reason.
	Count int32 `json:"count"`
}

// Condition types of a WsRoute.
const (
	// ConditionAccepted is True when the route is valid, its namespace is
	// granted its hostnames (and ClusterIssuer) and owns them, and no
	// older route of the namespace claims the same host and path prefix.
	ConditionAccepted = "Accepted"
	// ConditionCertificateReady mirrors the Ready condition of the
	// route's cert-manager Certificate (only with tls.issuerRef).
	ConditionCertificateReady = "CertificateReady"
	// ConditionAuthReady is True when the route's auth can be checked:
	// its token keys are loaded and its forward-auth Service has a Ready
	// pod. While it is False, handshakes the route cannot check are
	// refused (401 or 503): auth fails closed.
	ConditionAuthReady = "AuthReady"
	// ConditionReady is True when the gateway serves the route: it is
	// accepted, its certificate (if managed) is ready, and at least one
	// pod is allowlisted.
	ConditionReady = "Ready"
)

// CertificateLabel marks the Secrets wsgate reads certificates from
// (value "true"): the gateway caches only those. Certificates that wsgate
// creates put it on their Secrets; label a Secret made by hand yourself.
const CertificateLabel = "wsgate.io/certificate"

// Condition reasons of a WsRoute; Events use the same reasons.
const (
	// ReasonAccepted: the route is valid and owns its host and prefix.
	ReasonAccepted = "Accepted"
	// ReasonConflict: an older route of the same namespace claims the same
	// host and prefix.
	ReasonConflict = "Conflict"
	// ReasonHostnameConflict: one of the route's hostnames (or the
	// catch-all) belongs to another namespace, whose route claimed it
	// first.
	ReasonHostnameConflict = "HostnameConflict"
	// ReasonHostnameNotAllowed: no WsGrant gives the route's namespace one
	// of its hostnames (or the catch-all).
	ReasonHostnameNotAllowed = "HostnameNotAllowed"
	// ReasonIssuerNotAllowed: no WsGrant gives the route's namespace the
	// ClusterIssuer named in tls.issuerRef.
	ReasonIssuerNotAllowed = "IssuerNotAllowed"
	// ReasonTokenIssuerNotAllowed: no WsGrant gives the route's namespace
	// the token issuer (auth.jwt.issuer) whose keys it asks the gateway to
	// fetch.
	ReasonTokenIssuerNotAllowed = "TokenIssuerNotAllowed"
	// ReasonInvalid: the route passed schema validation but cannot be
	// used (for example a selector the controller cannot parse).
	ReasonInvalid = "Invalid"
	// ReasonReady: the route is served.
	ReasonReady = "Ready"
	// ReasonNotAccepted: Ready is False because Accepted is False.
	ReasonNotAccepted = "NotAccepted"
	// ReasonNoEndpoints: Ready is False because no pod is allowlisted.
	ReasonNoEndpoints = "NoEndpoints"
	// ReasonCertificateNotReady: Ready is False because CertificateReady
	// is False.
	ReasonCertificateNotReady = "CertificateNotReady"

	// ReasonCertificateIssued: CertificateReady is True; the certificate is
	// served.
	ReasonCertificateIssued = "Issued"
	// ReasonCertificatePending: the route's cert-manager Certificate is not
	// Ready yet (its message says why).
	ReasonCertificatePending = "Pending"
	// ReasonSecretUnusable: the TLS Secret is missing or broken; the last
	// good certificate, if any, keeps serving.
	ReasonSecretUnusable = "SecretUnusable"
	// ReasonCertificateConflict: the Certificate that this route would own
	// exists and belongs to something else.
	ReasonCertificateConflict = "CertificateConflict"
	// ReasonCertManagerMissing: tls.issuerRef is set but cert-manager's
	// Certificate API is not installed in the cluster.
	ReasonCertManagerMissing = "CertManagerMissing"

	// ReasonKeysLoaded: AuthReady is True.
	ReasonKeysLoaded = "KeysLoaded"
	// ReasonKeySecretUnusable: the key Secret is missing, unlabelled, too
	// large or holds no usable key; the last good keys, if any, stay in
	// use.
	ReasonKeySecretUnusable = "KeySecretUnusable"
	// ReasonIssuerUnreachable: the issuer's keys could not be fetched;
	// the last good keys, if any, stay in use.
	ReasonIssuerUnreachable = "IssuerUnreachable"
	// ReasonForwardAuthUnusable: the forward-auth Service is missing, has
	// no selector or port, or no Ready pod.
	ReasonForwardAuthUnusable = "ForwardAuthUnusable"
	// ReasonAuthNotReady: Ready is False because AuthReady is False.
	ReasonAuthNotReady = "AuthNotReady"
)

// WsRoute allowlists the pods, selected by labels in its own namespace, that
// the websocket gateway may reach at wss://<host><pathPrefix>/<podIP>/...
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wsr,categories=wsgate
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=`.spec.hostnames`
// +kubebuilder:printcolumn:name="Prefix",type=string,JSONPath=`.spec.pathPrefix`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.endpoints.count`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.status.access`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WsRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state.
	Spec WsRouteSpec `json:"spec"`
	// Status is the observed state.
	//
	// +optional
	Status WsRouteStatus `json:"status,omitempty"`
}

// WsRouteList is a list of WsRoutes.
//
// +kubebuilder:object:root=true
type WsRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the routes.
	Items []WsRoute `json:"items"`
}
