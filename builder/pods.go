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
//   - it uses the node's network (hostNetwork): SkippedHostNetwork, since
//     its IP is the node's;
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

// podAddrs is the port-independent part of Eligible. It appends the pod's
// addresses to dst and returns the result (the pod's addresses are the
// part after len(dst)); when the pod is skipped it returns dst unchanged.
func podAddrs(pod *corev1.Pod, dst []netip.Addr) ([]netip.Addr, v1alpha1.SkippedReason) {
	if pod.DeletionTimestamp != nil {
		return dst, v1alpha1.SkippedTerminating
	}
	if pod.Spec.HostNetwork {
		return dst, v1alpha1.SkippedHostNetwork
	}
	base := len(dst)
	addrs := dst
	for _, ip := range pod.Status.PodIPs {
		addrs = appendAddr(addrs, base, ip.IP)
	}
	if len(addrs) == base {
		addrs = appendAddr(addrs, base, pod.Status.PodIP)
	}
	if len(addrs) == base {
		return dst, v1alpha1.SkippedNoIP
	}
	if !podReady(pod) {
		return dst, v1alpha1.SkippedNotReady
	}
	return addrs, ""
}

// appendAddr parses s and appends its canonical form to addrs, unless it
// does not parse, has a zone, or is already in addrs[base:].
func appendAddr(addrs []netip.Addr, base int, s string) []netip.Addr {
	if s == "" {
		return addrs
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return addrs
	}
	a = a.Unmap()
	if !routing.Canonical(a) || slices.Contains(addrs[base:], a) {
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

// skipReasons lists every SkippedReason, sorted.
var skipReasons = [...]v1alpha1.SkippedReason{
	v1alpha1.SkippedHostNetwork,
	v1alpha1.SkippedNoIP,
	v1alpha1.SkippedNotReady,
	v1alpha1.SkippedPortNotFound,
	v1alpha1.SkippedTerminating,
}

// Values of podEntry.state.
const (
	stateUnknown  uint8 = iota // not computed yet
	stateEligible              // ready with addresses; the port is up to the route
	stateSkipped               // stateSkipped+i: skipped for skipReasons[i]
)

// podEntry is one pod of an indexed namespace. Its port-independent
// eligibility is computed on first use and shared by every route.
type podEntry struct {
	pod *corev1.Pod
	// name is pod.Name, copied while the index reads the pod anyway, so
	// that sorting a route's pods does not chase the pod pointers.
	name string
	// The pod's addresses are podIndex.arena[addrAt : addrAt+addrCount].
	addrAt    int32
	addrCount uint8
	state     uint8
}

// labelPair is one "key=value" label.
type labelPair struct {
	key, value string
}

// podIndex holds the pods that accepted routes may select. It is built
// once per Build, only for the namespaces that have accepted routes (a pod
// elsewhere costs one map lookup), and it indexes only the label keys of
// those routes' Equals and In requirements.
//
// The label index is flat: each namespace numbers the labelPairs it has
// seen (the numbers are unique across namespaces), and the entries that
// carry pair n are byPair[start[n]:start[n+1]], in input order.
type podIndex struct {
	namespaces map[string]*namespacePods
	// entries are the pods of the indexed namespaces, in input order; the
	// rest of the index refers to them by position.
	entries []podEntry
	// arena holds the addresses of the entries, so that a pod costs no
	// allocation of its own.
	arena []netip.Addr

	pairs  int32     // labelPairs numbered so far
	refs   []pairRef // (pair, entry) while pods are added; see sortRefs
	start  []int32
	byPair []int32
}

// namespacePods is the index of one namespace.
type namespacePods struct {
	// keys are the label keys the namespace's routes look up.
	keys []string
	// pairs numbers the labelPairs of keys that the namespace's pods carry.
	pairs map[labelPair]int32
	// scan is set when a route of the namespace has no requirement the
	// index can answer; members then lists every entry of the namespace.
	scan    bool
	members []int32
}

type pairRef struct{ pair, entry int32 }

func newPodIndex(pods []*corev1.Pod, routes []*candidate) *podIndex {
	idx := &podIndex{namespaces: make(map[string]*namespacePods)}
	indexed := false
	for _, c := range routes {
		ns := idx.namespaces[c.key.Namespace]
		if ns == nil {
			ns = &namespacePods{}
			idx.namespaces[c.key.Namespace] = ns
		}
		if len(c.lookups) == 0 {
			ns.scan = true
		}
		for _, l := range c.lookups {
			if !slices.Contains(ns.keys, l.key) {
				ns.keys = append(ns.keys, l.key)
			}
			if ns.pairs == nil {
				ns.pairs = make(map[labelPair]int32)
			}
			indexed = true
		}
	}
	if len(idx.namespaces) == 0 {
		return idx
	}

	// Reading a pod is a cache miss, so pods are read once: the slices are
	// sized for every pod rather than counted first (entries are small).
	idx.entries = make([]podEntry, 0, len(pods))
	if indexed {
		idx.refs = make([]pairRef, 0, len(pods))
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
		if ns.scan {
			ns.members = append(ns.members, i)
		}
		for _, k := range ns.keys {
			if v, ok := pod.Labels[k]; ok {
				idx.add(ns, labelPair{k, v}, i)
			}
		}
	}
	idx.sortRefs()
	return idx
}

func (idx *podIndex) add(ns *namespacePods, p labelPair, entry int32) {
	id, ok := ns.pairs[p]
	if !ok {
		id = idx.pairs
		idx.pairs++
		ns.pairs[p] = id
	}
	idx.refs = append(idx.refs, pairRef{pair: id, entry: entry})
}

// sortRefs sorts refs by pair into start and byPair. It is a counting sort,
// so the entries of each pair stay in input order.
func (idx *podIndex) sortRefs() {
	if idx.pairs == 0 {
		return
	}
	idx.start = make([]int32, idx.pairs+1)
	for _, r := range idx.refs {
		idx.start[r.pair+1]++
	}
	for i := 1; i < len(idx.start); i++ {
		idx.start[i] += idx.start[i-1]
	}
	next := slices.Clone(idx.start[:idx.pairs])
	idx.byPair = make([]int32, len(idx.refs))
	for _, r := range idx.refs {
		idx.byPair[next[r.pair]] = r.entry
		next[r.pair]++
	}
	idx.refs = nil
}

// withLabel returns the entries of namespace ns that carry label p, in
// input order.
func (idx *podIndex) withLabel(ns *namespacePods, p labelPair) []int32 {
	id, ok := ns.pairs[p]
	if !ok {
		return nil
	}
	return idx.byPair[idx.start[id]:idx.start[id+1]]
}

// eligibility returns the port-independent part of Eligible for entry i,
// computing it on first use.
func (idx *podIndex) eligibility(i int32) ([]netip.Addr, v1alpha1.SkippedReason) {
	e := &idx.entries[i]
	if e.state == stateUnknown {
		if idx.arena == nil {
			// Room for every entry's address, and dual-stack for a few.
			idx.arena = make([]netip.Addr, 0, len(idx.entries)+len(idx.entries)/4+4)
		}
		at := len(idx.arena)
		var skip v1alpha1.SkippedReason
		idx.arena, skip = podAddrs(e.pod, idx.arena)
		if skip != "" {
			e.state = stateSkipped + uint8(slices.Index(skipReasons[:], skip))
		} else {
			e.state = stateEligible
			e.addrAt, e.addrCount = int32(at), uint8(min(len(idx.arena)-at, 255))
		}
	}
	if e.state >= stateSkipped {
		return nil, skipReasons[e.state-stateSkipped]
	}
	return idx.arena[e.addrAt : e.addrAt+int32(e.addrCount) : e.addrAt+int32(e.addrCount)], ""
}

// bestLookup returns the position in c.lookups of the requirement with the
// fewest candidates in namespace ns, and their number; -1 when c has no
// lookups.
func (idx *podIndex) bestLookup(ns *namespacePods, c *candidate) (best, candidates int) {
	best = -1
	for i, l := range c.lookups {
		n := 0
		for _, v := range l.values {
			n += len(idx.withLabel(ns, labelPair{l.key, v}))
		}
		if best < 0 || n < candidates {
			best, candidates = i, n
		}
	}
	return best, candidates
}

// match appends to dst[:0] the entries of namespace ns that c's selector
// matches, sorted by pod name. With an Equals or In requirement it takes
// the one with the fewest candidates from the index and checks the full
// selector on those only (or not at all when that requirement is the whole
// selector); without one it checks every pod of the namespace.
func (idx *podIndex) match(ns *namespacePods, c *candidate, dst []int32) []int32 {
	dst = dst[:0]
	best, bestLen := idx.bestLookup(ns, c)
	switch {
	case best >= 0 && bestLen == 0:
		return dst
	case best >= 0:
		l := c.lookups[best]
		for _, v := range l.values {
			for _, i := range idx.withLabel(ns, labelPair{l.key, v}) {
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
