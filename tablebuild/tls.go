package tablebuild

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// TLSSecret is what the caller knows of one kubernetes.io/tls Secret.
type TLSSecret struct {
	// Certificate is the last good certificate the Secret held; nil if it
	// never held one. It keeps serving while the Secret is broken.
	Certificate *tls.Certificate
	// Problem says why the Secret as it is now cannot be used (missing,
	// bad PEM, key mismatch); "" when it is fine.
	Problem string
}

// certificates picks the certificate of each accepted route's hosts from
// its tls.secretName, oldest route first when two name the same host, and
// records each route's certificate problem in its status. Every host of an
// accepted route gets an entry, nil when none of its routes has a usable
// certificate: the table then serves the default certificate for it,
// never a wildcard's. All routes on a host are of the namespace that owns
// it (resolveClaims), so a host is only ever served its owner's
// certificate or the default.
func certificates(accepted []*candidate, secrets map[types.NamespacedName]TLSSecret, defaultSecret types.NamespacedName, statuses map[routing.RouteKey]RouteStatus) routing.Certificates {
	certs := routing.Certificates{ByHost: make(map[string]*tls.Certificate)}
	if defaultSecret.Name != "" {
		certs.Default = secrets[defaultSecret].Certificate
	}
	for _, c := range accepted {
		var cert *tls.Certificate
		if spec := c.wr.Spec.TLS; spec != nil {
			cert = routeCertificate(c, spec.SecretName, secrets, statuses)
		}
		for _, h := range c.route.Hosts {
			if certs.ByHost[h] == nil {
				certs.ByHost[h] = cert
			}
		}
	}
	return certs
}

// routeCertificate is the certificate in route c's Secret secretName, or
// nil; it records in c's status why the Secret cannot serve, if it
// cannot.
func routeCertificate(c *candidate, secretName string, secrets map[types.NamespacedName]TLSSecret, statuses map[routing.RouteKey]RouteStatus) *tls.Certificate {
	key := types.NamespacedName{Namespace: c.key.Namespace, Name: secretName}
	sec, found := secrets[key]
	st := statuses[c.key]
	switch {
	case !found:
		st.SecretMissing = true
		st.CertificateProblem = fmt.Sprintf("Secret %s not found; wsgate reads only Secrets of type %s labelled %s=true",
			key, corev1.SecretTypeTLS, v1alpha1.CertificateLabel)
	case sec.Problem != "" && sec.Certificate != nil:
		st.CertificateProblem = fmt.Sprintf("Secret %s: %s; serving its last good certificate", key, sec.Problem)
	case sec.Problem != "":
		st.CertificateProblem = fmt.Sprintf("Secret %s: %s", key, sec.Problem)
	}
	statuses[c.key] = st
	return sec.Certificate
}
