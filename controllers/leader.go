package controllers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	crleaderelection "sigs.k8s.io/controller-runtime/pkg/leaderelection"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Leader-election timing, as controller-runtime's manager defaults it.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaderElectionOptions configure a LeaderElection.
type LeaderElectionOptions struct {
	// Namespace and Name name the Lease. An empty Namespace is the pod's
	// own (read from its service account).
	Namespace, Name string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// leader-election timing; zero takes the defaults above.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       logr.Logger
}

// LeaderElection campaigns for a Lease among the replicas and says whether
// this one holds it. Only leader work waits for it: every replica serves
// traffic and builds its table whether it leads or not.
//
// Losing the Lease (the API server unreachable past the renew deadline,
// say) ends the leader work, not the process: the replica campaigns again
// at once and, when it wins, the OnElected callbacks run so that the work
// resumes from the current state.
type LeaderElection struct {
	lock    *trackedLock
	name    string
	timing  LeaderElectionOptions
	log     logr.Logger
	leading atomic.Bool

	mu        sync.Mutex
	onElected []func()
}

// NewLeaderElection prepares a campaign for the Lease opts names; Start
// runs it. events records the Lease's "became leader" Events.
func NewLeaderElection(cfg *rest.Config, events recorder.Provider, opts LeaderElectionOptions) (*LeaderElection, error) {
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	lock, err := crleaderelection.NewResourceLock(cfg, events, crleaderelection.Options{
		LeaderElection:          true,
		LeaderElectionNamespace: opts.Namespace,
		LeaderElectionID:        opts.Name,
		RenewDeadline:           opts.RenewDeadline,
	})
	if err != nil {
		return nil, err
	}
	e := &LeaderElection{
		lock:   &trackedLock{Interface: lock, renewDeadline: opts.RenewDeadline, base: time.Now()},
		name:   opts.Name,
		timing: opts,
		log:    opts.Log,
	}
	// Checks the timing now rather than when Start runs.
	if _, err := e.elector(); err != nil {
		return nil, err
	}
	return e, nil
}

// Identity is this replica's holder identity in the Lease.
func (e *LeaderElection) Identity() string { return e.lock.Identity() }

// IsLeader reports whether this replica holds the Lease and renewed it
// within the renew deadline: a leader cut off from the API server stops
// its leader work before another replica can take the Lease over. A nil
// LeaderElection (leader election off) always leads.
func (e *LeaderElection) IsLeader() bool {
	if e == nil {
		return true
	}
	return e.leading.Load() && e.lock.fresh()
}

// OnElected registers fn to run each time this replica becomes the leader,
// after IsLeader turned true. fn must not block.
func (e *LeaderElection) OnElected(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onElected = append(e.onElected, fn)
}

// NeedLeaderElection is false: the manager runs the campaign on every
// replica.
func (e *LeaderElection) NeedLeaderElection() bool { return false }

// Start campaigns for the Lease until ctx ends, again after each loss. On
// the way out it gives the Lease up, so that another replica takes over at
// once.
func (e *LeaderElection) Start(ctx context.Context) error {
	for {
		le, err := e.elector()
		if err != nil {
			return err
		}
		le.Run(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.timing.RetryPeriod):
		}
	}
}

func (e *LeaderElection) elector() (*leaderelection.LeaderElector, error) {
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		Name:            e.name,
		LeaseDuration:   e.timing.LeaseDuration,
		RenewDeadline:   e.timing.RenewDeadline,
		RetryPeriod:     e.timing.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: e.started,
			OnStoppedLeading: e.stopped,
			OnNewLeader: func(identity string) {
				if identity != "" && identity != e.lock.Identity() {
					e.log.Info("another replica leads", "lease", e.lock.Describe(), "leader", identity)
				}
			},
		},
	})
}

func (e *LeaderElection) started(ctx context.Context) {
	e.mu.Lock()
	if ctx.Err() != nil {
		// Lost already: stopped runs, or ran, after ctx ended.
		e.mu.Unlock()
		return
	}
	e.leading.Store(true)
	fns := append([]func(){}, e.onElected...)
	e.mu.Unlock()
	e.log.Info("became the leader: writing route status, Events and Certificates", "lease", e.lock.Describe(), "identity", e.lock.Identity())
	for _, fn := range fns {
		fn()
	}
}

func (e *LeaderElection) stopped() {
	e.mu.Lock()
	was := e.leading.Swap(false)
	e.mu.Unlock()
	if was {
		e.log.Info("lost the leadership: route status, Events and Certificates wait until this replica leads again; traffic is served as before", "lease", e.lock.Describe())
	}
}

// trackedLock is a Lease lock that remembers when this replica last wrote
// itself into the Lease as the holder.
type trackedLock struct {
	resourcelock.Interface
	renewDeadline time.Duration
	// base is when the lock was made; held is the time since base of the
	// last write naming this replica the holder (0: none, or it gave the
	// Lease up since).
	base time.Time
	held atomic.Int64
}

func (l *trackedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.track(r, func() error { return l.Interface.Create(ctx, r) })
}

func (l *trackedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.track(r, func() error { return l.Interface.Update(ctx, r) })
}

// track runs a write of record r and, when it succeeds, notes whether it
// made this replica the holder: the Lease counts from when the write was
// sent.
func (l *trackedLock) track(r resourcelock.LeaderElectionRecord, write func() error) error {
	sent := time.Now()
	if err := write(); err != nil {
		return err
	}
	if r.HolderIdentity == l.Identity() {
		l.held.Store(int64(sent.Sub(l.base)) + 1)
	} else {
		l.held.Store(0)
	}
	return nil
}

// fresh reports whether this replica wrote itself into the Lease within
// the renew deadline.
func (l *trackedLock) fresh() bool {
	at := l.held.Load()
	return at != 0 && time.Since(l.base)-time.Duration(at) < l.renewDeadline
}

var _ resourcelock.Interface = (*trackedLock)(nil)
