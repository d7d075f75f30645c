package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// errNotRestartable is returned by the kill and start methods of an Env
// started without Options.Restartable.
var errNotRestartable = errors.New("testenv: the control plane was not started with Options.Restartable")

// fixDirs gives kube-apiserver a certificate folder and etcd a data folder
// of the Env's own. envtest keeps folders it did not create when a process
// stops, so a restart reuses the serving certificate (same CA), the port
// and the data; Stop removes them.
func (e *Env) fixDirs() error {
	certDir, err := os.MkdirTemp("", "wsgate-testenv-apiserver-")
	if err != nil {
		return err
	}
	e.dirs = append(e.dirs, certDir)
	dataDir, err := os.MkdirTemp("", "wsgate-testenv-etcd-")
	if err != nil {
		return err
	}
	e.dirs = append(e.dirs, dataDir)
	e.env.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	e.env.ControlPlane.Etcd = &envtest.Etcd{DataDir: dataDir}
	e.apiDir, e.etcdDir = certDir, dataDir
	return nil
}

func (e *Env) removeDirs() {
	for _, d := range e.dirs {
		_ = os.RemoveAll(d)
	}
	e.dirs = nil
}

func (e *Env) restartable() bool {
	return e.apiDir != ""
}

// KillAPIServer kills kube-apiserver with SIGKILL (a crash: a graceful
// termination waits for long-running requests, more than half a minute
// with watches open); etcd keeps running. It needs Options.Restartable.
func (e *Env) KillAPIServer() error {
	if !e.restartable() {
		return errNotRestartable
	}
	if err := killChild("kube-apiserver", e.apiDir); err != nil {
		return err
	}
	e.apiDown = true
	return stopKilled(e.env.ControlPlane.APIServer.Stop)
}

// StartAPIServer starts kube-apiserver again on the same port with the
// same certificates, and returns when its /healthz answers.
func (e *Env) StartAPIServer() error {
	if !e.restartable() {
		return errNotRestartable
	}
	if err := e.env.ControlPlane.APIServer.Start(); err != nil {
		return err
	}
	e.apiDown = false
	return nil
}

// KillEtcd kills etcd with SIGKILL; kube-apiserver keeps running. It needs
// Options.Restartable.
func (e *Env) KillEtcd() error {
	if !e.restartable() {
		return errNotRestartable
	}
	if err := killChild("etcd", e.etcdDir); err != nil {
		return err
	}
	e.etcdDown = true
	return stopKilled(e.env.ControlPlane.Etcd.Stop)
}

// stopKilled runs envtest's stop of a process that killChild killed.
// That stop signals the process unless envtest's waiter has seen it
// exit, which can happen a moment after the process is reaped: the
// signal then finds no process (ESRCH), and the stop is tried again
// until the waiter has caught up (at most 5 s).
func stopKilled(stop func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := stop()
		if err == nil || !errors.Is(err, syscall.ESRCH) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartEtcd starts etcd again on the same URL with the same data.
func (e *Env) StartEtcd() error {
	if !e.restartable() {
		return errNotRestartable
	}
	if err := e.env.ControlPlane.Etcd.Start(); err != nil {
		return err
	}
	e.etcdDown = false
	return nil
}

// Restore starts what KillAPIServer and KillEtcd left stopped (when a test
// failed half way) and waits up to a minute for the API server to answer,
// so that the next tests have a control plane.
func (e *Env) Restore() error {
	if e.etcdDown {
		if err := e.StartEtcd(); err != nil {
			return fmt.Errorf("restart etcd: %w", err)
		}
	}
	if e.apiDown {
		if err := e.StartAPIServer(); err != nil {
			return fmt.Errorf("restart kube-apiserver: %w", err)
		}
	}
	return e.WaitAPI(time.Minute)
}

// WaitAPI waits until the API server answers a read through Client.
func (e *Env) WaitAPI(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := e.Client.List(ctx, &corev1.NamespaceList{}, client.Limit(1))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server does not answer after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killChild kills the child process of this one named name whose
// arguments name dir (its --cert-dir or --data-dir: another Env's
// processes have the same name), and waits until it is gone (envtest
// reaps it).
func killChild(name, dir string) error {
	pid, err := childPID(name, dir)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s (%d): %w", name, pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (%d) still exists 10s after SIGKILL", name, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childPID finds the child process of this one named name with an
// argument that contains dir.
func childPID(name, dir string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if string(stat[open+1:end]) != name || len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process %s with %s", name, dir)
}
