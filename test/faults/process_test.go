package faults

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// wsgateProcess is the wsgate binary running against the test API server
// (see harness.StartWsgate), with a websocket client for its listener.
type wsgateProcess struct {
	*harness.Process
	wsClient
}

// startWsgate runs the binary named name with its metrics served over
// plain HTTP and extra flags, and waits up to a minute until /readyz
// answers 200. The process is killed when the test ends, if still running.
func startWsgate(t *testing.T, name string, extra ...string) *wsgateProcess {
	t.Helper()
	env.GrantEverything(t)
	p := harness.StartWsgate(t, wsgateBin.Path(t), harness.WsgateOptions{
		Name:         name,
		Kubeconfig:   env.Kubeconfig,
		Metrics:      true,
		Args:         extra,
		ReadyTimeout: 60 * time.Second,
	})
	return &wsgateProcess{Process: p, wsClient: wsClient{addr: p.Addr}}
}

// processStats are what the soak samples of a process.
type processStats struct {
	rssBytes   int64
	fds        int
	goroutines int
}

// stats reads the process's RSS and fds from /proc and its goroutines
// from its metrics endpoint (go_goroutines).
func (p *wsgateProcess) stats() (processStats, error) {
	pid := p.PID()
	var s processStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			s.rssBytes = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	body, err := p.Metrics()
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return s, err
			}
			s.goroutines = int(f)
		}
	}
	if s.goroutines == 0 {
		return s, errors.New("no go_goroutines in /metrics")
	}
	return s, nil
}

// leads reports whether the process says it holds the leader Lease
// (leader_election_master_status, the metric the chart's dashboard and
// alert read).
func (p *wsgateProcess) leads() (bool, error) {
	body, err := p.Metrics()
	if err != nil {
		return false, fmt.Errorf("%s: %w", p.Name, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") {
			f := strings.Fields(line)
			return f[len(f)-1] == "1", nil
		}
	}
	return false, nil
}
