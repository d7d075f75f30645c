package routing

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func backend(pod, addrPort string) Backend {
	return Backend{Pod: pod, Addr: netip.MustParseAddrPort(addrPort)}
}

func testTable() *Table {
	return New(1, time.Unix(0, 0), []*Route{
		{Key: RouteKey{"a", "root"}, Hosts: []string{"ws.example.com"}, PathPrefix: "/", Backends: []Backend{backend("p1", "127.0.0.1:80")}},
		{Key: RouteKey{"a", "rooms"}, Hosts: []string{"ws.example.com"}, PathPrefix: "/rooms", Backends: []Backend{backend("p2", "127.0.0.2:80")}},
		{Key: RouteKey{"a", "rooms-eu"}, Hosts: []string{"ws.example.com"}, PathPrefix: "/rooms/eu", Backends: []Backend{backend("p3", "127.0.0.3:80")}},
		{Key: RouteKey{"b", "wild"}, Hosts: []string{"*.games.example.com"}, PathPrefix: "/", Backends: []Backend{backend("p4", "[::1]:9000")}},
		{Key: RouteKey{"c", "any"}, PathPrefix: "/any", Backends: []Backend{backend("p5", "127.0.0.5:80")}},
	})
}

func TestMatchPicksTheMostSpecificHostAndLongestPrefix(t *testing.T) {
	tbl := testTable()
	cases := []struct {
		name, host, path string
		want, rest       string // want "" means no match
	}{
		{"root prefix takes what nothing longer claims", "ws.example.com", "/127.0.0.1/x", "a/root", "/127.0.0.1/x"},
		{"a longer prefix wins", "ws.example.com", "/rooms/127.0.0.2", "a/rooms", "/127.0.0.2"},
		{"the longest prefix wins", "ws.example.com", "/rooms/eu/127.0.0.3/chat", "a/rooms-eu", "/127.0.0.3/chat"},
		{"a prefix matches whole segments only", "ws.example.com", "/roomsX/127.0.0.2", "a/root", "/roomsX/127.0.0.2"},
		{"the prefix itself leaves an empty rest", "ws.example.com", "/rooms", "a/rooms", ""},
		{"a wildcard matches one label", "eu.games.example.com", "/::1", "b/wild", "/::1"},
		{"a wildcard does not match two labels, and the catch-all takes it", "a.eu.games.example.com", "/any/1", "c/any", "/1"},
		{"a wildcard does not match its own suffix", "games.example.com", "/x", "", ""},
		{"a wildcard does not match an empty label", ".games.example.com", "/any/1", "c/any", "/1"},
		{"an unknown host falls to the catch-all", "other.example.org", "/any/127.0.0.5", "c/any", "/127.0.0.5"},
		{"a known host does not fall back to the catch-all", "ws.example.com", "/any/127.0.0.5", "a/root", "/any/127.0.0.5"},
		{"a path without a leading slash matches nothing", "ws.example.com", "127.0.0.1", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, rest, ok := tbl.Match(tc.host, tc.path)
			if tc.want == "" {
				if ok {
					t.Fatalf("Match(%q, %q) = %s, want no match", tc.host, tc.path, r.Key)
				}
				return
			}
			if !ok || r.Key.String() != tc.want || rest != tc.rest {
				t.Fatalf("Match(%q, %q) = %v %q %v, want %s %q", tc.host, tc.path, r, rest, ok, tc.want, tc.rest)
			}
		})
	}
}

