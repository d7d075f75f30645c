package tablebuild

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
)

func TestEligible(t *testing.T) {
	ws := intstr.FromString("ws")
	n8080 := intstr.FromInt32(8080)
	tests := []struct {
		name     string
		pod      *corev1.Pod
		port     intstr.IntOrString
		want     []string // netip.AddrPort strings
		wantSkip v1alpha1.SkippedReason
	}{
		{
			name: "a ready pod with one IPv4 address is eligible on a number port",
			pod:  newPod("a", "p", "10.0.0.1", nil),
			port: intstr.FromInt32(9000),
			want: []string{"10.0.0.1:9000"},
		},
		{
			name:     "a terminating pod is skipped as Terminating even when it is ready and has an IP",
			pod:      newPod("a", "p", "10.0.0.1", nil, terminating),
			port:     n8080,
			wantSkip: v1alpha1.SkippedTerminating,
		},
		{
			name:     "a terminating pod without an IP is Terminating, not NoIP",
			pod:      newPod("a", "p", "", nil, terminating, notReady),
			port:     n8080,
			wantSkip: v1alpha1.SkippedTerminating,
		},
		{
			name:     "a host-network pod is skipped: its IP is the node's",
			pod:      newPod("a", "p", "10.0.0.1", nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			port:     n8080,
			wantSkip: v1alpha1.SkippedHostNetwork,
		},
		{
			name:     "a pod without an IP is skipped as NoIP",
			pod:      newPod("a", "p", "", nil),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNoIP,
		},
		{
			name:     "a pod without an IP that is not ready is NoIP, not NotReady",
			pod:      newPod("a", "p", "", nil, notReady),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNoIP,
		},
		{
			name:     "a pod whose only IP does not parse is skipped as NoIP",
			pod:      newPod("a", "p", "", nil, podIPs("10.0.0.256")),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNoIP,
		},
		{
			name:     "a pod whose Ready condition is False is skipped as NotReady",
			pod:      newPod("a", "p", "10.0.0.1", nil, notReady),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNotReady,
		},
		{
			name:     "a pod without a Ready condition is NotReady",
			pod:      newPod("a", "p", "10.0.0.1", nil, noReadyCondition),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNotReady,
		},
		{
			name:     "a Succeeded pod is NotReady even with a True Ready condition",
			pod:      newPod("a", "p", "10.0.0.1", nil, phase(corev1.PodSucceeded)),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNotReady,
		},
		{
			name:     "a Failed pod is NotReady even with a True Ready condition",
			pod:      newPod("a", "p", "10.0.0.1", nil, phase(corev1.PodFailed)),
			port:     n8080,
			wantSkip: v1alpha1.SkippedNotReady,
		},
		{
			name:     "a not ready pod without the named port is NotReady, not PortNotFound",
			pod:      newPod("a", "p", "10.0.0.1", nil, notReady, containerPorts()),
			port:     ws,
			wantSkip: v1alpha1.SkippedNotReady,
		},
		{
			name:     "a named port that no container declares is PortNotFound",
			pod:      newPod("a", "p", "10.0.0.1", nil, containerPorts(tcpPort("http", 80))),
			port:     ws,
			wantSkip: v1alpha1.SkippedPortNotFound,
		},
		{
			name: "a named port resolves from the container that declares it",
			pod:  newPod("a", "p", "10.0.0.1", nil),
			port: ws,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "a named port resolves from the first container that declares it",
			pod:  newPod("a", "p", "10.0.0.1", nil, containerPorts(tcpPort("http", 80)), addContainer(tcpPort("ws", 7000)), addContainer(tcpPort("ws", 7001))),
			port: ws,
			want: []string{"10.0.0.1:7000"},
		},
		{
			name: "a named port on a sidecar (init container with restartPolicy Always) resolves",
			pod:  newPod("a", "p", "10.0.0.1", nil, containerPorts(), initContainer(true, tcpPort("ws", 9443))),
			port: ws,
			want: []string{"10.0.0.1:9443"},
		},
		{
			name: "a regular container's named port wins over a sidecar's",
			pod:  newPod("a", "p", "10.0.0.1", nil, initContainer(true, tcpPort("ws", 9443))),
			port: ws,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name:     "a named port on a plain init container does not resolve",
			pod:      newPod("a", "p", "10.0.0.1", nil, containerPorts(), initContainer(false, tcpPort("ws", 9443))),
			port:     ws,
			wantSkip: v1alpha1.SkippedPortNotFound,
		},
		{
			name:     "a named UDP port does not resolve",
			pod:      newPod("a", "p", "10.0.0.1", nil, containerPorts(corev1.ContainerPort{Name: "ws", ContainerPort: 8080, Protocol: corev1.ProtocolUDP})),
			port:     ws,
			wantSkip: v1alpha1.SkippedPortNotFound,
		},
		{
			name: "a named port without a protocol counts as TCP",
			pod:  newPod("a", "p", "10.0.0.1", nil, containerPorts(corev1.ContainerPort{Name: "ws", ContainerPort: 8081})),
			port: ws,
			want: []string{"10.0.0.1:8081"},
		},
		{
			name: "a number port is used as is even when no container declares it",
			pod:  newPod("a", "p", "10.0.0.1", nil, containerPorts()),
			port: intstr.FromInt32(65535),
			want: []string{"10.0.0.1:65535"},
		},
		{
			name:     "a number port of 0 is PortNotFound",
			pod:      newPod("a", "p", "10.0.0.1", nil),
			port:     intstr.FromInt32(0),
			wantSkip: v1alpha1.SkippedPortNotFound,
		},
		{
			name:     "a number port above 65535 is PortNotFound",
			pod:      newPod("a", "p", "10.0.0.1", nil),
			port:     intstr.FromInt32(65536),
			wantSkip: v1alpha1.SkippedPortNotFound,
		},
		{
			name: "an IPv6 address is returned in canonical form",
			pod:  newPod("a", "p", "", nil, podIPs("FD00:0:0:0::05")),
			port: n8080,
			want: []string{"[fd00::5]:8080"},
		},
		{
			name: "a dual-stack pod returns both addresses in podIPs order",
			pod:  newPod("a", "p", "", nil, podIPs("fd00::5", "10.0.0.1")),
			port: n8080,
			want: []string{"[fd00::5]:8080", "10.0.0.1:8080"},
		},
		{
			name: "an IPv4-mapped IPv6 address is unmapped",
			pod:  newPod("a", "p", "", nil, podIPs("::ffff:10.0.0.1")),
			port: n8080,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "a mapped address that repeats the IPv4 address is listed once",
			pod:  newPod("a", "p", "", nil, podIPs("10.0.0.1", "::ffff:10.0.0.1")),
			port: n8080,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "an entry of podIPs that does not parse is skipped and the others kept",
			pod:  newPod("a", "p", "", nil, podIPs("not-an-ip", "10.0.0.1")),
			port: n8080,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "an address with a zone is skipped",
			pod:  newPod("a", "p", "", nil, podIPs("fe80::1%eth0", "10.0.0.1")),
			port: n8080,
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "podIPs is used rather than podIP",
			pod:  newPod("a", "p", "", nil, podIPs("10.0.0.2"), func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.1" }),
			port: n8080,
			want: []string{"10.0.0.2:8080"},
		},
		{
			name: "podIP is used when podIPs is empty",
			pod:  newPod("a", "p", "", nil, onlyPodIP("10.0.0.1")),
			port: n8080,
			want: []string{"10.0.0.1:8080"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.pod.DeepCopy()
			addrs, skip := Eligible(compact(tc.pod)[0], tc.port)
			if skip != tc.wantSkip {
				t.Errorf("skipped = %q, want %q", skip, tc.wantSkip)
			}
			var got []string
			for _, a := range addrs {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("addrs = %v, want %v", got, tc.want)
			}
			if (skip == "") == (len(addrs) == 0) {
				t.Errorf("skipped %q with %d addresses: exactly one of them must be set", skip, len(addrs))
			}
			for _, a := range addrs {
				if a.Addr() != netip.MustParseAddr(a.Addr().String()) || a.Addr().Is4In6() || a.Addr().Zone() != "" {
					t.Errorf("address %v is not canonical", a)
				}
			}
			if !reflect.DeepEqual(before, tc.pod) {
				t.Errorf("CompactPod modified the pod")
			}
		})
	}
}

// FuzzEligible feeds arbitrary address strings and ports to Eligible: it
// must not panic, and what it returns must be canonical and unique.
func FuzzEligible(f *testing.F) {
	f.Add("10.0.0.1", "fd00::1", "", int32(8080), "")
	f.Add("::ffff:10.0.0.1", "10.0.0.1", "10.0.0.2", int32(0), "ws")
	f.Add("fe80::1%eth0", "010.0.0.1", "1.2.3.4.5", int32(70000), "metrics")
	f.Fuzz(func(t *testing.T, ip1, ip2, podIP string, num int32, name string) {
		pod := newPod("a", "p", "", nil, podIPs(ip1, ip2), func(p *corev1.Pod) { p.Status.PodIP = podIP })
		port := intstr.FromInt32(num)
		if name != "" {
			port = intstr.FromString(name)
		}
		addrs, skip := Eligible(compact(pod)[0], port)
		if (skip == "") == (len(addrs) == 0) {
			t.Fatalf("skipped %q with %d addresses", skip, len(addrs))
		}
		seen := map[netip.Addr]bool{}
		for _, a := range addrs {
			if !a.Addr().IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "" || a.Port() == 0 {
				t.Fatalf("address %v is not canonical or has no port", a)
			}
			if seen[a.Addr()] {
				t.Fatalf("address %v is listed twice", a)
			}
			seen[a.Addr()] = true
		}
	})
}
