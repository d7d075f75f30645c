package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	texttemplate "text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/proxy"
)

// The dashboard (charts/wsgate/dashboards/wsgate.json, in a ConfigMap for
// Grafana's sidecar) and the PrometheusRule query only metrics that exist:
// those proxy.NewMetrics and controllers.NewTableMetrics register, and a
// few of controller-runtime's. The PromQL is read by a small lexer (the
// Prometheus module is not a dependency); promtool, when on PATH, also
// checks the rules and evaluates the alerts' expressions on sample series.

const (
	dashboardFile     = "charts/wsgate/dashboards/wsgate.json"
	prometheusRuleCRD = "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
)

// controllerRuntimeMetrics are the metrics of controller-runtime (not of
// this repository) that the dashboard and alerts use, with their labels.
// Each is checked to be registered in controller-runtime's registry.
var controllerRuntimeMetrics = map[string][]string{
	"leader_election_master_status": {"name"},
}

// targetLabels are the labels Prometheus (and the Prometheus operator's
// ServiceMonitor) adds to every scraped series.
var targetLabels = []string{"job", "instance", "pod", "namespace", "service", "endpoint", "container"}

// metricInfo is one queryable series name and its labels.
type metricInfo struct {
	labels map[string]bool
}

// recorder is a Registerer that registers into a fresh Registry and keeps
// the collectors, so that their descriptions can be read (a vector without
// children gathers nothing).
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

var descRE = regexp.MustCompile(`^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)", .*, variableLabels: \{([^}]*)\}\}$`)

// exportedMetrics returns every series name the gateway's own metrics
// produce (histograms as _bucket, _sum and _count too) and the
// controller-runtime ones in controllerRuntimeMetrics.
func exportedMetrics(t testing.TB) map[string]metricInfo {
	t.Helper()
	rec := &recorder{reg: prometheus.NewRegistry()}
	proxy.NewMetrics(rec)
	controllers.NewTableMetrics(rec)
	auth.NewMetrics(rec)
	out := map[string]metricInfo{}
	for _, c := range rec.collectors {
		var suffixes map[string]string // series suffix -> extra label
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			// (A Summary has the same method set as a Histogram, and
			// wsgate exports none.)
			suffixes = map[string]string{"_bucket": "le", "_sum": "", "_count": ""}
		default:
			suffixes = map[string]string{"": ""}
		}
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			labels := map[string]bool{}
			for l := range strings.SplitSeq(m[2], ",") {
				if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
					labels[l] = true
				}
			}
			for suffix, extra := range suffixes {
				ls := maps.Clone(labels)
				if extra != "" {
					ls[extra] = true
				}
				out[m[1]+suffix] = metricInfo{labels: ls}
			}
		}
	}
	// The names read from the descriptions include what the registry
	// gathers (the metrics without labels).
	mfs, err := rec.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		_, plain := out[mf.GetName()]
		if _, hist := out[mf.GetName()+"_bucket"]; !plain && !hist {
			t.Fatalf("gathered %s, which the descriptions lack", mf.GetName())
		}
	}
	if len(out) == 0 {
		t.Fatal("no metrics registered")
	}
	for name, labels := range controllerRuntimeMetrics {
		if !registeredIn(ctrlmetrics.Registry, name) {
			t.Fatalf("%s is not registered in controller-runtime's metrics registry: update controllerRuntimeMetrics and what queries it", name)
		}
		ls := map[string]bool{}
		for _, l := range labels {
			ls[l] = true
		}
		out[name] = metricInfo{labels: ls}
	}
	return out
}

// registeredIn tells whether reg has a collector of the name: a probe of
// the same name is refused then.
func registeredIn(reg prometheus.Registerer, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe of the wsgate chart tests"})
	err := reg.Register(probe)
	if err == nil {
		reg.Unregister(probe)
		return false
	}
	var are prometheus.AlreadyRegisteredError
	return errors.As(err, &are) || strings.Contains(err.Error(), "same fully-qualified name")
}

// promSelector is a metric name in a PromQL expression and the label names
// its matchers use.
type promSelector struct {
	metric string
	labels []string
}

var (
	promqlKeywords = set("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan")
	// Followed by a parenthesised list of label names (group_left and
	// group_right may stand alone).
	promqlGrouping     = set("by", "without", "on", "ignoring", "group_left", "group_right")
	promqlAggregations = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio")
	promqlFunctions = set("abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
		"avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time",
		"day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv",
		"double_exponential_smoothing", "end", "exp", "floor", "histogram_avg", "histogram_count",
		"histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
		"holt_winters", "hour", "idelta", "increase", "info", "irate", "label_join", "label_replace",
		"last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute",
		"month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
		"round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc",
		"sqrt", "start", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
		"timestamp", "vector", "year")
)

