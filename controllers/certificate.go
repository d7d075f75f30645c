package controllers

import (
	"context"
	"fmt"
	"slices"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/tablebuild"
)

// The label on the Certificates wsgate creates.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "wsgate"
)

// Event reasons for the Certificates a route owns.
const (
	EventCertificateCreated = "CertificateCreated"
	EventCertificateUpdated = "CertificateUpdated"
	EventCertificateDeleted = "CertificateDeleted"
)

// CertManagerInstalled asks the API server whether it serves
// cert-manager's Certificate API (cert-manager.io/v1).
func CertManagerInstalled(cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	resources, err := dc.ServerResourcesForGroupVersion(cmapi.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range resources.APIResources {
		if r.Kind == cmapi.CertificateKind {
			return true, nil
		}
	}
	return false, nil
}

// certificateFor is the Certificate a route with tls.issuerRef owns: named
// after its Secret (as cert-manager's ingress-shim does), for its
// hostnames, with the label that makes wsgate read the Secret.
func certificateFor(route *wsgatev1alpha1.WsRoute) *cmapi.Certificate {
	t := route.Spec.TLS
	names := make([]string, len(route.Spec.Hostnames))
	for i, h := range route.Spec.Hostnames {
		names[i] = string(h)
	}
	slices.Sort(names)
	return &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{
			Name:      t.SecretName,
			Namespace: route.Namespace,
			Labels:    map[string]string{managedByLabel: managedBy},
		},
		Spec: cmapi.CertificateSpec{
			DNSNames:   names,
			SecretName: t.SecretName,
			IssuerRef:  cmmeta.IssuerReference{Name: t.IssuerRef.Name, Kind: t.IssuerRef.Kind, Group: t.IssuerRef.Group},
			SecretTemplate: &cmapi.CertificateSecretTemplate{
				Labels: map[string]string{wsgatev1alpha1.CertificateLabel: "true"},
			},
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
		},
	}
}

// certificateOutcome is what reconciling a route's Certificate found.
type certificateOutcome struct {
	// cert is the route's Certificate as it is now, nil when there is none.
	cert *cmapi.Certificate
	// conflict is set when a Certificate of that name belongs to someone
	// else.
	conflict string
	// event is a Normal Event to emit (reason, message), if any.
	eventReason, eventMessage string
}

// reconcileCertificate makes the route's owned Certificate match its spec:
// created or updated while the route is accepted with tls.issuerRef, and
// deleted when the route no longer asks for one or is not accepted (a
// name or issuer it is not granted, a name another namespace owns), so
// that cert-manager neither issues nor renews certificates for names the
// route's namespace may not use. Deleting the route deletes it through
// its owner reference.
func (r *RouteReconciler) reconcileCertificate(ctx context.Context, route *wsgatev1alpha1.WsRoute, accepted bool) (certificateOutcome, error) {
	var owned cmapi.CertificateList
	if err := r.List(ctx, &owned, client.InNamespace(route.Namespace), client.MatchingLabels{managedByLabel: managedBy}); err != nil {
		return certificateOutcome{}, fmt.Errorf("list Certificates: %w", err)
	}
	var want *cmapi.Certificate
	if t := route.Spec.TLS; t != nil && t.IssuerRef != nil && accepted {
		want = certificateFor(route)
	}
	var out certificateOutcome
	for i := range owned.Items {
		c := &owned.Items[i]
		if !metav1.IsControlledBy(c, route) {
			continue
		}
		if want != nil && c.Name == want.Name {
			out.cert = c
			continue
		}
		// An earlier spec's Certificate (issuerRef removed, secret
		// renamed), or the route is no longer accepted.
		if err := r.Delete(ctx, c); client.IgnoreNotFound(err) != nil {
			return out, fmt.Errorf("delete Certificate %s: %w", c.Name, err)
		}
		why := "which the route no longer asks for"
		if !accepted {
			why = "as the route is not accepted"
		}
		out.eventReason, out.eventMessage = EventCertificateDeleted, fmt.Sprintf("Deleted Certificate %s, %s.", c.Name, why)
	}
	if want == nil {
		return out, nil
	}
	if out.cert == nil {
		if err := controllerutil.SetControllerReference(route, want, r.Scheme()); err != nil {
			return out, err
		}
		err := r.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			out.conflict = fmt.Sprintf("Certificate %s/%s exists and is not owned by this route; rename tls.secretName or delete that Certificate.", want.Namespace, want.Name)
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("create Certificate %s: %w", want.Name, err)
		}
		out.cert = want
		out.eventReason, out.eventMessage = EventCertificateCreated, fmt.Sprintf("Created Certificate %s for %v from %s %s.", want.Name, want.Spec.DNSNames, want.Spec.IssuerRef.Kind, want.Spec.IssuerRef.Name)
		return out, nil
	}
	if equality.Semantic.DeepEqual(out.cert.Spec, want.Spec) {
		return out, nil
	}
	updated := out.cert.DeepCopy()
	updated.Spec = want.Spec
	if err := r.Update(ctx, updated); err != nil {
		return out, fmt.Errorf("update Certificate %s: %w", want.Name, err)
	}
	out.cert = updated
	out.eventReason, out.eventMessage = EventCertificateUpdated, fmt.Sprintf("Updated Certificate %s for %v.", want.Name, want.Spec.DNSNames)
	return out, nil
}

