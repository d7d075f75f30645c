package controllers

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/tablebuild"
)

// MaxCertificateSecretBytes bounds the tls.crt and tls.key of one
// certificate Secret together. A Secret past it keeps no data in the
// cache, and routes that name it report it as unusable: one tenant's
// large Secrets cannot fill every replica's memory.
const MaxCertificateSecretBytes = 64 << 10

// oversizeAnnotation marks, in the cache only, a Secret whose data
// TrimSecret dropped for its size; its value is the size.
const oversizeAnnotation = "wsgate.io/dropped-oversize-data"

// TrimSecret is a cache transform that keeps only a Secret's identity,
// labels, type and its tls.crt and tls.key data; ca.crt and anything else
// are dropped before the object enters the cache, and so are tls.crt and
// tls.key when together they exceed MaxCertificateSecretBytes.
func TrimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	return trimSecret(s, []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey}, MaxCertificateSecretBytes), nil
}

// trimSecret is s with only its identity, labels and type, and the data
// under keys (every key when keys is nil), unless its values come to
// more than limit bytes: then none, and oversizeAnnotation says their
// size.
func trimSecret(s *corev1.Secret, keys []string, limit int) *corev1.Secret {
	out := &corev1.Secret{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion, Labels: s.Labels,
		},
		Type: s.Type,
	}
	data := s.Data
	if keys != nil {
		data = make(map[string][]byte, len(keys))
		for _, k := range keys {
			if v, ok := s.Data[k]; ok {
				data[k] = v
			}
		}
	}
	size := 0
	for _, v := range data {
		size += len(v)
	}
	if size > limit {
		out.Annotations = map[string]string{oversizeAnnotation: strconv.Itoa(size)}
		return out
	}
	out.Data = data
	return out
}

// secretParser keeps the parsed certificate of each TLS Secret, parsing a
// Secret again only when its resourceVersion changes, and remembering the
// last good certificate of a Secret that broke or disappeared.
type secretParser struct {
	entries map[types.NamespacedName]*parsedSecret
	now     func() time.Time
}

type parsedSecret = parsed[*tls.Certificate]

// parsed is what a parser keeps of one Secret: the resourceVersion it
// last parsed, the last good result, and what is wrong with the data now
// ("" when nothing).
type parsed[T any] struct {
	resourceVersion string
	lastGood        T
	problem         string
}

// refresh parses the Secret again when its resourceVersion rv is not the
// one parsed last; a result that fails keeps the last good one.
func (e *parsed[T]) refresh(rv string, parse func() (T, error)) {
	if e.resourceVersion == rv && rv != "" {
		return
	}
	e.resourceVersion = rv
	v, err := parse()
	if err != nil {
		e.problem = err.Error()
		return
	}
	e.lastGood, e.problem = v, ""
}

// update parses the current Secrets that wanted says a route or the
// default certificate names, and returns what tablebuild.Build needs; the
// others are neither parsed nor kept. Secrets that are gone keep their
// last good certificate while they are still wanted.
func (p *secretParser) update(secrets []corev1.Secret, wanted func(types.NamespacedName) bool) map[types.NamespacedName]tablebuild.TLSSecret {
	if p.entries == nil {
		p.entries = make(map[types.NamespacedName]*parsedSecret)
	}
	seen := make(map[types.NamespacedName]bool, len(secrets))
	for i := range secrets {
		s := &secrets[i]
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		if !wanted(key) {
			continue
		}
		seen[key] = true
		e := p.entries[key]
		if e == nil {
			e = &parsedSecret{}
			p.entries[key] = e
		}
		e.refresh(s.ResourceVersion, func() (*tls.Certificate, error) { return parseTLSSecret(s, p.now()) })
	}
	out := make(map[types.NamespacedName]tablebuild.TLSSecret, len(p.entries))
	for key, e := range p.entries {
		if !wanted(key) {
			delete(p.entries, key)
			continue
		}
		if !seen[key] {
			if e.lastGood == nil {
				delete(p.entries, key)
				continue
			}
			e.resourceVersion, e.problem = "", "the Secret was deleted"
		}
		out[key] = tablebuild.TLSSecret{Certificate: e.lastGood, Problem: e.problem}
	}
	return out
}

// parseTLSSecret reads a certificate chain and its key from a Secret of
// type kubernetes.io/tls.
func parseTLSSecret(s *corev1.Secret, now time.Time) (*tls.Certificate, error) {
	if s.Type != corev1.SecretTypeTLS {
		return nil, fmt.Errorf("it is of type %q, not %s", s.Type, corev1.SecretTypeTLS)
	}
	if size, dropped := s.Annotations[oversizeAnnotation]; dropped {
		return nil, fmt.Errorf("its %s and %s are %s bytes, more than the %d that wsgate reads", corev1.TLSCertKey, corev1.TLSPrivateKeyKey, size, MaxCertificateSecretBytes)
	}
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("it has no %s and %s", corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("its certificate or key is invalid: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("its certificate is invalid: %w", err)
		}
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("its certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// certificateSecrets lists the Secrets the routes and the default
// certificate name.
func certificateSecrets(routes []wsgatev1alpha1.WsRoute, def types.NamespacedName) map[types.NamespacedName]bool {
	out := make(map[types.NamespacedName]bool)
	if def.Name != "" {
		out[def] = true
	}
	for i := range routes {
		if t := routes[i].Spec.TLS; t != nil {
			out[types.NamespacedName{Namespace: routes[i].Namespace, Name: t.SecretName}] = true
		}
	}
	return out
}
