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
// addresses to dst.
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
	pod   *corev1.Pod
	done  bool
	skip  v1alpha1.SkippedReason
	addrs []netip.Addr
	buf   [2]netip.Addr // backs addrs for the usual one or two IPs
}

func (e *podEntry) eligibility() ([]netip.Addr, v1alpha1.SkippedReason) {
	if !e.done {
		e.addrs, e.skip = podAddrs(e.pod, e.buf[:0])
		e.done = true
	}
	return e.addrs, e.skip
}

// labelPair is one "key=value" label.
type labelPair struct {
	key, value string
}

// namespacePods holds the pods of one namespace that has accepted routes,
// indexed by the label keys those routes look up.
//
// The index is flat: pairs numbers each labelPair seen, and the pods that
// carry pair n are podsByPair[start[n]:start[n+1]], indexes into pods in
// input order.
type namespacePods struct {
	pods    []podEntry
	keys    map[string]struct{}
	keyList []string

	pairs      map[labelPair]int32
	start      []int32
	podsByPair []int32

	// refs collects (pair, pod) while the pods are added; index turns it
	// into start and podsByPair.
	refs []pairRef
}

type pairRef struct{ pair, pod int32 }

// podIndex holds, by namespace, the pods that accepted routes may select.
// It is built once per Build and only for namespaces that have accepted
// routes, so pods elsewhere cost one map lookup each, and only the label
// keys of the routes' Equals and In requirements are indexed.
type podIndex map[string]*namespacePods

func newPodIndex(pods []*corev1.Pod, routes []*candidate) podIndex {
	idx := make(podIndex)
	for _, c := range routes {
		ns := idx[c.key.Namespace]
		if ns == nil {
			ns = &namespacePods{keys: make(map[string]struct{})}
			idx[c.key.Namespace] = ns
		}
		for _, l := range c.lookups {
			if _, ok := ns.keys[l.key]; !ok {
				ns.keys[l.key] = struct{}{}
				ns.keyList = append(ns.keyList, l.key)
			}
		}
	}

	// Size every namespace's slices once, then fill them.
	counts := make(map[*namespacePods]int, len(idx))
	for _, pod := range pods {
		if pod == nil {
			continue
		}
		if ns := idx[pod.Namespace]; ns != nil {
			counts[ns]++
		}
	}
	for ns, n := range counts {
		ns.pods = make([]podEntry, 0, n)
		if len(ns.keyList) > 0 {
			ns.pairs = make(map[labelPair]int32)
			ns.refs = make([]pairRef, 0, n*len(ns.keyList))
		}
	}

	for _, pod := range pods {
		if pod == nil {
			continue
		}
		ns := idx[pod.Namespace]
		if ns == nil {
			continue
		}
		i := int32(len(ns.pods))
		ns.pods = append(ns.pods, podEntry{pod: pod})
		switch {
		case len(ns.keyList) == 0:
		case len(ns.keyList) <= len(pod.Labels):
			for _, k := range ns.keyList {
				if v, ok := pod.Labels[k]; ok {
					ns.add(labelPair{k, v}, i)
				}
			}
		default:
			for k, v := range pod.Labels {
				if _, ok := ns.keys[k]; ok {
					ns.add(labelPair{k, v}, i)
				}
			}
		}
	}
	for _, ns := range idx {
		ns.index()
	}
	return idx
}

func (ns *namespacePods) add(p labelPair, pod int32) {
	id, ok := ns.pairs[p]
	if !ok {
		id = int32(len(ns.pairs))
		ns.pairs[p] = id
	}
	ns.refs = append(ns.refs, pairRef{pair: id, pod: pod})
}

// index sorts refs by pair (a counting sort, which keeps the pods of each
// pair in input order) into start and podsByPair.
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
	ns.podsByPair = make([]int32, len(ns.refs))
	for _, r := range ns.refs {
		ns.podsByPair[next[r.pair]] = r.pod
		next[r.pair]++
	}
	ns.refs = nil
}

// withLabel returns the pods that carry label p, in input order.
func (ns *namespacePods) withLabel(p labelPair) []int32 {
	id, ok := ns.pairs[p]
	if !ok {
		return nil
	}
	return ns.podsByPair[ns.start[id]:ns.start[id+1]]
}

// match appends to dst[:0] the pods that c's selector matches, sorted by
// name. It checks the full selector only on the candidates of c's most
// selective indexed requirement, or on every pod of the namespace when c
// has no Equals or In requirement.
func (ns *namespacePods) match(c *candidate, dst []int32) []int32 {
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
				if c.selector.Matches(labels.Set(ns.pods[i].pod.Labels)) {
					dst = append(dst, i)
				}
			}
		}
	default:
		for i := range ns.pods {
			if c.selector.Matches(labels.Set(ns.pods[i].pod.Labels)) {
				dst = append(dst, int32(i))
			}
		}
	}
	slices.SortFunc(dst, func(a, b int32) int {
		pa, pb := ns.pods[a].pod, ns.pods[b].pod
		if c := cmp.Compare(pa.Name, pb.Name); c != 0 {
			return c
		}
		return cmp.Compare(pa.UID, pb.UID)
	})
	return dst
}

// endpointScratch is reused across the routes of one build.
type endpointScratch struct {
	matched []int32
}

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
func (idx podIndex) endpoints(c *candidate, s *endpointScratch) ([]routing.Backend, v1alpha1.RouteEndpoints) {
	var ep v1alpha1.RouteEndpoints
	ns := idx[c.key.Namespace]
	if ns == nil {
		return nil, ep
	}
	s.matched = ns.match(c, s.matched)
	if len(s.matched) == 0 {
		return nil, ep
	}

	var skipped [len(skipReasons)]int32
	backends := make([]routing.Backend, 0, len(s.matched))
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
		e := &ns.pods[i]
		addrs, skip := e.eligibility()
		var port uint16
		if skip == "" {
			var ok bool
			if port, ok = resolvePort(e.pod, c.port); !ok {
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
				backends = append(backends, routing.Backend{Pod: e.pod.Name, Addr: netip.AddrPortFrom(a, port)})
			}
		}
		if len(backends) == first {
			continue
		}
		ep.Count++
		if len(ep.Pods) < v1alpha1.MaxStatusPods {
			ep.Pods = append(ep.Pods, endpointPod(e.pod.Name, backends[first:], port))
		}
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

func endpointPod(name string, bs []routing.Backend, port uint16) v1alpha1.EndpointPod {
	n := min(len(bs), maxStatusAddresses)
	p := v1alpha1.EndpointPod{Name: name, Port: int32(port), Addresses: make([]string, n)}
	for i := range n {
		p.Addresses[i] = bs[i].Addr.Addr().String()
	}
	return p
}
