package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/tablebuild"
)

// MaxKeySecretBytes bounds the data of one key Secret (labelled
// wsgate.io/jwks=true), all its keys together. A Secret past it keeps no
// data in the cache, and routes that name it report it as unusable.
const MaxKeySecretBytes = 64 << 10

// KeySecretCacheOptions configures the cache of key Secrets: only the
// Secrets labelled wsgate.io/jwks=true, of any type, trimmed by
// TrimKeySecret. It is a cache of its own, beside the manager's (whose
// Secret informer holds the certificate Secrets: a cache has one
// informer per type). namespaces, when not empty, limits the watched
// namespaces; set NewInformer as for the manager's cache.
func KeySecretCacheOptions(namespaces ...string) cache.Options {
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Label:     labels.SelectorFromSet(labels.Set{wsgatev1alpha1.JWKSLabel: "true"}),
				Transform: TrimKeySecret,
			},
		},
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(namespaces))
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// NewKeySecretCache creates the cache of key Secrets (see
// KeySecretCacheOptions, with NewInformer) and adds it to mgr, which
// starts it, and syncs it, with its own cache.
func NewKeySecretCache(mgr manager.Manager, namespaces ...string) (cache.Cache, error) {
	opts := KeySecretCacheOptions(namespaces...)
	opts.NewInformer = NewInformer
	opts.Scheme, opts.Mapper, opts.HTTPClient = mgr.GetScheme(), mgr.GetRESTMapper(), mgr.GetHTTPClient()
	c, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, fmt.Errorf("create the key Secret cache: %w", err)
	}
	if err := mgr.Add(managedCache{c}); err != nil {
		return nil, fmt.Errorf("add the key Secret cache: %w", err)
	}
	return c, nil
}

// managedCache makes the manager start a cache with its own caches, and
// wait for it to sync before it starts anything else.
type managedCache struct{ cache.Cache }

func (c managedCache) GetCache() cache.Cache { return c.Cache }

// TrimKeySecret is the key Secret cache's transform: it keeps a Secret's
// identity, labels, type and data, and drops the data when it exceeds
// MaxKeySecretBytes.
func TrimKeySecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	return trimSecret(s, nil, MaxKeySecretBytes), nil
}

// keySecretParser keeps the parsed keys of the key Secrets routes name,
// parsing a Secret's data again only when its resourceVersion changes, and
// keeping the last good keys of a Secret whose data broke. A Secret that
// is deleted (or loses its label) takes its keys with it: tokens signed
// with keys the namespace removed are refused at once.
type keySecretParser struct {
	entries map[tablebuild.KeySecretRef]*parsedKeySecret
}

type parsedKeySecret = parsed[auth.KeySet]

// update parses the wanted key Secrets' data among secrets and returns
// what tablebuild.Build needs; the other Secrets are neither parsed nor
// kept.
func (p *keySecretParser) update(secrets []corev1.Secret, wanted map[tablebuild.KeySecretRef]bool) map[tablebuild.KeySecretRef]tablebuild.KeySecret {
	if p.entries == nil {
		p.entries = make(map[tablebuild.KeySecretRef]*parsedKeySecret)
	}
	byName := make(map[types.NamespacedName]*corev1.Secret, len(wanted))
	for ref := range wanted {
		byName[types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}] = nil
	}
	for i := range secrets {
		k := types.NamespacedName{Namespace: secrets[i].Namespace, Name: secrets[i].Name}
		if _, ok := byName[k]; ok {
			byName[k] = &secrets[i]
		}
	}
	out := make(map[tablebuild.KeySecretRef]tablebuild.KeySecret, len(wanted))
	for ref := range p.entries {
		if !wanted[ref] {
			delete(p.entries, ref)
		}
	}
	for ref := range wanted {
		s := byName[types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}]
		if s == nil {
			delete(p.entries, ref) // Build reports it missing
			continue
		}
		e := p.entries[ref]
		if e == nil {
			e = &parsedKeySecret{}
			p.entries[ref] = e
		}
		e.refresh(s.ResourceVersion, func() (auth.KeySet, error) { return parseKeySecret(s, ref) })
		out[ref] = tablebuild.KeySecret{Keys: e.lastGood, Problem: e.problem}
	}
	return out
}

