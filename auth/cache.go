package auth

import (
	"sync"
	"time"
)

// verifiedCacheSize bounds the tokens one Verifier remembers. A browser
// reconnects, and a page opens several sockets, with the same token: the
// signature is checked once, not on each handshake.
const verifiedCacheSize = 1024

// verifiedToken is a token that passed every check, and the times
// between which it stays valid.
type verifiedToken struct {
	claims *Claims
	// issuer is the issuer it was checked against (a key set that knows
	// its issuer may learn another), and version the key set's version
	// then (a fetched set's keys change).
	issuer  string
	version uint64
	// from and until bound when it is valid, leeway included; from is
	// zero when the token has neither nbf nor iat.
	from, until time.Time
}

// verifiedCache remembers tokens a Verifier accepted, by the SHA-256 of
// the token. Only accepted tokens enter it, so a flood of bad ones costs
// it nothing; it holds at most verifiedCacheSize entries, and forgets an
// arbitrary one to take a new one when full. A token is verified again
// when the key set's keys changed since (VersionedKeySet), and a new
// Verifier (a new routing table) starts empty.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[[32]byte]verifiedToken
}

// get returns the claims of a token accepted before, if it is still
// valid at now for issuer and the key set's version.
func (c *verifiedCache) get(key [32]byte, issuer string, version uint64, now time.Time) (*Claims, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || e.issuer != issuer || e.version != version || now.Before(e.from) || !now.Before(e.until) {
		return nil, false
	}
	return e.claims, true
}

// put remembers an accepted token.
func (c *verifiedCache) put(key [32]byte, e verifiedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[32]byte]verifiedToken)
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= verifiedCacheSize {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = e
}
