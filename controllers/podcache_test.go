package controllers

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/wsgate/wsgate/tablebuild"
)

func testPod(name string, labels map[string]string, ready corev1.ConditionStatus) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "ns", UID: "u", ResourceVersion: "7", Labels: labels,
			Annotations:     map[string]string{"big": "annotation"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
			OwnerReferences: []metav1.OwnerReference{{Name: "rs"}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "img", Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 9000}}},
		}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.2", PodIPs: []corev1.PodIP{{IP: "127.0.0.2"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready, Message: "long"}},
		},
	}
}

func TestCompactPodIsAnObjectForTheInformer(t *testing.T) {
	pod := testPod("p", map[string]string{"app": "echo"}, corev1.ConditionTrue)
	out, err := CompactPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := out.(*cachedPod)
	if !ok {
		t.Fatalf("CompactPod returned %T, want *cachedPod", out)
	}
	if want := tablebuild.CompactPod(pod); !rec.Equal(&want) {
		t.Errorf("record %+v, want %+v", rec.Pod, want)
	}
	// What client-go's informer reads: the key, the namespace index and
	// the resourceVersion.
	if key, err := toolscache.MetaNamespaceKeyFunc(rec); err != nil || key != "ns/p" {
		t.Errorf("key = %q, %v; want ns/p", key, err)
	}
	if ns, err := toolscache.MetaNamespaceIndexFunc(rec); err != nil || !reflect.DeepEqual(ns, []string{"ns"}) {
		t.Errorf("namespace index = %v, %v; want [ns]", ns, err)
	}
	m, err := meta.Accessor(rec)
	if err != nil || m.GetResourceVersion() != "7" || !reflect.DeepEqual(m.GetLabels(), map[string]string{"app": "echo"}) {
		t.Errorf("accessor: %v; resourceVersion %q labels %v", err, m.GetResourceVersion(), m.GetLabels())
	}

	if again, _ := CompactPod(rec); again != rec {
		t.Error("compacting a record must return it unchanged")
	}
	tomb := toolscache.DeletedFinalStateUnknown{Key: "ns/p", Obj: pod}
	if out, _ := CompactPod(tomb); !reflect.DeepEqual(out, tomb) {
		t.Error("a tombstone must pass through unchanged")
	}
}

func TestPodSetFollowsEvents(t *testing.T) {
	var s podSet
	compact := func(p *corev1.Pod) any {
		out, _ := CompactPod(p)
		return out
	}
	ready := testPod("p", map[string]string{"app": "echo"}, corev1.ConditionTrue)
	if !s.set(compact(ready)) {
		t.Error("a new pod must count as a change")
	}
	// Fields a build does not read: no change.
	moved := ready.DeepCopy()
	moved.ResourceVersion = "8"
	moved.Annotations = nil
	moved.Status.Conditions[0].Message = "other"
	if s.set(compact(moved)) {
		t.Error("a change of fields a build does not read counts as a change")
	}
	if !s.set(compact(testPod("p", map[string]string{"app": "other"}, corev1.ConditionTrue))) {
		t.Error("a relabelled pod must count as a change")
	}
	if !s.set(compact(testPod("p", map[string]string{"app": "other"}, corev1.ConditionFalse))) {
		t.Error("a pod that is no longer Ready must count as a change")
	}
	// A pod from a cache without the transform works too.
	if !s.set(testPod("q", nil, corev1.ConditionTrue)) {
		t.Error("a new pod must count as a change")
	}
	if got := s.list(); len(got) != 2 {
		t.Fatalf("%d pods, want 2", len(got))
	}

	s.remove(compact(ready))
	s.remove(toolscache.DeletedFinalStateUnknown{Key: "ns/q"})
	if got := s.list(); len(got) != 0 {
		t.Errorf("%d pods left after deleting both, want 0", len(got))
	}
}
