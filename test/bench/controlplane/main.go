// Command controlplane measures wsgate's control plane on the local API
// server: controller memory per cached pod and the routing-table rebuild
// time at many pods, and how long a pod takes from Ready to its first
// accepted websocket upgrade while other pods churn.
//
//	go run ./test/bench/controlplane -pods 10000 -churn 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/controllers"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

func main() {
	pods := flag.Int("pods", 10000, "pods to create for the memory and rebuild rows")
	routes := flag.Int("routes", 1000, "routes the pods are spread over")
	churn := flag.Int("churn", 1000, "pods whose readiness flips during the Ready-to-upgrade row")
	samples := flag.Int("samples", 100, "pods measured from Ready to first upgrade")
	out := flag.String("out", "docs/benchmarks.md", "the document whose control-plane part the results replace (the rest is kept); - for none")
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	start := time.Now()
	res := &results{pods: *pods, routes: *routes}
	if err := run(res, *churn, *samples); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
	if *out == "-" {
		return
	}
	doc, err := os.ReadFile(*out)
	if err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
	part := res.markdown(start, time.Since(start))
	if err := os.WriteFile(*out, []byte(benchdoc.WithControlPlane(string(doc), part)), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote the control plane's part of %s\n", *out)
}

// results are the figures of one run.
type results struct {
	pods, routes          int
	created               time.Duration
	heapBefore, heapAfter uint64
	builds                uint64
	buildP50, buildP99    time.Duration
	churn, changes        int
	ready                 []time.Duration // sorted
}

// markdown is the control plane's part of docs/benchmarks.md.
func (r *results) markdown(at time.Time, took time.Duration) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	perPod := float64(r.heapAfter-r.heapBefore) / float64(r.pods)
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	w("%s\n## Control plane\n\n", benchdoc.Begin)
	w("Written by `make bench` (`go run ./test/bench/controlplane`) on %s UTC, in %s, against a local API server (kube-apiserver and etcd built from source): %s pods over %s routes, created in %s. ",
		at.UTC().Format("2006-01-02 15:04"), took.Round(time.Second), benchdoc.Thousands(float64(r.pods)), benchdoc.Thousands(float64(r.routes)), r.created.Round(time.Second))
	w("The controller runs in the benchmark's process, with the cache options of `cmd/wsgate`.\n\n")
	w("| Figure | Value | Goal |\n| --- | ---: | --- |\n")
	w("| Controller heap per cached pod (heap in use after a GC, %d → %d MiB) | %.0f B (%.2f KiB) | ≤ 1.5 KiB |\n", r.heapBefore>>20, r.heapAfter>>20, perPod, perPod/1024)
	w("| Routing table rebuild at this size, p50 / p99 (%d builds; histogram bucket bounds) | %s / %s | |\n", r.builds, ms(r.buildP50), ms(r.buildP99))
	if n := len(r.ready); n > 0 {
		w("| Pod Ready → first accepted upgrade, p50 / p99 / max (%d pods, while %s other pods flip readiness: %s status writes) | %s / %s / %s | p99 ≤ 1 s |\n",
			n, benchdoc.Thousands(float64(r.churn)), benchdoc.Thousands(float64(r.changes)), ms(r.ready[n/2]), ms(r.ready[n*99/100]), ms(r.ready[n-1]))
	}
	w("\n**What limits them.** A cached pod is the compact record the pod informer's transform keeps (identity, labels with shared keys, addresses and named ports, or why it is skipped) plus the informer's store and index entries. ")
	w("A rebuild walks every route's selector over the pods of its namespace and publishes a new table; under churn the builds queue behind one another, each waiting a short holdoff to take in a burst of changes. ")
	w("From Ready to the first upgrade, a pod waits for its status write to reach the API server, the watch to deliver it, the holdoff, a rebuild and the publication; the client then needs one handshake.\n")
	w("%s\n", benchdoc.End)
	return b.String()
}

