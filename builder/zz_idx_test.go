package builder

import "testing"

func BenchmarkZZIndex(b *testing.B) {
	in, _ := benchInput(false)
	var cands []*candidate
	for _, wr := range in.Routes {
		cands = append(cands, compile(wr, ""))
	}
	b.ReportAllocs()
	for b.Loop() {
		newPodIndex(in.Pods, cands)
	}
}
