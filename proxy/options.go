package proxy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
)

// Options tune the proxy. Zero values take the defaults below.
type Options struct {
	// HandshakeTimeout bounds dialling the pod and its 101 answer, for
	// routes without timeouts.handshake. Default 10s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds the TCP connect to a pod. Default 5s.
	DialTimeout time.Duration
	// IdleTimeout closes tunnels without traffic, for routes without
	// timeouts.idle. Default 1h; negative: none.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request head (slow clients are cut). Default 10s.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds the client's request head (431 beyond) and the
	// pod's answer head. Default 16 KiB.
	MaxHeaderBytes int
	// MaxTunnels caps open tunnels (and handshakes in progress) per
	// gateway process; 503 with Retry-After beyond it. Default 9000.
	MaxTunnels int
	// MaxTunnelsPerNamespace caps the open tunnels and handshakes in
	// progress of the routes of one namespace together, so that one
	// tenant's many or slow pods cannot hold every slot of MaxTunnels;
	// 503 with Retry-After beyond it. 0: no cap.
	MaxTunnelsPerNamespace int
	// RetryAfter is sent with 503 answers. Default 5s.
	RetryAfter time.Duration
	// Dial connects to a pod; tests replace it. The default is a
	// net.Dialer without TCP keepalive on pod connections (as nginx and
	// HAProxy dial by default): the tunnels of a pod that leaves the
	// allowlist (deleted, not Ready, its node lost) are closed by
	// revocation unless the route lets them drain, and idle timeouts
	// bound the rest, so keepalive's four setsockopt calls on every dial
	// would buy little. Client connections keep the keepalive that the
	// listener sets: dead clients are the common case.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Log receives the HTTP server's own errors (V(1)).
	Log logr.Logger
	// AccessLog receives one line per closed tunnel and one per refused
	// handshake (sampled: at most RefusalLogRate a second, with a count
	// of the lines left out). The zero Logger discards.
	AccessLog logr.Logger
	// RefusalLogRate bounds refused-handshake lines a second. Default 20.
	RefusalLogRate int
	// Metrics, when set, are updated by the gateway.
	Metrics *Metrics

	// TrustedProxies are the networks of the proxies and load balancers
	// in front of the gateway: their X-Forwarded-For (and, with
	// ProxyProtocol, their PROXY header) says who the client is. From
	// anyone else, X-Forwarded-For is overwritten with the peer's
	// address.
	TrustedProxies []netip.Prefix
	// ProxyProtocol makes every listener require a PROXY protocol
	// header (v1 or v2) from the TrustedProxies, and refuse one from
	// anyone else; a peer outside them is served with its own address.
	ProxyProtocol bool
	// ClientLimits are the limits per client.
	ClientLimits ClientLimits
	// HTTP2 offers h2 on the TLS listener, for websockets over HTTP/2
	// (RFC 8441). On Linux with the default dialer the gateway serves
	// HTTP/2 itself; otherwise net/http's server does, whose extended
	// CONNECT needs the process to start with GODEBUG=http2xconnect=1
	// (see ExtendedConnect). Off, the TLS listener speaks HTTP/1.1 only.
	HTTP2 bool

	// goroutineTunnels runs every tunnel on goroutines, even where an
	// event loop could carry it, and bufferedReads makes those read plain
	// TCP as they read TLS (tests run every engine and read path).
	goroutineTunnels, bufferedReads bool
	// acceptBatch bounds the connections an event loop accepts per
	// wake-up (0: the default; tests lower it).
	acceptBatch int
	// h2IdleTimeout closes an HTTP/2 connection on the loops without
	// streams (0: h2IdleTimeout; tests lower it).
	h2IdleTimeout time.Duration
	// dialHook, when set, sees every address before the default dialer
	// connects to it, and may refuse it (tests count dials with it).
	dialHook func(address string) error
}

// Defaults are the values that zero Options take: the defaults of the
// gateway's flags.
var Defaults = Options{
	HandshakeTimeout:  10 * time.Second,
	DialTimeout:       5 * time.Second,
	IdleTimeout:       time.Hour,
	ReadHeaderTimeout: 10 * time.Second,
	MaxHeaderBytes:    16 << 10,
	MaxTunnels:        9000,
	RetryAfter:        5 * time.Second,
	RefusalLogRate:    20,
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.HandshakeTimeout, Defaults.HandshakeTimeout)
	def(&o.DialTimeout, Defaults.DialTimeout)
	def(&o.IdleTimeout, Defaults.IdleTimeout)
	def(&o.ReadHeaderTimeout, Defaults.ReadHeaderTimeout)
	def(&o.RetryAfter, Defaults.RetryAfter)
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = Defaults.MaxHeaderBytes
	}
	if o.MaxTunnels <= 0 {
		o.MaxTunnels = Defaults.MaxTunnels
	}
	if o.Dial == nil {
		d := &net.Dialer{KeepAlive: -1}
		hook := o.dialHook
		o.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			if hook != nil {
				if err := hook(address); err != nil {
					return nil, err
				}
			}
			return dialForDescriptor(ctx, func(ctx context.Context) (net.Conn, error) {
				return d.DialContext(ctx, network, address)
			})
		}
	}
	if o.RefusalLogRate <= 0 {
		o.RefusalLogRate = Defaults.RefusalLogRate
	}
}