func set(words ...string) map[string]bool {
	m := map[string]bool{}
	for _, w := range words {
		m[w] = true
	}
	return m
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// skipQuoted returns the index after the string literal at s[i].
func skipQuoted(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// closing returns the index after the bracket that closes s[i], skipping
// string literals.
func closing(s string, i int) (int, error) {
	open, shut := s[i], map[byte]byte{'(': ')', '[': ']', '{': '}'}[s[i]]
	depth := 0
	for j := i; j < len(s); j++ {
		switch c := s[j]; c {
		case '"', '\'', '`':
			e, err := skipQuoted(s, j)
			if err != nil {
				return 0, err
			}
			j = e - 1
		case open:
			depth++
		case shut:
			if depth--; depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unclosed %c at %d", open, i)
}

// promqlSelectors returns the metric names of a PromQL expression (which
// may hold Grafana variables): identifiers that are not keywords, not
// functions or aggregations (followed by '('), not in label lists (by,
// without, on, ignoring, group_left, group_right) or label matchers, not in
// strings, durations or numbers. Selectors without a metric name and
// __name__ matchers are refused, as is a call of an unknown function.
func promqlSelectors(expr string) ([]promSelector, error) {
	var out []promSelector
	s := expr
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isSpace(c):
			i++
		case c == '"' || c == '\'' || c == '`':
			e, err := skipQuoted(s, i)
			if err != nil {
				return nil, err
			}
			i = e
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '$': // Grafana variable: $name, ${name...}
			i++
			if i < len(s) && s[i] == '{' {
				e := strings.IndexByte(s[i:], '}')
				if e < 0 {
					return nil, fmt.Errorf("unclosed ${ at %d", i-1)
				}
				i += e + 1
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c == '[': // range, subquery or [[variable]]
			e, err := closing(s, i)
			if err != nil {
				return nil, err
			}
			i = e
		case c == '{':
			return nil, fmt.Errorf("selector without a metric name at %d: %q", i, s[i:])
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unopened %c at %d", c, i)
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unopened ) at %d", i)
			}
			i++
		case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			e := i
			for e < len(s) && isIdent(s[e]) {
				e++
			}
			word, lower := s[i:e], strings.ToLower(s[i:e])
			next := skipSpace(s, e)
			paren := next < len(s) && s[next] == '('
			switch {
			case promqlGrouping[lower]:
				i = e
				if paren {
					end, err := closing(s, next)
					if err != nil {
						return nil, err
					}
					i = end
				}
			case paren:
				if !promqlFunctions[word] && !promqlAggregations[lower] {
					return nil, fmt.Errorf("unknown function %s", word)
				}
				i = e
			case promqlKeywords[lower] || promqlAggregations[lower]:
				i = e
			default:
				sel := promSelector{metric: word}
				i = e
				if next < len(s) && s[next] == '{' {
					labels, end, err := promqlMatchers(s, next)
					if err != nil {
						return nil, err
					}
					sel.labels, i = labels, end
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("%d unclosed (", depth)
	}
	return out, nil
}

// promqlMatchers reads the label matchers at s[i] == '{' and returns their
// label names and the index after the '}'.
func promqlMatchers(s string, i int) ([]string, int, error) {
	var labels []string
	for j := i + 1; ; {
		j = skipSpace(s, j)
		switch {
		case j >= len(s):
			return nil, 0, fmt.Errorf("unclosed { at %d", i)
		case s[j] == '}':
			return labels, j + 1, nil
		case s[j] == ',':
			j++
			continue
		case !isIdentStart(s[j]) || s[j] == ':':
			return nil, 0, fmt.Errorf("label name expected at %d: %q", j, s[j:])
		}
		e := j
		for e < len(s) && isIdent(s[e]) && s[e] != ':' {
			e++
		}
		name := s[j:e]
		if name == "__name__" {
			return nil, 0, fmt.Errorf("__name__ matcher at %d: name the metric instead", j)
		}
		labels = append(labels, name)
		j = skipSpace(s, e)
		switch {
		case strings.HasPrefix(s[j:], "=~"), strings.HasPrefix(s[j:], "!~"), strings.HasPrefix(s[j:], "!="):
			j += 2
		case strings.HasPrefix(s[j:], "="):
			j++
		default:
			return nil, 0, fmt.Errorf("matcher operator expected after %s at %d", name, j)
		}
		if j = skipSpace(s, j); j >= len(s) || (s[j] != '"' && s[j] != '\'' && s[j] != '`') {
			return nil, 0, fmt.Errorf("string expected after %s at %d", name, j)
		}
		end, err := skipQuoted(s, j)
		if err != nil {
			return nil, 0, err
		}
		j = end
	}
}

// checkPromQL fails the test when expr names a metric that does not exist
// or matches on a label the metric and the target labels lack; it returns
// the selectors.
func checkPromQL(t *testing.T, where, expr string, metrics map[string]metricInfo) []promSelector {
	t.Helper()
	sels, err := promqlSelectors(expr)
	if err != nil {
		t.Errorf("%s: %v in %q", where, err, expr)
		return nil
	}
	if len(sels) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, sel := range sels {
		info, ok := metrics[sel.metric]
		if !ok {
			t.Errorf("%s: metric %s does not exist (the gateway exports %v) in %q", where, sel.metric, slices.Sorted(maps.Keys(metrics)), expr)
			continue
		}
		for _, l := range sel.labels {
			if !info.labels[l] && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: %s has no label %s (labels %v, target labels %v)", where, sel.metric, l, slices.Sorted(maps.Keys(info.labels)), targetLabels)
			}
		}
	}
	return sels
}

func TestPromQLSelectors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string // metric/label,label
	}{
		{`wsgate_tunnels_active`, []string{"wsgate_tunnels_active/"}},
		{`sum by (namespace, route) (rate(a_total{code=~"5..", x="b)}{"}[5m] offset 1h)) / on() group_left b > 0.9 * 9000`,
			[]string{"a_total/code,x", "b/"}},
		{`histogram_quantile(0.99, sum without (pod) (rate(x_bucket{job=~"$job"}[$__rate_interval])))`, []string{"x_bucket/job"}},
		{`SUM(x) BY (le) AND ON (a) y unless z or bool_metric == bool 1e3`, []string{"x/", "y/", "z/", "bool_metric/"}},
		{`min by (ns) (m{a="1",}) - time() < 14 * 86400 and 0x1f > .5 and m2 @ start()`, []string{"m/a", "m2/"}},
		{`max(up{job="a"}) ^ 2 # a comment with fake_metric`, []string{"up/job"}},
		{`m{l='single', k=` + "`raw`" + `} + n:recorded:rate5m[5m:1m]`, []string{"m/l,k", "n:recorded:rate5m/"}},
	} {
		sels, err := promqlSelectors(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.metric+"/"+strings.Join(s.labels, ","))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{
		`histogram_quantil(0.9, x)`,
		`{__name__="x"}`,
		`x{__name__="y"}`,
		`x{a="b}`,
		`sum(x`,
		`x)`,
		`x{a}`,
		`x{a=b}`,
	} {
		if sels, err := promqlSelectors(bad); err == nil {
			t.Errorf("%q: accepted, got %v", bad, sels)
		}
	}
}

// dashboard is the dashboard file, parsed.
func dashboard(t *testing.T) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(readRepoFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// walkJSON calls f for every object in v, with its path.
func walkJSON(path string, v any, f func(path string, obj map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(path, v)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			walkJSON(path+"."+k, v[k], f)
		}
	case []any:
		for i, c := range v {
			walkJSON(fmt.Sprintf("%s[%d]", path, i), c, f)
		}
	}
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

func TestDashboard(t *testing.T) {
	t.Parallel()
	metrics := exportedMetrics(t)
	d := dashboard(t)
	raw := readRepoFile(t, dashboardFile)
	// kubectl apply (client-side) copies the ConfigMap into an annotation,
	// which must stay under 256 KiB.
	if len(raw) > 200<<10 {
		t.Errorf("%s is %d bytes: keep it well under the 256 KiB of an annotation", dashboardFile, len(raw))
	}
	// Grafana's sidecar provisions the file as it is: an exported
	// dashboard's ${DS_...} inputs would never be resolved.
	if bytes.Contains(raw, []byte("${DS_")) || d["__inputs"] != nil {
		t.Errorf("%s uses import inputs (__inputs, ${DS_...}): use the datasource variable", dashboardFile)
	}
	if v, _ := d["schemaVersion"].(float64); v < 39 {
		t.Errorf("schemaVersion = %v, want 39 or later", d["schemaVersion"])
	}
	if uid, _ := d["uid"].(string); uid == "" || d["title"] == "" {
		t.Errorf("uid %q, title %v: both are needed for a stable URL", uid, d["title"])
	}

	// Template variables: the data source, and the others from label_values.
	vars := map[string]map[string]any{}
	list, _ := d["templating"].(map[string]any)["list"].([]any)
	for _, v := range list {
		v := v.(map[string]any)
		vars[v["name"].(string)] = v
	}
	if ds := vars["datasource"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("templating lacks a datasource variable of type prometheus: %v", ds)
	}
	used := map[string]bool{}
	for name, v := range vars {
		if v["type"] != "query" {
			continue
		}
		q, _ := v["query"].(string)
		if m, ok := v["query"].(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		if ds, _ := v["datasource"].(map[string]any); ds["uid"] != "${datasource}" {
			t.Errorf("variable %s: datasource %v, want ${datasource}", name, v["datasource"])
		}
		m := labelValuesRE.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", name, q)
			continue
		}
		for _, sel := range checkPromQL(t, "variable "+name, m[1], metrics) {
			used[sel.metric] = true
			if info, ok := metrics[sel.metric]; ok && !info.labels[m[2]] && !slices.Contains(targetLabels, m[2]) {
				t.Errorf("variable %s: %s has no label %s", name, sel.metric, m[2])
			}
		}
	}
	for name, metric := range map[string]string{"namespace": "wsgate_tunnels_active", "route": "wsgate_tunnels_active"} {
		q, _ := json.Marshal(vars[name]["query"])
		if !strings.Contains(string(q), "label_values("+metric) || !strings.Contains(string(q), ", "+name+")") {
			t.Errorf("variable %s = %s, want label_values(%s..., %s)", name, q, metric, name)
		}
	}

	// Panels: unique ids, on the grid without overlaps, on the datasource
	// variable, and every expression on metrics that exist.
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	ids := map[float64]bool{}
	exprs := 0
	walkJSON("panels", d["panels"], func(path string, obj map[string]any) {
		if _, ok := obj["gridPos"]; ok {
			id, _ := obj["id"].(float64)
			if ids[id] {
				t.Errorf("%s: panel id %v is not unique", path, id)
			}
			ids[id] = true
			g := obj["gridPos"].(map[string]any)
			r := rect{fmt.Sprint(obj["title"]), int(g["x"].(float64)), int(g["y"].(float64)), int(g["w"].(float64)), int(g["h"].(float64))}
			if r.x < 0 || r.w <= 0 || r.x+r.w > 24 || r.h <= 0 {
				t.Errorf("panel %q: gridPos %v is off the 24-column grid", r.title, g)
			}
			rects = append(rects, r)
			if obj["type"] != "row" {
				if ds, _ := obj["datasource"].(map[string]any); ds["uid"] != "${datasource}" || ds["type"] != "prometheus" {
					t.Errorf("panel %q: datasource %v, want the ${datasource} variable", r.title, obj["datasource"])
				}
				if ts, _ := obj["targets"].([]any); len(ts) == 0 {
					t.Errorf("panel %q has no query", r.title)
				}
			}
		}
		if e, ok := obj["expr"].(string); ok {
			exprs++
			if ds, ok := obj["datasource"].(map[string]any); ok && ds["uid"] != "${datasource}" {
				t.Errorf("%s: datasource %v, want ${datasource}", path, ds)
			}
			for _, sel := range checkPromQL(t, path, e, metrics) {
				used[sel.metric] = true
			}
		}
	})
	for i, a := range rects {
		for _, b := range rects[i+1:] {
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("panels %q and %q overlap", a.title, b.title)
			}
		}
	}
	if exprs == 0 {
		t.Fatal("no expr in any panel")
	}
	// Every metric wsgate exports is on the dashboard (a histogram by its
	// buckets), and so is the leader.
	for name := range metrics {
		base := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		if _, hist := metrics[base+"_bucket"]; hist && !strings.HasSuffix(name, "_bucket") {
			continue
		}
		if !used[name] {
			t.Errorf("metric %s is on no panel of the dashboard", name)
		}
	}
}

// observabilityValues turns on the dashboard and the alerts, with values
// other than the defaults; the dashboard's ConfigMap goes to grafanaNS.
func observabilityValues(grafanaNS string) string {
	return fmt.Sprintf(`
maxTunnels: 1000000
metrics:
  serviceMonitor: {enabled: true}
  readerSubjects:
    - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
dashboards:
  enabled: true
  labels: {grafana_dashboard: "1", team: edge}
  annotations: {grafana_folder: wsgate}
  namespace: %s
prometheusRule:
  enabled: true
  labels: {release: prometheus}
  thresholds:
    certificateExpiryDays: 7
    handshakeErrorRatio: 0.025
    changeToPublishSeconds: 2.5
    tunnelsCapacityRatio: 0.8
`, grafanaNS)
}

var wantAlerts = []string{"WsgateCertificateExpiresSoon", "WsgateHandshakeErrorRatioHigh", "WsgateTableBuildFailing",
	"WsgateTableStale", "WsgateNoLeader", "WsgateTunnelsAtCapacity"}

// alertRules returns the rules of a PrometheusRule by alert name.
func alertRules(t *testing.T, pr *unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	rules := map[string]map[string]any{}
	for _, g := range groups {
		rs, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rs {
			r := r.(map[string]any)
			name, _ := r["alert"].(string)
			if rules[name] != nil {
				t.Errorf("alert %s defined twice", name)
			}
			rules[name] = r
		}
	}
	return rules
}

// alertTemplateFuncs stand in for the functions of Prometheus' alert
// templates that the annotations use.
var alertTemplateFuncs = texttemplate.FuncMap{
	"humanize":           func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"humanize1024":       func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"humanizeDuration":   func(v float64) string { return (time.Duration(v * float64(time.Second))).String() },
	"humanizePercentage": func(v float64) string { return fmt.Sprintf("%.4g%%", v*100) },
	"humanizeTimestamp":  func(v float64) string { return time.Unix(int64(v), 0).UTC().String() },
	"toUpper":            strings.ToUpper,
	"toLower":            strings.ToLower,
}

// expandAlertTemplate expands an annotation as Prometheus does, with the
// stand-in functions.
func expandAlertTemplate(text string, labels map[string]string, value float64) (string, error) {
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	tmpl, err := texttemplate.New("annotation").Funcs(alertTemplateFuncs).Option("missingkey=zero").Parse(defs + text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = tmpl.Execute(&b, struct {
		Labels, ExternalLabels map[string]string
		ExternalURL            string
		Value                  float64
	}{labels, map[string]string{}, "http://prometheus", value})
	return b.String(), err
}

func TestObservabilityTemplate(t *testing.T) {
	t.Parallel()
	metrics := exportedMetrics(t)
	const ns = "gateway"

	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		m := template(t, "wsgate", ns, "")
		if n := len(m.all("PrometheusRule")); n != 0 {
			t.Errorf("rendered %d PrometheusRules by default, want none", n)
		}
		if n := len(m.all("ConfigMap")); n != 0 {
			t.Errorf("rendered %d ConfigMaps by default, want none", n)
		}
	})

	t.Run("enabled", func(t *testing.T) {
		t.Parallel()
		const release, fullname = "obs", "obs-wsgate"
		m := template(t, release, ns, observabilityValues("monitoring"))

		cm := as[corev1.ConfigMap](t, m.one(t, "ConfigMap"))
		if cm.Name != fullname+"-dashboard" || cm.Namespace != "monitoring" {
			t.Errorf("ConfigMap %s/%s, want monitoring/%s-dashboard", cm.Namespace, cm.Name, fullname)
		}
		if cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "edge" || cm.Labels["app.kubernetes.io/instance"] != release {
			t.Errorf("ConfigMap labels = %v, want grafana_dashboard=1, team=edge and the chart's", cm.Labels)
		}
		if cm.Annotations["grafana_folder"] != "wsgate" {
			t.Errorf("ConfigMap annotations = %v", cm.Annotations)
		}
		if len(cm.Data) != 1 || strings.TrimSpace(cm.Data["wsgate.json"]) != strings.TrimSpace(string(readRepoFile(t, dashboardFile))) {
			t.Errorf("ConfigMap data keys %v: want wsgate.json holding %s as it is", slices.Sorted(maps.Keys(cm.Data)), dashboardFile)
		}

		pr := m.one(t, "PrometheusRule")
		if pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetNamespace() != ns || pr.GetName() != fullname {
			t.Errorf("PrometheusRule %s %s/%s", pr.GetAPIVersion(), pr.GetNamespace(), pr.GetName())
		}
		if pr.GetLabels()["release"] != "prometheus" {
			t.Errorf("PrometheusRule labels %v lack release=prometheus", pr.GetLabels())
		}
		// The alerts select the job the chart's ServiceMonitor scrapes: the
		// Prometheus operator names it after the metrics Service.
		var metricsSvc string
		for _, s := range m.all("Service") {
			if s.GetLabels()["app.kubernetes.io/component"] == "metrics" {
				metricsSvc = s.GetName()
			}
		}
		if metricsSvc == "" {
			t.Fatal("no metrics Service")
		}
		job := fmt.Sprintf("job=%q", metricsSvc)

		rules := alertRules(t, pr)
		if got := slices.Sorted(maps.Keys(rules)); !slices.Equal(got, slices.Sorted(slices.Values(wantAlerts))) {
			t.Errorf("alerts = %v, want %v", got, wantAlerts)
		}
		for name, r := range rules {
			expr, _ := r["expr"].(string)
			sels := checkPromQL(t, name, expr, metrics)
			if n := strings.Count(expr, "{"+job); n != len(sels) {
				t.Errorf("%s: %d of %d selectors start with %s: %q", name, n, len(sels), job, expr)
			}
			labels, _ := r["labels"].(map[string]any)
			if sev := labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %v, want warning or critical", name, sev)
			}
			ann, _ := r["annotations"].(map[string]any)
			for _, k := range []string{"summary", "description", "runbook"} {
				text, _ := ann[k].(string)
				if len(text) < 20 {
					t.Errorf("%s: annotation %s = %q, want a sentence", name, k, text)
					continue
				}
				for _, value := range []float64{0, 0.07, 7.5, 9e5} {
					out, err := expandAlertTemplate(text, map[string]string{
						"job": metricsSvc, "pod": "obs-wsgate-7d9f-abcde", "instance": "10.0.0.1:9090",
						"namespace": "games", "secret": "games-tls",
					}, value)
					if err != nil {
						t.Errorf("%s: annotation %s does not expand: %v\n%s", name, k, err, text)
						break
					}
					if strings.Contains(out, "{{") || strings.Contains(out, "<no value>") || strings.Contains(out, "$labels") {
						t.Errorf("%s: annotation %s expands to %q", name, k, out)
					}
				}
			}
		}
		// The thresholds and maxTunnels are those of the values.
		for name, want := range map[string]string{
			"WsgateCertificateExpiresSoon":  "< 7 * 86400",
			"WsgateHandshakeErrorRatioHigh": "> 0.025",
			"WsgateTableStale":              "> 2.5",
			"WsgateTunnelsAtCapacity":       "> 0.8 * 1000000",
		} {
			if expr, _ := rules[name]["expr"].(string); !strings.Contains(strings.Join(strings.Fields(expr), " "), want) {
				t.Errorf("%s: expr lacks %q: %q", name, want, expr)
			}
		}
		for name, want := range map[string]string{
			"WsgateCertificateExpiresSoon":  "less than 7 days",
			"WsgateHandshakeErrorRatioHigh": "More than 2.5% of",
		} {
			if s, _ := rules[name]["annotations"].(map[string]any)["summary"].(string); !strings.Contains(s, want) {
				t.Errorf("%s: summary %q lacks %q", name, s, want)
			}
		}
		if d, _ := rules["WsgateTunnelsAtCapacity"]["annotations"].(map[string]any)["description"].(string); !strings.Contains(d, "80% of its limit of 1000000") {
			t.Errorf("WsgateTunnelsAtCapacity: description %q lacks the limit", d)
		}
		// The stale-table alert tells its two causes apart by the value.
		stale, _ := rules["WsgateTableStale"]["annotations"].(map[string]any)["description"].(string)
		for value, want := range map[float64]string{0: "built no routing table", 7.5: "7.5s after"} {
			if out, _ := expandAlertTemplate(stale, map[string]string{"pod": "p"}, value); !strings.Contains(out, want) {
				t.Errorf("WsgateTableStale description for %v = %q, want %q in it", value, out, want)
			}
		}
	})

	t.Run("selector", func(t *testing.T) {
		t.Parallel()
		m := template(t, "wsgate", ns, `prometheusRule: {enabled: true, selector: 'job="gateways", service="wsgate-metrics"'}`)
		for name, r := range alertRules(t, m.one(t, "PrometheusRule")) {
			expr, _ := r["expr"].(string)
			for _, sel := range checkPromQL(t, name, expr, metrics) {
				if !slices.Contains(sel.labels, "job") || !slices.Contains(sel.labels, "service") {
					t.Errorf("%s: selector of %s matches %v, want job and service", name, sel.metric, sel.labels)
				}
			}
			if strings.Contains(expr, "wsgate-metrics\"") && !strings.Contains(expr, `service="wsgate-metrics"`) {
				t.Errorf("%s: default job left in %q", name, expr)
			}
		}
	})
}

