package main

import (
	"flag"
	"io"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/proxy"
)

func TestParseTrustedProxies(t *testing.T) {
	p := netip.MustParsePrefix
	for _, c := range []struct {
		in   string
		want []netip.Prefix
	}{
		{"", nil},
		{"10.0.0.0/8", []netip.Prefix{p("10.0.0.0/8")}},
		{"2001:db8::/32", []netip.Prefix{p("2001:db8::/32")}},
		{"192.0.2.7", []netip.Prefix{p("192.0.2.7/32")}},
		{"fd00:5::1", []netip.Prefix{p("fd00:5::1/128")}},
		{"::1", []netip.Prefix{p("::1/128")}},
		{"10.0.0.0/8,192.0.2.7,2001:db8::/32,fd00::1", []netip.Prefix{p("10.0.0.0/8"), p("192.0.2.7/32"), p("2001:db8::/32"), p("fd00::1/128")}},
		{" 10.0.0.0/8 ,\t192.0.2.7\n, 2001:db8::/32 ", []netip.Prefix{p("10.0.0.0/8"), p("192.0.2.7/32"), p("2001:db8::/32")}},
		{" , ,10.1.0.0/16,,", []netip.Prefix{p("10.1.0.0/16")}},
		{",", nil},
		{"   ", nil},
		// An IPv4 address written in IPv6 is the IPv4 address: the
		// gateway compares peers unmapped.
		{"::ffff:192.0.2.9", []netip.Prefix{p("192.0.2.9/32")}},
		{"0.0.0.0/0,::/0", []netip.Prefix{p("0.0.0.0/0"), p("::/0")}},
	} {
		got, err := parseTrustedProxies(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseTrustedProxies(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseTrustedProxiesRefuses(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string // parts of the error
	}{
		{"garbage", []string{`"garbage" is neither a CIDR nor an address`}},
		{"10.0.0.0/8,garbage", []string{`"garbage"`}},
		{"10.0.0.0/33", []string{`"10.0.0.0/33" is neither`}},
		{"10.0.0.1:443", []string{`"10.0.0.1:443" is neither`}},
		{"[2001:db8::1]", []string{`"[2001:db8::1]" is neither`}},
		{"10.0.0.0-10.0.0.9", []string{"is neither"}},
		{"10.0.0.1/8", []string{`"10.0.0.1/8" has bits set past its prefix length`, "did you mean 10.0.0.0/8?"}},
		{"192.168.1.77/24", []string{"did you mean 192.168.1.0/24?"}},
		{"2001:db8::1/32", []string{`"2001:db8::1/32" has bits set`, "did you mean 2001:db8::/32?"}},
		{"fd00:5::9/64", []string{"did you mean fd00:5::/64?"}},
		{"fe80::1%eth0", []string{`"fe80::1%eth0": zones are not allowed`}},
		{"fe80::%eth0/64", []string{`"fe80::%eth0/64"`}},
		{"::ffff:10.0.0.0/104", []string{`"::ffff:10.0.0.0/104": write IPv4 networks as IPv4`}},
		{"::ffff:0.0.0.0/96", []string{"write IPv4 networks as IPv4"}},
	} {
		got, err := parseTrustedProxies(c.in)
		if err == nil {
			t.Errorf("parseTrustedProxies(%q) = %v, want an error", c.in, got)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("parseTrustedProxies(%q): error %q does not say %q", c.in, err, w)
			}
		}
		if got != nil {
			t.Errorf("parseTrustedProxies(%q) returned %v with its error", c.in, got)
		}
	}
}

// parseEdge parses args as the gateway's edge flags.
func parseEdge(t *testing.T, args ...string) *edgeFlags {
	t.Helper()
	var e edgeFlags
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	return &e
}

// untouched are Options that apply must leave as they are.
func untouched() proxy.Options {
	return proxy.Options{ReadHeaderTimeout: 7 * time.Second, MaxTunnels: 9}
}

func TestEdgeFlagsDefaults(t *testing.T) {
	o := untouched()
	if err := parseEdge(t).apply(&o); err != nil {
		t.Fatal(err)
	}
	want := untouched()
	want.ClientLimits = proxy.ClientLimits{RefusalBudget: 100, RefusalBlock: time.Minute, MaxClients: 100_000}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("options %+v, want %+v", o, want)
	}
}

func TestEdgeFlagsApply(t *testing.T) {
	o := untouched()
	e := parseEdge(t,
		"--trusted-proxies", "10.0.0.0/8, fd00:5::9",
		"--proxy-protocol",
		"--client-handshake-rate", "2.5",
		"--client-handshake-burst", "7",
		"--client-max-tunnels", "3",
		"--client-refusal-budget", "20",
		"--client-refusal-block", "90s",
		"--client-max-tracked", "5000",
	)
	if err := e.apply(&o); err != nil {
		t.Fatal(err)
	}
	want := untouched()
	want.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:5::9/128")}
	want.ProxyProtocol = true
	want.ClientLimits = proxy.ClientLimits{HandshakeRate: 2.5, HandshakeBurst: 7, MaxTunnels: 3, RefusalBudget: 20, RefusalBlock: 90 * time.Second, MaxClients: 5000}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("options %+v, want %+v", o, want)
	}

	// Trusted proxies alone: X-Forwarded-For from them, no PROXY header.
	o = untouched()
	if err := parseEdge(t, "--trusted-proxies", "192.0.2.1").apply(&o); err != nil {
		t.Fatal(err)
	}
	if o.ProxyProtocol || !slices.Equal(o.TrustedProxies, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}) {
		t.Errorf("--trusted-proxies 192.0.2.1: ProxyProtocol %v, TrustedProxies %v", o.ProxyProtocol, o.TrustedProxies)
	}
	// Limits off.
	o = untouched()
	if err := parseEdge(t, "--client-refusal-budget", "0").apply(&o); err != nil {
		t.Fatal(err)
	}
	if o.ClientLimits.RefusalBudget != 0 {
		t.Errorf("--client-refusal-budget 0: %d", o.ClientLimits.RefusalBudget)
	}
}

