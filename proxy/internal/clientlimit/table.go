// Package clientlimit keeps per-client state for the gateway's limits: a
// handshake token bucket, a count of open tunnels, and a budget of
// refused handshakes whose exhaustion blocks the client for a while.
//
// Memory is bounded whatever the number of distinct clients: a client's
// state goes once forgetting it changes nothing (its buckets full again,
// no open tunnel, no block), and the table holds at most a fixed number
// of clients; a new client in a full table takes the place of the least
// recently active one without open tunnels among a few it samples, as
// nginx's limit_req zones do. Clients holding tunnels or blocked for
// their refusals are never evicted (their count or block would be lost);
// when every sampled one is, the new client is not tracked, and only the
// gateway's other caps apply to it.
package clientlimit

import (
	"crypto/sha256"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Key identifies a client within a scope, in a fixed size whatever the
// scope's and the subject's length.
type Key struct {
	// Addr is the client's IPv4 address, or the /64 of its IPv6 address;
	// the zero Addr for a subject.
	Addr netip.Addr
	// id digests the scope ("" for the gateway's own limits, or a
	// route's name), and the subject for a client known by its token.
	id [16]byte
}

// nat64 is the well-known prefix of IPv4 addresses translated into IPv6
// (RFC 6052): each client behind it is its IPv4 address, not one /64.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// AddrKey is the key of a client by address in scope: an IPv6 address
// counts as its /64, the smallest network a subscriber gets.
func AddrKey(scope string, a netip.Addr) Key {
	a = a.Unmap().WithZone("")
	switch {
	case nat64.Contains(a):
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	case a.Is6():
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	k := Key{Addr: a}
	if scope != "" {
		k.id = digest("address", scope, "")
	}
	return k
}

// SubjectKey is the key of a client by its token's subject (issuer and
// sub) in scope.
func SubjectKey(scope, subject string) Key { return Key{id: digest("subject", scope, subject)} }

// digest names a scope and a subject in 16 bytes; each part is
// length-prefixed, so no two different pairs read the same.
func digest(kind, scope, subject string) [16]byte {
	h := sha256.New()
	for _, s := range [...]string{kind, scope, subject} {
		var n [8]byte
		for i := range n {
			n[i] = byte(len(s) >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Bucket is a token bucket's parameters: Rate tokens a second, up to
// Burst.
type Bucket struct {
	Rate  float64
	Burst int
}

// On reports whether the bucket limits anything.
func (b Bucket) On() bool { return b.Rate > 0 && b.Burst > 0 }

// Budget is a refusal budget: Bucket refusals, after which the client is
// blocked for Block.
type Budget struct {
	Bucket
	Block time.Duration
}

// state is one client's, in a scope. Times are nanoseconds on the
// table's clock.
type state struct {
	tokens  float64 // handshake bucket
	last    int64
	refused float64 // refusal bucket, counting up
	refLast int64
	blocked int64 // blocked until
	idleAt  int64 // when forgetting the state changes nothing, if open is 0
	open    int32
	bucket  bool // tokens and last are set
}

const shards = 64

// samples is how many clients a full shard looks at to evict one.
const samples = 8

// Table is the clients' state. The zero Table is not usable: use New.
type Table struct {
	seed   maphash.Seed
	max    int64
	shards [shards]shard
	count  atomic.Int64
	epoch  time.Time
}

type shard struct {
	mu sync.Mutex
	m  map[Key]state
	_  [40]byte // a cache line each
}

// New returns a table that tracks at most maxClients clients (0: 100,000).
func New(maxClients int) *Table {
	if maxClients <= 0 {
		maxClients = 100_000
	}
	t := &Table{seed: maphash.MakeSeed(), max: int64(maxClients), epoch: time.Now()}
	for i := range t.shards {
		t.shards[i].m = make(map[Key]state)
	}
	return t
}

// Now is the table's clock, for the methods' now arguments.
func (t *Table) Now() int64 { return int64(time.Since(t.epoch)) }

// Len is the number of clients tracked.
func (t *Table) Len() int { return int(t.count.Load()) }

func (t *Table) shard(k Key) *shard {
	return &t.shards[maphash.Comparable(t.seed, k)%shards]
}

// Allow takes a token from k's bucket b, and otherwise says when the next
// one comes.
func (t *Table) Allow(k Key, b Bucket, now int64) (bool, time.Duration) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, ok := sh.m[k]
	if !ok && !t.makeRoom(sh, now) {
		return true, 0
	}
	if !st.bucket {
		// A client first counted for a refusal or a tunnel starts with
		// a full bucket too.
		st.tokens, st.last, st.bucket = float64(b.Burst), now, true
	}
	st.tokens = refill(st.tokens, st.last, b, now)
	st.last = now
	allowed := st.tokens >= 1
	var wait time.Duration
	if allowed {
		st.tokens--
	} else {
		wait = time.Duration((1 - st.tokens) / b.Rate * float64(time.Second))
	}
	st.idleAt = max(st.idleAt, now+int64((float64(b.Burst)-st.tokens)/b.Rate*float64(time.Second)))
	t.store(sh, k, st, ok)
	return allowed, wait
}

// refill is a bucket's tokens at now, last set at last.
func refill(tokens float64, last int64, b Bucket, now int64) float64 {
	return min(float64(b.Burst), tokens+b.Rate*float64(now-last)/float64(time.Second))
}

// Blocked says how long k stays blocked for its refusals, if it is.
func (t *Table) Blocked(k Key, now int64) (time.Duration, bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, ok := sh.m[k]
	if !ok || st.blocked <= now {
		return 0, false
	}
	return time.Duration(st.blocked - now), true
}

// Refused counts a refused handshake of k against budget b; it returns
// true when that exhausts the budget and k is blocked from now on.
func (t *Table) Refused(k Key, b Budget, now int64) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, ok := sh.m[k]
	if !ok {
		if !t.makeRoom(sh, now) {
			return false
		}
		st.refLast = now
	}
	// The bucket counts refusals up and drains at the budget's rate.
	st.refused = max(0, st.refused-b.Rate*float64(now-st.refLast)/float64(time.Second))
	st.refLast = now
	st.refused++
	blocked := false
	if st.refused > float64(b.Burst) && st.blocked <= now {
		st.blocked = now + int64(b.Block)
		st.refused = 0
		blocked = true
	}
	st.idleAt = max(st.idleAt, st.blocked, now+int64(st.refused/b.Rate*float64(time.Second)))
	t.store(sh, k, st, ok)
	return blocked
}

// Acquire counts an open tunnel of k, unless k has limit (> 0) already.
// tracked is false when the table had no room for k: nothing was
// counted, and Release must not be called.
func (t *Table) Acquire(k Key, limit int, now int64) (ok, tracked bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, found := sh.m[k]
	if !found && !t.makeRoom(sh, now) {
		return true, false
	}
	if int(st.open) >= limit {
		if !found {
			return false, false
		}
		return false, true
	}
	st.open++
	st.idleAt = max(st.idleAt, now)
	t.store(sh, k, st, found)
	return true, true
}

// Release ends an open tunnel that Acquire counted.
func (t *Table) Release(k Key, now int64) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, ok := sh.m[k]
	if !ok || st.open <= 0 {
		panic("clientlimit: release of a tunnel that was not acquired")
	}
	st.open--
	st.idleAt = max(st.idleAt, now)
	sh.m[k] = st
}

// store writes st for k; found: k was in the shard.
func (t *Table) store(sh *shard, k Key, st state, found bool) {
	sh.m[k] = st
	if !found {
		t.count.Add(1)
	}
}

// makeRoom makes a place for a new client in a full table, by evicting
// an idle one of the new client's shard; false when it found none.
func (t *Table) makeRoom(sh *shard, now int64) bool {
	if t.count.Load() < t.max {
		return true
	}
	var victim Key
	var victimIdle int64
	found, n := false, 0
	for k, st := range sh.m {
		if n++; n > samples {
			break
		}
		if st.open > 0 || st.blocked > now {
			// Neither a count nor a block may be lost.
			continue
		}
		if st.idleAt <= now {
			victim, found = k, true
			break
		}
		if !found || st.idleAt < victimIdle {
			victim, victimIdle, found = k, st.idleAt, true
		}
	}
	if !found {
		return false
	}
	delete(sh.m, victim)
	t.count.Add(-1)
	return true
}

// Sweep forgets every client whose state changes nothing any more.
func (t *Table) Sweep(now int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			if st.open == 0 && st.idleAt <= now {
				delete(sh.m, k)
				t.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}
