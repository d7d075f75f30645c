package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testenv"
)

// TestDemoPrintsAWorkingReadyLineAndCleansUp runs the demo as a user
// would, runs the commands it prints, and checks that Ctrl-C removes every
// process and file it started.
func TestDemoPrintsAWorkingReadyLineAndCleansUp(t *testing.T) {
	if _, err := testenv.Assets(); err != nil {
		t.Fatal(err)
	}
	root := testenv.RepoRoot()
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", bin, "./hack/demo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	demo := exec.Command(bin)
	demo.Dir = root
	var stderr strings.Builder
	demo.Stderr = &stderr
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() { _ = demo.Process.Kill() })

	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
		exited <- demo.Wait()
	}()
	var ready string
	var printed []string
	timeout := time.After(5 * time.Minute)
	for ready == "" || !strings.Contains(strings.Join(printed, "\n"), "Press Ctrl-C") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited before it was ready:\n%s", stderr.String())
			}
			if strings.HasPrefix(l, "wsgate demo ready ") {
				ready = l
			}
			printed = append(printed, l)
		case <-timeout:
			t.Fatalf("no ready line within 5 minutes:\n%s", stderr.String())
		}
	}
	fields := map[string]string{}
	for _, f := range strings.Fields(strings.TrimPrefix(ready, "wsgate demo ready ")) {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	for _, k := range []string{"gateway", "host", "prefix", "pods", "blocked", "ca", "kubeconfig"} {
		if fields[k] == "" {
			t.Fatalf("ready line %q lacks %s=", ready, k)
		}
	}
	state := filepath.Dir(fields["ca"])

	// Run the commands the demo prints for a human, as printed.
	var commands []string
	for _, l := range printed {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "wsgate demo ready") && (strings.HasPrefix(l, "go run") || strings.Contains(l, "kubectl")) {
			commands = append(commands, l)
		}
	}
	if len(commands) < 4 {
		t.Fatalf("expected the demo to print connect and kubectl commands, got %q", commands)
	}
	run := func(cmdline, stdin string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "bash", "-c", cmdline)
		c.Dir = root
		c.Stdin = strings.NewReader(stdin)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	pod, blocked := strings.Split(fields["pods"], ",")[0], fields["blocked"]
	for _, c := range commands {
		switch {
		case strings.Contains(c, "connect") && strings.Contains(c, "/"+pod+"/"):
			out, err := run(c, "hello from the demo test\n")
			if err != nil || !strings.Contains(out, "< hello from the demo test") {
				t.Errorf("%s:\n%s (%v)", c, out, err)
			}
		case strings.Contains(c, "connect") && strings.Contains(c, "/"+blocked+"/"):
			out, err := run(c, "")
			if err == nil || !strings.Contains(out, "404") {
				t.Errorf("the blocked pod must answer 404: %s:\n%s", c, out)
			}
		case strings.Contains(c, "get wsr"):
			out, err := run(c, "")
			if err != nil || !strings.Contains(out, "True") || !strings.Contains(out, fields["host"]) {
				t.Errorf("%s:\n%s (%v)", c, out, err)
			}
		}
	}

	// Ctrl-C stops everything (kube-apiserver, etcd, the gateway, the
	// echo pods: every process started under the demo), exits 0 and
	// removes the state folder.
	children := descendants(demo.Process.Pid)
	for _, want := range []string{"kube-apiserver", "etcd", "-role=echo"} {
		found := false
		for _, c := range children {
			found = found || strings.Contains(c.cmdline, want)
		}
		if !found {
			t.Errorf("no process of the demo runs %s: %v", want, children)
		}
	}
	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("demo exit after Ctrl-C: %v, want status 0\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("demo did not stop within a minute of Ctrl-C")
	}
	for _, c := range children {
		if c.running() {
			t.Errorf("process %d of the demo still runs after it exited: %s", c.pid, c.cmdline)
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state folder %s still exists after Ctrl-C", state)
	}
	// The gateway runs from the state folder, the echo pods from bin.
	for _, pattern := range []string{state, bin} {
		out, _ := exec.Command("pgrep", "-f", pattern).Output()
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Errorf("processes of the demo still run (%s): %s", pattern, s)
		}
	}
}

// process is one process found under /proc.
type process struct {
	pid     int
	started string // start time in clock ticks since boot, which tells a reused pid
	cmdline string
}

// running reports whether the process still runs (a zombie does not).
func (p process) running() bool {
	q, ok := readProcess(p.pid)
	return ok && q.started == p.started
}

// readProcess reads a process's parent, start time and command line.
func readProcess(pid int) (process, bool) {
	p, _, ok := readProcessParent(pid)
	return p, ok
}

func readProcessParent(pid int) (process, int, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return process{}, 0, false
	}
	// The fields after the command name, which is in parentheses:
	// state, ppid, ... starttime is the 20th of them.
	i := strings.LastIndexByte(string(stat), ')')
	fields := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return process{}, 0, false
	}
	ppid, _ := strconv.Atoi(fields[1])
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return process{pid: pid, started: fields[19], cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))}, ppid, true
}

// descendants returns the running processes under pid.
func descendants(pid int) []process {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]process{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ppid, ok := readProcessParent(n); ok {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []process
	for todo := []int{pid}; len(todo) > 0; {
		next := todo[0]
		todo = todo[1:]
		for _, c := range children[next] {
			out = append(out, c)
			todo = append(todo, c.pid)
		}
	}
	return out
}
