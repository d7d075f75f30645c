package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testcerts"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/routing"
)

// ---------------------------------------------------------------------------
// Churn: unrelated changes through the API server

// Kinds of change the churn makes, as reported.
const (
	chRouteCreated  = "route created"
	chRouteEdited   = "route edited"
	chRouteDeleted  = "route deleted"
	chPodAdded      = "pod added"
	chPodRelabelled = "pod relabelled"
	chPodUnready    = "pod made unready"
	chPodReady      = "pod made ready again"
	chPodRemoved    = "pod removed"
	chSecretCreated = "TLS Secret created"
	chSecretRenewed = "TLS Secret renewed"
)

// churnConfig says how much to change.
type churnConfig struct {
	// namespaces get one worker each; each worker owns its objects.
	namespaces []string
	// changes is the total number of API writes.
	changes int
	// pause between two changes of one worker (0: none).
	pause time.Duration
	// ipBase: worker w's pods get 127.0.6.(ipBase + 35w + k), k < 35;
	// these addresses are listed, never dialled.
	ipBase int
	// certs are the certificates each namespace's Secrets get, from
	// churnCerts.
	certs map[string][]testcerts.Leaf
}

// churnCerts issues the certificates of the churn's TLS Secrets, for
// hosts under <namespace>.example.com.
func churnCerts(t *testing.T, namespaces []string) map[string][]testcerts.Leaf {
	t.Helper()
	ca := testcerts.NewCA(t, "churn CA")
	out := map[string][]testcerts.Leaf{}
	for _, ns := range namespaces {
		for range 16 {
			out[ns] = append(out[ns], ca.Issue(t, time.Hour, "*."+ns+".example.com"))
		}
	}
	return out
}

// churnReport counts the changes made, by kind.
type churnReport struct {
	mu     sync.Mutex
	counts map[string]int
	errs   []error
	took   time.Duration
	// writes is the time spent in API calls.
	writes time.Duration
}

func (r *churnReport) count(kind string) {
	r.mu.Lock()
	r.counts[kind]++
	r.mu.Unlock()
}

func (r *churnReport) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// total is the number of changes made.
func (r *churnReport) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n
}

func (r *churnReport) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var kinds []string
	for k := range r.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	n := 0
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.counts[k]))
		n += r.counts[k]
	}
	mean := time.Duration(0)
	if n > 0 {
		mean = r.writes / time.Duration(n)
	}
	return fmt.Sprintf("%d changes in %s, %s per API call on average (%s)", n, r.took.Round(time.Millisecond), mean.Round(10*time.Microsecond), strings.Join(parts, ", "))
}

// check fails the test if a change failed.
func (r *churnReport) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Errorf("%d changes failed; first: %v", len(r.errs), r.errs[0])
	}
}

// churn runs the changes in the background and returns the report, which
// is complete once done is closed. The objects left at the end are
// deleted (not counted). ctx cancels.
func churn(ctx context.Context, cfg churnConfig) (report *churnReport, done <-chan struct{}) {
	report = &churnReport{counts: map[string]int{}}
	d := make(chan struct{})
	start := time.Now()
	var wg sync.WaitGroup
	per := cfg.changes / len(cfg.namespaces)
	for w, ns := range cfg.namespaces {
		n := per
		if w == 0 {
			n += cfg.changes - per*len(cfg.namespaces)
		}
		c := &churner{ns: ns, worker: w, cfg: cfg, report: report, leaves: cfg.certs[ns],
			rng: rand.New(rand.NewPCG(uint64(w+1), 42))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, n)
			c.cleanup()
		}()
	}
	go func() {
		wg.Wait()
		report.took = time.Since(start)
		close(d)
	}()
	return report, d
}

// churner makes changes in one namespace. It alone writes the objects it
// owns, so its writes do not conflict (routes are patched: the
// controller writes their status).
type churner struct {
	ns     string
	worker int
	cfg    churnConfig
	report *churnReport
	rng    *rand.Rand
	leaves []testcerts.Leaf

	routes  []*wsgatev1alpha1.WsRoute
	pods    []*corev1.Pod
	secrets []*corev1.Secret
	freeIPs []string
}

// apps are the labels the churn's routes select and its pods carry.
var churnApps = []string{"a0", "a1", "a2", "a3"}

