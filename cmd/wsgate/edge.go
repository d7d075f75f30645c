package main

import (
	"flag"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/wsgate/wsgate/proxy"
)

// edgeFlags are the flags of the public edge: who the client is, and
// the limits per client.
type edgeFlags struct {
	trustedProxies string
	proxyProtocol  bool
	limits         proxy.ClientLimits
}

// defaultRefusalBudget is --client-refusal-budget's default: a client
// reconnecting now and then to a pod that has gone stays well under it,
// and walking a /16 of pod addresses through the gateway takes 11 hours.
const defaultRefusalBudget = 100

func (e *edgeFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&e.trustedProxies, "trusted-proxies", "", "Comma-separated CIDRs (or addresses) of the load balancers and proxies in front of the gateway: their X-Forwarded-For (right-most address that is not theirs) and, with --proxy-protocol, their PROXY header say who the client is. From anyone else X-Forwarded-For is overwritten with the peer's address.")
	fs.BoolVar(&e.proxyProtocol, "proxy-protocol", false, "Require a PROXY protocol header (v1 or v2) on both listeners from --trusted-proxies, and refuse one from anyone else (whose connections are served with their own address). For a cloud network load balancer that sends PROXY headers.")
	fs.Float64Var(&e.limits.HandshakeRate, "client-handshake-rate", 0, "Handshakes a second per client (its address, IPv6 by /64, or its token's subject on routes with tokens), per replica; 429 with Retry-After beyond it. 0: no limit.")
	fs.IntVar(&e.limits.HandshakeBurst, "client-handshake-burst", 0, "Handshakes a client may make at once under --client-handshake-rate. 0: twice the rate, at least 1.")
	fs.IntVar(&e.limits.MaxTunnels, "client-max-tunnels", 0, "Open tunnels per client, per replica; 429 beyond it. 0: no limit.")
	fs.IntVar(&e.limits.RefusalBudget, "client-refusal-budget", defaultRefusalBudget, "Handshakes the gateway refuses (400, 401, 403, 404; not the pods' or forward-auth services' answers) an address (IPv6 by /64) may collect a minute before every handshake of it is answered 429 for --client-refusal-block: pod address scans become slow and show in wsgate_client_blocks_total. 0: off.")
	fs.DurationVar(&e.limits.RefusalBlock, "client-refusal-block", time.Minute, "How long an address past --client-refusal-budget is answered 429.")
	fs.IntVar(&e.limits.MaxClients, "client-max-tracked", 100_000, "Most clients whose per-client state a replica keeps (about 140 bytes each); a new client beyond it replaces the least recently active one without open tunnels.")
}

// apply checks the flags and sets them in o.
func (e *edgeFlags) apply(o *proxy.Options) error {
	nets, err := parseTrustedProxies(e.trustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if e.proxyProtocol && len(nets) == 0 {
		return fmt.Errorf("--proxy-protocol needs --trusted-proxies: the networks whose PROXY headers are believed")
	}
	l := e.limits
	switch {
	case l.HandshakeRate < 0 || math.IsNaN(l.HandshakeRate) || math.IsInf(l.HandshakeRate, 0):
		return fmt.Errorf("--client-handshake-rate must be a number, 0 or more")
	case l.HandshakeBurst < 0, l.MaxTunnels < 0, l.RefusalBudget < 0:
		return fmt.Errorf("--client-handshake-burst, --client-max-tunnels and --client-refusal-budget must not be negative")
	case l.RefusalBlock <= 0:
		return fmt.Errorf("--client-refusal-block must be positive")
	case l.MaxClients <= 0:
		return fmt.Errorf("--client-max-tracked must be positive")
	}
	if l.HandshakeRate > 0 && l.HandshakeBurst == 0 {
		l.HandshakeBurst = max(1, int(math.Ceil(2*l.HandshakeRate)))
	}
	o.TrustedProxies, o.ProxyProtocol, o.ClientLimits = nets, e.proxyProtocol, l
	return nil
}

// parseTrustedProxies parses comma-separated CIDRs or addresses.
func parseTrustedProxies(s string) ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			if a.Zone() != "" {
				return nil, fmt.Errorf("%q: zones are not allowed", f)
			}
			a = a.Unmap()
			nets = append(nets, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%q has bits set past its prefix length (did you mean %s?)", f, p.Masked())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q: write IPv4 networks as IPv4", f)
		}
		nets = append(nets, p)
	}
	return nets, nil
}
