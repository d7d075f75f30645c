package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults of RemoteOptions.
const (
	DefaultRefresh      = 5 * time.Minute
	DefaultMinRefetch   = 10 * time.Second
	DefaultFetchTimeout = 10 * time.Second
)

// firstRetry is the wait before the first retry of a failed fetch; the
// wait doubles at each failure, up to Refresh.
const firstRetry = time.Second

// RemoteOptions tune a RemoteKeys.
type RemoteOptions struct {
	// Refresh is the time between fetches, and the longest wait between
	// retries of failed ones; DefaultRefresh when 0.
	Refresh time.Duration
	// MinRefetch is the shortest time between the start of any fetch and
	// a fetch triggered by a token whose key ID is unknown: at most one
	// such fetch starts per MinRefetch. DefaultMinRefetch when 0.
	MinRefetch time.Duration
	// FetchTimeout bounds one fetch; DefaultFetchTimeout when 0.
	FetchTimeout time.Duration
	// OnChange, when not nil, is called after each fetch whose outcome
	// changed the keys, the issuer or the error.
	OnChange func()
	// Metrics, when not nil, counts the set's fetches and reports its age.
	Metrics *Metrics
}

// KeyState is what a RemoteKeys holds, for status and logs.
type KeyState struct {
	// Loaded is true once a fetch succeeded.
	Loaded bool
	// FetchedAt is when the last successful fetch ended.
	FetchedAt time.Time
	// LastError is the error of the last fetch, "" when it succeeded.
	LastError string
	// Keys is the number of keys held.
	Keys int
}

// RemoteKeys is a key set fetched, and refreshed, with a Fetcher. A failed
// fetch keeps the keys of the last good one. It is safe for concurrent
// use.
type RemoteKeys struct {
	name  string
	fetch Fetcher
	opts  RemoteOptions

	mu          sync.Mutex
	keys        []jose.JSONWebKey
	version     uint64 // counts the changes of keys
	issuer      string
	loaded      bool
	fetchedAt   time.Time
	lastErr     string
	lastAttempt time.Time
	inflight    *flight
	started     bool
	stopped     bool
	runCtx      context.Context
	cancel      context.CancelFunc
}

// flight is one fetch, which every caller that needs it waits for.
type flight struct {
	done chan struct{}
	err  error
}

// NewRemoteKeys returns a key set fetched with fetch. name identifies it in
// metrics and errors. It fetches nothing until Start, or until Keys is
// asked for a key it does not know.
func NewRemoteKeys(name string, fetch Fetcher, opts RemoteOptions) *RemoteKeys {
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.MinRefetch <= 0 {
		opts.MinRefetch = DefaultMinRefetch
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	r := &RemoteKeys{name: name, fetch: fetch, opts: opts}
	if opts.Metrics != nil {
		opts.Metrics.track(r)
	}
	return r
}

// Name is the name the set was created with.
func (r *RemoteKeys) Name() string { return r.name }

// Start runs the refresh loop until ctx ends or Stop is called: a fetch at
// once, then one every Refresh; a failed fetch is retried after a wait
// that doubles from one second up to Refresh. Calls after the first, and
// after Stop, do nothing.
func (r *RemoteKeys) Start(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	r.runCtx, r.cancel = context.WithCancel(ctx)
	go r.loop(r.runCtx)
}

// Stop ends the refresh loop and any fetch under way; the set keeps its
// keys but fetches no more.
func (r *RemoteKeys) Stop() {
	r.mu.Lock()
	r.stopped = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if r.opts.Metrics != nil {
		r.opts.Metrics.untrack(r)
	}
}

func (r *RemoteKeys) loop(ctx context.Context) {
	retry := min(firstRetry, r.opts.Refresh)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		r.mu.Lock()
		f := r.startFetchLocked()
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-f.done:
		}
		wait := r.opts.Refresh
		if f.err != nil {
			wait = retry
			retry = min(retry*2, r.opts.Refresh)
		} else {
			retry = min(firstRetry, r.opts.Refresh)
		}
		timer.Reset(wait)
	}
}

