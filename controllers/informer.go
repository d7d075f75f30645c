package controllers

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

// unreachableRetry is how often an informer tries the API server again
// while it cannot be reached (with up to 50% jitter).
const unreachableRetry = time.Second

// NewInformer is client-go's shared informer (what controller-runtime's
// cache uses by default; set it as cache.Options.NewInformer) whose list
// and watch calls, while the API server cannot be reached (connection
// refused, reset or cut), try again every second instead of failing.
//
// A failed call would go to the informer's reflector, which waits before
// the next one with an exponential backoff (0.8 s doubling to 30 s, plus
// up to 100% jitter) that it only forgets after two quiet minutes: after
// a 20 s outage, the first change could wait a minute to reach the table.
// Errors from an API server that answers (throttling included) still
// take the reflector's backoff.
func NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(&patientListerWatcher{lw: toolscache.ToListerWatcherWithContext(lw), orig: lw}, obj, resync, indexers)
}

type patientListerWatcher struct {
	lw   toolscache.ListerWatcherWithContext
	orig toolscache.ListerWatcher
}

func (p *patientListerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p *patientListerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

func (p *patientListerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return untilReachable(ctx, func() (runtime.Object, error) { return p.lw.ListWithContext(ctx, opts) })
}

func (p *patientListerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return untilReachable(ctx, func() (watch.Interface, error) { return p.lw.WatchWithContext(ctx, opts) })
}

// IsWatchListSemanticsUnSupported passes on what the wrapped client says
// (see watchlist.DoesClientNotSupportWatchListSemantics).
func (p *patientListerWatcher) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(p.orig)
}

// untilReachable calls call until it succeeds, fails with an error other
// than an unreachable API server, or ctx ends.
func untilReachable[T any](ctx context.Context, call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if err == nil || !unreachable(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait.Jitter(unreachableRetry, 0.5)):
		}
	}
}

// unreachable reports whether err says the API server could not be
// reached or went away mid-request, rather than answered.
func unreachable(err error) bool {
	if utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.EOF)
}
