package harness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/echopod"
)

// EchoPods starts one echo server per address, all on the same port (a
// WsRoute names one port for all its pods), and returns the port and the
// servers in the order of ips. They stop when the test ends.
func EchoPods(t testing.TB, ips ...string) (int32, []*echopod.Server) {
	t.Helper()
	port, servers, err := echopod.StartAll(ips...)
	if err != nil {
		t.Fatalf("echo servers on %v: %v", ips, err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Close()
		}
	})
	return int32(port), servers
}

// LoopbackDial returns a dialer for proxy.Options.Dial that counts every
// attempt in dials and refuses any address that is not loopback: the
// proxy dials only what the routing table allows, and this makes sure
// that the tests' tables allow loopback only.
func LoopbackDial(dials *atomic.Int64) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		if a, err := netip.ParseAddrPort(address); err != nil || !a.Addr().IsLoopback() {
			return nil, fmt.Errorf("test dialer refuses non-loopback address %q", address)
		}
		return (&net.Dialer{}).DialContext(ctx, network, address)
	}
}

// Condition returns "Status/Reason" of a route's condition of type typ,
// or "" when it has none.
func Condition(r *wsgatev1alpha1.WsRoute, typ string) string {
	for _, c := range r.Status.Conditions {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return ""
}

// WaitEvent waits up to timeout for an Event of type typ and reason, with
// a note, about the WsRoute ns/name, and returns it.
func WaitEvent(t testing.TB, c client.Reader, timeout time.Duration, ns, name, typ, reason string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	Eventually(t, timeout, fmt.Sprintf("a %s Event %s for %s/%s", typ, reason, ns, name), func() error {
		var evs eventsv1.EventList
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Regarding.Kind == "WsRoute" && e.Type == typ && e.Reason == reason && e.Note != "" {
				found = e
				return nil
			}
			seen = append(seen, e.Type+"/"+e.Reason+"/"+e.Regarding.Name)
		}
		return fmt.Errorf("seen %v", seen)
	})
	return found
}
