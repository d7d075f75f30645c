package tablebuild

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// Pod is what a build reads of a pod: its namespace, name, labels and
// binding annotations (those under v1alpha1.BindingAnnotationPrefix), and
// either the reason it cannot be allowlisted or its addresses and named
// TCP ports. CompactPod makes one from a corev1.Pod; it is immutable.
//
// A Pod is a few hundred bytes where a corev1.Pod trimmed to the same
// fields is a few KiB (the corev1.Pod struct alone is about 1.2 KiB): the
// checks that do not depend on a route are made once, when the pod is
// compacted, so a skipped pod keeps no addresses or ports; strings that
// nearly every pod shares (namespaces, label keys, port names) are
// interned; and the label values share one allocation. Values are not
// interned, as many are unique to their pod (a StatefulSet's pod name, a
// room or user id), and an interned string costs about 200 bytes more
// than a plain one. Of the annotations only the binding ones are kept
// (most pods have none), in the labels' slice and allocation, after the
// labels: a pod with none pays nothing for them.
type Pod struct {
	namespace unique.Handle[string]
	name      string
	// meta holds the labels (meta[:nlabels]), then the binding
	// annotations (meta[nlabels:]), each part sorted by key.
	meta podLabels
	// addrs and ports are set only when the pod is not skipped.
	addrs []netip.Addr
	ports []namedPort
	// skip is 0 when the pod is not skipped, and i+1 when it is skipped
	// for skipReasons[i].
	skip    uint8
	nlabels uint32
}

// podLabel is one label of a Pod.
type podLabel struct {
	key   unique.Handle[string]
	value string
}

// podLabels are a Pod's labels sorted by key. They implement labels.Labels
// for selectors; pods carry few labels, so a scan beats a map.
type podLabels []podLabel

// Has reports whether the label key is set.
func (l podLabels) Has(key string) bool {
	_, ok := l.Lookup(key)
	return ok
}

// Get returns the value of the label key, or "".
func (l podLabels) Get(key string) string {
	v, _ := l.Lookup(key)
	return v
}

// Lookup returns the value of the label key and whether it is set.
func (l podLabels) Lookup(key string) (string, bool) {
	for i := range l {
		if l[i].key.Value() == key {
			return l[i].value, true
		}
	}
	return "", false
}

// namedPort is a named TCP container port. number is 0 when the declared
// number is not in 1-65535.
type namedPort struct {
	name   unique.Handle[string]
	number uint16
}

// CompactPod returns what a build needs of pod. It does not keep pod or
// any of its strings alive.
//
// A pod is skipped, in this order, when:
//   - it is being deleted (DeletionTimestamp set): SkippedTerminating;
//   - it uses the node's network (hostNetwork): SkippedHostNetwork, since
//     its IP is the node's;
//   - it has no usable IP: SkippedNoIP;
//   - it is not Ready (Ready condition not True, or phase Succeeded or
//     Failed): SkippedNotReady.
//
// Its addresses are every entry of status.podIPs, or status.podIP when
// podIPs yields none, in that order and without duplicates, in canonical
// form: IPv4-mapped IPv6 addresses are unmapped; addresses that do not
// parse or carry a zone are skipped.
//
// Its named ports are the TCP ports of spec.containers, then of the
// sidecars (init containers with restartPolicy Always), in order; see
// Eligible for how a route's port name resolves.
//
// Of its annotations it keeps only those whose key starts with
// v1alpha1.BindingAnnotationPrefix: what auth.podBinding.annotation may
// name.
func CompactPod(pod *corev1.Pod) Pod {
	out := Pod{namespace: unique.Make(pod.Namespace), name: strings.Clone(pod.Name)}
	out.meta, out.nlabels = compactMeta(pod.Labels, pod.Annotations)
	addrs, skip := podAddrs(pod)
	if skip != "" {
		out.skip = uint8(slices.Index(skipReasons[:], skip) + 1)
		return out
	}
	out.addrs = addrs
	out.ports = podPorts(pod)
	return out
}

// Namespace returns the pod's namespace.
func (p *Pod) Namespace() string { return p.namespace.Value() }

// Name returns the pod's name.
func (p *Pod) Name() string { return p.name }

// Labels returns a new map of the pod's labels.
func (p *Pod) Labels() map[string]string {
	return p.labels().toMap()
}

// BindingAnnotations returns a new map of the pod's annotations under
// v1alpha1.BindingAnnotationPrefix, the only ones a Pod keeps.
func (p *Pod) BindingAnnotations() map[string]string {
	return p.meta[p.nlabels:].toMap()
}

