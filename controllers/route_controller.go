package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/tablebuild"
)

// RouteReconciler writes each WsRoute's status and Events from the latest
// table build, and manages the Certificates routes own. It runs on every
// replica but works only while Leader says this replica leads; status is
// written only when it changed.
type RouteReconciler struct {
	client.Client
	// Builds supplies the latest build result and tells which routes
	// changed.
	Builds *TableBuilder
	// Recorder emits Events with the same reasons as the conditions.
	Recorder recorder.EventRecorder
	// CertManager says the cluster serves cert-manager's Certificate API:
	// routes with tls.issuerRef then own a Certificate (see
	// CertManagerInstalled).
	CertManager bool
	// Leader gates the writes: while this replica does not lead, routes
	// are left alone, and each time it becomes the leader every route is
	// reconciled again. Nil: this replica is the only writer.
	Leader *LeaderElection
}

// +kubebuilder:rbac:groups=wsgate.io,resources=wsroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=wsgate.io,resources=wsroutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=wsgate.io,resources=wsgrants,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete

// Reconcile brings one route's status in line with the latest build.
func (r *RouteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if !r.Leader.IsLeader() {
		return ctrl.Result{}, nil // the next leader reconciles every route
	}
	var route wsgatev1alpha1.WsRoute
	if err := r.Get(ctx, req.NamespacedName, &route); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	res := r.Builds.Latest()
	if res == nil {
		return ctrl.Result{}, nil // the first build enqueues every route
	}
	st, ok := res.Routes[routing.RouteKey{Namespace: route.Namespace, Name: route.Name}]
	if !ok || st.Generation != route.Generation {
		return ctrl.Result{}, nil // the build that sees this generation enqueues it
	}

	var cert certificateOutcome
	if r.CertManager {
		var err error
		if cert, err = r.reconcileCertificate(ctx, &route, st.Accepted); err != nil {
			return ctrl.Result{}, err
		}
		if cert.eventReason != "" {
			// The Event names the Certificate as related object while
			// there is one; a nil *Certificate in the interface would
			// make the recorder dereference it.
			var related runtime.Object
			if cert.cert != nil {
				related = cert.cert
			}
			r.Recorder.Eventf(&route, related, corev1.EventTypeNormal, cert.eventReason, "Reconcile", "%s", cert.eventMessage)
		}
	}

	updated := route.DeepCopy()
	transitions := applyStatus(&updated.Status, route.Generation, st, certificateCondition(&route, st, r.CertManager, cert))
	if equality.Semantic.DeepEqual(route.Status, updated.Status) {
		return ctrl.Result{}, nil
	}
	// The optimistic lock makes a reconcile that read a stale route from
	// the cache fail and retry, instead of writing (and announcing in
	// Events) a transition twice.
	if err := r.Status().Patch(ctx, updated, client.MergeFromWithOptions(&route, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch status of WsRoute %s: %w", req.NamespacedName, err)
	}
	log.FromContext(ctx).V(1).Info("status updated", "accepted", st.Accepted, "reason", st.Reason, "pods", st.Endpoints.Count)
	for _, c := range transitions {
		eventType := corev1.EventTypeNormal
		if c.Status != metav1.ConditionTrue {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(updated, nil, eventType, c.Reason, c.Type, "%s", c.Message)
	}
	if msg := revokedMessage(route.Status.Endpoints, updated.Status.Endpoints, route.Spec.RevokePolicy); msg != "" {
		r.Recorder.Eventf(updated, nil, corev1.EventTypeNormal, EventPodsRevoked, "Revoke", "%s", msg)
	}
	return ctrl.Result{}, nil
}

// EventPodsRevoked is the reason of the Event that says pods left a
// route's allowlist.
const EventPodsRevoked = "PodsRevoked"

// revokedMessage describes the pods that left the allowlist between two
// statuses (names as far as the bounded lists show them), or "" if none.
func revokedMessage(before, after wsgatev1alpha1.RouteEndpoints, policy wsgatev1alpha1.RevokePolicy) string {
	if after.Count >= before.Count && !podsRemoved(before, after) {
		return ""
	}
	kept := make(map[string]bool, len(after.Pods))
	for _, p := range after.Pods {
		kept[p.Name] = true
	}
	var names []string
	for _, p := range before.Pods {
		if !kept[p.Name] {
			names = append(names, p.Name)
		}
	}
	what := "their open tunnels are closed with 1008"
	if policy == wsgatev1alpha1.RevokeDrain {
		what = "their open tunnels drain (revokePolicy Drain)"
	}
	if len(names) == 0 {
		return fmt.Sprintf("%d pod(s) left the allowlist (%d remain); %s.", before.Count-after.Count, after.Count, what)
	}
	return fmt.Sprintf("Pod(s) %s left the allowlist (%d remain); %s.", strings.Join(names, ", "), after.Count, what)
}

// podsRemoved reports whether a pod listed before is not listed after,
// while both lists are complete.
func podsRemoved(before, after wsgatev1alpha1.RouteEndpoints) bool {
	if int(before.Count) != len(before.Pods) || int(after.Count) != len(after.Pods) {
		return false
	}
	kept := make(map[string]bool, len(after.Pods))
	for _, p := range after.Pods {
		kept[p.Name] = true
	}
	for _, p := range before.Pods {
		if !kept[p.Name] {
			return true
		}
	}
	return false
}

// applyStatus writes the build's view of a route (its AuthReady condition
// included, on accepted routes with auth), and its certificate's condition
// (nil: none), into status and returns the conditions whose status or
// reason changed (each gets an Event: an unusable key Secret, an issuer
// not granted or not reachable, a forward-auth Service without pods).
func applyStatus(status *wsgatev1alpha1.WsRouteStatus, generation int64, st tablebuild.RouteStatus, cert *metav1.Condition) []metav1.Condition {
	status.ObservedGeneration = generation
	status.Endpoints = st.Endpoints
	status.Hostnames = st.Hostnames
	status.Access = st.Access

	accepted := metav1.Condition{
		Type: wsgatev1alpha1.ConditionAccepted, Status: metav1.ConditionTrue,
		Reason: wsgatev1alpha1.ReasonAccepted, Message: "The route is valid and owns its hosts and path prefix.",
		ObservedGeneration: generation,
	}
	if !st.Accepted {
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, st.Reason, st.Message
	}

	ready := metav1.Condition{Type: wsgatev1alpha1.ConditionReady, ObservedGeneration: generation}
	switch {
	case !st.Accepted:
		ready.Status, ready.Reason = metav1.ConditionFalse, wsgatev1alpha1.ReasonNotAccepted
		ready.Message = "The route is not accepted: see the Accepted condition."
	case cert != nil && cert.Status != metav1.ConditionTrue:
		ready.Status, ready.Reason = metav1.ConditionFalse, wsgatev1alpha1.ReasonCertificateNotReady
		ready.Message = "The route's certificate is not ready: see the CertificateReady condition."
	case st.Auth != nil && !st.Auth.Ready:
		ready.Status, ready.Reason = metav1.ConditionFalse, wsgatev1alpha1.ReasonAuthNotReady
		ready.Message = "The route's auth cannot be fully checked: see the AuthReady condition."
	case st.Endpoints.Count == 0:
		ready.Status, ready.Reason = metav1.ConditionFalse, wsgatev1alpha1.ReasonNoEndpoints
		ready.Message = "No selected pod is allowlisted" + skippedSummary(st.Endpoints.Skipped) + "."
	default:
		ready.Status, ready.Reason = metav1.ConditionTrue, wsgatev1alpha1.ReasonReady
		ready.Message = fmt.Sprintf("%d pod(s) allowlisted%s.", st.Endpoints.Count, skippedSummary(st.Endpoints.Skipped))
	}

	conds := []metav1.Condition{accepted, ready}
	if cert != nil {
		conds = append(conds, *cert)
	} else {
		meta.RemoveStatusCondition(&status.Conditions, wsgatev1alpha1.ConditionCertificateReady)
	}
	if st.Auth != nil {
		c := metav1.Condition{
			Type: wsgatev1alpha1.ConditionAuthReady, Status: metav1.ConditionFalse,
			Reason: st.Auth.Reason, Message: st.Auth.Message, ObservedGeneration: generation,
		}
		if st.Auth.Ready {
			c.Status = metav1.ConditionTrue
		}
		conds = append(conds, c)
	} else {
		meta.RemoveStatusCondition(&status.Conditions, wsgatev1alpha1.ConditionAuthReady)
	}
	var transitions []metav1.Condition
	for _, c := range conds {
		old := meta.FindStatusCondition(status.Conditions, c.Type)
		if old == nil || old.Status != c.Status || old.Reason != c.Reason {
			transitions = append(transitions, c)
		}
		meta.SetStatusCondition(&status.Conditions, c)
	}
	return transitions
}

// skippedSummary renders skipped pod counts, e.g. "; skipped: NotReady=2".
func skippedSummary(skipped []wsgatev1alpha1.SkippedPods) string {
	if len(skipped) == 0 {
		return ""
	}
	parts := make([]string, len(skipped))
	for i, s := range skipped {
		parts[i] = fmt.Sprintf("%s=%d", s.Reason, s.Count)
	}
	return "; skipped pods: " + strings.Join(parts, ", ")
}

// SetupWithManager registers the reconciler: it reconciles a route when
// its spec changes, when a table build changes its status, when its
// Certificate changes, and when this replica becomes the leader. It runs
// whether this replica leads or not (Leader gates its writes).
func (r *RouteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)})
	if r.CertManager {
		b = b.Owns(&cmapi.Certificate{})
	}
	if r.Leader != nil {
		b = b.WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			r.Leader.OnElected(func() {
				// The first build enqueues every route; until then there
				// is nothing to write.
				if res := r.Builds.Latest(); res != nil {
					for k := range res.Routes {
						q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name}})
					}
				}
			})
			return nil
		}))
	}
	return b.
		For(&wsgatev1alpha1.WsRoute{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			r.Builds.OnBuild(func(changed []routing.RouteKey) {
				for _, k := range changed {
					q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name}})
				}
			})
			return nil
		})).
		Named("wsroute").
		Complete(r)
}
