package builder

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/wsgate/wsgate/routing"
)

func TestZZPhases(t *testing.T) {
	in, _ := benchInput(false)
	runtime.GC()
	var d [6]time.Duration
	const n = 200
	for range n {
		t0 := cpuNow()
		cands := make([]*candidate, 0, len(in.Routes))
		for _, wr := range in.Routes {
			cands = append(cands, compile(wr, ""))
		}
		t1 := cpuNow()
		slices.SortFunc(cands, olderFirst)
		res := &Result{Routes: make(map[routing.RouteKey]RouteStatus, len(cands))}
		accepted := resolveClaims(cands, res.Routes)
		t2 := cpuNow()
		idx := newPodIndex(in.Pods, accepted)
		t3 := cpuNow()
		routes := make([]*routing.Route, 0, len(accepted))
		var scratch endpointScratch
		for _, c := range accepted {
			st := res.Routes[c.key]
			c.route.Backends, st.Endpoints = idx.endpoints(c, &scratch)
			res.Routes[c.key] = st
			routes = append(routes, c.route)
		}
		t4 := cpuNow()
		routing.New(0, time.Time{}, routes)
		t5 := cpuNow()
		d[0] += t1 - t0
		d[1] += t2 - t1
		d[2] += t3 - t2
		d[3] += t4 - t3
		d[4] += t5 - t4
	}
	t.Logf("compile %v sort+claims %v index %v endpoints %v routing.New %v", d[0]/n, d[1]/n, d[2]/n, d[3]/n, d[4]/n)
}