// labels returns the pod's labels.
func (p *Pod) labels() podLabels { return p.meta[:p.nlabels:p.nlabels] }

// annotation returns the value of a binding annotation and whether it is
// set.
func (p *Pod) annotation(key string) (string, bool) {
	return p.meta[p.nlabels:].Lookup(key)
}

func (l podLabels) toMap() map[string]string {
	if len(l) == 0 {
		return nil
	}
	m := make(map[string]string, len(l))
	for _, e := range l {
		m[e.key.Value()] = e.value
	}
	return m
}

// Equal reports whether p and q are the same to a build.
func (p *Pod) Equal(q *Pod) bool {
	return p.namespace == q.namespace && p.name == q.name && p.skip == q.skip && p.nlabels == q.nlabels &&
		slices.Equal(p.meta, q.meta) && slices.Equal(p.addrs, q.addrs) && slices.Equal(p.ports, q.ports)
}

// skipped returns the reason the pod is skipped, or "".
func (p *Pod) skipped() v1alpha1.SkippedReason {
	if p.skip == 0 {
		return ""
	}
	return skipReasons[p.skip-1]
}

// compactMeta returns the labels sorted by key, then the binding
// annotations sorted by key, with interned keys and values cut from one
// new string, and the number of labels.
func compactMeta(labels, annotations map[string]string) (podLabels, uint32) {
	nann := 0
	for k := range annotations {
		if strings.HasPrefix(k, v1alpha1.BindingAnnotationPrefix) {
			nann++
		}
	}
	if len(labels)+nann == 0 {
		return nil, 0
	}
	out := make(podLabels, 0, len(labels)+nann)
	size := 0
	for k, v := range labels {
		out = append(out, podLabel{key: unique.Make(k)})
		size += len(v)
	}
	for k, v := range annotations {
		if strings.HasPrefix(k, v1alpha1.BindingAnnotationPrefix) {
			out = append(out, podLabel{key: unique.Make(k)})
			size += len(v)
		}
	}
	byKey := func(a, b podLabel) int { return cmp.Compare(a.key.Value(), b.key.Value()) }
	nlabels := len(labels)
	slices.SortFunc(out[:nlabels], byKey)
	slices.SortFunc(out[nlabels:], byKey)
	value := func(i int) string {
		if i < nlabels {
			return labels[out[i].key.Value()]
		}
		return annotations[out[i].key.Value()]
	}
	var b strings.Builder
	b.Grow(size)
	for i := range out {
		b.WriteString(value(i))
	}
	values := b.String()
	for i := range out {
		n := len(value(i))
		out[i].value, values = values[:n], values[n:]
	}
	return out, uint32(nlabels)
}

// podAddrs returns the pod's addresses, or the reason it is skipped.
func podAddrs(pod *corev1.Pod) ([]netip.Addr, v1alpha1.SkippedReason) {
	if pod.DeletionTimestamp != nil {
		return nil, v1alpha1.SkippedTerminating
	}
	if pod.Spec.HostNetwork {
		return nil, v1alpha1.SkippedHostNetwork
	}
	var addrs []netip.Addr
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
	return slices.Clip(addrs), ""
}

// appendAddr parses s and appends its canonical form to addrs, unless it
// does not parse, has a zone, or is already in addrs.
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

// podPorts returns the named TCP ports of the pod's containers, then of
// its sidecars. Of the ports of one container that share a name only the
// first is kept, as only that one can match.
func podPorts(pod *corev1.Pod) []namedPort {
	n := 0
	for _, cs := range [2][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			n += len(cs[i].Ports)
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]namedPort, 0, n)
	for i := range pod.Spec.Containers {
		out = appendPorts(out, pod.Spec.Containers[i].Ports)
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue // a plain init container is gone before the pod is Ready
		}
		out = appendPorts(out, c.Ports)
	}
	if len(out) == 0 {
		return nil
	}
	return slices.Clip(out)
}

// appendPorts appends the named TCP ports of one container.
func appendPorts(out []namedPort, ports []corev1.ContainerPort) []namedPort {
	first := len(out)
	for i := range ports {
		p := &ports[i]
		if p.Name == "" || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		name := unique.Make(p.Name)
		if slices.ContainsFunc(out[first:], func(q namedPort) bool { return q.name == name }) {
			continue
		}
		number, _ := portNumber(p.ContainerPort)
		out = append(out, namedPort{name: name, number: number})
	}
	return out
}
