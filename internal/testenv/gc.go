package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GarbageCollectorReadyTimeout bounds how long StartGarbageCollector waits
// for the garbage collector to delete its probe object.
var GarbageCollectorReadyTimeout = 2 * time.Minute

// gcProcess is a running kube-controller-manager.
type gcProcess struct {
	cmd      *exec.Cmd
	log      string
	exited   chan struct{}
	err      error // set before exited is closed
	stopOnce sync.Once
}

// stop sends SIGTERM, then SIGKILL after a grace period, and waits for the
// process to exit.
func (p *gcProcess) stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// StartGarbageCollector runs kube-controller-manager (built beside the API
// server by hack/envtest.sh) with only its garbage collector, so that
// ownerReferences are acted on: dependents of a deleted owner are deleted
// (background and foreground propagation) or orphaned. It listens on no
// port, uses the administrator kubeconfig and writes its output to a file
// (see GarbageCollectorOutput). It runs until ctx ends or Stop.
//
// It returns once the garbage collector has deleted a probe ConfigMap whose
// owner was deleted, so it is working when StartGarbageCollector returns
// (a few seconds: it discovers every resource first). Resources added later
// (CRDs installed after this call) are picked up by its periodic discovery,
// within about 30 seconds.
func (e *Env) StartGarbageCollector(ctx context.Context) error {
	bin := filepath.Join(e.Assets, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		// Built on first use only: most suites do not need it.
		build := exec.CommandContext(ctx, "bash", filepath.Join(RepoRoot(), "hack", "envtest.sh"), "kube-controller-manager")
		build.Env = append(os.Environ(), "WSGATE_ENVTEST_DIR="+e.Assets)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build kube-controller-manager into %s with hack/envtest.sh: %w", e.Assets, err)
		}
	}
	logFile, err := os.CreateTemp("", "wsgate-kube-controller-manager-*.log")
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--kubeconfig="+e.Kubeconfig,
		"--controllers=garbagecollector",
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--cloud-provider=",
		"--secure-port=0",
		"--bind-address=127.0.0.1",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--v=2",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile

	e.gcMu.Lock()
	if e.stopping {
		e.gcMu.Unlock()
		_ = os.Remove(logFile.Name())
		return errors.New("garbage collector: the control plane is stopping")
	}
	if err := cmd.Start(); err != nil {
		e.gcMu.Unlock()
		_ = os.Remove(logFile.Name())
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	p := &gcProcess{cmd: cmd, log: logFile.Name(), exited: make(chan struct{})}
	e.gcProcs = append(e.gcProcs, p)
	e.gcLogs = append(e.gcLogs, p.log)
	e.gcMu.Unlock()

	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.stop()
		case <-p.exited:
		}
	}()

	if err := e.probeGarbageCollector(ctx, p); err != nil {
		p.stop()
		return fmt.Errorf("garbage collector: %w\nkube-controller-manager output (%s):\n%s", err, p.log, tail(p.log, 16<<10))
	}
	return nil
}

// probeGarbageCollector creates an owner and a dependent ConfigMap, deletes
// the owner and waits until the garbage collector has deleted the
// dependent.
func (e *Env) probeGarbageCollector(ctx context.Context, p *gcProcess) error {
	ctx, cancel := context.WithTimeout(ctx, GarbageCollectorReadyTimeout)
	defer cancel()
	const ns = metav1.NamespaceDefault
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "wsgate-gc-probe-owner-", Namespace: ns}}
	if err := e.Client.Create(ctx, owner); err != nil {
		return fmt.Errorf("create probe owner: %w", err)
	}
	dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "wsgate-gc-probe-dependent-",
		Namespace:    ns,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		}},
	}}
	if err := e.Client.Create(ctx, dependent); err != nil {
		_ = e.Client.Delete(context.Background(), owner)
		return fmt.Errorf("create probe dependent: %w", err)
	}
	if err := e.Client.Delete(ctx, owner); err != nil {
		_ = e.Client.Delete(context.Background(), dependent)
		return fmt.Errorf("delete probe owner: %w", err)
	}
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := e.Client.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-p.exited:
			_ = e.Client.Delete(context.Background(), dependent)
			return fmt.Errorf("kube-controller-manager exited: %w", p.err)
		case <-ctx.Done():
			_ = e.Client.Delete(context.Background(), dependent)
			return fmt.Errorf("probe ConfigMap %s/%s not deleted %v after its owner (last get: %w): %w",
				ns, dependent.Name, time.Since(start).Round(time.Millisecond), err, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// GarbageCollectorOutput returns the end of the output of the
// kube-controller-manager processes started by StartGarbageCollector, for
// a failing test to show. It is empty when none was started.
func (e *Env) GarbageCollectorOutput() string {
	e.gcMu.Lock()
	logs := append([]string(nil), e.gcLogs...)
	e.gcMu.Unlock()
	var b strings.Builder
	for _, l := range logs {
		fmt.Fprintf(&b, "==> %s <==\n%s\n", l, tail(l, 32<<10))
	}
	return b.String()
}

// stopGarbageCollectors stops the kube-controller-manager processes and
// removes their output files.
func (e *Env) stopGarbageCollectors() {
	e.gcMu.Lock()
	e.stopping = true
	procs, logs := e.gcProcs, e.gcLogs
	e.gcProcs, e.gcLogs = nil, nil
	e.gcMu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	for _, l := range logs {
		_ = os.Remove(l)
	}
}

// tail returns about the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	prefix := ""
	if st.Size() > n {
		if _, err := f.Seek(st.Size()-n, io.SeekStart); err != nil {
			return fmt.Sprintf("(%v)", err)
		}
		prefix = "[...]\n"
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return prefix + string(data)
}
