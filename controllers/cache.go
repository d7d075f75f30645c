package controllers

import (
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// CacheOptions configures the manager's cache for these controllers: Pods
// compacted to what routing needs (see CompactPod), and only the Secrets of
// type kubernetes.io/tls labelled wsgate.io/certificate=true, trimmed to
// their certificate and key (see TrimSecret), Services trimmed to their
// selector and ports (see TrimService), and (when certManager says
// cert-manager is installed) the cert-manager Certificates that wsgate
// created. Key Secrets have a cache of their own (KeySecretCacheOptions). namespaces, when not empty, limits the
// watched namespaces.
func CacheOptions(certManager bool, namespaces ...string) cache.Options {
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: CompactPod},
			&corev1.Secret{}: {
				Label:     labels.SelectorFromSet(labels.Set{wsgatev1alpha1.CertificateLabel: "true"}),
				Field:     fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)),
				Transform: TrimSecret,
			},
			&corev1.Service{}: {Transform: TrimService},
		},
	}
	if certManager {
		opts.ByObject[&cmapi.Certificate{}] = cache.ByObject{Label: labels.SelectorFromSet(labels.Set{managedByLabel: managedBy})}
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(namespaces))
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}