func heapInUse() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func run(res *results, nChurn, nSamples int) error {
	nPods, nRoutes := res.pods, res.routes
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	// A client that is not rate-limited, to create pods quickly.
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: controllers.CacheOptions(false),
	})
	if err != nil {
		return err
	}
	tables := routing.NewPublisher()
	tb := &controllers.TableBuilder{Cache: mgr.GetCache(), Publisher: tables, Log: logr.Discard(), Metrics: controllers.NewTableMetrics(reg)}
	if err := mgr.Add(tb); err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	for !tables.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	const ns = "scale"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	// The routes have no hostnames: the namespace needs the catch-all.
	if err := c.Create(ctx, &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec:       wsgatev1alpha1.WsGrantSpec{Namespaces: []wsgatev1alpha1.GrantedNamespace{ns}, CatchAll: true},
	}); err != nil {
		return err
	}
	for i := range nRoutes {
		r := &wsgatev1alpha1.WsRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("route-%d", i)},
			Spec: wsgatev1alpha1.WsRouteSpec{
				PathPrefix: fmt.Sprintf("/r%d", i),
				Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("route-%d", i)}},
				Port:       intstr.FromString("ws"),
			},
		}
		if err := c.Create(ctx, r); err != nil {
			return err
		}
	}
	before := heapInUse()
	start := time.Now()
	if err := createPods(ctx, c, ns, nPods, nRoutes); err != nil {
		return err
	}
	created := time.Since(start)
	for tables.Load().Backends() < nPods {
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d pods reached the table", tables.Load().Backends(), nPods)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // let the cache settle
	after := heapInUse()
	res.created, res.heapBefore, res.heapAfter = created, before, after
	fmt.Printf("control plane on the local API server, %d pods over %d routes (created in %s)\n\n", nPods, nRoutes, created.Round(time.Second))
	fmt.Printf("controller heap per cached pod: %.0f B (%.2f KiB); heap %d -> %d MiB\n",
		float64(after-before)/float64(nPods), float64(after-before)/float64(nPods)/1024, before>>20, after>>20)
	p50, p99, count := histogram(reg, "wsgate_table_build_duration_seconds")
	res.builds, res.buildP50, res.buildP99 = count, p50, p99
	fmt.Printf("table rebuilds at this size: %d builds, p50 %s, p99 %s (bucket upper bounds)\n", count, p50, p99)

	return readyToUpgrade(ctx, c, tables, ns, nChurn, nSamples, res)
}

// createPods creates pods with IPs outside loopback-reachable use (they
// are never dialled in this row) in parallel.
func createPods(ctx context.Context, c client.Client, ns string, n, routes int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	jobs := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ip := fmt.Sprintf("127.%d.%d.%d", 100+i/62500, (i/250)%250, 1+i%250)
				if err := createPod(ctx, c, ns, fmt.Sprintf("pod-%05d", i), fmt.Sprintf("route-%d", i%routes), ip, 9000, true); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case jobs <- i:
		case err := <-errs:
			close(jobs)
			return err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func createPod(ctx context.Context, c client.Client, ns, name, app, ip string, port int32, ready bool) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.invalid/app:1",
			Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: port}},
			Env:   []corev1.EnvVar{{Name: "PADDING", Value: strings.Repeat("x", 512)}},
		}}},
	}
	if err := c.Create(ctx, p); err != nil {
		return err
	}
	return setReady(ctx, c, p, ip, ready)
}

func setReady(ctx context.Context, c client.Client, p *corev1.Pod, ip string, ready bool) error {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}},
	}
	return c.Status().Update(ctx, p)
}

