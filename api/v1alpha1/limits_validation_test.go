package v1alpha1_test

import (
	"strings"
	"testing"
	"time"
)

func TestInvalidLimitsAreRefusedByKubectlApply(t *testing.T) {
	limits := func(fields string) string { return valid + "limits:\n" + fields }
	cases := []struct {
		name, spec, field, message string
	}{
		{"limits that limit nothing", valid + "limits: {}\n",
			"spec.limits", "set handshakesPerMinute, maxTunnelsPerClient or both"},
		{"a burst alone", limits("  handshakeBurst: 5\n"),
			"spec.limits", "handshakeBurst needs handshakesPerMinute"},
		{"a burst with a tunnel cap but no rate", limits("  handshakeBurst: 5\n  maxTunnelsPerClient: 2\n"),
			"spec.limits", "handshakeBurst needs handshakesPerMinute"},

		{"zero handshakes a minute", limits("  handshakesPerMinute: 0\n"),
			"spec.limits.handshakesPerMinute", "should be greater than or equal to 1"},
		{"a negative number of handshakes a minute", limits("  handshakesPerMinute: -60\n"),
			"spec.limits.handshakesPerMinute", "should be greater than or equal to 1"},
		{"more than 10,000 handshakes a second", limits("  handshakesPerMinute: 600001\n"),
			"spec.limits.handshakesPerMinute", "should be less than or equal to 600000"},
		{"handshakes a minute beyond an int32", limits("  handshakesPerMinute: 4294967356\n"),
			"spec.limits.handshakesPerMinute", "should be less than or equal to 600000"},
		{"a fractional number of handshakes a minute", limits("  handshakesPerMinute: 1.5\n"),
			"spec.limits.handshakesPerMinute", "integer"},

		{"a burst of zero", limits("  handshakesPerMinute: 60\n  handshakeBurst: 0\n"),
			"spec.limits.handshakeBurst", "should be greater than or equal to 1"},
		{"a negative burst", limits("  handshakesPerMinute: 60\n  handshakeBurst: -1\n"),
			"spec.limits.handshakeBurst", "should be greater than or equal to 1"},
		{"a burst above 100,000", limits("  handshakesPerMinute: 60\n  handshakeBurst: 100001\n"),
			"spec.limits.handshakeBurst", "should be less than or equal to 100000"},

		{"a tunnel cap of zero", limits("  maxTunnelsPerClient: 0\n"),
			"spec.limits.maxTunnelsPerClient", "should be greater than or equal to 1"},
		{"a negative tunnel cap", limits("  maxTunnelsPerClient: -1\n"),
			"spec.limits.maxTunnelsPerClient", "should be greater than or equal to 1"},
		{"a tunnel cap above a million", limits("  maxTunnelsPerClient: 1000001\n"),
			"spec.limits.maxTunnelsPerClient", "should be less than or equal to 1000000"},

		{"a misspelt limit", limits("  maxTunnels: 1\n"),
			"spec.limits.maxTunnels", "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refusedRoute(t, tc.spec, tc.field, tc.message)
		})
	}
}

// TestValidLimitsAreAccepted: each limit alone, at its bounds, and all
// together are stored as written; the burst is left unset when not
// given (the gateway computes its default).
func TestValidLimitsAreAccepted(t *testing.T) {
	type want struct{ perMinute, burst, tunnels int32 } // 0: unset
	cases := []struct {
		name, limits string
		want         want
	}{
		{"a rate alone", "handshakesPerMinute: 60\n", want{perMinute: 60}},
		{"the lowest rate", "handshakesPerMinute: 1\n", want{perMinute: 1}},
		{"the highest rate", "handshakesPerMinute: 600000\n", want{perMinute: 600000}},
		{"a rate and its burst", "handshakesPerMinute: 60\nhandshakeBurst: 3\n", want{perMinute: 60, burst: 3}},
		{"the lowest burst", "handshakesPerMinute: 60\nhandshakeBurst: 1\n", want{perMinute: 60, burst: 1}},
		{"the highest burst", "handshakesPerMinute: 60\nhandshakeBurst: 100000\n", want{perMinute: 60, burst: 100000}},
		{"a tunnel cap alone", "maxTunnelsPerClient: 5\n", want{tunnels: 5}},
		{"the lowest tunnel cap", "maxTunnelsPerClient: 1\n", want{tunnels: 1}},
		{"the highest tunnel cap", "maxTunnelsPerClient: 1000000\n", want{tunnels: 1000000}},
		{"a rate and a tunnel cap", "handshakesPerMinute: 120\nmaxTunnelsPerClient: 4\n", want{perMinute: 120, tunnels: 4}},
		{"all three", "handshakesPerMinute: 30\nhandshakeBurst: 10\nmaxTunnelsPerClient: 2\n", want{perMinute: 30, burst: 10, tunnels: 2}},
	}
	deref := func(p *int32) int32 {
		if p == nil {
			return 0
		}
		return *p
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			var spec strings.Builder
			spec.WriteString(valid + "limits:\n")
			for _, line := range strings.SplitAfter(tc.limits, "\n") {
				if line != "" {
					spec.WriteString("  " + line)
				}
			}
			out := apply(t, ns, route("limited", spec.String()))
			if !strings.Contains(out, "wsroute.wsgate.io/limited created") {
				t.Errorf("kubectl apply output = %q, want the route created", out)
			}
			l := get(t, ns, "limited").Spec.Limits
			if l == nil {
				t.Fatal("spec.limits was not stored")
			}
			got := want{deref(l.HandshakesPerMinute), deref(l.HandshakeBurst), deref(l.MaxTunnelsPerClient)}
			if got != tc.want {
				t.Errorf("stored limits %+v, want %+v (0: unset)", got, tc.want)
			}
		})
	}

	t.Run("a route without limits has none", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		apply(t, ns, route("open", valid))
		if l := get(t, ns, "open").Spec.Limits; l != nil {
			t.Errorf("spec.limits = %+v, want unset", l)
		}
	})
}

func TestKubectlExplainDescribesLimits(t *testing.T) {
	var out string
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = kubectl(t, "", "explain", "wsroute.spec.limits")
		if err == nil && strings.Contains(out, "maxTunnelsPerClient") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl explain wsroute.spec.limits did not describe the limits within 20s: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	text := strings.Join(strings.Fields(out), " ")
	for _, fragment := range []string{"handshakesPerMinute", "handshakeBurst", "maxTunnelsPerClient", "429 with Retry-After", "ten seconds' worth, at least 1"} {
		if !strings.Contains(text, fragment) {
			t.Errorf("kubectl explain wsroute.spec.limits does not say %q:\n%s", fragment, out)
		}
	}
}
