package tablebuild

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// ownershipPool are the hostnames the fuzzed routes draw from: exact names,
// a wildcard over two of them, a name under a name, and "" for a route
// without hostnames (the catch-all).
var ownershipPool = []string{"a.ex.com", "b.ex.com", "*.ex.com", "x.a.ex.com", "c.other.com", ""}

// ownershipGrants give namespace n0 everything, n1 the names under ex.com,
// and n2 a.ex.com, the catch-all and nothing else; n3 has no grant.
var ownershipGrants = []*v1alpha1.WsGrant{
	grant("n0", withHosts("*"), withCatchAll),
	grant("n1", withHosts("*.ex.com")),
	grant("n2", withHosts("a.ex.com"), withCatchAll),
}

// ownershipInput turns fuzz bytes into routes (4 bytes each: namespace,
// hostnames as a bit set over ownershipPool, prefix, and age, TLS and
// whether the status says the route serves its names) and the Secrets
// they name.
func ownershipInput(data []byte) Input {
	in := Input{Grants: ownershipGrants, Secrets: map[types.NamespacedName]TLSSecret{}}
	for i := 0; i+4 <= len(data) && i < 4*24; i += 4 {
		ns := fmt.Sprintf("n%d", data[i]%4)
		var hs []string
		for b, h := range ownershipPool {
			if data[i+1]&(1<<b) != 0 && h != "" {
				hs = append(hs, h)
			}
		}
		opts := []routeOpt{hosts(hs...), prefix([]string{"/", "/p", "/p/q"}[data[i+2]%3])}
		if data[i+3]&0x80 != 0 {
			secret := fmt.Sprintf("s%d", i)
			opts = append(opts, withTLS(secret))
			in.Secrets[types.NamespacedName{Namespace: ns, Name: secret}] = TLSSecret{Certificate: &tls.Certificate{}}
		}
		if data[i+3]&0x40 != 0 {
			// The gateway accepted it for these names in an earlier
			// build (or its status is stale).
			served := hs
			if len(served) == 0 {
				served = []string{v1alpha1.CatchAllHostname}
			}
			opts = append(opts, serving(served...))
		}
		in.Routes = append(in.Routes, newRoute(ns, fmt.Sprintf("r%d", i/4), int(data[i+3]&0x7), opts...))
	}
	return in
}