func (c *churner) run(ctx context.Context, n int) {
	for k := range 35 {
		c.freeIPs = append(c.freeIPs, fmt.Sprintf("127.0.6.%d", c.cfg.ipBase+35*c.worker+k))
	}
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return
		}
		began := time.Now()
		kind, err := c.step(ctx)
		c.report.mu.Lock()
		c.report.writes += time.Since(began)
		c.report.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return // cut short, not failed
			}
			c.report.fail(err)
		} else {
			c.report.count(kind)
		}
		if c.cfg.pause > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.cfg.pause):
			}
		}
	}
}

// churnSerial numbers the churn's objects across bursts.
var churnSerial atomic.Int64

func (c *churner) name(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, churnSerial.Add(1))
}

func (c *churner) pick(xs []string) string { return xs[c.rng.IntN(len(xs))] }

// step makes one change, chosen at random among those that apply.
func (c *churner) step(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type op struct {
		weight int
		ok     bool
		do     func(context.Context) (string, error)
	}
	ops := []op{
		{8, len(c.routes) < 12, c.createRoute},
		{16, len(c.routes) > 0, c.editRoute},
		{7, len(c.routes) > 3, c.deleteRoute},
		{14, len(c.freeIPs) > 0, c.addPod},
		{14, len(c.pods) > 0, c.relabelPod},
		{14, len(c.pods) > 0, c.flipReadiness},
		{12, len(c.pods) > 8, c.removePod},
		{6, len(c.secrets) < 6, c.createSecret},
		{9, len(c.secrets) > 0, c.renewSecret},
	}
	sum := 0
	for _, o := range ops {
		if o.ok {
			sum += o.weight
		}
	}
	r := c.rng.IntN(sum)
	for _, o := range ops {
		if !o.ok {
			continue
		}
		if r < o.weight {
			return o.do(ctx)
		}
		r -= o.weight
	}
	panic("unreachable")
}

func (c *churner) createRoute(ctx context.Context) (string, error) {
	name := c.name("r")
	r := route{name: name, prefix: "/" + c.ns + "/" + name, app: c.pick(churnApps), port: intstr.FromString("ws")}
	if c.rng.IntN(3) == 0 {
		r.port = intstr.FromInt32(8080)
	}
	if len(c.secrets) > 0 && c.rng.IntN(2) == 0 {
		// A route on a host of its own, with a certificate.
		r.hosts = []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname(name + "." + c.ns + ".example.com")}
		r.secret = c.secrets[c.rng.IntN(len(c.secrets))].Name
	}
	obj := r.object(c.ns)
	if err := env.Client.Create(ctx, obj); err != nil {
		return "", fmt.Errorf("create route %s/%s: %w", c.ns, name, err)
	}
	c.routes = append(c.routes, obj)
	return chRouteCreated, nil
}

func (c *churner) editRoute(ctx context.Context) (string, error) {
	obj := c.routes[c.rng.IntN(len(c.routes))]
	patch := client.MergeFrom(obj.DeepCopy())
	switch c.rng.IntN(5) {
	case 0:
		obj.Spec.Selector = metav1.LabelSelector{MatchLabels: map[string]string{"app": c.pick(churnApps)}}
	case 1:
		if len(obj.Spec.AllowedOrigins) == 0 {
			obj.Spec.AllowedOrigins = []wsgatev1alpha1.Origin{wsgatev1alpha1.Origin("https://" + c.ns + ".example.com")}
		} else {
			obj.Spec.AllowedOrigins = nil
		}
	case 2:
		obj.Spec.Timeouts = &wsgatev1alpha1.Timeouts{Idle: &metav1.Duration{Duration: time.Duration(1+c.rng.IntN(60)) * time.Minute}}
	case 3:
		if obj.Spec.TLS == nil {
			obj.Spec.PathPrefix = "/" + c.ns + "-" + c.name("p")
		} else {
			obj.Spec.TLS.SecretName = c.secrets[c.rng.IntN(len(c.secrets))].Name
		}
	case 4:
		if obj.Spec.RevokePolicy == wsgatev1alpha1.RevokeDrain {
			obj.Spec.RevokePolicy = wsgatev1alpha1.RevokeClose
		} else {
			obj.Spec.RevokePolicy = wsgatev1alpha1.RevokeDrain
		}
	}
	if err := env.Client.Patch(ctx, obj, patch); err != nil {
		return "", fmt.Errorf("edit route %s/%s: %w", c.ns, obj.Name, err)
	}
	return chRouteEdited, nil
}

