package controllers

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// TrimPod is a cache transform that keeps only what the routing table
// needs of a Pod: identity, labels, deletion, hostNetwork, container
// ports, phase, IPs and the Ready condition. Everything else (managed fields, annotations,
// volumes, container specs, statuses) is dropped before the object enters
// the cache, so memory stays small at tens of thousands of pods. Trimming
// a trimmed Pod changes nothing, as client-go may transform an object twice.
func TrimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		// Tombstones (DeletedFinalStateUnknown) and anything else pass
		// through unchanged.
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Generation:        pod.Generation,
			CreationTimestamp: pod.CreationTimestamp,
			DeletionTimestamp: pod.DeletionTimestamp,
			Labels:            pod.Labels,
		},
		Spec: corev1.PodSpec{
			// A host-network pod's IP is its node's: never allowlisted.
			HostNetwork: pod.Spec.HostNetwork,
			Containers:  trimContainers(pod.Spec.Containers, false),
			// Sidecars (init containers that keep running) can serve too.
			InitContainers: trimContainers(pod.Spec.InitContainers, true),
		},
		Status: corev1.PodStatus{
			Phase:  pod.Status.Phase,
			PodIP:  pod.Status.PodIP,
			PodIPs: pod.Status.PodIPs,
		},
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
			break
		}
	}
	return out, nil
}

func trimContainers(cs []corev1.Container, sidecarsOnly bool) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
			continue
		}
		if len(c.Ports) == 0 {
			continue
		}
		tc := corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy, Ports: make([]corev1.ContainerPort, len(c.Ports))}
		for i, p := range c.Ports {
			tc.Ports[i] = corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol}
		}
		out = append(out, tc)
	}
	return out
}

// podRoutingChanged reports whether an update to a Pod can change the
// routing table; resourceVersion-only changes and fields TrimPod drops
// cannot.
func podRoutingChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Pod)
	n, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	if (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
		o.Status.Phase != n.Status.Phase || o.Status.PodIP != n.Status.PodIP ||
		podReady(o) != podReady(n) || len(o.Labels) != len(n.Labels) ||
		len(o.Status.PodIPs) != len(n.Status.PodIPs) {
		return true
	}
	for k, v := range o.Labels {
		if nv, ok := n.Labels[k]; !ok || nv != v {
			return true
		}
	}
	for i := range o.Status.PodIPs {
		if o.Status.PodIPs[i] != n.Status.PodIPs[i] {
			return true
		}
	}
	// Container ports are immutable on a Pod.
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

var _ toolscache.TransformFunc = TrimPod
