//go:build !linux

package netnstest

import (
	"net/netip"
	"testing"
)

// Config is what a test's namespace holds besides its loopback's
// 127.0.0.1/8 and ::1.
type Config struct {
	// Addrs are added to the namespace's loopback.
	Addrs []netip.Prefix
}

// Inside reports whether this process is a test run inside a namespace:
// never, without Linux.
func Inside() bool { return false }

// InNamespace skips t: network namespaces are Linux's.
func InNamespace(t *testing.T, _ Config) bool {
	t.Helper()
	t.Skip("netnstest: network namespaces need Linux")
	return false
}