// startFetchLocked returns the fetch under way, or starts one. r.mu must
// be held.
func (r *RemoteKeys) startFetchLocked() *flight {
	if r.inflight != nil {
		return r.inflight
	}
	f := &flight{done: make(chan struct{})}
	r.inflight = f
	r.lastAttempt = time.Now()
	ctx := r.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	go r.run(ctx, f)
	return f
}

func (r *RemoteKeys) run(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.FetchTimeout)
	defer cancel()
	issuer, doc, err := r.fetch(ctx)
	var keys []jose.JSONWebKey
	if err == nil && issuer == "" {
		err = errors.New("the issuer's name is empty")
	}
	if err == nil {
		keys, err = parseJWKS(doc, MaxRemoteJWKSBytes)
	}

	r.mu.Lock()
	changed := false
	switch {
	case err != nil && r.stopped:
		// The fetch was cut short by Stop: not the issuer's fault.
	case err != nil:
		msg := err.Error()
		changed = msg != r.lastErr
		r.lastErr = msg
	default:
		changed = r.lastErr != "" || !r.loaded || issuer != r.issuer || !sameKeys(keys, r.keys)
		if !sameKeys(keys, r.keys) {
			r.version++
		}
		r.keys, r.issuer, r.loaded, r.lastErr = keys, issuer, true, ""
		r.fetchedAt = time.Now()
	}
	r.inflight = nil
	f.err = err
	r.mu.Unlock()

	if r.opts.Metrics != nil {
		r.opts.Metrics.fetched(r.name, err == nil)
	}
	close(f.done)
	if changed && r.opts.OnChange != nil {
		r.opts.OnChange()
	}
}

// Version counts the changes of the set's keys: a token verified with an
// earlier version may have been signed by a key that is gone.
func (r *RemoteKeys) Version() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}

// sameKeys reports whether two key lists hold the same keys, with the same
// IDs, algorithms and uses, in the same order.
func sameKeys(a, b []jose.JSONWebKey) bool {
	return slices.EqualFunc(a, b, func(x, y jose.JSONWebKey) bool {
		if x.KeyID != y.KeyID || x.Algorithm != y.Algorithm || x.Use != y.Use {
			return false
		}
		type equaler interface{ Equal(x crypto.PublicKey) bool }
		xe, ok := x.Key.(equaler)
		return ok && xe.Equal(y.Key)
	})
}

// Keys returns the keys whose key ID is kid, or every key when kid is "".
// When no key has that ID, or nothing is loaded yet, it starts a fetch
// unless one started less than MinRefetch ago (concurrent callers share
// one fetch), and waits for the fetch under way until ctx ends. It is an
// error only while no fetch has ever succeeded.
func (r *RemoteKeys) Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	r.mu.Lock()
	if r.loaded {
		if keys := keysByID(r.keys, kid); len(keys) > 0 || kid == "" {
			r.mu.Unlock()
			return keys, nil
		}
	}
	f := r.inflight
	if f == nil && !r.stopped && (r.lastAttempt.IsZero() || time.Since(r.lastAttempt) >= r.opts.MinRefetch) {
		f = r.startFetchLocked()
	}
	r.mu.Unlock()

	if f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded {
		if r.lastErr != "" {
			return nil, fmt.Errorf("keys of %s are not loaded: %s", r.name, r.lastErr)
		}
		return nil, fmt.Errorf("keys of %s are not loaded", r.name)
	}
	return keysByID(r.keys, kid), nil
}

// Symmetric is false: fetched sets hold public keys only.
func (r *RemoteKeys) Symmetric() bool { return false }

// Issuer is the issuer's name the last successful fetch returned, "" before
// one.
func (r *RemoteKeys) Issuer() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.issuer
}

// State reports what the set holds.
func (r *RemoteKeys) State() KeyState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return KeyState{Loaded: r.loaded, FetchedAt: r.fetchedAt, LastError: r.lastErr, Keys: len(r.keys)}
}

// age is the time since the last successful fetch, and false before one.
func (r *RemoteKeys) age(now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded {
		return 0, false
	}
	return now.Sub(r.fetchedAt), true
}
