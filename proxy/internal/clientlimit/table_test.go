package clientlimit

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

const sec = int64(time.Second)

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestAddrKeyGroupsIPv6By64(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"192.0.2.1", "192.0.2.2", false},
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"fe80::1%eth0", "fe80::2%eth1", true},
		// IPv4 clients translated into IPv6 (NAT64) are each their IPv4
		// address, not one /64 for all.
		{"64:ff9b::c000:201", "64:ff9b::c000:202", false},
		{"64:ff9b::c000:201", "192.0.2.1", true},
	}
	for _, c := range cases {
		ka, kb := AddrKey("", netip.MustParseAddr(c.a)), AddrKey("", netip.MustParseAddr(c.b))
		if (ka == kb) != c.same {
			t.Errorf("%s and %s: same key %v, want %v", c.a, c.b, ka == kb, c.same)
		}
	}
	if AddrKey("ns/a", addr(1)) == AddrKey("", addr(1)) {
		t.Error("scopes do not separate keys")
	}
	if SubjectKey("", "alice") == SubjectKey("", "bob") || SubjectKey("ns/a", "alice") == SubjectKey("", "alice") {
		t.Error("subjects or scopes do not separate subject keys")
	}
	if SubjectKey("a", "b/c") == SubjectKey("a/b", "c") {
		t.Error("scope and subject run together")
	}
}

func TestBucket(t *testing.T) {
	tbl := New(100)
	k, b := AddrKey("", addr(1)), Bucket{Rate: 2, Burst: 3}
	for i := range 3 {
		if ok, _ := tbl.Allow(k, b, 0); !ok {
			t.Fatalf("handshake %d of the burst refused", i)
		}
	}
	ok, wait := tbl.Allow(k, b, 0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("past the burst: %v, wait %v; want refused, 500ms", ok, wait)
	}
	if ok, _ := tbl.Allow(k, b, sec/2); !ok {
		t.Fatal("a token after 500ms at 2/s was refused")
	}
	if ok, _ := tbl.Allow(k, b, sec/2); ok {
		t.Fatal("a second token in the same instant was allowed")
	}
	// Refills up to the burst only.
	for i := range 3 {
		if ok, _ := tbl.Allow(k, b, 100*sec); !ok {
			t.Fatalf("after a long pause, handshake %d refused", i)
		}
	}
	if ok, _ := tbl.Allow(k, b, 100*sec); ok {
		t.Fatal("the bucket held more than its burst")
	}
}

func TestTunnelsAndSweep(t *testing.T) {
	tbl := New(100)
	k := AddrKey("", addr(1))
	for i := range 2 {
		if ok, tracked := tbl.Acquire(k, 2, 0); !ok || !tracked {
			t.Fatalf("tunnel %d: %v %v", i, ok, tracked)
		}
	}
	if ok, _ := tbl.Acquire(k, 2, 0); ok {
		t.Fatal("a third tunnel under a cap of 2")
	}
	tbl.Sweep(1000 * sec)
	if tbl.Len() != 1 {
		t.Fatal("a client with open tunnels was swept")
	}
	tbl.Release(k, 0)
	if ok, _ := tbl.Acquire(k, 2, 0); !ok {
		t.Fatal("a released place was not given back")
	}
	tbl.Release(k, 0)
	tbl.Release(k, 0)
	tbl.Sweep(1)
	if tbl.Len() != 0 {
		t.Fatalf("%d clients left after their tunnels ended", tbl.Len())
	}
	defer func() {
		if recover() == nil {
			t.Error("a release without an acquire did not panic")
		}
	}()
	tbl.Release(k, 0)
}

