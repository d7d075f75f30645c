package tablebuild

import (
	"net/netip"
	"slices"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// endpointScratch is reused across the routes of one build.
type endpointScratch struct {
	matched []int32
	spans   []addrSpan // backends of each listed pod
	text    []byte     // the listed addresses, concatenated
	ends    []int      // where each address ends in text
}

// addrSpan locates a listed pod's status addresses in the route's backends.
type addrSpan struct{ first, n int }

// endpoints returns the backends of an accepted route and its status
// endpoints. Pods are taken in name order; an address already allowlisted
// for an earlier pod of the same route is dropped, and a pod left with no
// address of its own is neither counted nor listed. On a route that binds
// tokens to pods, an eligible pod without a value to bind to is skipped
// (SkippedUnbound), and each backend carries its pod's value.
func (idx *podIndex) endpoints(c *candidate, s *endpointScratch) ([]routing.Backend, v1alpha1.RouteEndpoints) {
	var ep v1alpha1.RouteEndpoints
	ns := idx.namespaces[c.key.Namespace]
	if ns == nil {
		return nil, ep
	}
	s.matched = idx.match(ns, &c.podSelector, s.matched)
	if len(s.matched) == 0 {
		return nil, ep
	}

	var skipped [len(skipReasons)]int32
	backends := make([]routing.Backend, 0, len(s.matched))
	ep.Pods = make([]v1alpha1.EndpointPod, 0, min(len(s.matched), v1alpha1.MaxStatusPods))
	s.spans = s.spans[:0]
	var seen map[netip.Addr]struct{} // only for large routes; small ones scan backends
	if len(s.matched) > 16 {
		seen = make(map[netip.Addr]struct{}, len(s.matched))
	}
	dup := func(a netip.Addr) bool {
		if seen != nil {
			_, ok := seen[a]
			seen[a] = struct{}{}
			return ok
		}
		for i := range backends {
			if backends[i].Addr.Addr() == a {
				return true
			}
		}
		return false
	}

	for _, i := range s.matched {
		pod, name := idx.entries[i].pod, idx.entries[i].name
		addrs, skip := pod.addrs, pod.skipped()
		var port uint16
		if skip == "" {
			var ok bool
			if port, ok = resolvePort(pod, c.port); !ok {
				skip = v1alpha1.SkippedPortNotFound
			}
		}
		var bound string
		if skip == "" && c.auth != nil && c.auth.binding != bindNone {
			if bound = c.auth.boundValue(pod, name); bound == "" {
				skip = v1alpha1.SkippedUnbound
			}
		}
		if skip != "" {
			skipped[slices.Index(skipReasons[:], skip)]++
			continue
		}
		first := len(backends)
		for _, a := range addrs {
			if !dup(a) {
				backends = append(backends, routing.Backend{Pod: name, Addr: netip.AddrPortFrom(a, port), Bound: bound})
			}
		}
		if len(backends) == first {
			continue
		}
		ep.Count++
		if len(ep.Pods) < v1alpha1.MaxStatusPods {
			ep.Pods = append(ep.Pods, v1alpha1.EndpointPod{Name: name, Port: int32(port)})
			s.spans = append(s.spans, addrSpan{first: first, n: min(len(backends)-first, maxStatusAddresses)})
		}
	}
	s.statusAddresses(ep.Pods, backends)
	if len(ep.Pods) == 0 {
		ep.Pods = nil
	}

	for i, n := range skipped { // skipReasons is sorted, so Skipped is too
		if n > 0 {
			ep.Skipped = append(ep.Skipped, v1alpha1.SkippedPods{Reason: skipReasons[i], Count: n})
		}
	}
	return backends, ep
}

// maxStatusAddresses is the schema's bound on status.endpoints.pods[].addresses.
const maxStatusAddresses = 2

// statusAddresses fills in the addresses of the listed pods from s.spans.
// The strings of one route share one allocation.
func (s *endpointScratch) statusAddresses(pods []v1alpha1.EndpointPod, backends []routing.Backend) {
	if len(pods) == 0 {
		return
	}
	s.text, s.ends = s.text[:0], s.ends[:0]
	for _, sp := range s.spans {
		for _, b := range backends[sp.first : sp.first+sp.n] {
			s.text = b.Addr.Addr().AppendTo(s.text)
			s.ends = append(s.ends, len(s.text))
		}
	}
	text := string(s.text)
	all := make([]string, len(s.ends))
	begin := 0
	for i, end := range s.ends {
		all[i], begin = text[begin:end], end
	}
	k := 0
	for i, sp := range s.spans {
		pods[i].Addresses = all[k : k+sp.n : k+sp.n]
		k += sp.n
	}
}
