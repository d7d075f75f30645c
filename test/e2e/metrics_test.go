package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// scrape fetches a Prometheus text exposition and parses it.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // a test request
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return mfs
}

// sample returns the value of the series of family name whose labels
// include want, or -1.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
next:
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsAccessLogAndDebugTableOfTheBinary(t *testing.T) {
	bin := wsgateBin.Path(t)
	ns := env.Namespace(t)
	port, _ := harness.EchoPods(t, ipOf(50))
	createPod(t, ns, podSpec{name: "echo", ip: ipOf(50), labels: map[string]string{"app": "echo"}})
	createRoute(t, ns, routeSpec{name: "echo", prefix: "/" + ns, app: "echo", port: intstr.FromInt32(port)})
	path := harness.PodPath("/"+ns, ipOf(50), "/")
	metricsAddr, adminAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	gw := startWsgate(t, bin, "--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		"--admin-bind-address", adminAddr, "--zap-log-level", "info")
	waitRouteServes(t, ns, "echo", "echo")
	gw.waitStatus(t, path, http.StatusSwitchingProtocols)

	// One tunnel the client closes, one refused address.
	c, _ := gw.open(t, path, nil)
	mustEcho(t, c, "counted")
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	if got := gw.status(t, harness.PodPath("/"+ns, "127.0.99.99", "/")); got != http.StatusNotFound {
		t.Fatalf("unknown address: %d", got)
	}

	route := map[string]string{"namespace": ns, "route": "echo"}
	var mfs map[string]*dto.MetricFamily
	harness.Eventually(t, 5*time.Second, "the closed tunnel is counted", func() error {
		mfs = scrape(t, "http://"+metricsAddr+"/metrics")
		if got := sample(mfs, "wsgate_tunnel_closes_total", map[string]string{"reason": "client", "code": "1000"}); got < 1 {
			return fmt.Errorf("client closes with 1000: %v", got)
		}
		return nil
	})
	checks := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		// waitStatus above opened (and dropped) tunnels too: at least 2.
		{"wsgate_handshakes_total", map[string]string{"namespace": ns, "route": "echo", "code": "101"}, 2},
		{"wsgate_handshakes_total", map[string]string{"namespace": "", "route": "", "code": "404"}, 1},
		{"wsgate_tunnel_bytes_total", map[string]string{"namespace": ns, "route": "echo", "direction": "client_to_pod"}, 7},
		{"wsgate_tunnel_duration_seconds", route, 1},
		{"wsgate_table_routes", nil, 1},
		{"wsgate_table_backends", nil, 1},
		{"wsgate_table_build_duration_seconds", nil, 1},
		{"wsgate_table_change_to_publish_seconds", nil, 1},
	}
	for _, ch := range checks {
		if got := sample(mfs, ch.name, ch.labels); got < ch.min {
			t.Errorf("%s%v = %v, want at least %v", ch.name, ch.labels, got, ch.min)
		}
	}
	if got := sample(mfs, "wsgate_tunnels_active", route); got != 0 {
		t.Errorf("wsgate_tunnels_active%v = %v after every tunnel closed", route, got)
	}

	// The access log is JSON, one line per closed tunnel.
	var line map[string]any
	harness.Eventually(t, 5*time.Second, "an access log line for the closed tunnel", func() error {
		f, err := os.Open(gw.LogPath())
		if err != nil {
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			var m map[string]any
			if json.Unmarshal(s.Bytes(), &m) == nil && m["msg"] == "tunnel closed" && m["closeCode"] == float64(1000) {
				line = m
				return nil
			}
		}
		return fmt.Errorf("no JSON 'tunnel closed' line with close code 1000 in %s", gw.LogPath())
	})
	for k, want := range map[string]any{"logger": "access", "namespace": ns, "route": "echo", "pod": "echo", "reason": "client", "status": float64(101)} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v", k, line[k], want)
		}
	}

	// The admin endpoint shows the table without addresses by default.
	resp, err := http.Get("http://" + adminAddr + "/debug/table") //nolint:noctx // a test request
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var table struct {
		Generation uint64 `json:"generation"`
		Routes     []struct {
			Namespace, Name string
			Pods            int
			Backends        []string
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&table); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range table.Routes {
		if r.Namespace == ns && r.Name == "echo" {
			found = r.Pods == 1 && len(r.Backends) == 0
		}
	}
	if !found || table.Generation == 0 {
		t.Errorf("/debug/table = %+v, want route %s/echo with 1 pod and no addresses", table, ns)
	}
}

func TestSecureMetricsRefuseAnonymousScrapes(t *testing.T) {
	bin := wsgateBin.Path(t)
	metricsAddr := harness.FreeAddr(t)
	startWsgate(t, bin, "--metrics-bind-address", metricsAddr)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the server's certificate is self-signed
	var status int
	harness.Eventually(t, 10*time.Second, "the secure metrics endpoint answers", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		status = resp.StatusCode
		return nil
	})
	if status != http.StatusUnauthorized && status != http.StatusForbidden {
		t.Errorf("an anonymous scrape of the secure endpoint got %d, want 401 or 403", status)
	}
	if strings.HasPrefix(fmt.Sprint(status), "2") {
		t.Error("metrics served without authentication")
	}
}