func TestBackendAllowsOnlyCanonicalListedAddresses(t *testing.T) {
	tbl := New(1, time.Time{}, []*Route{{
		Key: RouteKey{"a", "r"}, PathPrefix: "/",
		Backends: []Backend{
			backend("v4", "127.0.0.9:80"),
			backend("dup", "127.0.0.9:81"),
			{Pod: "mapped", Addr: netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.10"), 80)},
			{Pod: "zoned", Addr: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 80)},
		},
	}})
	r, _ := tbl.Route(RouteKey{"a", "r"})
	if b, ok := r.Backend(netip.MustParseAddr("127.0.0.9")); !ok || b.Pod != "v4" || b.Addr.Port() != 80 {
		t.Errorf("127.0.0.9 -> %+v %v, want the first backend v4:80", b, ok)
	}
	for _, a := range []string{"::ffff:127.0.0.10", "127.0.0.10", "fe80::1%eth0", "fe80::1", "127.0.0.8"} {
		if b, ok := r.Backend(netip.MustParseAddr(a)); ok {
			t.Errorf("%s is allowlisted as %+v", a, b)
		}
	}
	if len(r.Backends) != 1 || tbl.Backends() != 1 {
		t.Errorf("backends = %+v, want only the canonical, first 127.0.0.9", r.Backends)
	}
	if !tbl.Allows(RouteKey{"a", "r"}, backend("v4", "127.0.0.9:80")) {
		t.Error("Allows is false for the allowlisted backend")
	}
	if tbl.Allows(RouteKey{"a", "r"}, backend("v4", "127.0.0.9:81")) || tbl.Allows(RouteKey{"a", "other"}, backend("v4", "127.0.0.9:80")) {
		t.Error("Allows is true for another port or route")
	}
}

func TestPublisherStartsEmptyAndNotifiesSubscribers(t *testing.T) {
	p := NewPublisher()
	if p.Ready() || p.Load() == nil || p.Load().Generation() != 0 || len(p.Load().Routes()) != 0 {
		t.Fatal("a new publisher must hold an empty, not-ready table")
	}
	ch, cancel := p.Subscribe()
	p.Publish(testTable())
	p.Publish(New(2, time.Time{}, nil)) // coalesces with the first notification
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("no notification")
	}
	if !p.Ready() || p.Load().Generation() != 2 {
		t.Errorf("ready=%v generation=%d, want the last table", p.Ready(), p.Load().Generation())
	}
	select {
	case <-ch:
		t.Error("two notifications for two quick publishes; they should coalesce")
	default:
	}
	cancel()
	p.Publish(New(3, time.Time{}, nil))
	select {
	case <-ch:
		t.Error("notified after cancel")
	default:
	}
}

// FuzzMatch checks that a match always splits the path into the route's
// prefix and a rest that starts a new segment.
func FuzzMatch(f *testing.F) {
	tbl := testTable()
	for _, s := range []string{"/", "/rooms", "/rooms/", "/roomsX", "/rooms/eu/1", "//", "/any", ""} {
		f.Add("ws.example.com", s)
		f.Add("x.games.example.com", s)
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		r, rest, ok := tbl.Match(host, path)
		if !ok {
			return
		}
		if rest != "" && rest[0] != '/' {
			t.Fatalf("rest %q does not start a segment", rest)
		}
		if r.PathPrefix == "/" {
			if rest != path {
				t.Fatalf("root prefix: rest %q != path %q", rest, path)
			}
		} else if path != r.PathPrefix+rest {
			t.Fatalf("path %q != prefix %q + rest %q", path, r.PathPrefix, rest)
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("matched a path without a leading slash: %q", path)
		}
	})
}

func TestCertificateBySNI(t *testing.T) {
	exact, wild, def := &tls.Certificate{}, &tls.Certificate{}, &tls.Certificate{}
	tbl := New(1, time.Time{}, nil, WithCertificates(Certificates{
		ByHost:  map[string]*tls.Certificate{"ws.example.com": exact, "*.example.com": wild},
		Default: def,
	}))
	cases := []struct {
		name string
		want *tls.Certificate
	}{
		{"ws.example.com", exact},
		{"WS.Example.com.", exact},
		{"other.example.com", wild},
		{"a.b.example.com", def},
		{"example.com", def},
		{".example.com", def},
		{"", def},
	}
	for _, tc := range cases {
		if got := tbl.Certificate(tc.name); got != tc.want {
			t.Errorf("Certificate(%q) is not the expected one", tc.name)
		}
	}
	if New(1, time.Time{}, nil).Certificate("ws.example.com") != nil {
		t.Error("a table without certificates returns one")
	}
}
