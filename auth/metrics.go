package auth

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the key sets' metrics, labelled by the set's name (the
// issuer URL, or "serviceaccount").
type Metrics struct {
	fetches *prometheus.CounterVec
	age     *prometheus.Desc

	mu   sync.Mutex
	sets map[string]*RemoteKeys
}

// NewMetrics registers, on reg, wsgate_auth_keyset_age_seconds{issuer}
// (seconds since the set's last successful fetch, for sets that have
// one) and wsgate_auth_key_fetches_total{issuer,result} (result "ok" or
// "error"). A nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_auth_key_fetches_total",
			Help: "Fetches of token signing keys, by key set and result (ok or error).",
		}, []string{"issuer", "result"}),
		age: prometheus.NewDesc("wsgate_auth_keyset_age_seconds",
			"Seconds since the last successful fetch of a key set.",
			[]string{"issuer"}, nil),
		sets: map[string]*RemoteKeys{},
	}
	if reg != nil {
		reg.MustRegister(m.fetches, ageCollector{m})
	}
	return m
}

func (m *Metrics) track(r *RemoteKeys) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets[r.name] = r
	m.fetches.WithLabelValues(r.name, "ok")
	m.fetches.WithLabelValues(r.name, "error")
}

func (m *Metrics) untrack(r *RemoteKeys) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sets[r.name] != r {
		return
	}
	delete(m.sets, r.name)
	m.fetches.DeleteLabelValues(r.name, "ok")
	m.fetches.DeleteLabelValues(r.name, "error")
}

func (m *Metrics) fetched(name string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, tracked := m.sets[name]; !tracked {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	m.fetches.WithLabelValues(name, result).Inc()
}

// ageCollector reports the age of each tracked set when scraped.
type ageCollector struct{ m *Metrics }

func (c ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.age }

func (c ageCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	sets := make([]*RemoteKeys, 0, len(c.m.sets))
	for _, r := range c.m.sets {
		sets = append(sets, r)
	}
	c.m.mu.Unlock()
	now := time.Now()
	for _, r := range sets {
		if age, ok := r.age(now); ok {
			ch <- prometheus.MustNewConstMetric(c.m.age, prometheus.GaugeValue, age.Seconds(), r.name)
		}
	}
}
