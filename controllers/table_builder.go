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
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
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
// WsGrants, Pods or certificate Secrets change, and publishes it. It runs on every replica (it does not
// need leader election) and never writes to the API server.
type TableBuilder struct {
	// Cache is the manager's cache, configured by CacheOptions (Pods
	// compacted by CompactPod).
	Cache cache.Cache
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
	pods       podSet
	latest     atomic.Pointer[tablebuild.Result]

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

// Start watches WsRoutes and Pods, waits for the cache to sync, publishes
// the first table and then rebuilds after each batch of changes until ctx
// ends.
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
	b.secrets.now = b.Clock.Now
	if !b.Cache.WaitForCacheSync(ctx) || !toolscache.WaitForCacheSync(ctx.Done(), pods.HasSynced) {
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
	referenced := certificateSecrets(routes.Items, b.DefaultCertificate)
	in := tablebuild.Input{
		Secrets: b.secrets.update(secrets.Items, func(k types.NamespacedName) bool { return referenced[k] }),
		Routes:  make([]*wsgatev1alpha1.WsRoute, len(routes.Items)),
		Grants:  make([]*wsgatev1alpha1.WsGrant, len(grants.Items)),
		Pods:    b.pods.list(),
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
		Generation: b.generation, Now: start,
	})
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
