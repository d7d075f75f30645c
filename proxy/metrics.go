package proxy

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/proxy/internal/wstunnel"
	"github.com/wsgate/wsgate/routing"
)

// Metrics are the data plane's Prometheus metrics. Labels are bounded:
// routes (namespace, route), status codes, directions and close reasons;
// never a pod or client address.
type Metrics struct {
	handshakes *prometheus.CounterVec
	active     *prometheus.GaugeVec
	bytes      *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	closes     *prometheus.CounterVec
	auths      *prometheus.CounterVec
	limits     *prometheus.CounterVec
	blocks     prometheus.Counter
	clients    prometheus.Gauge
	proxyHdrs  *prometheus.CounterVec
	h2Shakes   *prometheus.CounterVec
	h2Active   prometheus.Gauge
	h2Conns    prometheus.Gauge

	// routes holds each route's series for opened tunnels
	// (*routing.Route -> *routeSeries), resolved on its first tunnel
	// rather than on each; forget drops the routes of past tables.
	routes sync.Map
}

// routeSeries are one route's series for an opened tunnel.
type routeSeries struct {
	opened prometheus.Counter // wsgate_handshakes_total{code="101"}
	tunnel tunnelMetrics
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_handshakes_total",
			Help: "Websocket handshakes by route and the status answered (101 for tunnels opened). Requests that match no route have empty route labels.",
		}, []string{"namespace", "route", "code"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsgate_tunnels_active",
			Help: "Open tunnels by route.",
		}, []string{"namespace", "route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_tunnel_bytes_total",
			Help: "Bytes carried by tunnels, by route and direction (client_to_pod, pod_to_client).",
		}, []string{"namespace", "route", "direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsgate_tunnel_duration_seconds",
			Help:    "How long tunnels stayed open, by route.",
			Buckets: []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}, []string{"namespace", "route"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_tunnel_closes_total",
			Help: "Tunnels closed, by who or what ended them (client, pod, idle, lifetime, revoked, expired, shutdown, error) and the websocket close code (none when there was no Close frame).",
		}, []string{"reason", "code"}),
		auths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_auth_total",
			Help: "Identity checks of handshakes on routes with auth, by route and result: ok, missing (no token), malformed (ambiguous or undecodable), invalid (the token failed verification), unavailable (the route's keys are not loaded), unbound (valid token, pod not its own), forward_ok, forward_denied (the forward-auth service said 401 or 403), forward_error (it failed or timed out).",
		}, []string{"namespace", "route", "result"}),
	}
	m.limits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_client_limited_total",
		Help: "Handshakes answered 429 by a per-client limit, by reason: handshake_rate, open_tunnels (the gateway's limits), route_handshake_rate, route_open_tunnels (a route's spec.limits), refusals (the client is blocked for its refused handshakes).",
	}, []string{"reason"})
	m.blocks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsgate_client_blocks_total",
		Help: "Clients blocked for a while after collecting more refused handshakes (400, 401, 403, 404) than their budget: address scans.",
	})
	m.clients = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsgate_clients_tracked",
		Help: "Clients whose per-client state this replica holds (bounded by --client-max-tracked).",
	})
	m.proxyHdrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_proxy_protocol_refused_total",
		Help: "Connections refused for their PROXY protocol header, by reason: untrusted (a header from a peer outside the trusted proxies), missing (none from a trusted proxy), malformed.",
	}, []string{"reason"})
	m.h2Shakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_http2_handshakes_total",
		Help: "Websocket handshakes over HTTP/2 (extended CONNECT streams, --http2) and other HTTP/2 requests, by the status of their HTTP/1.1 form (101 for tunnels opened, answered 200 on the stream); wsgate_handshakes_total counts them too.",
	}, []string{"code"})
	m.h2Active = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsgate_http2_tunnels_active",
		Help: "Open tunnels that are HTTP/2 streams (wsgate_tunnels_active counts them too).",
	})
	m.h2Conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsgate_http2_connections_active",
		Help: "HTTP/2 connections carrying at least one tunnel: with wsgate_http2_tunnels_active, how many websockets share each.",
	})
	for _, r := range []string{limitRate, limitRouteRate, limitTunnels, limitRouteTunnels, limitRefusals} {
		m.limits.WithLabelValues(r)
	}
	for _, r := range []string{proxyUntrusted, proxyMissing, proxyMalformed} {
		m.proxyHdrs.WithLabelValues(r)
	}
	reg.MustRegister(m.handshakes, m.active, m.bytes, m.duration, m.closes, m.auths, m.limits, m.blocks, m.clients, m.proxyHdrs, m.h2Shakes, m.h2Active, m.h2Conns)
	return m
}

