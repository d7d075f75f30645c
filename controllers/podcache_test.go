package controllers

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

func TestTrimPodKeepsOnlyWhatRoutingNeeds(t *testing.T) {
	now := metav1.Now()
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "echo"},
			Annotations:       map[string]string{"big": "annotation"},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
			OwnerReferences:   []metav1.OwnerReference{{Name: "rs"}},
			DeletionTimestamp: &now,
		},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			Containers: []corev1.Container{
				{Name: "app", Image: "img", Env: []corev1.EnvVar{{Name: "SECRET", Value: "x"}}, Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 9000, HostPort: 9000}}},
				{Name: "no-ports", Image: "img"},
			},
			InitContainers: []corev1.Container{
				{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "side", ContainerPort: 9001}}},
				{Name: "init", Ports: []corev1.ContainerPort{{Name: "init", ContainerPort: 9002}}},
			},
			Volumes: []corev1.Volume{{Name: "v"}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.2", PodIPs: []corev1.PodIP{{IP: "127.0.0.2"}, {IP: "::1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodScheduled, Status: "True"}, {Type: corev1.PodReady, Status: "True", Message: "long"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}},
		},
	}
	got, err := TrimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "echo"}, DeletionTimestamp: &now},
		Spec: corev1.PodSpec{
			HostNetwork:    true,
			Containers:     []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 9000}}}},
			InitContainers: []corev1.Container{{Name: "sidecar", RestartPolicy: ptr.To(always), Ports: []corev1.ContainerPort{{Name: "side", ContainerPort: 9001}}}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.2", PodIPs: []corev1.PodIP{{IP: "127.0.0.2"}, {IP: "::1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: "True"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TrimPod =\n%+v\nwant\n%+v", got, want)
	}
	again, _ := TrimPod(got)
	if !reflect.DeepEqual(again, want) {
		t.Error("trimming a trimmed pod changed it")
	}
	tomb := toolscache.DeletedFinalStateUnknown{Key: "ns/p", Obj: pod}
	if out, _ := TrimPod(tomb); !reflect.DeepEqual(out, tomb) {
		t.Error("a tombstone must pass through unchanged")
	}
}
