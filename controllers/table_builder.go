package controllers

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/tablebuild"
)

// Default batching of rebuilds: a build starts Holdoff after the last
// event, but never later than MaxHoldoff after the first unbuilt one.
const (
	DefaultHoldoff    = 20 * time.Millisecond
	DefaultMaxHoldoff = 200 * time.Millisecond
)

// TableBuilder rebuilds the routing table from the cache whenever WsRoutes,
// WsGrants, Pods, certificate or key Secrets, the Services that forward
// auth names, or the fetched token keys change, and publishes it. It runs
// on every replica (it does not need leader election) and never writes to
// the API server.
type TableBuilder struct {
	// Cache is the manager's cache, configured by CacheOptions (Pods
	// compacted by CompactPod).
	Cache cache.Cache
	// KeySecrets is the cache of key Secrets, configured by
	// KeySecretCacheOptions; nil: routes find no key Secret.
	KeySecrets cache.Cache
	// Keyring fetches the keys of token issuers and of the cluster's
	// ServiceAccount issuer; Start starts it. Nil: routes that need those
	// keys have none. Its OnChange should call KeysChanged.
	Keyring *auth.Keyring
	// Publisher receives each new table.
	Publisher *routing.Publisher
	// DefaultHost replaces an empty spec.hostnames.
	DefaultHost string
	// DefaultCertificate names the TLS Secret that serves names no
	// route's certificate covers; optional.
	DefaultCertificate types.NamespacedName
	// Holdoff and MaxHoldoff batch bursts of events (defaults above).
	Holdoff, MaxHoldoff time.Duration
	// Clock is swapped by tests.
	Clock clock.Clock
	// Log receives build summaries.
	Log logr.Logger
	// Metrics, when set, are updated after each build.
	Metrics *TableMetrics

	dirty      chan struct{}
	firstDirty atomic.Int64 // unix nanoseconds of the first change not yet built
	generation uint64
	secrets    secretParser
	keySecrets keySecretParser
	pods       podSet
	started    atomic.Bool
	// services are the Services that forward auth names, as of the last
	// build: changes to other Services trigger no build.
	services atomic.Pointer[map[types.NamespacedName]bool]
	latest   atomic.Pointer[tablebuild.Result]

	mu       sync.Mutex
	watchers []func([]routing.RouteKey)
}

// NeedLeaderElection is false: every replica serves traffic and builds its
// own table.
func (b *TableBuilder) NeedLeaderElection() bool { return false }

// Latest returns the result of the most recent build, or nil before the
// first one.
func (b *TableBuilder) Latest() *tablebuild.Result { return b.latest.Load() }

// OnBuild registers fn to be called after each build with the keys of the
// routes whose build status changed (added, removed or different). fn
// must not block.
func (b *TableBuilder) OnBuild(fn func(changed []routing.RouteKey)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watchers = append(b.watchers, fn)
}

// KeysChanged asks for a rebuild: the keyring's sets changed (keys
// fetched, or a fetch failed). It may be called before Start.
func (b *TableBuilder) KeysChanged() {
	if b.started.Load() {
		b.markDirty()
	}
}

// Start watches WsRoutes, WsGrants, Pods, Secrets and Services, starts the
// keyring, waits for the caches to sync, publishes the first table and
// then rebuilds after each batch of changes until ctx ends.
func (b *TableBuilder) Start(ctx context.Context) error {
	if b.Clock == nil {
		b.Clock = clock.RealClock{}
	}
	if b.Holdoff <= 0 {
		b.Holdoff = DefaultHoldoff
	}
	if b.MaxHoldoff < b.Holdoff {
		b.MaxHoldoff = max(DefaultMaxHoldoff, b.Holdoff)
	}
	b.dirty = make(chan struct{}, 1)
	b.started.Store(true)

	if err := b.watch(ctx, &wsgatev1alpha1.WsRoute{}, routeSpecChanged); err != nil {
		return err
	}
	if err := b.watch(ctx, &wsgatev1alpha1.WsGrant{}, nil); err != nil {
		return err
	}
	pods, err := b.watchPods(ctx)
	if err != nil {
		return err
	}
	if err := b.watch(ctx, &corev1.Secret{}, nil); err != nil {
		return err
	}
	if err := b.watchServices(ctx); err != nil {
		return err
	}
	if b.KeySecrets != nil {
		inf, err := b.KeySecrets.GetInformer(ctx, &corev1.Secret{})
		if err != nil {
			return fmt.Errorf("informer for key Secrets: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { b.markDirty() },
			UpdateFunc: func(any, any) { b.markDirty() },
			DeleteFunc: func(any) { b.markDirty() },
		}); err != nil {
			return fmt.Errorf("event handler for key Secrets: %w", err)
		}
	}
	b.secrets.now = b.Clock.Now
	if b.Keyring != nil {
		b.Keyring.Start(ctx)
	}
	if !b.Cache.WaitForCacheSync(ctx) || !toolscache.WaitForCacheSync(ctx.Done(), pods.HasSynced) ||
		(b.KeySecrets != nil && !b.KeySecrets.WaitForCacheSync(ctx)) {
		return fmt.Errorf("wait for cache sync: %w", ctx.Err())
	}
	if err := b.build(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.dirty:
		}
		if !b.holdoff(ctx) {
			return nil
		}
		if err := b.build(ctx); err != nil {
			b.Metrics.failed()
			b.Log.Error(err, "build routing table")
		}
	}
}

