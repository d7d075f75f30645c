package tablebuild

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestCompactPodEqual(t *testing.T) {
	lbls := map[string]string{"app": "chat", "tier": "web"}
	base := newPod("a", "p", "10.0.0.1", lbls)
	same := []struct {
		name   string
		change podOpt
	}{
		{"annotations and resourceVersion", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"a": "b"}
			p.ResourceVersion = "9"
		}},
		{"other conditions and the Ready message", func(p *corev1.Pod) {
			p.Status.Conditions = append([]corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}, p.Status.Conditions...)
			p.Status.Conditions[1].Message = "ok"
		}},
		{"a container without ports and an unnamed port", addContainer(corev1.ContainerPort{ContainerPort: 80})},
		{"podIP when podIPs is set", func(p *corev1.Pod) { p.Status.PodIP = "10.9.9.9" }},
		{"the labels' map order", func(p *corev1.Pod) { p.Labels = map[string]string{"tier": "web", "app": "chat"} }},
	}
	for _, tc := range same {
		p := newPod("a", "p", "10.0.0.1", lbls, tc.change)
		if a, b := CompactPod(base), CompactPod(p); !a.Equal(&b) {
			t.Errorf("%s: records differ, want equal", tc.name)
		}
	}
	different := []struct {
		name   string
		change podOpt
	}{
		{"a label value", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "chat", "tier": "db"} }},
		{"a label removed", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "chat"} }},
		{"readiness", notReady},
		{"the address", podIPs("10.0.0.2")},
		{"a second address", podIPs("10.0.0.1", "fd00::1")},
		{"deletion", terminating},
		{"a port's number", containerPorts(tcpPort("ws", 8081))},
		{"the name", func(p *corev1.Pod) { p.Name = "q" }},
		{"the namespace", func(p *corev1.Pod) { p.Namespace = "b" }},
	}
	for _, tc := range different {
		p := newPod("a", "p", "10.0.0.1", lbls, tc.change)
		if a, b := CompactPod(base), CompactPod(p); a.Equal(&b) {
			t.Errorf("%s: records are equal, want different", tc.name)
		}
	}
}

func TestCompactPodSharesStrings(t *testing.T) {
	// Strings built at run time, as a decoder builds them.
	pod := func(name string) *corev1.Pod {
		return newPod(strings.Repeat("n", 3), name, "10.0.0.1", map[string]string{
			strings.Repeat("k", 3): strings.Repeat("v", 3),
			strings.Repeat("j", 3): strings.Repeat("w", 3),
			"empty":                "",
		})
	}
	p1, p2 := pod("p1"), pod("p2")
	a, b := CompactPod(p1), CompactPod(p2)
	if unsafe.StringData(a.Namespace()) != unsafe.StringData(b.Namespace()) {
		t.Error("two pods' namespaces are not shared")
	}
	for i := range a.labels() {
		if a.labels()[i].key != b.labels()[i].key {
			t.Errorf("two pods' label keys %q are not shared", a.labels()[i].key.Value())
		}
	}
	if want := map[string]string{"kkk": "vvv", "jjj": "www", "empty": ""}; !reflect.DeepEqual(a.Labels(), want) {
		t.Errorf("labels %v, want %v", a.Labels(), want)
	}
	if v, ok := a.labels().Lookup("jjj"); !ok || v != "www" {
		t.Errorf("Lookup(jjj) = %q, %v; want www", v, ok)
	}
	if _, ok := a.labels().Lookup("vvv"); ok {
		t.Error("a label value is found as a key")
	}
	for _, s := range []string{a.Name(), a.Namespace(), a.labels().Get("kkk"), a.labels()[0].key.Value()} {
		for _, orig := range []string{p1.Name, p1.Namespace, p1.Labels["kkk"]} {
			if unsafe.StringData(s) == unsafe.StringData(orig) {
				t.Errorf("the record keeps the string %q of the pod it was made from", s)
			}
		}
	}
}

func TestCompactPodOfASkippedPodKeepsNoAddressesOrPorts(t *testing.T) {
	p := CompactPod(newPod("a", "p", "10.0.0.1", map[string]string{"app": "chat"}, notReady))
	if p.addrs != nil || p.ports != nil || p.skipped() == "" {
		t.Errorf("record %+v, want skipped without addresses and ports", p)
	}
}

func TestNamedPortWithAnInvalidNumber(t *testing.T) {
	// Only the first port of a name in a container can match; when its
	// number is invalid the search goes on in the next container.
	pod := newPod("a", "p", "10.0.0.1", nil,
		containerPorts(tcpPort("ws", 0), tcpPort("ws", 8081)),
		addContainer(tcpPort("ws", 8082)))
	addrs, skip := Eligible(compact(pod)[0], intstr.FromString("ws"))
	if skip != "" || len(addrs) != 1 || addrs[0].Port() != 8082 {
		t.Errorf("Eligible = %v %q, want port 8082 from the second container", addrs, skip)
	}
}

// BenchmarkCompactPod reports what making a record of a typical pod
// allocates, garbage included.
func BenchmarkCompactPod(b *testing.B) {
	pod := newPod("team-1", "route-1-abcde", "10.0.0.1", map[string]string{
		"app": "route-1", "pod-template-hash": "7d4f9c", "tier": "web",
	}, initContainer(true, tcpPort("metrics", 9090)))
	b.ReportAllocs()
	for b.Loop() {
		p := CompactPod(pod)
		_ = p
	}
}
