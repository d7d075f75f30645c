package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// lines collects JSON access log lines.
type lines struct {
	mu  sync.Mutex
	all []map[string]any
}

func (l *lines) add(s string) {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(fmt.Sprintf("access log line is not JSON: %q", s))
	}
	l.mu.Lock()
	l.all = append(l.all, m)
	l.mu.Unlock()
}

func (l *lines) withMsg(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, m := range l.all {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// value returns the value of the metric family name with exactly these
// labels (-1 when absent).
func value(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			return metricValue(m)
		}
	}
	return -1
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

func TestMetricsAndAccessLogFollowTunnels(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	reg := prometheus.NewRegistry()
	var log lines
	rt := testRoute("echo", "/e", backendOf("p", pod))
	rt.AllowedOrigins = []string{"https://app.example.com"}
	g := startGateway(t, Options{
		Metrics:        NewMetrics(reg),
		AccessLog:      funcr.NewJSON(func(obj string) { log.add(obj) }, funcr.Options{}),
		RefusalLogRate: 5,
	}, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	route := map[string]string{"namespace": "ns", "route": "echo"}

	c := g.mustDial(t, "/e/127.0.0.2/x", nil)
	deadline := time.Now().Add(3 * time.Second)
	for value(t, reg, "wsgate_tunnels_active", route) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := value(t, reg, "wsgate_tunnels_active", route); got != 1 {
		t.Errorf("active tunnels = %v, want 1", got)
	}
	if err := echo(ctx, c, websocket.MessageBinary, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for value(t, reg, "wsgate_tunnels_active", route) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for len(log.withMsg("tunnel closed")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	checks := []struct {
		name   string
		labels map[string]string
		cmp    func(float64) bool
		want   string
	}{
		{"wsgate_handshakes_total", map[string]string{"namespace": "ns", "route": "echo", "code": "101"}, func(v float64) bool { return v == 1 }, "1"},
		{"wsgate_tunnels_active", route, func(v float64) bool { return v == 0 }, "0"},
		{"wsgate_tunnel_bytes_total", map[string]string{"namespace": "ns", "route": "echo", "direction": "client_to_pod"}, func(v float64) bool { return v > 1000 }, "> 1000"},
		{"wsgate_tunnel_bytes_total", map[string]string{"namespace": "ns", "route": "echo", "direction": "pod_to_client"}, func(v float64) bool { return v > 1000 }, "> 1000"},
		{"wsgate_tunnel_duration_seconds", route, func(v float64) bool { return v == 1 }, "1 observation"},
		{"wsgate_tunnel_closes_total", map[string]string{"reason": "client", "code": "1000"}, func(v float64) bool { return v == 1 }, "1"},
	}
	for _, ch := range checks {
		if got := value(t, reg, ch.name, ch.labels); !ch.cmp(got) {
			t.Errorf("%s%v = %v, want %s", ch.name, ch.labels, got, ch.want)
		}
	}
	closed := log.withMsg("tunnel closed")
	if len(closed) != 1 {
		t.Fatalf("%d 'tunnel closed' lines, want 1", len(closed))
	}
	for k, want := range map[string]any{"namespace": "ns", "route": "echo", "pod": "p", "status": float64(101), "closeCode": float64(1000), "reason": "client"} {
		if closed[0][k] != want {
			t.Errorf("access log %s = %v, want %v (line %v)", k, closed[0][k], want, closed[0])
		}
	}
	for _, k := range []string{"client", "podAddress", "bytesFromClient", "bytesFromPod", "durationSeconds"} {
		if _, ok := closed[0][k]; !ok {
			t.Errorf("access log line lacks %s: %v", k, closed[0])
		}
	}

	// Refusals are counted by route and code, and logged sampled.
	for range 30 {
		g.rawRequest(t, handshake("/e/127.0.0.99"))
	}
	status, _ := g.rawRequest(t, strings.Replace(handshake("/e/127.0.0.2"), "\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n", 1))
	if status != 403 {
		t.Fatalf("bad origin: %d", status)
	}
	if got := value(t, reg, "wsgate_handshakes_total", map[string]string{"namespace": "", "route": "", "code": "404"}); got != 30 {
		t.Errorf("404 handshakes = %v, want 30", got)
	}
	if got := value(t, reg, "wsgate_handshakes_total", map[string]string{"namespace": "ns", "route": "echo", "code": "403"}); got != 1 {
		t.Errorf("403 handshakes of the route = %v, want 1", got)
	}
	refused := log.withMsg("handshake refused")
	if len(refused) < 1 || len(refused) > 10 {
		t.Errorf("%d refusal lines for 31 refusals at 5 a second, want sampling", len(refused))
	}
}

func TestRevokedAndShutdownClosesAreCountedWithTheirCodes(t *testing.T) {
	pod := echoPod(t, "127.0.0.2")
	reg := prometheus.NewRegistry()
	g := startGateway(t, Options{Metrics: NewMetrics(reg)}, testRoute("echo", "/e", backendOf("p", pod)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := g.mustDial(t, "/e/127.0.0.2", nil)
	g.publish(testRoute("echo", "/e"))
	if code, _ := closeStatus(ctx, c); code != websocket.StatusPolicyViolation {
		t.Fatalf("close %d", code)
	}
	deadline := time.Now().Add(3 * time.Second)
	for value(t, reg, "wsgate_tunnel_closes_total", map[string]string{"reason": "revoked", "code": "1008"}) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := value(t, reg, "wsgate_tunnel_closes_total", map[string]string{"reason": "revoked", "code": "1008"}); got != 1 {
		t.Errorf("revoked closes = %v, want 1", got)
	}
}