func (b *TableBuilder) watch(ctx context.Context, obj client.Object, changed func(o, n any) bool) error {
	inf, err := b.Cache.GetInformer(ctx, obj)
	if err != nil {
		return fmt.Errorf("informer for %T: %w", obj, err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { b.markDirty() },
		UpdateFunc: func(o, n any) {
			if changed == nil || changed(o, n) {
				b.markDirty()
			}
		},
		DeleteFunc: func(any) { b.markDirty() },
	})
	if err != nil {
		return fmt.Errorf("event handler for %T: %w", obj, err)
	}
	return nil
}

// watchPods keeps b.pods in step with the Pod informer. The returned
// registration has synced once b.pods holds every pod of the initial list.
func (b *TableBuilder) watchPods(ctx context.Context) (toolscache.ResourceEventHandlerRegistration, error) {
	inf, err := b.Cache.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("informer for Pods: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			b.pods.set(obj)
			b.markDirty()
		},
		// Updates that do not change what a build reads (most status
		// changes, resourceVersion-only changes) trigger no build.
		UpdateFunc: func(_, obj any) {
			if b.pods.set(obj) {
				b.markDirty()
			}
		},
		DeleteFunc: func(obj any) {
			b.pods.remove(obj)
			b.markDirty()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("event handler for Pods: %w", err)
	}
	return reg, nil
}

// watchServices rebuilds when a Service that forward auth names changes.
func (b *TableBuilder) watchServices(ctx context.Context) error {
	inf, err := b.Cache.GetInformer(ctx, &corev1.Service{})
	if err != nil {
		return fmt.Errorf("informer for Services: %w", err)
	}
	named := func(obj any) {
		key, err := toolscache.DeletionHandlingObjectToName(obj)
		if err != nil {
			return
		}
		if m := b.services.Load(); m != nil && (*m)[types.NamespacedName{Namespace: key.Namespace, Name: key.Name}] {
			b.markDirty()
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    named,
		UpdateFunc: func(_, obj any) { named(obj) },
		DeleteFunc: named,
	})
	if err != nil {
		return fmt.Errorf("event handler for Services: %w", err)
	}
	return nil
}

func (b *TableBuilder) markDirty() {
	b.firstDirty.CompareAndSwap(0, b.Clock.Now().UnixNano())
	select {
	case b.dirty <- struct{}{}:
	default:
	}
}

// holdoff waits until no event came for Holdoff, or MaxHoldoff passed.
func (b *TableBuilder) holdoff(ctx context.Context) bool {
	deadline := b.Clock.Now().Add(b.MaxHoldoff)
	for {
		wait := min(b.Holdoff, deadline.Sub(b.Clock.Now()))
		if wait <= 0 {
			return true
		}
		t := b.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-b.dirty:
			t.Stop()
		case <-t.C():
			return true
		}
	}
}