func TestObservabilityLint(t *testing.T) {
	t.Parallel()
	for _, values := range []string{
		observabilityValues("monitoring"),
		`{dashboards: {enabled: true}, prometheusRule: {enabled: true}}`,
	} {
		out, stderr, err := runHelm(t, "", "lint", chartDir(), "--strict", "--namespace", "gateway", "-f", writeValues(t, values))
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint --strict with %s: %v\n%s%s", values, err, out, stderr)
		}
	}
}

func TestObservabilitySchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, values string
		want         []string
	}{
		{"misspelled dashboards key", `dashboards: {enable: true}`, []string{"/dashboards", "additional properties 'enable' not allowed"}},
		{"dashboard label not a string", `dashboards: {labels: {grafana_dashboard: 1}}`, []string{"/dashboards/labels/grafana_dashboard", "want string"}},
		{"bad dashboard namespace", `dashboards: {namespace: Monitoring}`, []string{"/dashboards/namespace"}},
		{"misspelled rule key", `prometheusRule: {label: {}}`, []string{"/prometheusRule", "additional properties 'label' not allowed"}},
		{"misspelled threshold", `prometheusRule: {thresholds: {certificateExpiry: 14}}`, []string{"/prometheusRule/thresholds", "additional properties 'certificateExpiry' not allowed"}},
		{"ratio above 1", `prometheusRule: {thresholds: {handshakeErrorRatio: 5}}`, []string{"/prometheusRule/thresholds/handshakeErrorRatio", "maximum"}},
		{"capacity ratio above 1", `prometheusRule: {thresholds: {tunnelsCapacityRatio: 90}}`, []string{"/prometheusRule/thresholds/tunnelsCapacityRatio", "maximum"}},
		{"zero days", `prometheusRule: {thresholds: {certificateExpiryDays: 0}}`, []string{"/prometheusRule/thresholds/certificateExpiryDays"}},
		{"seconds as a duration", `prometheusRule: {thresholds: {changeToPublishSeconds: 5s}}`, []string{"/prometheusRule/thresholds/changeToPublishSeconds", "want number"}},
		{"selector with braces", `prometheusRule: {selector: '{job="x"}'}`, []string{"/prometheusRule/selector"}},
		{"enabled not a boolean", `prometheusRule: {enabled: "true"}`, []string{"/prometheusRule/enabled", "want boolean"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := runHelm(t, "", "template", "wsgate", chartDir(), "-f", writeValues(t, tc.values))
			if err == nil {
				t.Fatalf("helm template accepted %s:\n%s", tc.values, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("error lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// installPrometheusRuleCRD installs the PrometheusRule CRD from the same
// pinned Prometheus operator module as the ServiceMonitor's.
func installPrometheusRuleCRD() error {
	return prometheusRules.install()
}

// The dashboard's ConfigMap and the PrometheusRule pass the real API
// server's strict validation (the PrometheusRule against the Prometheus
// operator's CRD), and helm install prints their notes.
func TestObservabilityApply(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	smErr := installServiceMonitorCRD()
	prErr := installPrometheusRuleCRD()

	t.Run("apply", func(t *testing.T) {
		t.Parallel()
		ns, grafanaNS := env.Namespace(t), env.Namespace(t)
		m := template(t, "wsgate-obs-"+ns, ns, observabilityValues(grafanaNS))
		if smErr != nil {
			t.Logf("ServiceMonitor left out: its CRD is not available (%v)", smErr)
			m = m.without("ServiceMonitor")
		}
		if prErr != nil {
			t.Logf("PrometheusRule left out: its CRD is not available (%v); the rest is applied", prErr)
			m = m.without("PrometheusRule")
		}
		apply(t, m)
		var cm corev1.ConfigMap
		want := m.one(t, "ConfigMap")
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(want), &cm); err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(cm.Data["wsgate.json"]), &d); err != nil || d["uid"] == nil {
			t.Errorf("stored dashboard does not parse: %v", err)
		}
		if prErr == nil {
			pr := &unstructured.Unstructured{}
			pr.SetGroupVersionKind(m.one(t, "PrometheusRule").GroupVersionKind())
			if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(m.one(t, "PrometheusRule")), pr); err != nil {
				t.Fatal(err)
			}
			if got := alertRules(t, pr); len(got) != len(wantAlerts) {
				t.Errorf("stored PrometheusRule has %d alerts, want %d", len(got), len(wantAlerts))
			}
		}
	})

	t.Run("helm install notes", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		release := "obs-" + ns
		args := []string{"install", release, chartDir(), "--namespace", ns, "--set", "dashboards.enabled=true"}
		if prErr == nil {
			args = append(args, "--set", "prometheusRule.enabled=true")
		}
		out, stderr, err := runHelm(t, env.Kubeconfig, args...)
		if err != nil {
			t.Fatalf("helm install: %v\n%s%s", err, out, stderr)
		}
		t.Cleanup(func() { _, _, _ = runHelm(t, env.Kubeconfig, "uninstall", release, "--namespace", ns) })
		fullname := release + "-wsgate"
		want := []string{
			`the dashboard "wsgate" is in the ConfigMap ` + ns + "/" + fullname + "-dashboard",
			"(labels: grafana_dashboard=1)",
			// Metrics are off: the notes say the dashboard has no data.
			"metrics.serviceMonitor.enabled=true",
		}
		if prErr == nil {
			want = append(want, "PrometheusRule "+ns+"/"+fullname, `job="`+fullname+`-metrics"`, "kubectl -n "+ns+" get prometheusrule "+fullname)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("helm install notes lack %q:\n%s", w, out)
			}
		}
	})
}

// promtool (Prometheus' own checker; Debian's prometheus package has it),
// when on PATH, checks the rendered rules and the dashboard's expressions,
// and evaluates each alert's expression on sample series.
func TestObservabilityPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skipf("promtool is not on PATH (apt-get install prometheus brings it): %v", err)
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	writeJSON := func(name string, v any) {
		t.Helper()
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The default values: maxTunnels 9000 and the default thresholds.
	const release = "wsgate"
	pr := template(t, release, "gateway", `prometheusRule: {enabled: true}`).one(t, "PrometheusRule")
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	writeJSON("rules.json", map[string]any{"groups": groups})
	run("check", "rules", "rules.json")

	// The dashboard's expressions as recording rules, the Grafana
	// variables replaced by what they stand for.
	var records []any
	walkJSON("panels", dashboard(t)["panels"], func(_ string, obj map[string]any) {
		if e, ok := obj["expr"].(string); ok {
			e = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h").Replace(e)
			records = append(records, map[string]any{"record": fmt.Sprintf("dashboard:panel_%d", len(records)), "expr": e})
		}
	})
	writeJSON("dashboard.json", map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": records}}})
	run("check", "rules", "dashboard.json")

	// Each alert's expression (its for: aside), on series of this
	// release's job and of another one, which must not count.
	exprs := map[string]string{}
	for name, r := range alertRules(t, pr) {
		exprs[name], _ = r["expr"].(string)
	}
	job := release + "-metrics"
	series := func(metric, labels, values string) map[string]any {
		return map[string]any{"series": fmt.Sprintf("%s{job=%q,%s}", metric, job, labels), "values": values}
	}
	other := func(metric, labels, values string) map[string]any {
		return map[string]any{"series": fmt.Sprintf("%s{job=\"other\",%s}", metric, labels), "values": values}
	}
	sample := func(labels string) map[string]any { return map[string]any{"labels": labels, "value": 1} }
	// firing evaluates the alert's expression at 15m: which series fire.
	firing := func(alert string, in []any, want ...any) map[string]any {
		if want == nil {
			want = []any{}
		}
		return map[string]any{
			"interval":     "1m",
			"input_series": in,
			"promql_expr_test": []any{map[string]any{
				"expr": "(" + exprs[alert] + ") * 0 + 1", "eval_time": "15m", "exp_samples": want,
			}},
		}
	}
	a, b, c := `pod="a",instance="a:9090"`, `pod="b",instance="b:9090"`, `pod="c",instance="c:9090"`
	day := 86400
	tests := []any{
		// time() is 900 at 15m: 10 days left fires, 30 days does not.
		firing("WsgateCertificateExpiresSoon", []any{
			series("wsgate_certificate_expiry_timestamp_seconds", a+`,namespace="games",secret="soon"`, fmt.Sprintf("%dx20", 10*day)),
			series("wsgate_certificate_expiry_timestamp_seconds", b+`,namespace="games",secret="soon"`, fmt.Sprintf("%dx20", 10*day)),
			series("wsgate_certificate_expiry_timestamp_seconds", a+`,namespace="games",secret="later"`, fmt.Sprintf("%dx20", 30*day)),
			other("wsgate_certificate_expiry_timestamp_seconds", a+`,namespace="games",secret="x"`, "0x20"),
		}, sample(`{namespace="games",secret="soon"}`)),
		// 10% of the handshakes are 503.
		firing("WsgateHandshakeErrorRatioHigh", []any{
			series("wsgate_handshakes_total", a+`,namespace="games",route="r",code="101"`, "0+90x20"),
			series("wsgate_handshakes_total", a+`,namespace="games",route="r",code="503"`, "0+10x20"),
			other("wsgate_handshakes_total", a+`,namespace="games",route="r",code="101"`, "0+1000x20"),
		}, sample(`{}`)),
		// 1% are 502: below the 5%.
		firing("WsgateHandshakeErrorRatioHigh", []any{
			series("wsgate_handshakes_total", a+`,namespace="games",route="r",code="101"`, "0+99x20"),
			series("wsgate_handshakes_total", a+`,namespace="games",route="r",code="502"`, "0+1x20"),
			other("wsgate_handshakes_total", a+`,namespace="games",route="r",code="503"`, "0+1000x20"),
		}),
		firing("WsgateTableBuildFailing", []any{
			series("wsgate_table_build_errors_total", a, "0x10 1x10"),
			series("wsgate_table_build_errors_total", b, "0x20"),
			other("wsgate_table_build_errors_total", c, "0+1x20"),
		}, sample(`{job="`+job+`",pod="a",instance="a:9090"}`)),
		// a: no table; b: quick publication; c: slow publication.
		firing("WsgateTableStale", []any{
			series("wsgate_table_generation", a, "0x20"),
			series("wsgate_table_generation", b, "1+1x20"),
			series("wsgate_table_generation", c, "1+1x20"),
			series("wsgate_table_change_to_publish_seconds_bucket", b+`,le="0.008"`, "0+1x20"),
			series("wsgate_table_change_to_publish_seconds_bucket", b+`,le="+Inf"`, "0+1x20"),
			series("wsgate_table_change_to_publish_seconds_bucket", c+`,le="4.096"`, "0x20"),
			series("wsgate_table_change_to_publish_seconds_bucket", c+`,le="8.192"`, "0+1x20"),
			series("wsgate_table_change_to_publish_seconds_bucket", c+`,le="+Inf"`, "0+1x20"),
			other("wsgate_table_generation", `pod="d",instance="d:9090"`, "0x20"),
		}, sample(`{pod="a",instance="a:9090"}`), sample(`{pod="c",instance="c:9090"}`)),
		firing("WsgateNoLeader", []any{
			series("leader_election_master_status", a+`,name="wsgate"`, "0x20"),
			series("leader_election_master_status", b+`,name="wsgate"`, "0x20"),
			other("leader_election_master_status", c+`,name="other"`, "1x20"),
		}, sample(`{}`)),
		firing("WsgateNoLeader", []any{
			series("leader_election_master_status", a+`,name="wsgate"`, "0x20"),
			series("leader_election_master_status", b+`,name="wsgate"`, "1x20"),
		}),
		// a: 5000 + 4000 of 9000 (above 90%); b: 8000 (below).
		firing("WsgateTunnelsAtCapacity", []any{
			series("wsgate_tunnels_active", a+`,namespace="games",route="r1"`, "5000x20"),
			series("wsgate_tunnels_active", a+`,namespace="games",route="r2"`, "4000x20"),
			series("wsgate_tunnels_active", b+`,namespace="games",route="r1"`, "8000x20"),
			other("wsgate_tunnels_active", c+`,namespace="games",route="r1"`, "9000x20"),
		}, sample(`{pod="a",instance="a:9090"}`)),
	}
	writeJSON("tests.json", map[string]any{"rule_files": []string{"rules.json"}, "evaluation_interval": "1m", "tests": tests})
	run("test", "rules", "tests.json")
}
