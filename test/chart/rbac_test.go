package chart

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// access is one request the ServiceAccount may or may not make.
type access struct {
	verb, group, resource, subresource, namespace, name string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	if a.name != "" {
		r += " " + a.name
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

// as impersonates the chart's ServiceAccount.
type impersonated struct {
	user   string
	cs     *kubernetes.Clientset
	client client.Client
}

func impersonate(t *testing.T, ns, sa string) impersonated {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	user := "system:serviceaccount:" + ns + ":" + sa
	// The API server adds the ServiceAccount groups (system:serviceaccounts,
	// system:serviceaccounts:<ns>) and system:authenticated.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return impersonated{user: user, cs: cs, client: c}
}

// can asks the API server, as the ServiceAccount, whether it may do a.
func (i impersonated) can(t *testing.T, a access) bool {
	t.Helper()
	r, err := i.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview %s: %v", a, err)
	}
	return r.Status.Allowed
}

// waitCan waits until the RBAC authorizer (fed by informers) sees the
// applied roles: a sure grant is allowed.
func (i impersonated) waitCan(t *testing.T, a access) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !i.can(t, a) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still cannot %s", i.user, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The chart's ServiceAccount, impersonated, can do what the gateway does
// and nothing else that matters, on the RBAC the chart applied.
//
// Secrets: the gateway caches only labelled TLS Secrets, but RBAC cannot
// grant by label, so list and watch of Secrets is granted wherever the
// gateway watches; that reads every Secret there (get is not granted, but a
// list is as good). Writes to Secrets are not granted. watchNamespaces
// limits the grant to those namespaces (checked below).
func TestRBAC(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	ns, other := env.Namespace(t), env.Namespace(t)
	release := "wsgate-rbac"
	m := template(t, release, ns, "")
	apply(t, m)
	sa := impersonate(t, ns, m.one(t, "ServiceAccount").GetName())

	allowed := []access{
		{verb: "list", group: "wsgate.io", resource: "wsroutes"},
		{verb: "watch", group: "wsgate.io", resource: "wsroutes"},
		{verb: "get", group: "wsgate.io", resource: "wsroutes", namespace: other, name: "r"},
		{verb: "patch", group: "wsgate.io", resource: "wsroutes", subresource: "status", namespace: other, name: "r"},
		{verb: "update", group: "wsgate.io", resource: "wsroutes", subresource: "status", namespace: other, name: "r"},
		{verb: "list", resource: "pods"},
		{verb: "watch", resource: "pods"},
		{verb: "list", resource: "secrets"},
		{verb: "watch", resource: "secrets"},
		{verb: "create", group: "events.k8s.io", resource: "events", namespace: other},
		{verb: "patch", group: "events.k8s.io", resource: "events", namespace: other},
		{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: "wsgate.wsgate.io"},
		{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: ns},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: "wsgate.wsgate.io"},
		// The Lease's "became leader" Events (core/v1, beside the Lease).
		{verb: "create", resource: "events", namespace: ns},
		{verb: "patch", resource: "events", namespace: ns},
		{verb: "create", group: "cert-manager.io", resource: "certificates", namespace: other},
		{verb: "update", group: "cert-manager.io", resource: "certificates", namespace: other, name: "c"},
		{verb: "delete", group: "cert-manager.io", resource: "certificates", namespace: other, name: "c"},
		{verb: "list", group: "cert-manager.io", resource: "certificates"},
		{verb: "watch", group: "cert-manager.io", resource: "certificates"},
		// The secure metrics endpoint authenticates and authorizes callers.
		{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
		{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
	}
	denied := []access{
		// Secrets: no get, no writes.
		{verb: "get", resource: "secrets", namespace: other, name: "s"},
		{verb: "create", resource: "secrets", namespace: other},
		{verb: "create", resource: "secrets", namespace: ns},
		{verb: "update", resource: "secrets", namespace: other, name: "s"},
		{verb: "patch", resource: "secrets", namespace: other, name: "s"},
		{verb: "delete", resource: "secrets", namespace: other, name: "s"},
		{verb: "deletecollection", resource: "secrets", namespace: other},
		// Other reads.
		{verb: "get", resource: "configmaps", namespace: ns, name: "c"},
		{verb: "list", resource: "configmaps"},
		{verb: "list", resource: "nodes"},
		{verb: "get", resource: "nodes", name: "n"},
		{verb: "list", resource: "serviceaccounts"},
		{verb: "list", group: "apiextensions.k8s.io", resource: "customresourcedefinitions"},
		// Pods: read only.
		{verb: "create", resource: "pods", namespace: other},
		{verb: "delete", resource: "pods", namespace: other, name: "p"},
		{verb: "get", resource: "pods", subresource: "exec", namespace: other, name: "p"},
		{verb: "create", resource: "pods", subresource: "exec", namespace: other, name: "p"},
		{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: ns, name: "wsgate-rbac"},
		// RBAC: no escalation.
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
		{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: release},
		{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "cluster-admin"},
		{verb: "update", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: release},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "rolebindings", namespace: ns},
		{verb: "update", group: "rbac.authorization.k8s.io", resource: "roles", namespace: ns, name: release + "-leader-election"},
		{verb: "impersonate", resource: "users"},
		{verb: "impersonate", resource: "serviceaccounts", namespace: ns},
		// Leases of other namespaces.
		{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: other, name: "wsgate.wsgate.io"},
		{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: other},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: other, name: "wsgate.wsgate.io"},
		{verb: "list", group: "coordination.k8s.io", resource: "leases"},
		{verb: "create", resource: "events", namespace: other},
		// WsRoutes: status only, never the spec.
		{verb: "create", group: "wsgate.io", resource: "wsroutes", namespace: other},
		{verb: "update", group: "wsgate.io", resource: "wsroutes", namespace: other, name: "r"},
		{verb: "patch", group: "wsgate.io", resource: "wsroutes", namespace: other, name: "r"},
		{verb: "delete", group: "wsgate.io", resource: "wsroutes", namespace: other, name: "r"},
		// The CRD.
		{verb: "update", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", name: "wsroutes.wsgate.io"},
	}
	allowed = append(allowed, grantReads...)
	denied = append(denied, grantWrites...)
	sa.waitCan(t, allowed[0])
	sa.waitCan(t, access{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: ns})
	for _, a := range allowed {
		if !sa.can(t, a) {
			t.Errorf("%s cannot %s; the gateway needs it", sa.user, a)
		}
	}
	for _, a := range denied {
		if sa.can(t, a) {
			t.Errorf("%s can %s; it must not", sa.user, a)
		}
	}

	// The same with real requests.
	ctx := context.Background()
	route := &wsgatev1alpha1.WsRoute{}
	if err := readRouteSample(route); err != nil {
		t.Fatal(err)
	}
	route.Namespace = other
	route.Spec.TLS = nil
	if err := env.Client.Create(ctx, route); err != nil {
		t.Fatalf("create the sample WsRoute as admin: %v", err)
	}
	if err := sa.client.List(ctx, &wsgatev1alpha1.WsRouteList{}); err != nil {
		t.Errorf("list WsRoutes as the gateway: %v", err)
	}
	if err := sa.client.List(ctx, &corev1.SecretList{}, client.InNamespace(other)); err != nil {
		t.Errorf("list Secrets as the gateway: %v", err)
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"observedGeneration":1}}`))
	if err := sa.client.Status().Patch(ctx, route.DeepCopy(), patch); err != nil {
		t.Errorf("patch WsRoute status as the gateway: %v", err)
	}
	specPatch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"pathPrefix":"/other"}}`))
	if err := sa.client.Patch(ctx, route.DeepCopy(), specPatch); !apierrors.IsForbidden(err) {
		t.Errorf("patch WsRoute spec as the gateway: %v, want Forbidden", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "stolen", Namespace: other}}
	if err := sa.client.Create(ctx, secret); !apierrors.IsForbidden(err) {
		t.Errorf("create a Secret as the gateway: %v, want Forbidden", err)
	}
	if err := sa.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kube-root-ca.crt"}, &corev1.ConfigMap{}); !apierrors.IsForbidden(err) {
		t.Errorf("get a ConfigMap as the gateway: %v, want Forbidden", err)
	}
	lease := func(ns string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "wsgate.wsgate.io", Namespace: ns}}
	}
	if err := sa.client.Create(ctx, lease(ns)); err != nil {
		t.Errorf("create the leader-election Lease in %s as the gateway: %v", ns, err)
	}
	if err := sa.client.Create(ctx, lease(other)); !apierrors.IsForbidden(err) {
		t.Errorf("create a Lease in %s as the gateway: %v, want Forbidden", other, err)
	}
	if err := sa.client.List(ctx, &corev1.NodeList{}); !apierrors.IsForbidden(err) {
		t.Errorf("list Nodes as the gateway: %v, want Forbidden", err)
	}
	checkGrantRequests(t, sa, "rbac-"+ns)

	t.Run("metrics reader", func(t *testing.T) {
		// metrics.readerSubjects may scrape the secure endpoint; the
		// gateway's own ServiceAccount may not (it need not).
		ns := env.Namespace(t)
		m := template(t, "wsgate-rbac-metrics", ns, fmt.Sprintf("metrics:\n  enabled: true\n  readerSubjects: [{kind: ServiceAccount, name: prometheus, namespace: %s}]\n", ns))
		apply(t, m)
		getMetrics := func(i impersonated) bool {
			r, err := i.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return r.Status.Allowed
		}
		prom := impersonate(t, ns, "prometheus")
		deadline := time.Now().Add(15 * time.Second)
		for !getMetrics(prom) {
			if time.Now().After(deadline) {
				t.Fatalf("%s cannot get /metrics", prom.user)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if gw := impersonate(t, ns, m.one(t, "ServiceAccount").GetName()); getMetrics(gw) {
			t.Errorf("%s can get /metrics; only the reader subjects should", gw.user)
		}
		if other := impersonate(t, ns, "default"); getMetrics(other) {
			t.Errorf("%s can get /metrics", other.user)
		}
	})

	t.Run("watchNamespaces", func(t *testing.T) {
		// With watchNamespaces the grant holds in those namespaces only.
		ns, watched, unwatched := env.Namespace(t), env.Namespace(t), env.Namespace(t)
		m := template(t, "wsgate-rbac-scoped", ns, fmt.Sprintf("watchNamespaces: [%s]", watched))
		apply(t, m)
		sa := impersonate(t, ns, m.one(t, "ServiceAccount").GetName())
		sa.waitCan(t, access{verb: "list", resource: "secrets", namespace: watched})
		// WsGrants are cluster-scoped: their own ClusterRoleBinding.
		sa.waitCan(t, grantReads[0])
		for _, a := range append([]access{
			{verb: "list", resource: "secrets", namespace: watched},
			{verb: "watch", resource: "pods", namespace: watched},
			{verb: "list", group: "wsgate.io", resource: "wsroutes", namespace: watched},
			{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: ns},
		}, grantReads...) {
			if !sa.can(t, a) {
				t.Errorf("%s cannot %s", sa.user, a)
			}
		}
		// The cluster-wide binding of WsGrants grants nothing else
		// cluster-wide: the rule it comes from also names wsroutes.
		for _, a := range []access{
			{verb: "list", resource: "secrets"},
			{verb: "list", resource: "secrets", namespace: unwatched},
			{verb: "list", resource: "secrets", namespace: ns},
			{verb: "list", resource: "pods", namespace: unwatched},
			{verb: "list", group: "wsgate.io", resource: "wsroutes"},
			{verb: "watch", group: "wsgate.io", resource: "wsroutes"},
			{verb: "list", group: "wsgate.io", resource: "wsroutes", namespace: unwatched},
			{verb: "get", group: "wsgate.io", resource: "wsroutes", namespace: unwatched, name: "r"},
			{verb: "patch", group: "wsgate.io", resource: "wsroutes", subresource: "status", namespace: unwatched, name: "r"},
			{verb: "list", group: "cert-manager.io", resource: "certificates", namespace: unwatched},
		} {
			if sa.can(t, a) {
				t.Errorf("%s can %s; it watches %s only", sa.user, a, watched)
			}
		}
		for _, a := range grantWrites {
			if sa.can(t, a) {
				t.Errorf("%s can %s; it must not", sa.user, a)
			}
		}
		checkGrantRequests(t, sa, "rbac-scoped-"+ns)
	})
}

// What the gateway may do with WsGrants, cluster-scoped: read them (the
// table builder lists and watches them), never write them.
var (
	grantReads = []access{
		{verb: "list", group: "wsgate.io", resource: "wsgrants"},
		{verb: "watch", group: "wsgate.io", resource: "wsgrants"},
		{verb: "get", group: "wsgate.io", resource: "wsgrants", name: "g"},
	}
	grantWrites = []access{
		{verb: "create", group: "wsgate.io", resource: "wsgrants"},
		{verb: "update", group: "wsgate.io", resource: "wsgrants", name: "g"},
		{verb: "patch", group: "wsgate.io", resource: "wsgrants", name: "g"},
		{verb: "delete", group: "wsgate.io", resource: "wsgrants", name: "g"},
		{verb: "deletecollection", group: "wsgate.io", resource: "wsgrants"},
	}
)

// checkGrantRequests makes real requests on WsGrants as the gateway: on a
// grant the admin created (named name), get and list succeed; create,
// update, patch and delete are Forbidden.
func checkGrantRequests(t *testing.T, sa impersonated, name string) {
	t.Helper()
	ctx := context.Background()
	grant := &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: wsgatev1alpha1.WsGrantSpec{
			Namespaces: []wsgatev1alpha1.GrantedNamespace{"games"},
			Hostnames:  []wsgatev1alpha1.HostnamePattern{wsgatev1alpha1.HostnamePattern(name + ".example.com")},
		},
	}
	if err := env.Client.Create(ctx, grant); err != nil {
		t.Fatalf("create WsGrant %s as admin: %v", name, err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), grant) })

	var list wsgatev1alpha1.WsGrantList
	if err := sa.client.List(ctx, &list); err != nil {
		t.Errorf("list WsGrants as the gateway: %v", err)
	} else if !slices.ContainsFunc(list.Items, func(g wsgatev1alpha1.WsGrant) bool { return g.Name == name }) {
		t.Errorf("list WsGrants as the gateway: %s is not among the %d listed", name, len(list.Items))
	}
	if err := sa.client.Get(ctx, types.NamespacedName{Name: name}, &wsgatev1alpha1.WsGrant{}); err != nil {
		t.Errorf("get WsGrant %s as the gateway: %v", name, err)
	}

	mine := &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-self"},
		Spec: wsgatev1alpha1.WsGrantSpec{
			Namespaces: []wsgatev1alpha1.GrantedNamespace{"*"},
			Hostnames:  []wsgatev1alpha1.HostnamePattern{"*"},
		},
	}
	if err := sa.client.Create(ctx, mine); !apierrors.IsForbidden(err) {
		t.Errorf("create a WsGrant as the gateway: %v, want Forbidden", err)
		_ = env.Client.Delete(ctx, mine)
	}
	widen := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"namespaces":["*"]}}`))
	if err := sa.client.Patch(ctx, grant.DeepCopy(), widen); !apierrors.IsForbidden(err) {
		t.Errorf("patch WsGrant %s as the gateway: %v, want Forbidden", name, err)
	}
	upd := grant.DeepCopy()
	upd.Spec.Hostnames = []wsgatev1alpha1.HostnamePattern{"*"}
	if err := sa.client.Update(ctx, upd); !apierrors.IsForbidden(err) {
		t.Errorf("update WsGrant %s as the gateway: %v, want Forbidden", name, err)
	}
	if err := sa.client.Delete(ctx, grant.DeepCopy()); !apierrors.IsForbidden(err) {
		t.Errorf("delete WsGrant %s as the gateway: %v, want Forbidden", name, err)
	}
	if err := sa.client.DeleteAllOf(ctx, &wsgatev1alpha1.WsGrant{}); !apierrors.IsForbidden(err) {
		t.Errorf("delete every WsGrant as the gateway: %v, want Forbidden", err)
	}
	// Still there, unchanged.
	var after wsgatev1alpha1.WsGrant
	if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &after); err != nil {
		t.Errorf("WsGrant %s after the gateway's writes: %v", name, err)
	} else if !reflect.DeepEqual(after.Spec, grant.Spec) {
		t.Errorf("WsGrant %s spec = %+v after the gateway's writes, want %+v", name, after.Spec, grant.Spec)
	}
}
