package xconnect

import (
	"slices"
	"testing"
)

func TestEnv(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=" + Setting}},
		{[]string{"GODEBUG=madvdontneed=1", "B=2"}, []string{"B=2", "GODEBUG=madvdontneed=1," + Setting}},
		{[]string{"GODEBUG="}, []string{"GODEBUG=" + Setting}},
	}
	for _, c := range cases {
		if got := Env(c.in); !slices.Equal(got, c.want) {
			t.Errorf("Env(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
