package main

import "fmt"

// namespaceTunnelCap is how many tunnels (and handshakes in progress) the
// routes of one namespace may hold together: share percent of
// maxTunnels, rounded up; 0, no cap of its own, for a share of 100.
func namespaceTunnelCap(maxTunnels, share int) (int, error) {
	if share < 1 || share > 100 {
		return 0, fmt.Errorf("--namespace-tunnel-share is a percentage of --max-tunnels from 1 to 100, not %d", share)
	}
	if share == 100 {
		return 0, nil
	}
	return (maxTunnels*share + 99) / 100, nil
}
