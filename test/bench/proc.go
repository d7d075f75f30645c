package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a re-executed copy of this program.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startChild runs this program with args and returns its first line of
// output.
func startChild(ctx context.Context, name string, args ...string) (*child, string, error) {
	return startChildEnv(ctx, name, nil, args...)
}

// startChildEnv is startChild with env (nil: none) added to this
// process's environment.
func startChildEnv(ctx context.Context, name string, env []string, args ...string) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(self, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(ch.done) }()
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(line)
	}()
	select {
	case line := <-lines:
		if line == "" {
			ch.stop()
			return nil, "", fmt.Errorf("%s child exited before it was ready", name)
		}
		return ch, line, nil
	case <-time.After(20 * time.Second):
		ch.stop()
		return nil, "", fmt.Errorf("%s child not ready after 20s", name)
	case <-ctx.Done():
		ch.stop()
		return nil, "", ctx.Err()
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to end (SIGTERM) and kills it after 10s.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// external is a proxy run from its own binary (nginx, haproxy), in a
// process group of its own so that its workers are stopped with it.
type external struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startExternal runs bin with args in env (nil: the benchmark's), its
// output going to logPath.
func startExternal(logPath string, env []string, bin string, args ...string) (*external, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, err
	}
	e := &external{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(e.done) }()
	return e, nil
}

func (e *external) pid() int { return e.cmd.Process.Pid }

// exited reports whether the main process has ended.
func (e *external) exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// logTail is the end of the process's output, for error messages.
func (e *external) logTail() string {
	b, _ := os.ReadFile(e.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// stop sends SIGTERM to the main process, waits up to 10s, then kills
// what is left of its process group (only processes it started).
func (e *external) stop() {
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

// waitListening waits until addr accepts connections, the process ends or
// 10s pass.
func waitListening(ctx context.Context, addr string, alive func() bool) error {
	limit := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if !alive() {
			return errors.New("the process exited")
		}
		if time.Now().After(limit) {
			return fmt.Errorf("%s not listening after 10s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const clockTicks = 100

// procCPU returns the CPU time (user + system) of the processes, in
// seconds.
func procCPU(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// Fields after the command name, which is in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: short", pid)
		}
		// f[0] is field 3 (state): utime is field 14, stime 15.
		for _, s := range f[11:13] {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, err
			}
			ticks += v
		}
	}
	return float64(ticks) / clockTicks, nil
}

// procRSS returns the summed resident set size of the processes, in
// bytes.
func procRSS(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		found := false
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return 0, err
				}
				sum += kb << 10
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
		}
	}
	return sum, nil
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// hostCPU returns the machine's busy CPU time (user, nice, system, irq,
// softirq) and the time stolen by the hypervisor, in seconds, from
// /proc/stat.
func hostCPU() (busy, steal float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, errors.New("/proc/stat: no cpu line")
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	// user nice system idle iowait irq softirq steal
	busyTicks := v[0] + v[1] + v[2] + v[5] + v[6]
	return float64(busyTicks) / clockTicks, float64(v[7]) / clockTicks, nil
}

// noiseMeter measures the CPU that processes other than the benchmark's
// used while a row ran: other work on a shared machine.
type noiseMeter struct {
	ours         []int
	busy0, steal float64
	ours0        float64
	start        time.Time
}

func startNoise(ours []int) *noiseMeter {
	m := &noiseMeter{ours: ours, start: time.Now()}
	m.busy0, m.steal, _ = hostCPU()
	m.ours0, _ = procCPU(ours)
	return m
}

// stop returns the other processes' CPU and the stolen time, each as a
// share of one core over the row.
func (m *noiseMeter) stop() (other, steal float64) {
	busy, st, err := hostCPU()
	ours, err2 := procCPU(m.ours)
	secs := time.Since(m.start).Seconds()
	if err != nil || err2 != nil || secs <= 0 {
		return -1, -1
	}
	return max(0, (busy-m.busy0)-(ours-m.ours0)) / secs, (st - m.steal) / secs
}
