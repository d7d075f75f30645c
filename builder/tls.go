package builder

import (
	"crypto/tls"
	"fmt"

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
// records each route's certificate problem in its status.
func certificates(accepted []*candidate, secrets map[types.NamespacedName]TLSSecret, defaultSecret types.NamespacedName, statuses map[routing.RouteKey]RouteStatus) routing.Certificates {
	certs := routing.Certificates{ByHost: make(map[string]*tls.Certificate)}
	if defaultSecret.Name != "" {
		certs.Default = secrets[defaultSecret].Certificate
	}
	for _, c := range accepted {
		spec := c.wr.Spec.TLS
		if spec == nil {
			continue
		}
		key := types.NamespacedName{Namespace: c.key.Namespace, Name: spec.SecretName}
		sec, found := secrets[key]
		st := statuses[c.key]
		switch {
		case !found:
			st.SecretMissing = true
			st.CertificateProblem = fmt.Sprintf("Secret %s not found; wsgate reads only Secrets labelled %s=true", key, v1alpha1.CertificateLabel)
		case sec.Problem != "" && sec.Certificate != nil:
			st.CertificateProblem = fmt.Sprintf("Secret %s: %s; serving its last good certificate", key, sec.Problem)
		case sec.Problem != "":
			st.CertificateProblem = fmt.Sprintf("Secret %s: %s", key, sec.Problem)
		}
		statuses[c.key] = st
		if sec.Certificate == nil {
			continue
		}
		for _, h := range c.route.Hosts {
			if _, taken := certs.ByHost[h]; !taken {
				certs.ByHost[h] = sec.Certificate
			}
		}
	}
	return certs
}