// checkOwnership asserts the ownership rule on one build's result against
// a reading of the rule independent of resolveClaims.
func checkOwnership(t *testing.T, in Input, res *Result) {
	t.Helper()
	g := compileGrants(in.Grants)
	// hostNamespace is the namespace that serves each host (and "" for
	// the catch-all) in the table.
	hostNamespace := map[string]string{}
	certNamespace := map[*tls.Certificate]string{}
	for k, sec := range in.Secrets {
		certNamespace[sec.Certificate] = k.Namespace
	}
	for _, r := range res.Table.Routes() {
		hs := r.Hosts
		if len(hs) == 0 {
			hs = []string{""}
		}
		for _, h := range hs {
			if ns, seen := hostNamespace[h]; seen && ns != r.Key.Namespace {
				t.Fatalf("host %q is served to namespaces %q and %q", h, ns, r.Key.Namespace)
			}
			hostNamespace[h] = r.Key.Namespace
			if !g.host(r.Key.Namespace, h) {
				t.Fatalf("route %s is served on host %q, which no grant gives its namespace", r.Key, h)
			}
			if h == "" {
				continue
			}
			if c := res.Table.Certificate(h); c != nil && certNamespace[c] != r.Key.Namespace {
				t.Fatalf("host %q of namespace %q is served a certificate of namespace %q", h, r.Key.Namespace, certNamespace[c])
			}
		}
	}
	// reserved are the names that routes whose status says they serve
	// them keep for their namespace.
	reserved := map[string]string{}
	cands := make([]*candidate, 0, len(in.Routes))
	for _, wr := range in.Routes {
		c := compile(wr, "")
		if len(c.problems) == 0 {
			c.notGranted, c.notGrantedMsg = g.notGranted(c)
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, olderFirst)
	for h, c := range servingOwners(cands) {
		reserved[h] = c.key.Namespace
	}
	byKey := map[routing.RouteKey]*v1alpha1.WsRoute{}
	for _, wr := range in.Routes {
		byKey[routing.RouteKey{Namespace: wr.Namespace, Name: wr.Name}] = wr
	}
	for k, st := range res.Routes {
		wr := byKey[k]
		hs := make([]string, 0, len(wr.Spec.Hostnames))
		for _, h := range wr.Spec.Hostnames {
			hs = append(hs, string(h))
		}
		if len(hs) == 0 {
			hs = []string{""}
		}
		switch st.Reason {
		case v1alpha1.ReasonAccepted:
			if _, ok := res.Table.Route(k); !ok {
				t.Fatalf("%s is accepted but not in the table", k)
			}
		case v1alpha1.ReasonHostnameNotAllowed:
			if !slices.ContainsFunc(hs, func(h string) bool { return !g.host(k.Namespace, h) }) {
				t.Fatalf("%s: HostnameNotAllowed, but its namespace is granted all of %q", k, hs)
			}
		case v1alpha1.ReasonHostnameConflict:
			// Another namespace serves one of its names, or holds it
			// through a route whose status says it serves it.
			if !slices.ContainsFunc(hs, func(h string) bool {
				ns, served := hostNamespace[h]
				held, holds := reserved[h]
				return served && ns != k.Namespace || holds && held != k.Namespace
			}) {
				t.Fatalf("%s: HostnameConflict, but no host of %q is served to another namespace (%s)", k, hs, st.Message)
			}
		case v1alpha1.ReasonConflict:
			// An older route of its own namespace holds one of its
			// (host, prefix) pairs.
			if !slices.ContainsFunc(hs, func(h string) bool {
				r, _, ok := res.Table.Match(h, prefixOf(wr)+"/10.0.0.1")
				return ok && r.Key.Namespace == k.Namespace && r.PathPrefix == prefixOf(wr)
			}) {
				t.Fatalf("%s: Conflict, but no route of its namespace holds its prefix on one of %q", k, hs)
			}
		default:
			t.Fatalf("%s: unexpected reason %q (%s)", k, st.Reason, st.Message)
		}
		if !st.Accepted {
			if _, ok := res.Table.Route(k); ok {
				t.Fatalf("%s is %s but in the table", k, st.Reason)
			}
		}
	}
}

// FuzzOwnership builds random routes of four namespaces over overlapping
// names, exact and wildcard, with and without certificates, and checks
// that each name is served to one namespace only, only if granted, only
// with that namespace's certificate (or the default), and that the result
// does not depend on the order of the input.
func FuzzOwnership(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0x80, 1, 1, 1, 0x81, 2, 4, 0, 0x02, 3, 2, 0, 0})
	f.Add([]byte{1, 4, 0, 0x83, 0, 1, 0, 0x84, 2, 32, 1, 0, 0, 32, 2, 1})
	f.Add([]byte{2, 1, 2, 0, 1, 8, 0, 0x80, 0, 12, 1, 0x81, 1, 3, 0, 0x85})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := ownershipInput(data)
		res := Build(in, Options{})
		checkOwnership(t, in, res)
		rng := rand.New(rand.NewPCG(uint64(len(data)), 7))
		shuffled := in
		shuffled.Routes = slices.Clone(in.Routes)
		rng.Shuffle(len(shuffled.Routes), func(i, j int) { shuffled.Routes[i], shuffled.Routes[j] = shuffled.Routes[j], shuffled.Routes[i] })
		if again := Build(shuffled, Options{}); !reflect.DeepEqual(again.Routes, res.Routes) {
			t.Fatal("the statuses depend on the order of the routes")
		}
	})
}

// TestOwnershipOverManyInputs runs the fuzz target's checks over inputs
// drawn from a fixed seed, so that a plain test run covers the rule too.
func TestOwnershipOverManyInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 17))
	conflicts := 0
	for range 2000 {
		data := make([]byte, 4*(1+rng.IntN(12)))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		in := ownershipInput(data)
		res := Build(in, Options{})
		checkOwnership(t, in, res)
		for _, st := range res.Routes {
			if st.Reason == v1alpha1.ReasonHostnameConflict {
				conflicts++
			}
		}
	}
	if conflicts == 0 {
		t.Fatal("no input produced a HostnameConflict: the inputs do not exercise the rule")
	}
}

// prefixOf is the route's path prefix with its default.
func prefixOf(wr *v1alpha1.WsRoute) string {
	if wr.Spec.PathPrefix == "" {
		return "/"
	}
	return wr.Spec.PathPrefix
}
