package builder

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestZZCPU(t *testing.T) {
	in, _ := benchInput(false)
	runtime.GC()
	for range 20 {
		Build(in, Options{})
	}
	const n = 300
	c0, w0 := cpuNow(), time.Now()
	for range n {
		Build(in, Options{})
	}
	t.Logf("cpu %v/build, wall %v/build", (cpuNow()-c0)/n, time.Since(w0)/n)
}