// TestEdgeFlagsDefaultBurst: without --client-handshake-burst, a client
// may make twice the rate's handshakes at once, rounded up, at least 1.
func TestEdgeFlagsDefaultBurst(t *testing.T) {
	for _, c := range []struct {
		rate, burst string
		want        int
	}{
		{"1", "", 2},
		{"2.5", "", 5},
		{"0.75", "", 2},
		{"0.5", "", 1},
		{"0.2", "", 1},
		{"0.001", "", 1},
		{"100", "", 200},
		{"10", "3", 3},
		{"0.2", "50", 50},
		{"0", "", 0}, // no rate, no burst
	} {
		args := []string{"--client-handshake-rate", c.rate}
		if c.burst != "" {
			args = append(args, "--client-handshake-burst", c.burst)
		}
		o := untouched()
		if err := parseEdge(t, args...).apply(&o); err != nil {
			t.Errorf("%q: %v", args, err)
			continue
		}
		if o.ClientLimits.HandshakeBurst != c.want {
			t.Errorf("%q: burst %d, want %d", args, o.ClientLimits.HandshakeBurst, c.want)
		}
	}
}

func TestEdgeFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // a part of the error
	}{
		{[]string{"--proxy-protocol"}, "--proxy-protocol needs --trusted-proxies"},
		{[]string{"--proxy-protocol", "--trusted-proxies", " , "}, "--proxy-protocol needs --trusted-proxies"},
		{[]string{"--proxy-protocol", "--trusted-proxies", "10.0.0.1/8"}, "--trusted-proxies: \"10.0.0.1/8\" has bits set past its prefix length (did you mean 10.0.0.0/8?)"},
		{[]string{"--trusted-proxies", "lb.example.com"}, "--trusted-proxies: \"lb.example.com\" is neither a CIDR nor an address"},
		{[]string{"--client-handshake-rate", "-1"}, "--client-handshake-rate must be a number, 0 or more"},
		{[]string{"--client-handshake-rate", "NaN"}, "--client-handshake-rate must be a number"},
		{[]string{"--client-handshake-rate", "Inf"}, "--client-handshake-rate must be a number"},
		{[]string{"--client-handshake-rate", "+Inf"}, "--client-handshake-rate must be a number"},
		{[]string{"--client-handshake-rate", "-Inf"}, "--client-handshake-rate must be a number"},
		{[]string{"--client-handshake-rate", "1", "--client-handshake-burst", "-1"}, "must not be negative"},
		{[]string{"--client-max-tunnels", "-1"}, "must not be negative"},
		{[]string{"--client-refusal-budget", "-1"}, "must not be negative"},
		{[]string{"--client-refusal-block", "0s"}, "--client-refusal-block must be positive"},
		{[]string{"--client-refusal-block", "-1m"}, "--client-refusal-block must be positive"},
		{[]string{"--client-max-tracked", "0"}, "--client-max-tracked must be positive"},
		{[]string{"--client-max-tracked", "-5"}, "--client-max-tracked must be positive"},
	} {
		o := untouched()
		err := parseEdge(t, c.args...).apply(&o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one with %q", c.args, err, c.want)
		}
		if !reflect.DeepEqual(o, untouched()) {
			t.Errorf("%q: a refused flag set options %+v", c.args, o)
		}
	}
}

// TestEdgeFlagsNonFiniteRates: the flag package reads NaN and the
// infinities in several spellings; none passes.
func TestEdgeFlagsNonFiniteRates(t *testing.T) {
	for _, s := range []string{"nan", "NAN", "inf", "infinity", "+Infinity", "-infinity"} {
		e := parseEdge(t, "--client-handshake-rate", s)
		if !math.IsNaN(e.limits.HandshakeRate) && !math.IsInf(e.limits.HandshakeRate, 0) {
			t.Fatalf("%q parsed as %v, neither NaN nor infinite", s, e.limits.HandshakeRate)
		}
		o := untouched()
		if err := e.apply(&o); err == nil {
			t.Errorf("--client-handshake-rate %s accepted: %+v", s, o.ClientLimits)
		}
	}
}
