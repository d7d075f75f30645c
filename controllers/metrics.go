package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wsgate/wsgate/tablebuild"
)

// TableMetrics are the control plane's Prometheus metrics.
type TableMetrics struct {
	buildDuration   prometheus.Histogram
	changeToPublish prometheus.Histogram
	routes          prometheus.Gauge
	backends        prometheus.Gauge
	generation      prometheus.Gauge
	buildErrors     prometheus.Counter
	certExpiry      *prometheus.GaugeVec
}

// NewTableMetrics creates the metrics and registers them with reg.
func NewTableMetrics(reg prometheus.Registerer) *TableMetrics {
	m := &TableMetrics{
		buildDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsgate_table_build_duration_seconds",
			Help:    "Time to build the routing table from the cache.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		changeToPublish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsgate_table_change_to_publish_seconds",
			Help:    "Time from the first cluster change a table includes (as the cache saw it) to the table's publication.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsgate_table_routes",
			Help: "Accepted routes in the published routing table.",
		}),
		backends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsgate_table_backends",
			Help: "Allowlisted pod addresses in the published routing table.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsgate_table_generation",
			Help: "Generation of the published routing table (counts builds since start).",
		}),
		buildErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsgate_table_build_errors_total",
			Help: "Table builds that failed (the previous table keeps serving).",
		}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsgate_certificate_expiry_timestamp_seconds",
			Help: "Expiry (Unix time) of the certificate each TLS Secret serves.",
		}, []string{"namespace", "secret"}),
	}
	reg.MustRegister(m.buildDuration, m.changeToPublish, m.routes, m.backends, m.generation, m.buildErrors, m.certExpiry)
	return m
}

// published records one build.
func (m *TableMetrics) published(res *tablebuild.Result, secrets map[types.NamespacedName]tablebuild.TLSSecret, took, sinceChange float64) {
	if m == nil {
		return
	}
	m.buildDuration.Observe(took)
	if sinceChange >= 0 {
		m.changeToPublish.Observe(sinceChange)
	}
	m.routes.Set(float64(len(res.Table.Routes())))
	m.backends.Set(float64(res.Table.Backends()))
	m.generation.Set(float64(res.Table.Generation()))
	m.certExpiry.Reset()
	for k, s := range secrets {
		if s.Certificate != nil && s.Certificate.Leaf != nil {
			m.certExpiry.WithLabelValues(k.Namespace, k.Name).Set(float64(s.Certificate.Leaf.NotAfter.Unix()))
		}
	}
}

func (m *TableMetrics) failed() {
	if m != nil {
		m.buildErrors.Inc()
	}
}
