package builder

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// Eligible says whether a pod can be allowlisted for a route port, and
// returns its addresses with the resolved port, or the reason it is
// skipped. skipped is "" exactly when addrs is not empty.
//
// The checks run in this order:
//   - the pod is being deleted (DeletionTimestamp set): SkippedTerminating;
//   - it has no usable IP: SkippedNoIP;
//   - it is not Ready (Ready condition not True, or phase Succeeded or
//     Failed): SkippedNotReady;
//   - the port does not resolve: SkippedPortNotFound.
//
// Addresses are every entry of status.podIPs, or status.podIP when podIPs
// yields none, in that order and without duplicates, in canonical form:
// IPv4-mapped IPv6 addresses are unmapped; addresses that do not parse or
// carry a zone are skipped.
//
// A number port is used as is (1-65535). A name is looked up in the TCP
// ports of spec.containers, then of the sidecars (init containers with
// restartPolicy Always); the first match wins.
func Eligible(pod *corev1.Pod, port intstr.IntOrString) (addrs []netip.AddrPort, skipped v1alpha1.SkippedReason) {
	ips, skipped := podAddrs(pod, nil)
	if skipped != "" {
		return nil, skipped
	}
	num, ok := resolvePort(pod, port)
	if !ok {
		return nil, v1alpha1.SkippedPortNotFound
	}
	addrs = make([]netip.AddrPort, len(ips))
	for i, a := range ips {
		addrs[i] = netip.AddrPortFrom(a, num)
	}
	return addrs, ""
}

// podAddrs is the port-independent part of Eligible. It appends the
// addresses to dst, which must be empty (it may have spare capacity).
func podAddrs(pod *corev1.Pod, dst []netip.Addr) ([]netip.Addr, v1alpha1.SkippedReason) {
	if pod.DeletionTimestamp != nil {
		return nil, v1alpha1.SkippedTerminating
	}
	addrs := dst
	for _, ip := range pod.Status.PodIPs {
		addrs = appendAddr(addrs, ip.IP)
	}
	if len(addrs) == 0 {
		addrs = appendAddr(addrs, pod.Status.PodIP)
	}
	if len(addrs) == 0 {
		return nil, v1alpha1.SkippedNoIP
	}
	if !podReady(pod) {
		return nil, v1alpha1.SkippedNotReady
	}
	return addrs, ""
}

// appendAddr parses s and appends its canonical form to addrs, unless it
// does not parse, has a zone, or is already there.
func appendAddr(addrs []netip.Addr, s string) []netip.Addr {
	if s == "" {
		return addrs
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return addrs
	}
	a = a.Unmap()
	if !routing.Canonical(a) || slices.Contains(addrs, a) {
		return addrs
	}
	return append(addrs, a)
}

func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			return pod.Status.Conditions[i].Status == corev1.ConditionTrue
		}
	}
	return false
}

// resolvePort returns the port number that port means for pod.
func resolvePort(pod *corev1.Pod, port intstr.IntOrString) (uint16, bool) {
	if port.Type == intstr.Int {
		return portNumber(port.IntVal)
	}
	name := port.StrVal
	if name == "" {
		return 0, false
	}
	for i := range pod.Spec.Containers {
		if n, ok := namedPort(pod.Spec.Containers[i].Ports, name); ok {
			return n, true
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue // a plain init container is gone before the pod is Ready
		}
		if n, ok := namedPort(c.Ports, name); ok {
			return n, true
		}
	}
	return 0, false
}

func namedPort(ports []corev1.ContainerPort, name string) (uint16, bool) {
	for i := range ports {
		p := &ports[i]
		if p.Name == name && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			return portNumber(p.ContainerPort)
		}
	}
	return 0, false
}

