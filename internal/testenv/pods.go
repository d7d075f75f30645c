package testenv

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pod describes a test pod. The API server runs no kubelet, so the pod's
// IPs and readiness are written into its status by the test.
type Pod struct {
	Name   string
	Labels map[string]string
	// IPs become status.podIPs (the first also status.podIP); use
	// loopback addresses only.
	IPs []string
	// Ready sets the Ready condition to True.
	Ready bool
	// Ports are named container ports.
	Ports map[string]int32
}

// CreatePod creates a pod and writes its status.
func (e *Env) CreatePod(t testing.TB, namespace string, p Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	c := corev1.Container{Name: "app", Image: "registry.invalid/echo:1"}
	for name, port := range p.Ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: namespace, Labels: p.Labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
	}
	if err := e.Client.Create(ctx, pod); err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, p.Name, err)
	}
	e.SetPodStatus(t, pod, p.IPs, p.Ready)
	return pod
}

// SetPodStatus writes a pod's IPs and Ready condition.
func (e *Env) SetPodStatus(t testing.TB, pod *corev1.Pod, ips []string, ready bool) {
	t.Helper()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP, pod.Status.PodIPs = "", nil
	for i, ip := range ips {
		if i == 0 {
			pod.Status.PodIP = ip
		}
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
	if err := e.Client.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("update status of pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}
