// Package netnstest runs a Go test inside a network namespace of its own,
// so that it can use addresses the machine does not have (IPv6 ULA
// addresses on a private loopback, say) and reach nothing but them.
//
// A test calls InNamespace first:
//
//	func TestSomething(t *testing.T) {
//		if !netnstest.InNamespace(t, netnstest.Config{Addrs: []netip.Prefix{netip.MustParsePrefix("fd00:5::1/64")}}) {
//			return // it ran inside the namespace; its result is this test's
//		}
//		// Here, inside the namespace.
//	}
//
// In the test binary started by go test, InNamespace creates a namespace
// with a unique name (ip netns add), brings its loopback up with
// 127.0.0.1/8 and ::1 and adds cfg's addresses to it, then runs the same
// test binary inside it (ip netns exec) for this test only, logs what it
// prints, fails the test if the run inside failed, skips it if that run
// skipped, and deletes the namespace when the test ends. In that second
// process InNamespace checks that it is in the namespace meant for it,
// that no interface but the loopback is up there and that cfg's
// addresses are in place, and returns true.
//
// Creating a namespace needs Linux, root and the ip command (iproute2):
// without them, or where the system refuses the namespace, the test is
// skipped with the reason.
package netnstest
