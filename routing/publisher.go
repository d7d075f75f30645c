package routing

import (
	"sync"
	"sync/atomic"
	"time"
)

// Publisher holds the current Table and tells subscribers when it changes.
// Load is a single atomic read, safe on the hot path.
type Publisher struct {
	cur   atomic.Pointer[Table]
	ready atomic.Bool

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// NewPublisher returns a Publisher holding an empty table (generation 0),
// which allowlists nothing.
func NewPublisher() *Publisher {
	p := &Publisher{subs: make(map[chan struct{}]struct{})}
	p.cur.Store(New(0, time.Time{}, nil))
	return p
}

// Load returns the current table. It never returns nil.
func (p *Publisher) Load() *Table { return p.cur.Load() }

// Ready reports whether a table built from a synced cache was published.
func (p *Publisher) Ready() bool { return p.ready.Load() }

// Publish makes t the current table and notifies subscribers.
func (p *Publisher) Publish(t *Table) {
	p.cur.Store(t)
	p.ready.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for ch := range p.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending; it covers this one
		}
	}
}

// Subscribe returns a channel that receives a value after each Publish
// (notifications coalesce: read Load after receiving), and a function that
// ends the subscription.
func (p *Publisher) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.subs[ch] = struct{}{}
	p.mu.Unlock()
	return ch, func() {
		p.mu.Lock()
		delete(p.subs, ch)
		p.mu.Unlock()
	}
}
