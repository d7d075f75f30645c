package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
)

const (
	namespace = "demo"
	prefix    = "/demo"
)

var (
	podIPs    = []string{"127.0.0.11", "127.0.0.12"}
	blockedIP = "127.0.0.13"
)

func runDemo(ctx context.Context, host, gateway string) (err error) {
	start := time.Now()
	ready := false
	defer func() {
		// Stopped by a signal before it was ready: what failed is what the
		// signal cut short, and everything is stopped by now.
		if err != nil && !ready && ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "wsgate demo: stopped before it was ready (%v)\n", err)
			err = nil
		}
	}()
	state, err := os.MkdirTemp("", "wsgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	step := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	// controller-runtime's own logs (the control plane's start and stop,
	// the clients) go to a file: without a logger it would print a
	// warning and a stack trace 30 s in.
	crLog, err := os.Create(filepath.Join(state, "controller-runtime.log"))
	if err != nil {
		return err
	}
	defer crLog.Close()
	crlog.SetLogger(funcr.New(func(prefix, args string) {
		fmt.Fprintln(crLog, time.Now().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{}))

	if os.Getenv(testenv.AssetsEnv) == "" {
		step("starting the local control plane (kube-apiserver and etcd; hack/envtest.sh builds them from source on first use, 5 to 10 minutes on 2 cores, and caches them)")
	} else {
		step("starting the local control plane (kube-apiserver and etcd from %s)", os.Getenv(testenv.AssetsEnv))
	}
	env, err := testenv.StartWith(testenv.Options{CertManager: true})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	kubeconfig := filepath.Join(state, "kubeconfig")
	if err := copyFile(env.Kubeconfig, kubeconfig); err != nil {
		return err
	}
	cmLog, err := os.Create(filepath.Join(state, "cert-manager.log"))
	if err != nil {
		return err
	}
	defer cmLog.Close()
	cmCtx, cmStop := context.WithCancel(logr.NewContext(ctx, funcr.New(func(prefix, args string) {
		fmt.Fprintln(cmLog, prefix, args)
	}, funcr.Options{})))
	defer cmStop()
	step("starting cert-manager's controllers")
	if err := testenv.StartCertManager(cmCtx, env.Config); err != nil {
		return err
	}

	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	step("issuing a demo CA with cert-manager")
	caPEM, err := demoCA(ctx, c)
	if err != nil {
		return err
	}
	caPath := filepath.Join(state, "ca.pem")
	if err := os.WriteFile(caPath, caPEM, 0o600); err != nil {
		return err
	}

	var procs processes
	// Children stop before the control plane does.
	defer func() { procs.stop() }()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	port, err := freePort(append(append([]string{}, podIPs...), blockedIP)...)
	if err != nil {
		return err
	}
	step("starting echo pods on %v and an unselected pod on %s, port %d", podIPs, blockedIP, port)
	pods := []struct {
		name, ip string
		labels   map[string]string
	}{
		{"echo-1", podIPs[0], map[string]string{"app": "echo"}},
		{"echo-2", podIPs[1], map[string]string{"app": "echo"}},
		{"not-selected", blockedIP, map[string]string{"app": "private"}},
	}
	for _, p := range pods {
		if err := procs.start(self, state, "-role=echo", "-listen="+net.JoinHostPort(p.ip, fmt.Sprint(port))); err != nil {
			return err
		}
		if err := createPod(ctx, c, p.name, p.ip, int32(port), p.labels); err != nil {
			return err
		}
	}

	step("granting %s to namespace %s (WsGrant demo)", host, namespace)
	grant := &wsgatev1alpha1.WsGrant{
		ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec: wsgatev1alpha1.WsGrantSpec{
			Namespaces: []wsgatev1alpha1.GrantedNamespace{namespace},
			Hostnames:  []wsgatev1alpha1.HostnamePattern{wsgatev1alpha1.HostnamePattern(host)},
		},
	}
	if err := c.Create(ctx, grant); err != nil {
		return fmt.Errorf("create WsGrant: %w", err)
	}
	route := &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "echo"},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:  []wsgatev1alpha1.Hostname{wsgatev1alpha1.Hostname(host)},
			PathPrefix: prefix,
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Port:       intstr.FromString("ws"),
			TLS: &wsgatev1alpha1.RouteTLS{
				SecretName: "echo-tls",
				IssuerRef:  &wsgatev1alpha1.IssuerReference{Name: "demo-ca", Kind: "Issuer"},
			},
		},
	}
	if err := c.Create(ctx, route); err != nil {
		return fmt.Errorf("create WsRoute: %w", err)
	}

	bin := gateway
	if bin == "" {
		step("building and starting the gateway")
		bin = filepath.Join(state, "wsgate")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/wsgate")
		build.Dir, build.Stdout, build.Stderr = testenv.RepoRoot(), os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build wsgate: %w", err)
		}
	} else {
		step("starting the gateway (%s)", bin)
	}
	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = freePort("127.0.0.1"); err != nil {
			return err
		}
	}
	wss := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := procs.start(bin, state,
		"--kubeconfig", kubeconfig,
		"--listen-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--tls-listen-address", wss,
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[3]), "--metrics-secure=false",
		"--admin-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[4]), "--debug-show-addresses",
		"--drain-timeout", "1s", "--shutdown-grace-period", "5s",
		"--http2",
	); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2]), time.Minute); err != nil {
		return fmt.Errorf("gateway: %w (its log is in %s)", err, state)
	}
	step("waiting for the route to be Ready (certificate issued, pods allowlisted)")
	if err := waitRouteReady(ctx, c, host, wss, caPEM); err != nil {
		return err
	}

	kubectl := filepath.Join(env.Assets, "kubectl")
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3])
	table := fmt.Sprintf("http://127.0.0.1:%d/debug/table", ports[4])
	ready = true
	fmt.Println(readyLine("https://"+wss, host, prefix, podIPs, blockedIP, caPath, kubeconfig))
	fmt.Printf(`
wsgate is serving wss://%[1]s%[2]s/<podIP>/ on %[3]s (ready in %.0fs). Try:

  # talk to a pod through the gateway (type lines; Ctrl-D ends)
  go run ./cmd/wsgate connect --ca %[5]s --host %[1]s wss://%[3]s%[2]s/%[6]s/

  # a pod the route does not select is not reachable: 404, nothing dialled
  go run ./cmd/wsgate connect --ca %[5]s --host %[1]s wss://%[3]s%[2]s/%[7]s/

  # look at the route and its certificate
  %[8]s --kubeconfig %[9]s get wsr,certificates,pods -n %[10]s -o wide
  %[8]s --kubeconfig %[9]s describe wsr echo -n %[10]s

  # take a pod out: its tunnels get Close 1008 at once
  %[8]s --kubeconfig %[9]s delete pod echo-1 -n %[10]s

  # what the gateway does: Prometheus metrics, and its routing table
  curl -s %[11]s | grep ^wsgate_
  curl -s %[12]s

Press Ctrl-C to stop; every process and file of the demo is removed.
`, host, prefix, wss, time.Since(start).Seconds(), caPath, podIPs[0], blockedIP, kubectl, kubeconfig, namespace, metrics, table)

	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the demo")
	return nil
}

