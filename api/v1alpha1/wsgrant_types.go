package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GrantedNamespace is a namespace name, or "*" for every namespace.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
type GrantedNamespace string

// HostnamePattern names the hostnames a grant covers: an exact DNS name
// ("ws.example.com"); "*." and a DNS name ("*.example.com"), which covers
// every name under it at any depth, wildcard hostnames included, but not
// the name itself; or "*", which covers every name.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^(\*|(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*)$`
type HostnamePattern string

// GrantedIssuer is the name of a cert-manager ClusterIssuer, or "*" for
// every ClusterIssuer.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$`
type GrantedIssuer string

// WsGrantSpec says what the WsRoutes of some namespaces may claim.
//
// +kubebuilder:validation:XValidation:rule="(has(self.hostnames) && size(self.hostnames) > 0) || self.catchAll || (has(self.clusterIssuers) && size(self.clusterIssuers) > 0) || (has(self.tokenIssuers) && size(self.tokenIssuers) > 0)",message="a grant must grant something: hostnames, catchAll, clusterIssuers or tokenIssuers"
type WsGrantSpec struct {
	// Namespaces are the namespaces whose WsRoutes this grant applies to,
	// by name; "*" applies it to every namespace.
	//
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Namespaces []GrantedNamespace `json:"namespaces"`

	// Hostnames are the names these namespaces' routes may claim in
	// spec.hostnames (and, when the gateway has a default host, by leaving
	// spec.hostnames empty): "ws.example.com" grants that name only,
	// "*.example.com" every name under example.com (x.example.com,
	// a.b.example.com, *.example.com), "*" every name. A granted name is
	// still owned by one namespace at a time: the namespace whose route
	// serves it, else that of the oldest accepted route that claims it.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	Hostnames []HostnamePattern `json:"hostnames,omitempty"`

	// CatchAll lets these namespaces have routes without hostnames when
	// the gateway has no default host: such routes answer on every host
	// that no route names. One namespace owns the catch-all at a time.
	//
	// +optional
	CatchAll bool `json:"catchAll,omitempty"`

	// ClusterIssuers are the cert-manager ClusterIssuers these
	// namespaces' routes may name in tls.issuerRef; "*" allows every one.
	// An Issuer in a route's own namespace needs no grant (its hostnames
	// still do).
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	ClusterIssuers []GrantedIssuer `json:"clusterIssuers,omitempty"`

	// TokenIssuers are the token issuers (exact https:// URLs, as in a
	// route's auth.jwt.issuer) whose keys the gateway may fetch for these
	// namespaces' routes (auth.jwt.keys.source Issuer). The gateway
	// connects to no other address than pods and these issuers (and the
	// jwks_uri their discovery document names on the same host).
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:Pattern=`^https://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$`
	TokenIssuers []string `json:"tokenIssuers,omitempty"`
}

// WsGrant is the cluster admin's grant of hostnames, the catch-all and
// ClusterIssuers to the WsRoutes of some namespaces. A route that claims a
// name (or uses a ClusterIssuer) that no grant gives its namespace is not
// accepted: it gets no traffic and no Certificate. Grants are
// cluster-scoped, so tenants who may only write in their own namespaces
// cannot grant themselves anything.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=wsg,categories=wsgate
// +kubebuilder:printcolumn:name="Namespaces",type=string,JSONPath=`.spec.namespaces`
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=`.spec.hostnames`
// +kubebuilder:printcolumn:name="Catch-all",type=boolean,JSONPath=`.spec.catchAll`
// +kubebuilder:printcolumn:name="ClusterIssuers",type=string,JSONPath=`.spec.clusterIssuers`,priority=1
// +kubebuilder:printcolumn:name="TokenIssuers",type=string,JSONPath=`.spec.tokenIssuers`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WsGrant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the grant allows.
	Spec WsGrantSpec `json:"spec"`
}

// WsGrantList is a list of WsGrants.
//
// +kubebuilder:object:root=true
type WsGrantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the grants.
	Items []WsGrant `json:"items"`
}