func portNumber(n int32) (uint16, bool) {
	if n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// podEntry is one pod of an indexed namespace, with its port-independent
// eligibility computed on first use and shared by every route.
type podEntry struct {
	pod *corev1.Pod
	// name is pod.Name, copied while the index reads the pod anyway, so that
	// sorting a route's pods does not chase the pod pointers.
	name  string
	addrs []netip.Addr
	skip  v1alpha1.SkippedReason
	done  bool
}

// labelPair is one "key=value" label.
type labelPair struct {
	key, value string
}

// podIndex holds the pods that accepted routes may select. It is built
// once per Build, only for the namespaces that have accepted routes (pods
// elsewhere cost one map lookup each), and it indexes only the label keys
// of those routes' Equals and In requirements.
type podIndex struct {
	namespaces map[string]*namespacePods
	// entries are the pods of the indexed namespaces, in input order; the
	// namespaces refer to them by position.
	entries []podEntry
	// arena backs the entries' addrs, so that pods cost no allocation each.
	arena []netip.Addr
}

// namespacePods indexes the pods of one namespace.
//
// The label index is flat: pairs numbers each labelPair seen, and the
// entries that carry pair n are byPair[start[n]:start[n+1]], in input
// order.
type namespacePods struct {
	size    int
	members []int32 // every entry of the namespace, in input order
	keys    []string

	pairs  map[labelPair]int32
	start  []int32
	byPair []int32
	refs   []pairRef // (pair, entry) while pods are added; see index
}

type pairRef struct{ pair, entry int32 }

func newPodIndex(pods []*corev1.Pod, routes []*candidate) *podIndex {
	idx := &podIndex{namespaces: make(map[string]*namespacePods)}
	for _, c := range routes {
		ns := idx.namespaces[c.key.Namespace]
		if ns == nil {
			ns = &namespacePods{}
			idx.namespaces[c.key.Namespace] = ns
		}
		for _, l := range c.lookups {
			if !slices.Contains(ns.keys, l.key) {
				ns.keys = append(ns.keys, l.key)
			}
		}
	}

	// Count first, so that every slice is allocated once at its size.
	total := 0
	for _, pod := range pods {
		if pod == nil {
			continue
		}
		if ns := idx.namespaces[pod.Namespace]; ns != nil {
			ns.size++
			total++
		}
	}
	idx.entries = make([]podEntry, 0, total)
	for _, ns := range idx.namespaces {
		ns.members = make([]int32, 0, ns.size)
		if len(ns.keys) > 0 {
			ns.pairs = make(map[labelPair]int32)
			ns.refs = make([]pairRef, 0, ns.size)
		}
	}

	for _, pod := range pods {
		if pod == nil {
			continue
		}
		ns := idx.namespaces[pod.Namespace]
		if ns == nil {
			continue
		}
		i := int32(len(idx.entries))
		idx.entries = append(idx.entries, podEntry{pod: pod, name: pod.Name})
		ns.members = append(ns.members, i)
		for _, k := range ns.keys {
			if v, ok := pod.Labels[k]; ok {
				ns.add(labelPair{k, v}, i)
			}
		}
	}
	for _, ns := range idx.namespaces {
		ns.index()
	}
	return idx
}

func (ns *namespacePods) add(p labelPair, entry int32) {
	id, ok := ns.pairs[p]
	if !ok {
		id = int32(len(ns.pairs))
		ns.pairs[p] = id
	}
	ns.refs = append(ns.refs, pairRef{pair: id, entry: entry})
}

// index sorts refs by pair into start and byPair. It is a counting sort,
// so the entries of each pair stay in input order.
func (ns *namespacePods) index() {
	if len(ns.pairs) == 0 {
		return
	}
	ns.start = make([]int32, len(ns.pairs)+1)
	for _, r := range ns.refs {
		ns.start[r.pair+1]++
	}
	for i := 1; i < len(ns.start); i++ {
		ns.start[i] += ns.start[i-1]
	}
	next := slices.Clone(ns.start[:len(ns.pairs)])
	ns.byPair = make([]int32, len(ns.refs))
	for _, r := range ns.refs {
		ns.byPair[next[r.pair]] = r.entry
		next[r.pair]++
	}
	ns.refs = nil
}

// withLabel returns the entries that carry label p, in input order.
func (ns *namespacePods) withLabel(p labelPair) []int32 {
	id, ok := ns.pairs[p]
	if !ok {
		return nil
	}
	return ns.byPair[ns.start[id]:ns.start[id+1]]
}

// eligibility returns the port-independent part of Eligible for entry i,
// computing it on first use.
func (idx *podIndex) eligibility(i int32) ([]netip.Addr, v1alpha1.SkippedReason) {
	e := &idx.entries[i]
	if !e.done {
		if cap(idx.arena)-len(idx.arena) < 4 {
			// A new chunk; earlier entries keep their views of the old one.
			idx.arena = make([]netip.Addr, 0, max(256, 2*cap(idx.arena)))
		}
		tail := idx.arena[len(idx.arena):]
		e.addrs, e.skip = podAddrs(e.pod, tail)
		if len(e.addrs) <= cap(tail) { // appended in place
			idx.arena = idx.arena[:len(idx.arena)+len(e.addrs)]
		}
		e.addrs = e.addrs[:len(e.addrs):len(e.addrs)]
		e.done = true
	}
	return e.addrs, e.skip
}

// match appends to dst[:0] the entries of namespace ns that c's selector
// matches, sorted by pod name. With an Equals or In requirement it takes
// the one with the fewest candidates from the index and checks the full
// selector on those only (or not at all when that requirement is the whole
// selector); without one it checks every pod of the namespace.
func (idx *podIndex) match(ns *namespacePods, c *candidate, dst []int32) []int32 {
	dst = dst[:0]
	best, bestLen := -1, 0
	for i, l := range c.lookups {
		n := 0
		for _, v := range l.values {
			n += len(ns.withLabel(labelPair{l.key, v}))
		}
		if best < 0 || n < bestLen {
			best, bestLen = i, n
		}
	}
	switch {
	case best >= 0 && bestLen == 0:
		return dst
	case best >= 0:
		l := c.lookups[best]
		for _, v := range l.values {
			for _, i := range ns.withLabel(labelPair{l.key, v}) {
				if c.lookupIsSelector || c.selector.Matches(labels.Set(idx.entries[i].pod.Labels)) {
					dst = append(dst, i)
				}
			}
		}
	default:
		for _, i := range ns.members {
			if c.selector.Matches(labels.Set(idx.entries[i].pod.Labels)) {
				dst = append(dst, i)
			}
		}
	}
	slices.SortFunc(dst, func(a, b int32) int {
		ea, eb := &idx.entries[a], &idx.entries[b]
		if c := cmp.Compare(ea.name, eb.name); c != 0 {
			return c
		}
		return cmp.Compare(ea.pod.UID, eb.pod.UID)
	})
	return dst
}

// endpointScratch is reused across the routes of one build.
type endpointScratch struct {
	matched []int32
	spans   []addrSpan // backends of each listed pod
	text    []byte     // the listed addresses, concatenated
	ends    []int      // where each address ends in text
}

// addrSpan locates a listed pod's status addresses in the route's backends.
type addrSpan struct{ first, n int }

// skipReasons lists every SkippedReason; Skipped is reported in this order
// once sorted.
var skipReasons = [...]v1alpha1.SkippedReason{
	v1alpha1.SkippedNoIP,
	v1alpha1.SkippedNotReady,
	v1alpha1.SkippedPortNotFound,
	v1alpha1.SkippedTerminating,
}

// endpoints returns the backends of an accepted route and its status
// endpoints. Pods are taken in name order; an address already allowlisted
// for an earlier pod of the same route is dropped, and a pod left with no
// address of its own is neither counted nor listed.
func (idx *podIndex) endpoints(c *candidate, s *endpointScratch) ([]routing.Backend, v1alpha1.RouteEndpoints) {
	var ep v1alpha1.RouteEndpoints
	ns := idx.namespaces[c.key.Namespace]
	if ns == nil {
		return nil, ep
	}
	s.matched = idx.match(ns, c, s.matched)
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
		pod := idx.entries[i].pod
		addrs, skip := idx.eligibility(i)
		var port uint16
		if skip == "" {
			var ok bool
			if port, ok = resolvePort(pod, c.port); !ok {
				skip = v1alpha1.SkippedPortNotFound
			}
		}
		if skip != "" {
			skipped[slices.Index(skipReasons[:], skip)]++
			continue
		}
		first := len(backends)
		for _, a := range addrs {
			if !dup(a) {
				backends = append(backends, routing.Backend{Pod: pod.Name, Addr: netip.AddrPortFrom(a, port)})
			}
		}
		if len(backends) == first {
			continue
		}
		ep.Count++
		if len(ep.Pods) < v1alpha1.MaxStatusPods {
			ep.Pods = append(ep.Pods, v1alpha1.EndpointPod{Name: pod.Name, Port: int32(port)})
			s.spans = append(s.spans, addrSpan{first: first, n: min(len(backends)-first, maxStatusAddresses)})
		}
	}
	s.statusAddresses(ep.Pods, backends)
	if len(ep.Pods) == 0 {
		ep.Pods = nil
	}

	for i, n := range skipped {
		if n > 0 {
			ep.Skipped = append(ep.Skipped, v1alpha1.SkippedPods{Reason: skipReasons[i], Count: n})
		}
	}
	slices.SortFunc(ep.Skipped, func(a, b v1alpha1.SkippedPods) int { return cmp.Compare(a.Reason, b.Reason) })
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