// readyToUpgrade measures pod Ready -> first websocket handshake accepted
// through the gateway, while churn pods of another route flip readiness.
func readyToUpgrade(ctx context.Context, c client.Client, tables *routing.Publisher, ns string, nChurn, nSamples int, res *results) error {
	echo, err := echopod.Start("127.0.0.41:0")
	if err != nil {
		return err
	}
	defer echo.Close()
	port := netip.MustParseAddrPort(echo.Addr).Port()
	gw := proxy.New(tables, proxy.Options{Log: logr.Discard()})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = gw.Serve(l) }()
	defer func() { _ = gw.Shutdown(context.Background(), 0) }()

	target := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "measured"},
		Spec: wsgatev1alpha1.WsRouteSpec{
			PathPrefix: "/measured",
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": "measured"}},
			Port:       intstr.FromInt32(int32(port)),
		},
	}
	if err := c.Create(ctx, target); err != nil {
		return err
	}
	churners := make([]*corev1.Pod, nChurn)
	for i := range churners {
		p := &corev1.Pod{}
		if err := createPodInto(ctx, c, ns, fmt.Sprintf("churn-%04d", i), "churn", fmt.Sprintf("127.99.%d.%d", i/250, 1+i%250), p); err != nil {
			return err
		}
		churners[i] = p
	}
	stop := make(chan struct{})
	var churned sync.WaitGroup
	changes := 0
	churned.Add(1)
	go func() {
		defer churned.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := churners[i%len(churners)]
			if setReady(ctx, c, p, p.Status.PodIP, i/len(churners)%2 == 0) == nil {
				changes++
			}
		}
	}()

	// Each sample: one pod on the echo server's address; Ready; then
	// handshake until 101. The pod is deleted after, so the next one can
	// reuse the address.
	var lat []time.Duration
	for i := range nSamples {
		name := fmt.Sprintf("measured-%03d", i)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "measured"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
		}
		if err := c.Create(ctx, p); err != nil {
			return err
		}
		if err := setReady(ctx, c, p, "127.0.0.41", false); err != nil {
			return err
		}
		t0 := time.Now()
		if err := setReady(ctx, c, p, "127.0.0.41", true); err != nil {
			return err
		}
		for {
			if ok := upgrade(l.Addr().String(), "/measured/127.0.0.41/"); ok {
				break
			}
			if time.Since(t0) > 30*time.Second {
				return fmt.Errorf("pod %s not reachable 30s after Ready", name)
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
		if err := c.Delete(ctx, p); err != nil {
			return err
		}
		for {
			if r, ok := tables.Load().Route(routing.RouteKey{Namespace: ns, Name: "measured"}); ok && len(r.Backends) == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stop)
	churned.Wait()
	slices.Sort(lat)
	res.churn, res.changes, res.ready = nChurn, changes, lat
	fmt.Printf("pod Ready -> first accepted upgrade, %d pods, while %d other pods flip readiness (%d status writes): p50 %s, p99 %s, max %s\n",
		len(lat), nChurn, changes, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	return nil
}

func createPodInto(ctx context.Context, c client.Client, ns, name, app, ip string, p *corev1.Pod) error {
	*p = corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1", Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 9000}}}}},
	}
	if err := c.Create(ctx, p); err != nil {
		return err
	}
	return setReady(ctx, c, p, ip, true)
}

// upgrade reports whether a websocket handshake through the gateway
// gets 101.
func upgrade(gw, path string) bool {
	conn, err := net.DialTimeout("tcp", gw, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	buf := make([]byte, 12)
	n, _ := conn.Read(buf)
	return n == 12 && string(buf) == "HTTP/1.1 101"
}

// histogram returns approximate p50/p99 (bucket upper bounds) and the
// count of a registered histogram.
func histogram(reg *prometheus.Registry, name string) (time.Duration, time.Duration, uint64) {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		return quantile(h, 0.5), quantile(h, 0.99), h.GetSampleCount()
	}
	return 0, 0, 0
}

func quantile(h *dto.Histogram, q float64) time.Duration {
	want := uint64(q * float64(h.GetSampleCount()))
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() >= want {
			return time.Duration(b.GetUpperBound() * float64(time.Second))
		}
	}
	return 0
}