func (c *churner) deleteRoute(ctx context.Context) (string, error) {
	i := c.rng.IntN(len(c.routes))
	obj := c.routes[i]
	if err := env.Client.Delete(ctx, obj); err != nil {
		return "", fmt.Errorf("delete route %s/%s: %w", c.ns, obj.Name, err)
	}
	c.routes = slices.Delete(c.routes, i, i+1)
	return chRouteDeleted, nil
}

func (c *churner) addPod(ctx context.Context) (string, error) {
	ip := c.freeIPs[0]
	obj, err := createPodE(ctx, c.ns, pod{name: c.name("pod"), ip: ip, labels: map[string]string{"app": c.pick(churnApps)}, port: 8080, ready: c.rng.IntN(5) > 0})
	if err != nil {
		return "", err
	}
	c.freeIPs = c.freeIPs[1:]
	c.pods = append(c.pods, obj)
	// Creating a pod is two writes (the object, then its status, as a
	// kubelet would): it counts as one change.
	return chPodAdded, nil
}

func (c *churner) relabelPod(ctx context.Context) (string, error) {
	obj := c.pods[c.rng.IntN(len(c.pods))]
	if err := relabelE(ctx, obj, map[string]string{"app": c.pick(churnApps)}); err != nil {
		return "", err
	}
	return chPodRelabelled, nil
}

func (c *churner) flipReadiness(ctx context.Context) (string, error) {
	obj := c.pods[c.rng.IntN(len(c.pods))]
	ready := false
	for _, cond := range obj.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	if err := setPodStatusE(ctx, obj, obj.Status.PodIP, !ready); err != nil {
		return "", err
	}
	if ready {
		return chPodUnready, nil
	}
	return chPodReady, nil
}

func (c *churner) removePod(ctx context.Context) (string, error) {
	i := c.rng.IntN(len(c.pods))
	obj := c.pods[i]
	if err := env.Client.Delete(ctx, obj); err != nil {
		return "", fmt.Errorf("delete pod %s/%s: %w", c.ns, obj.Name, err)
	}
	c.freeIPs = append(c.freeIPs, obj.Status.PodIP)
	c.pods = slices.Delete(c.pods, i, i+1)
	return chPodRemoved, nil
}

func (c *churner) leaf() testcerts.Leaf { return c.leaves[c.rng.IntN(len(c.leaves))] }

func (c *churner) createSecret(ctx context.Context) (string, error) {
	obj := harness.TLSSecret(c.ns, c.name("cert"), c.leaf())
	if err := env.Client.Create(ctx, obj); err != nil {
		return "", fmt.Errorf("create secret %s/%s: %w", c.ns, obj.Name, err)
	}
	c.secrets = append(c.secrets, obj)
	return chSecretCreated, nil
}

func (c *churner) renewSecret(ctx context.Context) (string, error) {
	obj := c.secrets[c.rng.IntN(len(c.secrets))]
	l := c.leaf()
	obj.Data = map[string][]byte{corev1.TLSCertKey: l.CertPEM, corev1.TLSPrivateKeyKey: l.KeyPEM}
	if err := env.Client.Update(ctx, obj); err != nil {
		return "", fmt.Errorf("renew secret %s/%s: %w", c.ns, obj.Name, err)
	}
	return chSecretRenewed, nil
}

// cleanup deletes what the churner left (not counted as changes).
func (c *churner) cleanup() {
	for _, r := range c.routes {
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, r)
	}
	for _, p := range c.pods {
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, p)
	}
	for _, s := range c.secrets {
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, s)
	}
}

// ---------------------------------------------------------------------------
// Table generations

// generations records the routing tables a gateway publishes.
type generations struct {
	mu          sync.Mutex
	first, last uint64
	seen        int
	stop        func()
}

// watchGenerations counts the tables published from now on (each
// notification reads the current table; notifications coalesce, so seen
// may be lower than last-first).
func watchGenerations(p *routing.Publisher) *generations {
	g := &generations{first: p.Load().Generation()}
	g.last = g.first
	ch, cancel := p.Subscribe()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-ch:
			}
			gen := p.Load().Generation()
			g.mu.Lock()
			g.seen++
			g.last = gen
			g.mu.Unlock()
		}
	}()
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			close(done)
			<-stopped
		})
	}
	return g
}

func (g *generations) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fmt.Sprintf("tables %d to %d (%d builds, %d notifications seen)", g.first, g.last, g.last-g.first, g.seen)
}
