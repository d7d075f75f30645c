// Package v1alpha1 contains the wsgate.io/v1alpha1 API: the WsRoute kind,
// which allowlists a set of pods behind the websocket gateway, and the
// cluster-scoped WsGrant kind, with which the cluster admin grants
// hostnames and ClusterIssuers to namespaces.
//
// The package imports only apimachinery so that clients can depend on it
// without pulling in controller code.
//
// +kubebuilder:object:generate=true
// +groupName=wsgate.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "wsgate.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &WsRoute{}, &WsRouteList{}, &WsGrant{}, &WsGrantList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
