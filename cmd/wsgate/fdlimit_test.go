package main

import (
	"strings"
	"testing"
)

func TestDescriptorAdvice(t *testing.T) {
	for _, c := range []struct {
		limit      uint64
		maxTunnels int
		want       string // a part of the advice; "" for none
	}{
		{limit: 1 << 20, maxTunnels: 9000},
		{limit: 2*9000 + descriptorReserve, maxTunnels: 9000},
		{limit: 2*9000 + descriptorReserve - 1, maxTunnels: 9000, want: "past about 8999 tunnels"},
		{limit: 1024, maxTunnels: 9000, want: "the file descriptor limit (1024) is below what --max-tunnels=9000 needs (18256"},
		{limit: 1024, maxTunnels: 384},
		{limit: 100, maxTunnels: 10, want: "past about 0 tunnels"},
	} {
		got := descriptorAdvice(c.limit, c.maxTunnels)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("limit %d, --max-tunnels %d: %q, want %q", c.limit, c.maxTunnels, got, c.want)
		}
	}
}
