// Package faults checks wsgate under live changes and faults, on the real
// local API server: unrelated changes drop nothing, revocations close
// exactly the revoked tunnels (and fast), an API server outage leaves the
// data plane serving, failing pods and abusive clients leak nothing and
// slow no one else down, a rolling restart of two replicas loses no
// client, and schema-valid but wrong routes explain themselves without
// disturbing the rest.
//
// Most tests run a gateway in this process, wired as cmd/wsgate wires it
// (see gateway); the rollout, soak and leader-election parts run the
// built binary.
//
// Network: loopback only. Echo pods listen on 127.0.5.x (tests on the
// in-process gateway) and 127.0.6.1-99 (fault, abuse, rollout and soak
// tests); pods that are only ever listed, never dialled, get
// 127.0.6.100-249. The in-process gateway's dialer refuses anything that
// is not loopback.
//
// The control plane is restartable (testenv.Options.Restartable): the
// outage test kills and restarts its kube-apiserver and etcd, which come
// back with the same CA on the same port, and clients reconnect.
//
// Settings: WSGATE_FAULTS_OUTAGE (how long the API server stays down,
// default 20s) and WSGATE_SOAK_DURATION (runs TestSoakKeepsResourcesFlat,
// which make soak does; skipped otherwise). With the race detector the
// message rate of the churn tests is halved (raceFactor).
package faults

import (
	"os"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// env is the control plane the tests use; the outage test stops and
// restarts parts of it.
var env *testenv.Env

// wsgateBin is the wsgate binary of the rollout, soak and
// leader-election tests, built on first use.
var wsgateBin harness.Binary

func TestMain(m *testing.M) {
	// One logger for the whole process (controller-runtime keeps the first
	// one): it writes into logs, which a failing test prints.
	ctrl.SetLogger(logs.Logger(0))
	code := testenv.Run(m, &env, testenv.Options{Restartable: true}, nil)
	wsgateBin.Remove()
	os.Exit(code)
}
