package routing

import (
	"slices"
	"time"
)

// View is a JSON-friendly description of a table, for the debug endpoint.
type View struct {
	Generation   uint64      `json:"generation"`
	BuiltAt      time.Time   `json:"builtAt"`
	Routes       []RouteView `json:"routes"`
	Certificates []string    `json:"certificateHosts"`
	Default      bool        `json:"defaultCertificate"`
}

// RouteView describes one route of a table.
type RouteView struct {
	Namespace   string   `json:"namespace"`
	Name        string   `json:"name"`
	Hosts       []string `json:"hosts"`
	PathPrefix  string   `json:"pathPrefix"`
	BackendPath string   `json:"backendPath"`
	Pods        int      `json:"pods"`
	// Backends are "pod address:port", only when asked for.
	Backends []string `json:"backends,omitempty"`
}

// Describe returns the table's view; addresses adds each route's backends.
func (t *Table) Describe(addresses bool) View {
	v := View{Generation: t.generation, BuiltAt: t.builtAt, Routes: []RouteView{}, Certificates: []string{}, Default: t.certs.Default != nil}
	for _, r := range t.routes {
		rv := RouteView{
			Namespace: r.Key.Namespace, Name: r.Key.Name, Hosts: r.Hosts,
			PathPrefix: r.PathPrefix, BackendPath: r.BackendPath, Pods: len(r.Backends),
		}
		if addresses {
			for _, b := range r.Backends {
				rv.Backends = append(rv.Backends, b.Pod+" "+b.Addr.String())
			}
		}
		v.Routes = append(v.Routes, rv)
	}
	for h := range t.certs.ByHost {
		v.Certificates = append(v.Certificates, h)
	}
	slices.Sort(v.Certificates)
	return v
}