// handshake counts one answered handshake.
func (m *Metrics) handshake(route *routing.Route, code int) {
	if m == nil {
		return
	}
	if code == http.StatusSwitchingProtocols && route != nil {
		m.series(route).opened.Inc()
		return
	}
	ns, name := routeLabels(route)
	m.handshakes.WithLabelValues(ns, name, strconv.Itoa(code)).Inc()
}

// auth counts one identity check of a handshake on route.
func (m *Metrics) auth(route *routing.Route, result string) {
	if m == nil {
		return
	}
	ns, name := routeLabels(route)
	m.auths.WithLabelValues(ns, name, result).Inc()
}

// limited counts a handshake refused by a per-client limit.
func (m *Metrics) limited(reason string) {
	if m != nil {
		m.limits.WithLabelValues(reason).Inc()
	}
}

// blocked counts a client blocked for its refusals.
func (m *Metrics) blocked() {
	if m != nil {
		m.blocks.Inc()
	}
}

// trackedClients sets the number of clients tracked.
func (m *Metrics) trackedClients(n int) {
	if m != nil {
		m.clients.Set(float64(n))
	}
}

// http2Handshake counts a handshake over HTTP/2 answered code.
func (m *Metrics) http2Handshake(code int) {
	if m != nil {
		m.h2Shakes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

// http2Tunnels moves the gauge of tunnels that are HTTP/2 streams, and
// sets the one of the connections carrying them.
func (m *Metrics) http2Tunnels(delta float64, conns int) {
	if m != nil {
		m.h2Active.Add(delta)
		m.h2Conns.Set(float64(conns))
	}
}

// proxyRefused counts a connection refused for its PROXY header.
func (m *Metrics) proxyRefused(reason string) {
	if m != nil {
		m.proxyHdrs.WithLabelValues(reason).Inc()
	}
}

// series returns route's series for opened tunnels.
func (m *Metrics) series(route *routing.Route) *routeSeries {
	if rs, ok := m.routes.Load(route); ok {
		return rs.(*routeSeries)
	}
	ns, name := routeLabels(route)
	rs, _ := m.routes.LoadOrStore(route, &routeSeries{
		opened: m.handshakes.WithLabelValues(ns, name, strconv.Itoa(http.StatusSwitchingProtocols)),
		tunnel: tunnelMetrics{
			active:     m.active.WithLabelValues(ns, name),
			fromClient: m.bytes.WithLabelValues(ns, name, "client_to_pod"),
			fromPod:    m.bytes.WithLabelValues(ns, name, "pod_to_client"),
			duration:   m.duration.WithLabelValues(ns, name),
		},
	})
	return rs.(*routeSeries)
}

// tunnelMetrics are one tunnel's series, resolved once when it opens.
type tunnelMetrics struct {
	active              prometheus.Gauge
	fromClient, fromPod prometheus.Counter
	duration            prometheus.Observer
}

func (m *Metrics) forTunnel(route *routing.Route) tunnelMetrics {
	if m == nil {
		return tunnelMetrics{}
	}
	return m.series(route).tunnel
}

func (m *Metrics) closed(reason wstunnel.Reason, code uint16) {
	if m == nil {
		return
	}
	c := "none"
	if code != 0 {
		c = strconv.Itoa(int(code))
	}
	m.closes.WithLabelValues(string(reason), c).Inc()
}

// forget drops the series of routes that are no longer in the table, so
// label values stay bounded by the routes that exist.
func (m *Metrics) forget(tbl *routing.Table, previous map[routing.RouteKey]bool) map[routing.RouteKey]bool {
	now := make(map[routing.RouteKey]bool, len(tbl.Routes()))
	for _, r := range tbl.Routes() {
		now[r.Key] = true
	}
	if m == nil {
		return now
	}
	for k := range previous {
		if !now[k] {
			labels := prometheus.Labels{"namespace": k.Namespace, "route": k.Name}
			m.handshakes.DeletePartialMatch(labels)
			m.bytes.DeletePartialMatch(labels)
			m.duration.DeletePartialMatch(labels)
			// Active tunnels of a removed route are being closed; their
			// gauge goes when they have.
		}
	}
	current := make(map[*routing.Route]bool, len(tbl.Routes()))
	for _, r := range tbl.Routes() {
		current[r] = true
	}
	m.routes.Range(func(r, _ any) bool {
		if !current[r.(*routing.Route)] {
			m.routes.Delete(r)
		}
		return true
	})
	return now
}

func routeLabels(r *routing.Route) (string, string) {
	if r == nil {
		return "", ""
	}
	return r.Key.Namespace, r.Key.Name
}