func (b *TableBuilder) build(ctx context.Context) error {
	start := b.Clock.Now()
	// Changes from here on belong to the next build.
	changedAt := b.firstDirty.Swap(0)
	var routes wsgatev1alpha1.WsRouteList
	if err := b.Cache.List(ctx, &routes, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list WsRoutes: %w", err)
	}
	var grants wsgatev1alpha1.WsGrantList
	if err := b.Cache.List(ctx, &grants, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list WsGrants: %w", err)
	}
	var secrets corev1.SecretList
	if err := b.Cache.List(ctx, &secrets, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list Secrets: %w", err)
	}
	var keySecrets corev1.SecretList
	if b.KeySecrets != nil {
		if err := b.KeySecrets.List(ctx, &keySecrets, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("list key Secrets: %w", err)
		}
	}
	services, err := b.forwardServices(ctx, routes.Items)
	if err != nil {
		return err
	}
	referenced := certificateSecrets(routes.Items, b.DefaultCertificate)
	in := tablebuild.Input{
		Secrets:    b.secrets.update(secrets.Items, func(k types.NamespacedName) bool { return referenced[k] }),
		KeySecrets: b.keySecrets.update(keySecrets.Items, keySecretRefs(routes.Items)),
		Services:   services,
		Routes:     make([]*wsgatev1alpha1.WsRoute, len(routes.Items)),
		Grants:     make([]*wsgatev1alpha1.WsGrant, len(grants.Items)),
		Pods:       b.pods.list(),
	}
	for i := range routes.Items {
		in.Routes[i] = &routes.Items[i]
	}
	for i := range grants.Items {
		in.Grants[i] = &grants.Items[i]
	}
	b.generation++
	res := tablebuild.Build(in, tablebuild.Options{
		DefaultHost: b.DefaultHost, DefaultCertificate: b.DefaultCertificate,
		Generation: b.generation, Now: start, Keyring: tablebuild.AuthKeyring(b.Keyring),
	})
	if b.Keyring != nil {
		b.Keyring.Retain(res.TokenIssuers)
	}
	prev := b.latest.Swap(res)
	b.Publisher.Publish(res.Table)
	sinceChange := -1.0
	if changedAt != 0 {
		sinceChange = b.Clock.Since(time.Unix(0, changedAt)).Seconds()
	}
	b.Metrics.published(res, in.Secrets, b.Clock.Since(start).Seconds(), sinceChange)
	b.Log.V(1).Info("published routing table", "generation", b.generation,
		"routes", len(res.Table.Routes()), "backends", res.Table.Backends(),
		"pods", len(in.Pods), "took", b.Clock.Since(start))

	changed := changedRoutes(prev, res)
	if len(changed) == 0 {
		return nil
	}
	b.mu.Lock()
	watchers := append([]func([]routing.RouteKey){}, b.watchers...)
	b.mu.Unlock()
	for _, fn := range watchers {
		fn(changed)
	}
	return nil
}

// forwardServices reads the Services that the routes' forward auth names
// from the cache, and remembers their names for the Service watch.
func (b *TableBuilder) forwardServices(ctx context.Context, routes []wsgatev1alpha1.WsRoute) (map[types.NamespacedName]tablebuild.Service, error) {
	names := forwardServices(routes)
	b.services.Store(&names)
	out := make(map[types.NamespacedName]tablebuild.Service, len(names))
	for key := range names {
		var svc corev1.Service
		if err := b.Cache.Get(ctx, key, &svc, client.UnsafeDisableDeepCopy); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("get Service %s: %w", key, err)
		}
		out[key] = tablebuild.CompactService(&svc)
	}
	return out, nil
}

// routeSpecChanged ignores most status-only updates of a WsRoute (the
// controller's own writes): the spec, which bumps the generation, feeds
// the table, and of the status only hostnames do (the names a route
// serves keep their namespace; a route that stops serving one frees it).
func routeSpecChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*wsgatev1alpha1.WsRoute)
	n, ok2 := newObj.(*wsgatev1alpha1.WsRoute)
	return !ok1 || !ok2 || o.Generation != n.Generation || !slices.Equal(o.Status.Hostnames, n.Status.Hostnames)
}

// changedRoutes lists the routes whose build status differs between two
// results.
func changedRoutes(prev, cur *tablebuild.Result) []routing.RouteKey {
	var out []routing.RouteKey
	for k, st := range cur.Routes {
		if prev == nil {
			out = append(out, k)
			continue
		}
		if old, ok := prev.Routes[k]; !ok || !reflect.DeepEqual(old, st) {
			out = append(out, k)
		}
	}
	return out
}
