package testenv_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wsgate/wsgate/internal/testenv"
)

// TestRestartableControlPlane kills and restarts the kube-apiserver and
// etcd of a second, restartable control plane: it comes back with its
// data, and the client made before the restart (same CA, same port)
// reads it. The package's control plane is not restartable, and its
// processes (of the same names) are not touched.
func TestRestartableControlPlane(t *testing.T) {
	if err := env.KillAPIServer(); err == nil {
		t.Fatal("KillAPIServer of a control plane started without Options.Restartable succeeded")
	}
	e, err := testenv.StartWith(testenv.Options{Restartable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept-across-restarts"}}
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	stillThere := func(when string) {
		t.Helper()
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{}); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if err := env.WaitAPI(time.Second); err != nil {
			t.Fatalf("%s, the package's control plane: %v", when, err)
		}
	}

	if err := e.KillAPIServer(); err != nil {
		t.Fatalf("kill kube-apiserver: %v", err)
	}
	if err := e.WaitAPI(time.Second); err == nil {
		t.Fatal("the API server answers after it was killed")
	}
	if err := env.WaitAPI(time.Second); err != nil {
		t.Fatalf("the package's control plane: %v", err)
	}
	if err := e.StartAPIServer(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	if err := e.WaitAPI(time.Minute); err != nil {
		t.Fatal(err)
	}
	stillThere("after the API server restarted")

	// Restore starts what a test left down.
	if err := e.KillEtcd(); err != nil {
		t.Fatalf("kill etcd: %v", err)
	}
	if err := e.KillAPIServer(); err != nil {
		t.Fatalf("kill kube-apiserver: %v", err)
	}
	if err := e.Restore(); err != nil {
		t.Fatal(err)
	}
	stillThere("after Restore")
}
