package tablebuild

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
)

// Eligible says whether a pod can be allowlisted for a route port, and
// returns its addresses with the resolved port, or the reason it is
// skipped. skipped is "" exactly when addrs is not empty.
//
// A pod is skipped for the port-independent reasons that CompactPod
// lists, in that order, and then with SkippedPortNotFound when the port
// does not resolve. A number port is used as is (1-65535). A name is
// looked up in the TCP ports of spec.containers, then of the sidecars
// (init containers with restartPolicy Always); the first match wins.
func Eligible(pod *Pod, port intstr.IntOrString) (addrs []netip.AddrPort, skipped v1alpha1.SkippedReason) {
	if skip := pod.skipped(); skip != "" {
		return nil, skip
	}
	num, ok := resolvePort(pod, port)
	if !ok {
		return nil, v1alpha1.SkippedPortNotFound
	}
	addrs = make([]netip.AddrPort, len(pod.addrs))
	for i, a := range pod.addrs {
		addrs[i] = netip.AddrPortFrom(a, num)
	}
	return addrs, ""
}

// resolvePort returns the port number that port means for pod. A name
// resolves to the first of the pod's named ports with that name whose
// number is valid: an invalid one ends the search in its own container
// only, and CompactPod keeps one port per name and container.
func resolvePort(pod *Pod, port intstr.IntOrString) (uint16, bool) {
	if port.Type == intstr.Int {
		return portNumber(port.IntVal)
	}
	name := port.StrVal
	if name == "" {
		return 0, false
	}
	for i := range pod.ports {
		if p := &pod.ports[i]; p.number != 0 && p.name.Value() == name {
			return p.number, true
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
	v1alpha1.SkippedUnbound,
}

// podEntry is one pod of an indexed namespace.
type podEntry struct {
	pod *Pod
	// name is pod.name, copied while the index reads the pod anyway, so
	// that sorting a route's pods does not chase the pod pointers.
	name string
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

func newPodIndex(pods []*Pod, routes []*candidate) *podIndex {
	idx := &podIndex{namespaces: make(map[string]*namespacePods)}
	indexed := false
	for _, c := range routes {
		ns := idx.namespaces[c.key.Namespace]
		if ns == nil {
			ns = &namespacePods{}
			idx.namespaces[c.key.Namespace] = ns
		}
		sels := []*podSelector{&c.podSelector}
		if c.forward != nil {
			sels = append(sels, &c.forward.podSelector)
		}
		for _, sel := range sels {
			if len(sel.lookups) == 0 {
				ns.scan = true
			}
			for _, l := range sel.lookups {
				if !slices.Contains(ns.keys, l.key) {
					ns.keys = append(ns.keys, l.key)
				}
				if ns.pairs == nil {
					ns.pairs = make(map[labelPair]int32)
				}
				indexed = true
			}
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
		ns := idx.namespaces[pod.namespace.Value()]
		if ns == nil {
			continue
		}
		i := int32(len(idx.entries))
		idx.entries = append(idx.entries, podEntry{pod: pod, name: pod.name})
		if ns.scan {
			ns.members = append(ns.members, i)
		}
		for _, k := range ns.keys {
			if v, ok := pod.labels().Lookup(k); ok {
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

// bestLookup returns the position in c.lookups of the requirement with the
// fewest candidates in namespace ns, and their number; -1 when c has no
// lookups.
func (idx *podIndex) bestLookup(ns *namespacePods, c *podSelector) (best, candidates int) {
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

// match appends to dst[:0] the entries of namespace ns that the selector c
// matches, sorted by pod name. With an Equals or In requirement it takes
// the one with the fewest candidates from the index and checks the full
// selector on those only (or not at all when that requirement is the whole
// selector); without one it checks every pod of the namespace.
func (idx *podIndex) match(ns *namespacePods, c *podSelector, dst []int32) []int32 {
	dst = dst[:0]
	best, bestLen := idx.bestLookup(ns, c)
	switch {
	case best >= 0 && bestLen == 0:
		return dst
	case best >= 0:
		l := c.lookups[best]
		for _, v := range l.values {
			for _, i := range idx.withLabel(ns, labelPair{l.key, v}) {
				if c.lookupIsSelector || c.selector.Matches(idx.entries[i].pod.labels()) {
					dst = append(dst, i)
				}
			}
		}
	default:
		for _, i := range ns.members {
			if c.selector.Matches(idx.entries[i].pod.labels()) {
				dst = append(dst, i)
			}
		}
	}
	slices.SortFunc(dst, func(a, b int32) int {
		ea, eb := &idx.entries[a], &idx.entries[b]
		if c := cmp.Compare(ea.name, eb.name); c != 0 {
			return c
		}
		// Names are unique in a namespace; the addresses only make the
		// order of duplicates independent of the input order.
		return slices.CompareFunc(ea.pod.addrs, eb.pod.addrs, netip.Addr.Compare)
	})
	return dst
}
