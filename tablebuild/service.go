package tablebuild

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Service is what a build reads of a Service that a route's forward auth
// names: its selector and TCP ports. Forward-auth requests go only to the
// pods the selector picks among the pods of the Service's namespace,
// never to its cluster IP, its EndpointSlices (which a tenant may write to
// point anywhere) or an external name.
type Service struct {
	// Selector is nil for a Service without one, and for an ExternalName
	// Service.
	Selector map[string]string
	// Ports are the Service's TCP ports.
	Ports []ServicePort
}

// ServicePort is one TCP port of a Service.
type ServicePort struct {
	Name string
	Port int32
	// TargetPort is the pod's port: a number, or the name of a container
	// port; zero means Port.
	TargetPort intstr.IntOrString
}

// CompactService returns what a build reads of svc.
func CompactService(svc *corev1.Service) Service {
	var out Service
	if svc.Spec.Type != corev1.ServiceTypeExternalName && len(svc.Spec.Selector) > 0 {
		out.Selector = make(map[string]string, len(svc.Spec.Selector))
		for k, v := range svc.Spec.Selector {
			out.Selector[k] = v
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		out.Ports = append(out.Ports, ServicePort{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort})
	}
	return out
}

// forwardTarget is the forward-auth Service of an accepted route, ready to
// be matched against the pods of the route's namespace.
type forwardTarget struct {
	podSelector
	target intstr.IntOrString
}

// forwardOutcome is what a route's forward-auth Service resolves to now.
type forwardOutcome struct {
	addrs   []netip.AddrPort
	problem string
	message string
}

// resolveForwardService looks up the forward-auth Service of accepted
// route c, always in c's namespace, and sets c.forward; or returns why the
// Service cannot be used.
func resolveForwardService(c *candidate, services map[types.NamespacedName]Service) string {
	f := c.auth.forward
	name := c.key.Namespace + "/" + f.service
	svc, found := services[types.NamespacedName{Namespace: c.key.Namespace, Name: f.service}]
	if !found {
		return fmt.Sprintf("forward-auth Service %s not found", name)
	}
	if len(svc.Selector) == 0 {
		return fmt.Sprintf("forward-auth Service %s has no selector; wsgate sends forward-auth requests only to the Ready pods a selector picks, never to a Service's addresses or EndpointSlices", name)
	}
	var port *ServicePort
	for i := range svc.Ports {
		p := &svc.Ports[i]
		if (f.port.Type == intstr.Int && p.Port == f.port.IntVal) || (f.port.Type == intstr.String && p.Name == f.port.StrVal) {
			port = p
			break
		}
	}
	if port == nil {
		return fmt.Sprintf("forward-auth Service %s has no TCP port %s", name, f.port.String())
	}
	target := port.TargetPort
	if (target.Type == intstr.Int && target.IntVal == 0) || (target.Type == intstr.String && target.StrVal == "") {
		target = intstr.FromInt32(port.Port)
	}
	sel := labels.SelectorFromSet(svc.Selector)
	c.forward = &forwardTarget{podSelector: newPodSelector(sel), target: target}
	return ""
}

// forwardAddrs returns the addresses of the eligible pods that c's
// forward-auth Service selects in c's namespace, sorted, with the target
// port resolved on each pod.
func (idx *podIndex) forwardAddrs(c *candidate, s *endpointScratch) forwardOutcome {
	name := c.key.Namespace + "/" + c.auth.forward.service
	var addrs []netip.AddrPort
	pods := 0
	if ns := idx.namespaces[c.key.Namespace]; ns != nil {
		s.matched = idx.match(ns, &c.forward.podSelector, s.matched)
		for _, i := range s.matched {
			pod := idx.entries[i].pod
			if pod.skipped() != "" {
				continue
			}
			port, ok := resolvePort(pod, c.forward.target)
			if !ok {
				continue
			}
			pods++
			for _, a := range pod.addrs {
				addrs = append(addrs, netip.AddrPortFrom(a, port))
			}
		}
	}
	if len(addrs) == 0 {
		return forwardOutcome{problem: fmt.Sprintf("forward-auth Service %s has no Ready pod serving its target port %s", name, c.forward.target.String())}
	}
	slices.SortFunc(addrs, netip.AddrPort.Compare)
	addrs = slices.Clip(slices.Compact(addrs))
	return forwardOutcome{addrs: addrs, message: fmt.Sprintf("forward auth goes to %d pod(s) of Service %s", pods, name)}
}