// parseKeySecret reads the keys ref names from a key Secret.
func parseKeySecret(s *corev1.Secret, ref tablebuild.KeySecretRef) (auth.KeySet, error) {
	if size, dropped := s.Annotations[oversizeAnnotation]; dropped {
		return nil, fmt.Errorf("its data is %s bytes, more than the %d that wsgate reads", size, MaxKeySecretBytes)
	}
	data, ok := s.Data[ref.Key]
	if !ok || len(data) == 0 {
		return nil, fmt.Errorf("it has no %s in its data", ref.Key)
	}
	if ref.Shared {
		keys, err := auth.SharedKey(data)
		if err != nil {
			return nil, fmt.Errorf("its %s is not a usable shared key: %w", ref.Key, err)
		}
		return keys, nil
	}
	keys, err := auth.StaticKeys(data)
	if err != nil {
		return nil, fmt.Errorf("its %s is not a usable JSON Web Key Set: %w", ref.Key, err)
	}
	return keys, nil
}

// keySecretRefs lists the key Secret data the routes name.
func keySecretRefs(routes []wsgatev1alpha1.WsRoute) map[tablebuild.KeySecretRef]bool {
	out := make(map[tablebuild.KeySecretRef]bool)
	for i := range routes {
		if ref, ok := tablebuild.KeySecretRefOf(&routes[i]); ok {
			out[ref] = true
		}
	}
	return out
}

// TrimService is the Service cache's transform: it keeps a Service's
// identity, type, selector and ports, which is all that forward auth
// reads (its pods come from the selector, never from its addresses).
func TrimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
		},
		Spec: corev1.ServiceSpec{Type: s.Spec.Type, Selector: s.Spec.Selector},
	}
	if len(s.Spec.Ports) > 0 {
		out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
		for i, p := range s.Spec.Ports {
			out.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: p.TargetPort}
		}
	}
	return out, nil
}

// forwardServices lists the Services the routes' forward auth names, each
// in its route's namespace.
func forwardServices(routes []wsgatev1alpha1.WsRoute) map[types.NamespacedName]bool {
	out := make(map[types.NamespacedName]bool)
	for i := range routes {
		if a := routes[i].Spec.Auth; a != nil && a.ForwardAuth != nil {
			out[types.NamespacedName{Namespace: routes[i].Namespace, Name: a.ForwardAuth.Service}] = true
		}
	}
	return out
}

// The ServiceAccount issuer's discovery document and keys, read through
// the API server.
// +kubebuilder:rbac:urls=/.well-known/openid-configuration;/openid/v1/jwks,verbs=get

// Paths of the API server's ServiceAccount issuer documents.
const (
	serviceAccountDiscoveryPath = "/.well-known/openid-configuration"
	serviceAccountJWKSPath      = "/openid/v1/jwks"
)

// ServiceAccountFetcher reads the cluster's ServiceAccount issuer through
// the API server, with the gateway's own credentials: its name from the
// discovery document, and its keys.
func ServiceAccountFetcher(cfg *rest.Config) (auth.Fetcher, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc := dc.RESTClient()
	return func(ctx context.Context) (string, []byte, error) {
		doc, err := rc.Get().AbsPath(serviceAccountDiscoveryPath).DoRaw(ctx)
		if err != nil {
			return "", nil, fmt.Errorf("read %s from the API server: %w", serviceAccountDiscoveryPath, err)
		}
		if len(doc) > auth.MaxDiscoveryBytes {
			return "", nil, fmt.Errorf("%s is %d bytes, more than %d", serviceAccountDiscoveryPath, len(doc), auth.MaxDiscoveryBytes)
		}
		var d struct {
			Issuer string `json:"issuer"`
		}
		if err := json.Unmarshal(doc, &d); err != nil {
			return "", nil, fmt.Errorf("parse %s: %w", serviceAccountDiscoveryPath, err)
		}
		if d.Issuer == "" {
			return "", nil, fmt.Errorf("%s names no issuer", serviceAccountDiscoveryPath)
		}
		jwks, err := rc.Get().AbsPath(serviceAccountJWKSPath).DoRaw(ctx)
		if err != nil {
			return "", nil, fmt.Errorf("read %s from the API server: %w", serviceAccountJWKSPath, err)
		}
		if len(jwks) > auth.MaxRemoteJWKSBytes {
			return "", nil, fmt.Errorf("%s is %d bytes, more than %d", serviceAccountJWKSPath, len(jwks), auth.MaxRemoteJWKSBytes)
		}
		return d.Issuer, jwks, nil
	}, nil
}
