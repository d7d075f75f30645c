package auth

import (
	"context"
	"net/http"
	"sync"
)

// ServiceAccountName names the cluster's ServiceAccount issuer's key set
// in metrics and errors.
const ServiceAccountName = "serviceaccount"

// KeyringOptions configure a Keyring.
type KeyringOptions struct {
	// HTTPClient fetches issuers' keys; nil means NewHTTPClient().
	// Redirects are never followed, whatever the client says.
	HTTPClient *http.Client
	// ServiceAccount fetches the cluster's ServiceAccount issuer's keys;
	// nil when there is none.
	ServiceAccount Fetcher
	// Remote tunes every set of the keyring.
	Remote RemoteOptions
	// OnChange, when not nil, is called after each fetch whose outcome
	// changed a set's keys, issuer or error (after Remote.OnChange).
	OnChange func()
}

// Keyring holds the fetched key sets of one process, shared by every
// routing table it builds: one set per granted issuer, and the cluster's
// ServiceAccount issuer's. It is safe for concurrent use.
type Keyring struct {
	opts   KeyringOptions
	client *http.Client

	mu      sync.Mutex
	ctx     context.Context
	issuers map[string]*RemoteKeys
	sa      *RemoteKeys
	saUsed  bool
}

// NewKeyring returns a Keyring; its sets fetch nothing before Start.
func NewKeyring(opts KeyringOptions) *Keyring {
	k := &Keyring{opts: opts, client: opts.HTTPClient, issuers: map[string]*RemoteKeys{}}
	if k.client == nil {
		k.client = NewHTTPClient()
	}
	remote := opts.Remote
	if opts.OnChange != nil {
		own := remote.OnChange
		remote.OnChange = func() {
			if own != nil {
				own()
			}
			opts.OnChange()
		}
	}
	k.opts.Remote = remote
	if opts.ServiceAccount != nil {
		k.sa = NewRemoteKeys(ServiceAccountName, opts.ServiceAccount, remote)
	}
	return k
}

// Start lets the sets fetch, until ctx ends: those already asked for at
// once, the others when first asked for.
func (k *Keyring) Start(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ctx != nil {
		return
	}
	k.ctx = ctx
	for _, r := range k.issuers {
		r.Start(ctx)
	}
	if k.sa != nil && k.saUsed {
		k.sa.Start(ctx)
	}
}

// Issuer returns the key set of the issuer at url, fetched with
// IssuerFetcher, creating it on the first call (and starting it, once the
// keyring is started).
func (k *Keyring) Issuer(url string) *RemoteKeys {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.issuers[url]
	if !ok {
		r = NewRemoteKeys(url, IssuerFetcher(url, k.client), k.opts.Remote)
		k.issuers[url] = r
	}
	if k.ctx != nil {
		r.Start(k.ctx)
	}
	return r
}

// ServiceAccount returns the key set of the cluster's ServiceAccount
// issuer, and false when the keyring has none.
func (k *Keyring) ServiceAccount() (*RemoteKeys, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sa == nil {
		return nil, false
	}
	k.saUsed = true
	if k.ctx != nil {
		k.sa.Start(k.ctx)
	}
	return k.sa, true
}

// Retain stops and forgets the issuers' sets whose URL is not in urls, so
// that an issuer no longer granted is no longer fetched.
func (k *Keyring) Retain(urls []string) {
	keep := make(map[string]bool, len(urls))
	for _, u := range urls {
		keep[u] = true
	}
	k.mu.Lock()
	var stop []*RemoteKeys
	for u, r := range k.issuers {
		if !keep[u] {
			stop = append(stop, r)
			delete(k.issuers, u)
		}
	}
	k.mu.Unlock()
	for _, r := range stop {
		r.Stop()
	}
}