// demoCA issues a CA with cert-manager (self-signed Issuer, CA
// Certificate, CA Issuer "demo-ca") and returns its certificate in PEM.
func demoCA(ctx context.Context, c client.Client) ([]byte, error) {
	objs := []client.Object{
		&cmapi.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "selfsigned"},
			Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
		},
		&cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "demo-ca"},
			Spec: cmapi.CertificateSpec{
				IsCA: true, CommonName: "wsgate demo CA", SecretName: "demo-ca",
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Name: "selfsigned", Kind: "Issuer"},
			},
		},
		&cmapi.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "demo-ca"},
			Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "demo-ca"}}},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var s corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "demo-ca"}, &s)
		if err == nil && len(s.Data[corev1.TLSCertKey]) > 0 {
			return s.Data[corev1.TLSCertKey], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the demo CA was not issued within a minute (last error: %w)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createPod creates a Pod object for an echo process and writes the
// status a kubelet would: its IP and Ready.
func createPod(ctx context.Context, c client.Client, name, ip string, port int32, labels map[string]string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "echo", Image: "wsgate-demo/echo",
			Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: port}},
		}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "echo", Image: "wsgate-demo/echo", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}},
	}
	if err := c.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("set status of pod %s: %w", name, err)
	}
	return nil
}

// waitRouteReady waits until the route is Ready and the gateway serves a
// certificate for host that the demo CA signed.
func waitRouteReady(ctx context.Context, c client.Client, host, wss string, caPEM []byte) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var r wsgatev1alpha1.WsRoute
		lastErr := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "echo"}, &r)
		if lastErr == nil {
			lastErr = fmt.Errorf("route not Ready: %+v", r.Status.Conditions)
			for _, cond := range r.Status.Conditions {
				if cond.Type == wsgatev1alpha1.ConditionReady && cond.Status == metav1.ConditionTrue {
					lastErr = tlsCheck(wss, host, pool)
				}
			}
		}
		if lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("route not serving after 2 minutes: %w", lastErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tlsCheck(addr, host string, pool *x509.CertPool) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: host, RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("TLS handshake with the gateway: %w", err)
	}
	return conn.Close()
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}