func TestRefusalBudget(t *testing.T) {
	tbl := New(100)
	k := AddrKey("", addr(1))
	b := Budget{Bucket: Bucket{Rate: 5.0 / 60, Burst: 5}, Block: 30 * time.Second}
	for i := range 5 {
		if tbl.Refused(k, b, int64(i)) {
			t.Fatalf("blocked after %d refusals, budget 5", i+1)
		}
	}
	if _, blocked := tbl.Blocked(k, 10); blocked {
		t.Fatal("blocked within the budget")
	}
	if !tbl.Refused(k, b, 10) {
		t.Fatal("not blocked past the budget")
	}
	if wait, blocked := tbl.Blocked(k, 10+sec); !blocked || wait != 29*time.Second {
		t.Fatalf("Blocked: %v %v", wait, blocked)
	}
	tbl.Sweep(20 * sec)
	if _, blocked := tbl.Blocked(k, 20*sec); !blocked {
		t.Fatal("a block was swept before its end")
	}
	if _, blocked := tbl.Blocked(k, 31*sec); blocked {
		t.Fatal("still blocked after the block")
	}
	// Refusals spread under the budget's rate never block.
	k2 := AddrKey("", addr(2))
	for i := range 100 {
		if tbl.Refused(k2, b, int64(i)*13*sec) {
			t.Fatalf("blocked at refusal %d, one every 13 s under 5 a minute", i)
		}
	}
}

// TestBoundedWhateverTheClients: a flood of distinct clients keeps the
// table at its bound, and never evicts a client holding tunnels.
func TestBoundedWhateverTheClients(t *testing.T) {
	const limit = 1000
	tbl := New(limit)
	held := AddrKey("", netip.MustParseAddr("192.0.2.1"))
	if ok, tracked := tbl.Acquire(held, 1, 0); !ok || !tracked {
		t.Fatal("acquire")
	}
	for i := range 50 * limit {
		tbl.Allow(AddrKey("", addr(i)), Bucket{Rate: 1, Burst: 5}, sec)
		if tbl.Len() > limit {
			t.Fatalf("%d clients tracked after %d, bound %d", tbl.Len(), i+1, limit)
		}
	}
	if ok, _ := tbl.Acquire(held, 1, sec); ok {
		t.Fatal("the client holding a tunnel was evicted: its cap is lost")
	}
}

// TestBlocksAreNotEvicted: a flood of new clients, whatever their scope
// and however long their state lasts, cannot push a blocked scanner out
// of a full table.
func TestBlocksAreNotEvicted(t *testing.T) {
	const limit = 200
	tbl := New(limit)
	scanner := AddrKey("", netip.MustParseAddr("192.0.2.9"))
	b := Budget{Bucket: Bucket{Rate: 1, Burst: 1}, Block: time.Hour}
	tbl.Refused(scanner, b, 0)
	if !tbl.Refused(scanner, b, 0) {
		t.Fatal("not blocked")
	}
	slow := Bucket{Rate: 1.0 / 3600, Burst: 1} // each entry lasts an hour
	for i := range 20 * limit {
		tbl.Allow(SubjectKey("ns/route", fmt.Sprint(i)), slow, sec)
	}
	if _, blocked := tbl.Blocked(scanner, 2*sec); !blocked {
		t.Fatal("a full table's new clients evicted a blocked scanner")
	}
}

// TestMemoryPerClient measures the heap that 100,000 distinct clients
// take, each with a handshake bucket and a refusal count.
func TestMemoryPerClient(t *testing.T) {
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tbl := New(n)
	b := Budget{Bucket: Bucket{Rate: 100.0 / 60, Burst: 100}, Block: time.Minute}
	for i := range n {
		k := AddrKey("", addr(i))
		tbl.Allow(k, Bucket{Rate: 10, Burst: 20}, sec)
		tbl.Refused(k, b, sec)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tbl.Len() != n {
		t.Fatalf("%d clients tracked, want %d", tbl.Len(), n)
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d clients: %.0f bytes each", n, per)
	if per > 512 {
		t.Errorf("%.0f bytes per tracked client", per)
	}
	runtime.KeepAlive(tbl)
}

func BenchmarkAllow(b *testing.B) {
	tbl := New(100_000)
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = AddrKey("", addr(i))
	}
	bk := Bucket{Rate: 1e9, Burst: 1 << 30}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tbl.Allow(keys[i%len(keys)], bk, tbl.Now())
			i++
		}
	})
}

func ExampleAddrKey() {
	fmt.Println(AddrKey("", netip.MustParseAddr("2001:db8:1:2:3:4:5:6")).Addr)
	// Output: 2001:db8:1:2::
}