// certificateCondition is the route's CertificateReady condition, or nil
// when the route has no spec.tls or is not accepted.
func certificateCondition(route *wsgatev1alpha1.WsRoute, st tablebuild.RouteStatus, certManager bool, out certificateOutcome) *metav1.Condition {
	t := route.Spec.TLS
	if t == nil || !st.Accepted {
		return nil
	}
	c := &metav1.Condition{Type: wsgatev1alpha1.ConditionCertificateReady, ObservedGeneration: route.Generation, Status: metav1.ConditionFalse}
	if t.IssuerRef != nil {
		switch {
		case !certManager:
			c.Reason = wsgatev1alpha1.ReasonCertManagerMissing
			c.Message = "tls.issuerRef is set but the cluster has no cert-manager Certificate API; install cert-manager and restart wsgate, or remove issuerRef and provide the Secret."
			return c
		case out.conflict != "":
			c.Reason, c.Message = wsgatev1alpha1.ReasonCertificateConflict, out.conflict
			return c
		case out.cert == nil:
			c.Reason, c.Message = wsgatev1alpha1.ReasonCertificatePending, "The Certificate is being created."
			return c
		}
		ready := certificateReady(out.cert)
		if ready != nil && ready.Status == cmmeta.ConditionTrue && st.SecretMissing {
			// cert-manager has written the Secret; the next table build
			// loads it and reconciles the route again.
			c.Reason = wsgatev1alpha1.ReasonCertificatePending
			c.Message = fmt.Sprintf("Certificate %s is Ready; loading Secret %s.", out.cert.Name, t.SecretName)
			return c
		}
		if ready == nil || ready.Status != cmmeta.ConditionTrue {
			c.Reason = wsgatev1alpha1.ReasonCertificatePending
			c.Message = fmt.Sprintf("Certificate %s is not Ready", out.cert.Name)
			if ready != nil && ready.Message != "" {
				c.Message += ": " + ready.Message
			} else {
				c.Message += "."
			}
			return c
		}
	}
	if st.CertificateProblem != "" {
		c.Reason, c.Message = wsgatev1alpha1.ReasonSecretUnusable, st.CertificateProblem+"."
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, wsgatev1alpha1.ReasonCertificateIssued
	c.Message = fmt.Sprintf("The certificate in Secret %s is served for the route's hosts.", t.SecretName)
	return c
}

func certificateReady(c *cmapi.Certificate) *cmapi.CertificateCondition {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == cmapi.CertificateConditionReady {
			return &c.Status.Conditions[i]
		}
	}
	return nil
}
