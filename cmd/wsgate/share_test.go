package main

import (
	"strings"
	"testing"
)

func TestNamespaceTunnelCap(t *testing.T) {
	for _, c := range []struct {
		maxTunnels, share int
		want              int
		err               string // a part of the error; "" for none
	}{
		{maxTunnels: 9000, share: 50, want: 4500},
		{maxTunnels: 10, share: 40, want: 4},
		{maxTunnels: 10, share: 33, want: 4}, // rounded up
		{maxTunnels: 3, share: 1, want: 1},   // never 0, which would mean no cap
		{maxTunnels: 9000, share: 99, want: 8910},
		{maxTunnels: 9000, share: 100, want: 0}, // no share of its own
		{maxTunnels: 9000, share: 0, err: "from 1 to 100, not 0"},
		{maxTunnels: 9000, share: -5, err: "from 1 to 100, not -5"},
		{maxTunnels: 9000, share: 101, err: "from 1 to 100, not 101"},
	} {
		got, err := namespaceTunnelCap(c.maxTunnels, c.share)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("--max-tunnels %d, --namespace-tunnel-share %d: error %v, want one with %q", c.maxTunnels, c.share, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("--max-tunnels %d, --namespace-tunnel-share %d: %d, %v; want %d", c.maxTunnels, c.share, got, err, c.want)
		}
	}
}
