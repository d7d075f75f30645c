//go:build !linux

package proxy

// readable is unavailable here: tunnels borrow their read buffer while
// they wait for data.
var readable func(fd uintptr) bool
